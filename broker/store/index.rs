//! The sled indexes, derived from the log: how each entry changes them ([`Index::apply`]),
//! the reads the broker makes, and the one write that is not an entry's effect, the URL
//! reservation of [`Index::url_check_and_open`] (in memory only, see [`super::urls`]).
//!
//! Everything lives in one sled tree under one-letter prefixes, so that the effects of a
//! batch of entries and the `applied` marker (how many entries are reflected, and the tree
//! frontier at that size) go down in one atomic `apply_batch`: after a crash sled holds a
//! prefix of its batches, so each entry is applied exactly once by replay.
//!
//! | prefix | key | value |
//! | --- | --- | --- |
//! | `m` | — | [`Meta`]: applied count and frontier |
//! | `e` | envelope id | [`EnvelopeRecord`] |
//! | `x` | destination `0x00` url key (32 bytes) seq of the close (8 bytes BE) | [`UrlKeyRecord`] of a key closed by that entry |
//! | `h` | algorithm `0x00` value | [`HashSighting`]: only in an index written before sightings moved to memory (see below) |
//! | `r` | referral id | [`ReferralRecord`] |
//! | `p` | envelope id `0x00` seq (8 bytes BE) | [`EntryPos`] of the entries about it in one batch, the first at seq (see [`Positions`]) |
//! | `c` | seq (8 bytes BE) | [`CheckpointRecord`] |
//! | `q` | seq (8 bytes BE) | [`QuarantineRecord`] |
//!
//! # URL keys
//!
//! The OPEN keys are not in sled: they live in memory only ([`super::urls::OpenUrls`]), in
//! the table every check and every entry's effect on an open key reads; the log and the
//! snapshot file of that table ([`super::urlsnap`]) are their only persistent copies, and
//! [`Index::load_urls`] rebuilds the table on open from both (the snapshot, then the URL
//! effects of the entries after it up to `applied`, [`url_effects`] alone). So the writer's
//! batch writes nothing per opened or counted key: only a close (a `removed` status or a
//! retraction: rare) writes, the closed key's record under `x`, at a key that includes the
//! seq of the closing entry. Closed keys are kept by seq because an entry's URL effect may
//! depend on the closed state as it was at that entry (a `duplicate` naming a key that is
//! not open counts against the closed record if it was closed holding that referral), and
//! replaying the URL effects of entries that sled has already applied must see that state,
//! not a later close: [`Overlay::closed_before`] reads the newest close before a seq.
//! (An index written before this layout kept open keys under `u` and closes under `x`
//! without a seq; [`Index::load_urls`] moves it over once, reading such a close as seq 0.)
//!
//! Reservations and the entries' effects are serialised by the memory table's lock, one key
//! operation at a time. The effects ignore reservations (see [`super::urls`]) and commute
//! with them: a `routed` entry for the referral already holding the key changes nothing; a
//! `duplicate` counts a report; `removed` and retraction close the key only if it is held by
//! the referral they are about.
//!
//! What an entry's URL effect reads besides the table and the closed keys: the referral's
//! items (fixed by its `received` entry, which the daemon logs with or before every entry
//! naming the referral) and, for a retraction, the destinations it was routed to (its
//! `routed` entries, logged in the same append as its `received`). Replaying URL effects
//! after the snapshot reads these as they are at `applied`, which is what they were at each
//! entry as long as the daemon keeps that order.
//!
//! # Hash sightings
//!
//! The first referral, first time and count of every content hash seen in a referral's
//! `received` entry live in the same memory table, under slots of their own
//! ([`Salt::sighting_slot`], records flagged as sightings: [`OpenUrls::sighting`]), so they
//! are snapshotted and replayed exactly like the open URL keys ([`url_effects`] applies
//! both). In sled they were about half of the keys each referral wrote (two hashes per item
//! in `ops/bench`'s mix), each at a random place of the tree, sled's most expensive write.
//! The cost is memory: about 100 bytes per distinct hash, like an open URL key. An index
//! written before keeps them under `h`; [`Index::load_urls`] moves them once (meta
//! `hashes_in_memory`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::entry::{Entry, Event, HashRef, Seq, UrlKey};
use super::reader::LogReader;
use super::records::{
    CheckpointRecord, EntryPos, EnvelopeRecord, HashSighting, NoticeRecord, QuarantineRecord,
    ReferralRecord, UrlCheck, UrlKeyRecord,
};
use super::tree::Frontier;
use super::urls::{Check, OpenUrls, Row, SHARDS, Salt, Slot};
use super::{StoreError, UrlIndexLoad, segment, urlsnap};
use crate::ids::{EnvelopeId, ParticipantId};
use crate::wire::{Kind, State};

const META: &[u8] = b"m";

/// What sled reflects of the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Meta {
    /// Entries applied: seqs `0..applied`.
    pub applied: u64,
    /// The tree's right edge at `applied`.
    pub frontier: Frontier,
    /// Open URL keys are not kept under `u` (see the module documentation); false in an
    /// index written before, which [`Index::load_urls`] moves over.
    #[serde(default)]
    pub urls_in_memory: bool,
    /// Hash sightings are not kept under `h` but in the URL table (see the module
    /// documentation); false in an index written before, which [`Index::load_urls`] moves
    /// over.
    #[serde(default)]
    pub hashes_in_memory: bool,
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

fn env_key(id: &EnvelopeId) -> Vec<u8> {
    key(b'e', &[id.as_str().as_bytes()])
}

/// `destination 0x00 url key`: what a URL key's slot and its closed records are keyed by.
fn url_tail(dest: &ParticipantId, k: &UrlKey) -> Vec<u8> {
    let d = dest.as_str().as_bytes();
    let mut t = Vec::with_capacity(d.len() + 1 + k.0.len());
    t.extend_from_slice(d);
    t.push(0);
    t.extend_from_slice(&k.0);
    t
}

/// Where an index written before this layout kept the open (and closed) URL keys.
const LEGACY_OPEN_URL: u8 = b'u';
const CLOSED_URL: u8 = b'x';

/// `x tail`: every close of one key starts with it (and an old unversioned close is it).
fn closed_prefix(tail: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + tail.len() + 8);
    k.push(CLOSED_URL);
    k.extend_from_slice(tail);
    k
}

/// The record of the close of `tail` by entry `seq`.
fn closed_key(tail: &[u8], seq: u64) -> Vec<u8> {
    let mut k = closed_prefix(tail);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

const HASH: u8 = b'h';

fn hash_key(h: &HashRef) -> Vec<u8> {
    key(HASH, &[h.algorithm.as_str().as_bytes(), h.value.as_bytes()])
}

fn referral_key(id: &EnvelopeId) -> Vec<u8> {
    key(b'r', &[id.as_str().as_bytes()])
}

fn pos_prefix(id: &EnvelopeId) -> Vec<u8> {
    let mut k = key(b'p', &[id.as_str().as_bytes()]);
    k.push(0);
    k
}

fn seq_key(prefix: u8, seq: u64) -> Vec<u8> {
    key(prefix, &[&seq.to_be_bytes()])
}

/// How a record is stored in sled: compact JSON, except the numerous small ones, which take
/// a binary layout starting with a version byte: URL keys (about 60 bytes instead of 150,
/// so that more of them fit in sled's cache), entry positions (25 instead of about 45) and
/// hash sightings (about 57 instead of 110), the records written most often. Positions and
/// sightings written as JSON by an earlier version still read (see [`legacy_json`]).
trait Record: Sized {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(b: &[u8]) -> Result<Self, String>;
}

macro_rules! json_record {
    ($($t:ty),*) => {$(
        impl Record for $t {
            fn to_bytes(&self) -> Vec<u8> {
                // Index records are plain structs with string keys: serialising cannot fail.
                serde_json::to_vec(self).expect("index records always serialise")
            }
            fn from_bytes(b: &[u8]) -> Result<Self, String> {
                serde_json::from_slice(b).map_err(|e| e.to_string())
            }
        }
    )*};
}
json_record!(
    Meta,
    EnvelopeRecord,
    ReferralRecord,
    CheckpointRecord,
    QuarantineRecord
);

/// Reads an index record written as JSON before this record had a binary layout (every JSON
/// record starts with `{`; no binary one does: they start with a version byte).
fn legacy_json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<Result<T, String>> {
    (b.first() == Some(&b'{')).then(|| serde_json::from_slice(b).map_err(|e| e.to_string()))
}

/// The `n` bytes at `at` of `b`, if there are as many.
fn field<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// `1 | seq: u64 BE | segment: u64 BE | offset: u64 BE`. One per entry per envelope it is
/// about: the most numerous record after the hash sightings.
impl Record for EntryPos {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(25);
        v.push(1);
        v.extend_from_slice(&self.seq.0.to_be_bytes());
        v.extend_from_slice(&self.segment.to_be_bytes());
        v.extend_from_slice(&self.offset.to_be_bytes());
        v
    }

    fn from_bytes(b: &[u8]) -> Result<Self, String> {
        if let Some(old) = legacy_json(b) {
            return old;
        }
        let int = |at| field::<8>(b, at).map(u64::from_be_bytes);
        match (b.len(), b.first(), int(1), int(9), int(17)) {
            (25, Some(1), Some(seq), Some(segment), Some(offset)) => Ok(Self {
                seq: Seq(seq),
                segment,
                offset,
            }),
            _ => Err("not an entry position record".into()),
        }
    }
}

/// `1 | first_seen: seconds i64 BE, nanoseconds u32 BE | count: u64 BE | first referral`.
/// One per distinct content hash, written again at every sighting.
impl Record for HashSighting {
    fn to_bytes(&self) -> Vec<u8> {
        let id = self.first_referral.as_str().as_bytes();
        let mut v = Vec::with_capacity(21 + id.len());
        v.push(1);
        v.extend_from_slice(&self.first_seen.timestamp().to_be_bytes());
        v.extend_from_slice(&self.first_seen.timestamp_subsec_nanos().to_be_bytes());
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(id);
        v
    }

    fn from_bytes(b: &[u8]) -> Result<Self, String> {
        if let Some(old) = legacy_json(b) {
            return old;
        }
        let bad = || "not a hash sighting record".to_owned();
        if b.first() != Some(&1) {
            return Err(bad());
        }
        let secs = field::<8>(b, 1).map(i64::from_be_bytes).ok_or_else(bad)?;
        let nanos = field::<4>(b, 9).map(u32::from_be_bytes).ok_or_else(bad)?;
        let count = field::<8>(b, 13).map(u64::from_be_bytes).ok_or_else(bad)?;
        let id = std::str::from_utf8(&b[21..]).map_err(|_| bad())?;
        Ok(Self {
            first_referral: id.parse().map_err(|e| format!("{e}"))?,
            first_seen: DateTime::<Utc>::from_timestamp(secs, nanos).ok_or_else(bad)?,
            count,
        })
    }
}

/// `1 | open: u8 | count: u64 BE | first_seen ms: i64 BE | last_seen ms: i64 BE | referral`.
impl Record for UrlKeyRecord {
    fn to_bytes(&self) -> Vec<u8> {
        let id = self.first_referral.as_str().as_bytes();
        let mut v = Vec::with_capacity(26 + id.len());
        v.push(1);
        v.push(u8::from(self.open));
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(&self.first_seen.timestamp_millis().to_be_bytes());
        v.extend_from_slice(&self.last_seen.timestamp_millis().to_be_bytes());
        v.extend_from_slice(id);
        v
    }

    fn from_bytes(b: &[u8]) -> Result<Self, String> {
        let bad = || "not a URL key record".to_owned();
        if b.len() < 26 || b[0] != 1 || b[1] > 1 {
            return Err(bad());
        }
        let int = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            x
        };
        let time = |at: usize| {
            DateTime::<Utc>::from_timestamp_millis(i64::from_be_bytes(int(at))).ok_or_else(bad)
        };
        let id = std::str::from_utf8(&b[26..]).map_err(|_| bad())?;
        Ok(Self {
            open: b[1] == 1,
            count: u64::from_be_bytes(int(2)),
            first_seen: time(10)?,
            last_seen: time(18)?,
            first_referral: id.parse().map_err(|e| format!("{e}"))?,
        })
    }
}

/// What the URL table holds (see [`Index::url_memory`]).
pub(super) struct UrlMemory {
    pub open_keys: u64,
    pub sightings: u64,
    pub approx_bytes: u64,
}

impl UrlMemory {
    /// Every record: what a snapshot's cost is proportional to.
    pub fn records(&self) -> u64 {
        self.open_keys + self.sightings
    }
}

/// A sighting as the index stored it under `h` before sightings moved to memory (tests
/// build such an index).
#[cfg(test)]
pub(super) fn legacy_sighting_bytes(s: &HashSighting) -> Vec<u8> {
    s.to_bytes()
}

/// The index database.
pub(super) struct Index {
    db: sled::Db,
    path: PathBuf,
    /// Slots of the open URL keys: set by [`Self::load_urls`] (from the snapshot, or new).
    salt: RwLock<Salt>,
    /// The open URL keys; its lock serialises reservations with the entries' effects.
    urls: Mutex<OpenUrls>,
    /// URL effects applied to `urls` since open (replayed ones included): when a snapshot
    /// falls due.
    url_events: AtomicU64,
    /// The seq of the snapshot `urls` was loaded from.
    snapshot_seq: Mutex<Option<u64>>,
    /// Entries' sightings of content hashes go to the URL table (false until
    /// [`Self::load_urls`] has moved an older index's `h` records there).
    hashes_in_memory: AtomicBool,
}

/// A record of a batch not yet applied, decoded: read from sled at most once per batch and
/// encoded once, at its end, however many of the batch's entries change it (the `received`,
/// `routed` and `delivered` entries of a referral all change its envelope record).
struct Cached<T> {
    value: Option<T>,
    dirty: bool,
}

/// Reads through the writes of a batch not yet applied (`None`: removed). Envelope and
/// referral records, which entries read and change again and again, are held decoded (see
/// [`Cached`]); the rest as the bytes they will be written as.
struct Overlay<'a> {
    index: &'a Index,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    envelopes: HashMap<Vec<u8>, Cached<EnvelopeRecord>>,
    referrals: HashMap<Vec<u8>, Cached<ReferralRecord>>,
    /// Per envelope (by [`pos_prefix`]), the positions of the batch's entries about it.
    positions: HashMap<Vec<u8>, Vec<EntryPos>>,
}

/// The positions of the entries of one batch about one envelope, under one key: the
/// envelope's prefix and the first entry's seq. A referral's `received`, `routed` and
/// `duplicate` entries come in one append: one sled key instead of one per entry (sled's
/// cost is per key). One position is stored as an [`EntryPos`] record (what every `p` value
/// was before); several as `2 | (seq, segment, offset: u64 BE)*`. Batches cover disjoint,
/// ascending seq ranges, so reading the keys of a prefix in order gives log order.
struct Positions;

impl Positions {
    fn to_bytes(list: &[EntryPos]) -> Vec<u8> {
        if let [one] = list {
            return one.to_bytes();
        }
        let mut v = Vec::with_capacity(1 + 24 * list.len());
        v.push(2);
        for p in list {
            v.extend_from_slice(&p.seq.0.to_be_bytes());
            v.extend_from_slice(&p.segment.to_be_bytes());
            v.extend_from_slice(&p.offset.to_be_bytes());
        }
        v
    }

    fn from_bytes(b: &[u8]) -> Result<Vec<EntryPos>, String> {
        if b.first() != Some(&2) {
            return EntryPos::from_bytes(b).map(|p| vec![p]);
        }
        let rest = &b[1..];
        if rest.is_empty() || !rest.len().is_multiple_of(24) {
            return Err("not a list of entry positions".into());
        }
        Ok(rest
            .chunks_exact(24)
            .map(|c| {
                let int = |at| field::<8>(c, at).map_or(0, u64::from_be_bytes);
                EntryPos {
                    seq: Seq(int(0)),
                    segment: int(8),
                    offset: int(16),
                }
            })
            .collect())
    }
}

/// The decoded record at `k` in `map`, read from sled on first use.
fn cached<'m, T: Record>(
    index: &Index,
    map: &'m mut HashMap<Vec<u8>, Cached<T>>,
    k: Vec<u8>,
) -> Result<&'m mut Cached<T>, StoreError> {
    use std::collections::hash_map::Entry as Slot;
    match map.entry(k) {
        Slot::Occupied(o) => Ok(o.into_mut()),
        Slot::Vacant(v) => {
            let value = index.get(v.key())?;
            Ok(v.insert(Cached {
                value,
                dirty: false,
            }))
        }
    }
}

impl<'a> Overlay<'a> {
    fn new(index: &'a Index) -> Self {
        Self {
            index,
            writes: BTreeMap::new(),
            envelopes: HashMap::new(),
            referrals: HashMap::new(),
            positions: HashMap::new(),
        }
    }

    fn put<T: Record>(&mut self, k: Vec<u8>, v: &T) {
        self.writes.insert(k, Some(v.to_bytes()));
    }

    /// The envelope record of `id` (a default one if there is none yet), to change.
    fn envelope_mut(&mut self, id: &EnvelopeId) -> Result<&mut EnvelopeRecord, StoreError> {
        let c = cached(self.index, &mut self.envelopes, env_key(id))?;
        c.dirty = true;
        Ok(c.value.get_or_insert_with(EnvelopeRecord::default))
    }

    /// The referral record of `id`, to read.
    fn referral(&mut self, id: &EnvelopeId) -> Result<Option<&ReferralRecord>, StoreError> {
        let c = cached(self.index, &mut self.referrals, referral_key(id))?;
        Ok(c.value.as_ref())
    }

    /// The referral record of `id` (`None` if there is none), to change or create.
    fn referral_mut(&mut self, id: &EnvelopeId) -> Result<&mut Option<ReferralRecord>, StoreError> {
        let c = cached(self.index, &mut self.referrals, referral_key(id))?;
        c.dirty = true;
        Ok(&mut c.value)
    }

    /// Every write of the batch, encoded, in one sled batch.
    fn into_batch(self) -> sled::Batch {
        fn encoded<T: Record>(
            map: HashMap<Vec<u8>, Cached<T>>,
        ) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
            map.into_iter()
                .filter(|(_, c)| c.dirty)
                .map(|(k, c)| (k, c.value.map(|v| v.to_bytes())))
        }
        let mut batch = sled::Batch::default();
        let positions = self.positions.into_iter().filter_map(|(mut k, list)| {
            k.extend_from_slice(&list.first()?.seq.0.to_be_bytes());
            Some((k, Some(Positions::to_bytes(&list))))
        });
        let all = self
            .writes
            .into_iter()
            .chain(positions)
            .chain(encoded(self.envelopes))
            .chain(encoded(self.referrals));
        for (k, v) in all {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }

    /// The newest close of the key `tail` by an entry before `seq`, and its sled key: the
    /// closed state as entry `seq` saw it.
    fn closed_before(
        &self,
        tail: &[u8],
        seq: u64,
    ) -> Result<Option<(Vec<u8>, UrlKeyRecord)>, StoreError> {
        let lo = closed_prefix(tail);
        let hi = closed_key(tail, seq);
        let in_sled = match self
            .index
            .db
            .range(lo.as_slice()..hi.as_slice())
            .next_back()
        {
            Some(kv) => Some(kv.map_err(|e| self.index.err(e))?),
            None => None,
        };
        let in_batch = self
            .writes
            .range(lo.clone()..hi)
            .next_back()
            .and_then(|(k, v)| Some((k, v.as_ref()?)));
        let (k, v): (Vec<u8>, &[u8]) = match (&in_sled, in_batch) {
            (Some((sk, _)), Some((bk, bv))) if bk.as_slice() >= &sk[..] => (bk.clone(), bv),
            (Some((sk, sv)), _) => (sk.to_vec(), sv),
            (None, Some((bk, bv))) => (bk.clone(), bv),
            (None, None) => return Ok(None),
        };
        let r = self.index.decode(&k, v)?;
        Ok(Some((k, r)))
    }
}

impl Index {
    /// Opens (creating) the sled database at `path` with a bounded page cache. The URL
    /// table (open URL keys and hash sightings) is empty until [`Self::load_urls`].
    pub fn open(path: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open()
            .map_err(|e| StoreError::Index {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let salt = Salt::random().map_err(|message| StoreError::Index {
            path: path.to_owned(),
            message,
        })?;
        Ok(Self {
            db,
            path: path.to_owned(),
            salt: RwLock::new(salt),
            urls: Mutex::new(OpenUrls::new()),
            url_events: AtomicU64::new(0),
            snapshot_seq: Mutex::new(None),
            hashes_in_memory: AtomicBool::new(false),
        })
    }

    /// `index/`, where the URL snapshot lives too.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the URL table as of entry `applied` (what sled reflects; `store_dir` holds the
    /// log): from the snapshot, then the URL effects of the entries from its seq up to
    /// `applied`. Without a usable snapshot (says why in the log), from the URL effects of
    /// every entry up to `applied`. Call once, before any other use of the table.
    pub fn load_urls(&self, store_dir: &Path, applied: u64) -> Result<UrlIndexLoad, StoreError> {
        let t = Instant::now();
        let meta = self.meta()?;
        // An older index has its sightings under `h` (as of `applied`): the replay below
        // leaves them alone, and they move over after it.
        self.hashes_in_memory
            .store(meta.hashes_in_memory, Ordering::Relaxed);
        let legacy = !meta.urls_in_memory
            && self
                .db
                .scan_prefix([LEGACY_OPEN_URL])
                .next()
                .transpose()
                .map_err(|e| self.err(e))?
                .is_some();
        let mut from = 0;
        if legacy {
            self.load_legacy_urls(applied)?;
            from = applied;
        } else {
            match urlsnap::read(&self.path) {
                Ok(Some(snap)) if snap.seqs.iter().all(|&s| s <= applied) => {
                    from = snap.from();
                    tracing::info!(from, keys = snap.urls.len(), "read the URL snapshot");
                    *self.salt.write().unwrap_or_else(|e| e.into_inner()) = snap.salt;
                    let mut urls = snap.urls;
                    urls.set_covered(Some(snap.seqs));
                    *self.urls() = urls;
                    *self.snapshot_seq() = Some(from);
                }
                Ok(Some(snap)) => tracing::warn!(
                    seq = snap.seqs.iter().max(),
                    applied,
                    "the URL snapshot is ahead of the index (not flushed before a crash?); \
                     replaying every URL effect from the log instead"
                ),
                Ok(None) if applied > 0 => {
                    tracing::info!("no URL snapshot; replaying every URL effect from the log")
                }
                Ok(None) => {}
                Err(why) => tracing::warn!(
                    "the URL snapshot is not usable ({why}); replaying every URL effect from \
                     the log instead"
                ),
            }
            self.remove_legacy_urls()?;
        }
        let replayed = self.replay_urls(store_dir, from, applied)?;
        self.urls().set_covered(None);
        if !meta.hashes_in_memory {
            self.move_legacy_hashes(applied)?;
        }
        let urls = self.urls();
        let load = UrlIndexLoad {
            keys: urls.len() as u64,
            time: t.elapsed(),
        };
        tracing::info!(
            keys = load.keys,
            from,
            replayed_entries = replayed,
            secs = load.time.as_secs_f64(),
            hash_sightings = urls.sightings(),
            approx_bytes = urls.approx_bytes(),
            "loaded the open URL keys and hash sightings into memory"
        );
        Ok(load)
    }

    /// Replays the URL effects of entries `from..to` (already applied to sled: only the
    /// table changes). Returns the entries read.
    fn replay_urls(&self, store_dir: &Path, from: u64, to: u64) -> Result<u64, StoreError> {
        if from >= to {
            return Ok(0);
        }
        let reader = LogReader::open(store_dir)?;
        let mut referrals = RecentReferrals::default();
        let mut n = 0;
        for le in reader.iter_from(Seq(from))? {
            let le = le?;
            if le.seq.0 >= to {
                break;
            }
            if !le.check_ok {
                return Err(StoreError::Corrupt {
                    path: segment::path(&store_dir.join("log"), le.pos.segment),
                    offset: le.pos.offset,
                    why: format!("entry {} does not match its frame check", le.seq),
                });
            }
            let e = le.decode()?;
            referrals.note(&e);
            // Writes (closed records) are discarded: sled has them already.
            let mut o = Overlay::new(self);
            let rr = match (&e.event, &e.envelope) {
                (Event::Routed(_), Some(id)) => referrals.get(id),
                _ => None,
            };
            url_effects(&mut o, &e, rr)?;
            n += 1;
        }
        if n != to - from {
            return Err(StoreError::Index {
                path: self.path.clone(),
                message: format!("it reflects {to} entries but the log ends at {}", from + n),
            });
        }
        Ok(n)
    }

    /// Loads an index written before open URL keys left sled: the `u` records are the table
    /// as of `applied`. Moves it over: marks the index, snapshots the table, then deletes
    /// `u` (closed records found there go to `x`, as closes of unknown seq, read as 0).
    fn load_legacy_urls(&self, applied: u64) -> Result<(), StoreError> {
        tracing::info!("moving the open URL keys from the index to memory and a snapshot");
        let mut moved = sled::Batch::default();
        {
            let mut urls = self.urls();
            let salt = self.salt_now();
            for kv in self.db.scan_prefix([LEGACY_OPEN_URL]) {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                let r: UrlKeyRecord = self.decode(&k, &v)?;
                if r.open {
                    urls.put(salt.slot(&k[1..]), &r)
                        .map_err(|m| self.damaged(&k, &m))?;
                } else {
                    moved.insert(closed_prefix(&k[1..]), v);
                }
            }
        }
        let mut meta = self.meta()?;
        meta.urls_in_memory = true;
        moved.insert(META, meta.to_bytes());
        self.db.apply_batch(moved).map_err(|e| self.err(e))?;
        self.flush()?;
        if let Err(e) = self.snapshot_at_open(applied) {
            tracing::warn!("writing the URL snapshot failed: {e}");
        }
        self.remove_legacy_urls()
    }

    /// Moves the hash sightings of an index written before they left sled (`h` records,
    /// as of `applied`, the table holding the rest as of `applied` too) into the table:
    /// puts them, writes a snapshot that holds them, deletes `h`, marks the index. If the
    /// snapshot cannot be written the open fails: `h` stays their only copy besides the log
    /// (the table's replay from the log only starts where `h` ends). A crash on the way
    /// repeats the move on the next open: putting again a record that the snapshot holds
    /// changes nothing, since no entry is applied in between.
    fn move_legacy_hashes(&self, applied: u64) -> Result<(), StoreError> {
        let mut moved = 0u64;
        {
            let salt = self.salt_now();
            let mut urls = self.urls();
            for kv in self.db.scan_prefix([HASH]) {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                let s: HashSighting = self.decode(&k, &v)?;
                urls.put_sighting(salt.sighting_slot(&k), &s)
                    .map_err(|m| self.damaged(&k, &m))?;
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::info!(
                sightings = moved,
                "moving the hash sightings from the index to memory and the URL snapshot"
            );
            self.snapshot_at_open(applied)
                .map_err(|e| StoreError::Index {
                    path: self.path.clone(),
                    message: format!(
                        "writing the URL snapshot that takes over the hash sightings from the \
                         index: {e}"
                    ),
                })?;
            self.remove_prefix(HASH)?;
        }
        let mut meta = self.meta()?;
        meta.hashes_in_memory = true;
        self.db
            .insert(META, meta.to_bytes())
            .map_err(|e| self.err(e))?;
        self.flush()?;
        self.hashes_in_memory.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the whole table as the snapshot at `applied`, while opening (nothing else
    /// changes the table).
    fn snapshot_at_open(&self, applied: u64) -> Result<(), String> {
        let copy = urlsnap::Copy {
            salt: self.url_salt(),
            shards: (0..SHARDS)
                .map(|i| (applied, self.url_copy_shard(i)))
                .collect(),
            time: Duration::ZERO,
        };
        urlsnap::write(&self.path, &copy, || Ok(()))?;
        *self.snapshot_seq() = Some(applied);
        Ok(())
    }

    /// Deletes what is left under `u` (a move interrupted by a crash).
    fn remove_legacy_urls(&self) -> Result<(), StoreError> {
        self.remove_prefix(LEGACY_OPEN_URL)
    }

    /// Deletes every key under `prefix`, in batches.
    fn remove_prefix(&self, prefix: u8) -> Result<(), StoreError> {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.db.scan_prefix([prefix]).take(65536) {
                let (k, _) = kv.map_err(|e| self.err(e))?;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.db.apply_batch(batch).map_err(|e| self.err(e))?;
        }
    }

    /// The seq of the snapshot the table was loaded from (or written at load).
    pub fn snapshot_seq(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.snapshot_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// URL effects applied since open.
    pub fn url_events(&self) -> u64 {
        self.url_events.load(Ordering::Relaxed)
    }

    /// The salt of the table's slots.
    pub fn url_salt(&self) -> Salt {
        self.salt_now()
    }

    /// The logged records of one shard of the table (copied under its lock), for a
    /// snapshot.
    pub fn url_copy_shard(&self, i: usize) -> Vec<Row> {
        self.urls().copy_shard(i)
    }

    fn salt_now(&self) -> Salt {
        *self
            .salt
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The logged records of the URL table as sorted text (tests compare tables across
    /// salts).
    #[cfg(test)]
    pub fn logged_urls(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .urls()
            .logged_list()
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        v.sort();
        v
    }

    /// Open URL keys and hash sightings in memory now, and the approximate bytes of their
    /// table.
    pub fn url_memory(&self) -> UrlMemory {
        let urls = self.urls();
        UrlMemory {
            open_keys: urls.len() as u64,
            sightings: urls.sightings() as u64,
            approx_bytes: urls.approx_bytes() as u64,
        }
    }

    fn damaged(&self, k: &[u8], message: &str) -> StoreError {
        StoreError::Index {
            path: self.path.clone(),
            message: format!(
                "damaged record at key {:?}: {message}",
                String::from_utf8_lossy(k)
            ),
        }
    }

    fn err(&self, e: sled::Error) -> StoreError {
        StoreError::Index {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn decode<T: Record>(&self, k: &[u8], v: &[u8]) -> Result<T, StoreError> {
        T::from_bytes(v).map_err(|e| self.damaged(k, &e))
    }

    fn get<T: Record>(&self, k: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get(k).map_err(|e| self.err(e))? {
            Some(v) => self.decode(k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn urls(&self) -> std::sync::MutexGuard<'_, OpenUrls> {
        // Every change to the table is one `insert` or `remove`: a panic while holding the
        // lock cannot leave a record half-written.
        self.urls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn meta(&self) -> Result<Meta, StoreError> {
        Ok(self.get(META)?.unwrap_or_default())
    }

    /// Flushes sled to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// Applies `entries` (consecutive, starting at `meta.applied`) and records `frontier`
    /// (the tree after them) in one atomic batch.
    pub fn apply(
        &self,
        entries: &[(Entry, EntryPos)],
        frontier: &Frontier,
    ) -> Result<(), StoreError> {
        let mut o = Overlay::new(self);
        for (e, pos) in entries {
            apply_one(&mut o, e, *pos)?;
        }
        let applied = frontier.size();
        o.put(
            META.to_vec(),
            &Meta {
                applied,
                frontier: frontier.clone(),
                urls_in_memory: true,
                hashes_in_memory: self.hashes_in_memory.load(Ordering::Relaxed),
            },
        );
        self.db
            .apply_batch(o.into_batch())
            .map_err(|e| self.err(e))
            .map(|_| ())
    }

    pub fn envelope(&self, id: &EnvelopeId) -> Result<Option<EnvelopeRecord>, StoreError> {
        self.get(&env_key(id))
    }

    fn slot(&self, tail: &[u8]) -> Slot {
        self.salt_now().slot(tail)
    }

    /// An open key from memory (a reservation included), else its latest close from sled.
    pub fn url(
        &self,
        dest: &ParticipantId,
        k: &UrlKey,
    ) -> Result<Option<UrlKeyRecord>, StoreError> {
        let tail = url_tail(dest, k);
        let slot = self.slot(&tail);
        if let Some(r) = self
            .urls()
            .get(&slot)
            .map_err(|m| self.damaged(&tail, &m))?
        {
            return Ok(Some(r));
        }
        Overlay::new(self)
            .closed_before(&tail, u64::MAX)
            .map(|c| c.map(|(_, r)| r))
    }

    /// Answered from memory alone; see [`super::Store::url_check_and_open`].
    pub fn url_check_and_open(
        &self,
        dest: &ParticipantId,
        k: &UrlKey,
        referral: &EnvelopeId,
        now: DateTime<Utc>,
    ) -> Result<UrlCheck, StoreError> {
        let tail = url_tail(dest, k);
        let slot = self.slot(&tail);
        let check = self.urls().check_and_open(slot, referral, now);
        match check.map_err(|m| self.damaged(&tail, &m))? {
            Check::Reserved | Check::Held => Ok(UrlCheck::Opened),
            Check::Other(r) => Ok(UrlCheck::Duplicate {
                first_referral: r.first_referral,
                count: r.count,
                first_seen: r.first_seen,
            }),
        }
    }

    /// The sighting of `h`, from the URL table (see [`OpenUrls::sighting`]).
    pub fn hash_sighting(&self, h: &HashRef) -> Result<Option<HashSighting>, StoreError> {
        let k = hash_key(h);
        let slot = self.salt_now().sighting_slot(&k);
        self.urls()
            .sighting(&slot)
            .map_err(|m| self.damaged(&k, &m))
    }

    /// The referral that brought `h` first.
    pub fn hash_first_referral(&self, h: &HashRef) -> Result<Option<EnvelopeId>, StoreError> {
        Ok(self.hash_sighting(h)?.map(|s| s.first_referral))
    }

    pub fn referral(&self, id: &EnvelopeId) -> Result<Option<ReferralRecord>, StoreError> {
        self.get(&referral_key(id))
    }

    /// Positions of every entry about `id`, in log order.
    pub fn positions(&self, id: &EnvelopeId) -> Result<Vec<EntryPos>, StoreError> {
        let mut all = Vec::new();
        for kv in self.db.scan_prefix(pos_prefix(id)) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            all.extend(Positions::from_bytes(&v).map_err(|e| self.damaged(&k, &e))?);
        }
        Ok(all)
    }

    fn scan_seq<T: Record>(
        &self,
        prefix: u8,
    ) -> impl DoubleEndedIterator<Item = Result<T, StoreError>> + '_ {
        self.db.scan_prefix([prefix]).map(move |kv| {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            self.decode(&k, &v)
        })
    }

    pub fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.scan_seq(b'c').collect()
    }

    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError> {
        self.scan_seq(b'c').next_back().transpose()
    }

    pub fn quarantine(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        self.scan_seq(b'q').take(limit).collect()
    }
}

/// The referral records a URL replay has seen created by `received` entries, so that the
/// `routed` entries that follow (in the same append, as a rule) need no sled read. Bounded:
/// forgets everything after [`RecentReferrals::MAX`] referrals (misses read sled).
#[derive(Default)]
struct RecentReferrals(HashMap<EnvelopeId, ReferralRecord>);

impl RecentReferrals {
    const MAX: usize = 4096;

    /// What `received` creates (the first one of a referral; see [`apply_one`]).
    fn note(&mut self, e: &Entry) {
        if let (Event::Received(d), Some(id), Some(origin)) =
            (&e.event, &e.envelope, &e.participant)
            && d.kind == Kind::Referral
        {
            if self.0.len() >= Self::MAX {
                self.0.clear();
            }
            self.0.entry(id.clone()).or_insert_with(|| ReferralRecord {
                origin: origin.clone(),
                items: d.items.clone(),
                destinations: Default::default(),
            });
        }
    }

    fn get(&self, id: &EnvelopeId) -> Option<&ReferralRecord> {
        self.0.get(id)
    }
}

/// Counts one URL effect (the snapshot schedule's clock).
fn url_event(index: &Index) {
    index.url_events.fetch_add(1, Ordering::Relaxed);
}

/// A `routed` entry (`seq`): `id` holds the key (it reserved it, or the reservation was
/// lost).
fn url_routed(
    index: &Index,
    dest: &ParticipantId,
    k: &UrlKey,
    id: &EnvelopeId,
    t: DateTime<Utc>,
    seq: u64,
) -> Result<(), StoreError> {
    let tail = url_tail(dest, k);
    let slot = index.slot(&tail);
    let mut urls = index.urls();
    if urls.covers(&slot, seq) {
        return Ok(());
    }
    url_event(index);
    let rec = match urls.logged(&slot).map_err(|m| index.damaged(&tail, &m))? {
        Some(mut r) if &r.first_referral == id => {
            r.first_seen = r.first_seen.min(t);
            r
        }
        Some(mut r) => {
            r.count += 1;
            r.last_seen = t;
            r
        }
        None => UrlKeyRecord {
            open: true,
            first_referral: id.clone(),
            count: 1,
            first_seen: t,
            last_seen: t,
        },
    };
    urls.put(slot, &rec).map_err(|m| index.damaged(&tail, &m))
}

/// A `duplicate` entry (`seq`): one more report of a key held by `first`.
fn url_duplicate(
    o: &mut Overlay<'_>,
    dest: &ParticipantId,
    k: &UrlKey,
    first: &EnvelopeId,
    t: DateTime<Utc>,
    seq: u64,
) -> Result<(), StoreError> {
    let tail = url_tail(dest, k);
    let slot = o.index.slot(&tail);
    let mut urls = o.index.urls();
    if urls.covers(&slot, seq) {
        return Ok(());
    }
    url_event(o.index);
    if let Some(mut r) = urls.logged(&slot).map_err(|m| o.index.damaged(&tail, &m))? {
        r.count += 1;
        r.last_seen = t;
        return urls.put(slot, &r).map_err(|m| o.index.damaged(&tail, &m));
    }
    match o.closed_before(&tail, seq)? {
        // Closed since the check (`removed` logged first): count it, it stays closed.
        Some((closed_key, mut r)) if &r.first_referral == first => {
            r.count += 1;
            r.last_seen = t;
            o.put(closed_key, &r);
            Ok(())
        }
        // Logged before the `routed` entry of the first referral (concurrent referrals):
        // open it for that one; its `routed` entry will agree.
        _ => urls
            .put(
                slot,
                &UrlKeyRecord {
                    open: true,
                    first_referral: first.clone(),
                    count: 2,
                    first_seen: t,
                    last_seen: t,
                },
            )
            .map_err(|m| o.index.damaged(&tail, &m)),
    }
}

/// A sighting of content hash `h` in referral `id`'s `received` entry (`seq`): the first
/// makes `id` its first referral, every one (a redelivery's included) counts.
fn sighting(
    index: &Index,
    h: &HashRef,
    id: &EnvelopeId,
    t: DateTime<Utc>,
    seq: u64,
) -> Result<(), StoreError> {
    let k = hash_key(h);
    let slot = index.salt_now().sighting_slot(&k);
    let mut urls = index.urls();
    if urls.covers(&slot, seq) {
        return Ok(());
    }
    url_event(index);
    let s = match urls.sighting(&slot).map_err(|m| index.damaged(&k, &m))? {
        Some(mut s) => {
            s.count += 1;
            s
        }
        None => HashSighting {
            first_referral: id.clone(),
            first_seen: t,
            count: 1,
        },
    };
    urls.put_sighting(slot, &s)
        .map_err(|m| index.damaged(&k, &m))
}

/// Closes `(dest, key)` if it is open and held by `referral` (entry `seq`).
fn close_if_held(
    o: &mut Overlay<'_>,
    dest: &ParticipantId,
    k: &UrlKey,
    referral: &EnvelopeId,
    t: DateTime<Utc>,
    seq: u64,
) -> Result<(), StoreError> {
    let tail = url_tail(dest, k);
    let slot = o.index.slot(&tail);
    let mut urls = o.index.urls();
    if urls.covers(&slot, seq) {
        return Ok(());
    }
    url_event(o.index);
    if let Some(mut r) = urls.logged(&slot).map_err(|m| o.index.damaged(&tail, &m))?
        && &r.first_referral == referral
    {
        urls.remove(&slot);
        r.open = false;
        r.last_seen = t;
        o.put(closed_key(&tail, seq), &r);
    }
    Ok(())
}

/// The URL effects of one entry: on the open-key table, and (through `o`) closed records;
/// and its sightings of content hashes, which live in the same table.
/// `rr`: the record of the referral a `routed` entry is about, if the caller has it (else
/// it is read through `o`). [`apply_one`] applies them with the rest of the entry's effects;
/// [`Index::load_urls`] replays them alone for entries sled has applied already.
fn url_effects(
    o: &mut Overlay<'_>,
    e: &Entry,
    rr: Option<&ReferralRecord>,
) -> Result<(), StoreError> {
    let t = e.time;
    let seq = e.seq.0;
    match &e.event {
        Event::Received(d) => {
            if let (Kind::Referral, Some(id), Some(_)) = (d.kind, &e.envelope, &e.participant)
                && o.index.hashes_in_memory.load(Ordering::Relaxed)
            {
                for h in d.items.iter().flat_map(|i| &i.hashes) {
                    sighting(o.index, h, id, t, seq)?;
                }
            }
        }
        Event::Routed(d) => {
            let (Some(dest), Some(id)) = (&e.destination, &e.envelope) else {
                return Ok(());
            };
            let index = o.index;
            let rr = match rr {
                Some(rr) => rr,
                None => match o.referral(id)? {
                    Some(r) => r,
                    None => return Ok(()),
                },
            };
            for &i in &d.items {
                if let Some(item) = rr.items.get(usize::from(i)) {
                    url_routed(index, dest, &item.url_key, id, t, seq)?;
                }
            }
        }
        Event::Duplicate(d) => {
            if let Some(dest) = &e.destination {
                for dup in &d.items {
                    url_duplicate(o, dest, &dup.url_key, &dup.first_referral, t, seq)?;
                }
            }
        }
        Event::Status(d) if d.state == State::Removed => {
            if let Some(dest) = &e.participant {
                let k = match d.url_key {
                    Some(k) => Some(k),
                    None => o
                        .referral(&d.referral)?
                        .and_then(|rr| rr.items.get(usize::from(d.item)).map(|i| i.url_key)),
                };
                if let Some(k) = k {
                    close_if_held(o, dest, &k, &d.referral, t, seq)?;
                }
            }
        }
        Event::Retraction(d) => {
            // Rare (a retraction): a copy, so that closing the keys can write through `o`.
            if let Some(rr) = o.referral(&d.referral)?.cloned() {
                for (dest, routed) in &rr.destinations {
                    for i in d.items.iter().filter(|i| routed.contains(i)) {
                        if let Some(item) = rr.items.get(usize::from(*i)) {
                            close_if_held(o, dest, &item.url_key, &d.referral, t, seq)?;
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every effect of one entry: the sled records, then [`url_effects`].
fn apply_one(o: &mut Overlay<'_>, e: &Entry, pos: EntryPos) -> Result<(), StoreError> {
    let t = e.time;
    let seq = e.seq;
    // Entries about an envelope, for `entries_of` / `audit prove`.
    let mut about: Vec<&EnvelopeId> = e.envelope.iter().collect();
    if let Some(r) = e.referral()
        && !about.contains(&r)
    {
        about.push(r);
    }
    for id in about {
        o.positions.entry(pos_prefix(id)).or_default().push(pos);
    }

    let envelope_update =
        |o: &mut Overlay<'_>, f: &mut dyn FnMut(&mut EnvelopeRecord)| -> Result<(), StoreError> {
            if let Some(id) = &e.envelope {
                let r = o.envelope_mut(id)?;
                if r.origin.is_none() {
                    r.origin.clone_from(&e.participant);
                }
                f(r);
            }
            Ok(())
        };

    match &e.event {
        Event::Received(d) => {
            envelope_update(o, &mut |r| {
                r.kind = Some(d.kind);
                r.received = Some(seq);
            })?;
            // (Its hashes' sightings are URL-table effects: see `url_effects`.)
            if let (Kind::Referral, Some(id), Some(origin)) = (d.kind, &e.envelope, &e.participant)
                && o.referral(id)?.is_none()
            {
                *o.referral_mut(id)? = Some(ReferralRecord {
                    origin: origin.clone(),
                    items: d.items.clone(),
                    destinations: Default::default(),
                });
            }
        }
        Event::Rejected(d) => {
            envelope_update(o, &mut |r| r.rejected = Some((d.code, seq)))?;
            if d.quarantined {
                o.put(
                    seq_key(b'q', seq.0),
                    &QuarantineRecord {
                        seq,
                        time: t,
                        code: d.code,
                        envelope: e.envelope.clone(),
                        participant: e.participant.clone(),
                        sha256: e.sha256,
                    },
                );
            }
        }
        Event::Routed(d) => {
            let Some(dest) = &e.destination else {
                return Ok(());
            };
            envelope_update(o, &mut |r| {
                r.destinations.entry(dest.clone()).or_default().routed =
                    Some((d.items.clone(), seq));
            })?;
            let Some(id) = &e.envelope else {
                return Ok(());
            };
            if let Some(rr) = o.referral_mut(id)? {
                rr.destinations.insert(dest.clone(), d.items.clone());
            }
        }
        Event::Duplicate(d) => {
            let Some(dest) = &e.destination else {
                return Ok(());
            };
            let items: Vec<u16> = d.items.iter().map(|i| i.item).collect();
            envelope_update(o, &mut |r| {
                r.destinations.entry(dest.clone()).or_default().duplicates =
                    Some((items.clone(), seq));
            })?;
        }
        Event::Delivered(_) => {
            if let Some(dest) = &e.destination {
                envelope_update(o, &mut |r| {
                    r.destinations.entry(dest.clone()).or_default().delivered = Some(seq);
                })?;
            }
        }
        Event::NoticeSent(d) => {
            if let Some(to) = &e.destination {
                let to = to.clone();
                // The origin of an envelope is who sent it, not the broker's notice.
                if let Some(id) = &e.envelope {
                    o.envelope_mut(id)?.notices.push(NoticeRecord {
                        to,
                        code: d.code,
                        notice: d.notice.clone(),
                        seq,
                    });
                }
            }
        }
        Event::Checkpoint(d) => {
            o.put(
                seq_key(b'c', seq.0),
                &CheckpointRecord {
                    seq,
                    time: t,
                    size: d.size,
                    root: d.root,
                    note: d.note.clone(),
                },
            );
        }
        Event::Status(_)
        | Event::Retraction(_)
        | Event::Receipt(_)
        | Event::ParticipantChange(_)
        | Event::KeyChange(_)
        | Event::Purge(_) => {}
    }
    url_effects(o, e, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;

    #[test]
    fn positions_and_sightings_round_trip_in_binary_and_their_old_json_still_reads() {
        let pos = EntryPos {
            seq: Seq(u64::MAX - 1),
            segment: 4096,
            offset: 1 << 40,
        };
        assert_eq!(pos.to_bytes().len(), 25);
        assert_eq!(EntryPos::from_bytes(&pos.to_bytes()).unwrap(), pos);
        let json = serde_json::to_vec(&pos).unwrap();
        assert_eq!(EntryPos::from_bytes(&json).unwrap(), pos);

        let s = HashSighting {
            first_referral: EnvelopeId::new_v7(),
            // Nanoseconds are kept: the record is exactly what the entry said.
            first_seen: DateTime::<Utc>::from_timestamp(1_780_000_000, 123_456_789).unwrap(),
            count: 7,
        };
        assert_eq!(HashSighting::from_bytes(&s.to_bytes()).unwrap(), s);
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(HashSighting::from_bytes(&json).unwrap(), s);

        // Damage is an error, never a panic.
        for b in [
            &[][..],
            &[1][..],
            &[2; 25][..],
            &pos.to_bytes()[..24],
            b"{not json",
        ] {
            assert!(EntryPos::from_bytes(b).is_err(), "{b:?}");
            assert!(HashSighting::from_bytes(b).is_err(), "{b:?}");
        }
        assert!(HashSighting::from_bytes(&s.to_bytes()[..20]).is_err());
    }

    #[test]
    fn the_positions_of_a_batch_round_trip_and_a_single_one_is_an_entry_pos_record() {
        let pos = |n: u64| EntryPos {
            seq: Seq(n),
            segment: n / 10,
            offset: n * 100,
        };
        let one = Positions::to_bytes(&[pos(7)]);
        assert_eq!(one, pos(7).to_bytes());
        assert_eq!(Positions::from_bytes(&one).unwrap(), vec![pos(7)]);
        let json = serde_json::to_vec(&pos(8)).unwrap();
        assert_eq!(Positions::from_bytes(&json).unwrap(), vec![pos(8)]);
        let many: Vec<EntryPos> = (10..15).map(pos).collect();
        let b = Positions::to_bytes(&many);
        assert_eq!(b.len(), 1 + 24 * 5);
        assert_eq!(Positions::from_bytes(&b).unwrap(), many);
        for bad in [&[2][..], &b[..b.len() - 1], &[][..], &[9; 25][..]] {
            assert!(Positions::from_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_key_records_round_trip_in_binary() {
        for id in [
            "0190f5c2-6c4e-7cc3-9d1a-3b8e2f1a4c5d",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            let r = UrlKeyRecord {
                open: true,
                first_referral: id.parse().unwrap(),
                count: 7,
                first_seen: Utc::now().trunc_subsecs(3),
                last_seen: Utc::now().trunc_subsecs(3),
            };
            let b = r.to_bytes();
            assert!(b.len() <= 26 + 36);
            assert_eq!(UrlKeyRecord::from_bytes(&b).unwrap(), r);
        }
        assert!(UrlKeyRecord::from_bytes(b"{\"open\":true}").is_err());
        assert!(UrlKeyRecord::from_bytes(&[1; 20]).is_err());
    }
}
