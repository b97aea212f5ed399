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
//! | `u` | destination `0x00` url key (32 bytes) | [`UrlKeyRecord`] of an OPEN key |
//! | `x` | destination `0x00` url key (32 bytes) | [`UrlKeyRecord`] of a closed key |
//! | `h` | algorithm `0x00` value | [`HashSighting`] |
//! | `r` | referral id | [`ReferralRecord`] |
//! | `p` | envelope id `0x00` seq (8 bytes BE) | [`EntryPos`] of an entry about it |
//! | `c` | seq (8 bytes BE) | [`CheckpointRecord`] |
//! | `q` | seq (8 bytes BE) | [`QuarantineRecord`] |
//!
//! URL keys: the open ones are also held in memory ([`super::urls::OpenUrls`], loaded from
//! `u` on open), and every check and every entry's effect on an open key reads the memory
//! copy, never sled: sled is only written (the `u` record kept equal to the memory one,
//! moved to `x` when the key closes). Closing keeps `u` small, so loading it costs time in
//! proportion to the keys open now, not to every key ever seen. Reservations and the
//! entries' effects are serialised by the memory table's lock, one key operation at a
//! time, and the rules make them commute — a `routed` entry for the referral already
//! holding the key changes nothing; a `duplicate` counts a report; `removed` and
//! retraction close the key only if it is held by the referral they are about.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::entry::{Entry, Event, HashRef, UrlKey};
use super::records::{
    CheckpointRecord, EntryPos, EnvelopeRecord, HashSighting, NoticeRecord, QuarantineRecord,
    ReferralRecord, UrlCheck, UrlKeyRecord,
};
use super::tree::Frontier;
use super::urls::{Check, OpenUrls, Salt, Slot};
use super::{StoreError, UrlIndexLoad};
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

/// The sled key of an open URL key; its closed twin has prefix `x` and the same tail.
fn url_key(dest: &ParticipantId, k: &UrlKey) -> Vec<u8> {
    key(OPEN_URL, &[dest.as_str().as_bytes(), &k.0])
}

const OPEN_URL: u8 = b'u';
const CLOSED_URL: u8 = b'x';

fn closed(open_key: &[u8]) -> Vec<u8> {
    let mut k = open_key.to_vec();
    k[0] = CLOSED_URL;
    k
}

fn hash_key(h: &HashRef) -> Vec<u8> {
    key(b'h', &[h.algorithm.as_str().as_bytes(), h.value.as_bytes()])
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

/// How a record is stored in sled: compact JSON, except URL keys, the one index that grows
/// with every distinct URL, which take a fixed binary layout (about 60 bytes instead of 150)
/// so that more of them fit in sled's cache.
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
    HashSighting,
    ReferralRecord,
    EntryPos,
    CheckpointRecord,
    QuarantineRecord
);

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

/// The index database.
pub(super) struct Index {
    db: sled::Db,
    path: PathBuf,
    /// Slots of the open URL keys (fixed for the life of the process).
    salt: Salt,
    /// The open URL keys; its lock serialises reservations with the entries' effects.
    urls: Mutex<OpenUrls>,
    /// What loading `urls` from sled took.
    loaded: UrlIndexLoad,
}

/// Reads through the writes of a batch not yet applied (`None`: removed).
struct Overlay<'a> {
    index: &'a Index,
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    fn get<T: Record>(&self, k: &[u8]) -> Result<Option<T>, StoreError> {
        match self.writes.get(k) {
            Some(Some(v)) => self.index.decode(k, v).map(Some),
            Some(None) => Ok(None),
            None => self.index.get(k),
        }
    }

    fn put<T: Record>(&mut self, k: Vec<u8>, v: &T) {
        self.writes.insert(k, Some(v.to_bytes()));
    }

    fn remove(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }
}

impl Index {
    /// Opens (creating) the sled database at `path` with a bounded page cache, and loads the
    /// open URL keys into memory.
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
        let mut index = Self {
            db,
            path: path.to_owned(),
            salt,
            urls: Mutex::new(OpenUrls::new()),
            loaded: UrlIndexLoad {
                keys: 0,
                time: Duration::ZERO,
            },
        };
        index.loaded = index.load_urls()?;
        Ok(index)
    }

    /// Fills the memory table from the `u` records. A closed record found there (written by
    /// an earlier version, which kept both under `u`) is moved to `x`.
    fn load_urls(&self) -> Result<UrlIndexLoad, StoreError> {
        let t = Instant::now();
        let mut urls = self.urls();
        let mut legacy = sled::Batch::default();
        let mut moved = 0u64;
        for kv in self.db.scan_prefix([OPEN_URL]) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let r: UrlKeyRecord = self.decode(&k, &v)?;
            if r.open {
                urls.put(self.salt.slot(&k[1..]), &r)
                    .map_err(|m| self.damaged(&k, &m))?;
            } else {
                legacy.remove(&*k);
                legacy.insert(closed(&k), v);
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::info!(keys = moved, "moving closed URL keys to their own prefix");
            self.db.apply_batch(legacy).map_err(|e| self.err(e))?;
        }
        let load = UrlIndexLoad {
            keys: urls.len() as u64,
            time: t.elapsed(),
        };
        tracing::info!(
            keys = load.keys,
            secs = load.time.as_secs_f64(),
            approx_bytes = urls.approx_bytes(),
            "loaded the open URL keys into memory"
        );
        Ok(load)
    }

    /// What loading the open URL keys took.
    pub fn url_load(&self) -> UrlIndexLoad {
        self.loaded
    }

    /// Open URL keys in memory now, and the approximate bytes of their table.
    pub fn url_memory(&self) -> (u64, u64) {
        let urls = self.urls();
        (urls.len() as u64, urls.approx_bytes() as u64)
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
        let mut o = Overlay {
            index: self,
            writes: HashMap::new(),
        };
        for (e, pos) in entries {
            apply_one(&mut o, e, *pos)?;
        }
        let applied = frontier.size();
        o.put(
            META.to_vec(),
            &Meta {
                applied,
                frontier: frontier.clone(),
            },
        );
        let mut batch = sled::Batch::default();
        for (k, v) in o.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(|e| self.err(e))
    }

    pub fn envelope(&self, id: &EnvelopeId) -> Result<Option<EnvelopeRecord>, StoreError> {
        self.get(&env_key(id))
    }

    fn slot(&self, sled_key: &[u8]) -> Slot {
        self.salt.slot(&sled_key[1..])
    }

    /// An open key from memory, else a closed one from sled.
    pub fn url(
        &self,
        dest: &ParticipantId,
        k: &UrlKey,
    ) -> Result<Option<UrlKeyRecord>, StoreError> {
        let key = url_key(dest, k);
        let slot = self.slot(&key);
        if let Some(r) = self.urls().get(&slot).map_err(|m| self.damaged(&key, &m))? {
            return Ok(Some(r));
        }
        self.get(&closed(&key))
    }

    /// Answered from memory alone; see [`super::Store::url_check_and_open`].
    pub fn url_check_and_open(
        &self,
        dest: &ParticipantId,
        k: &UrlKey,
        referral: &EnvelopeId,
        now: DateTime<Utc>,
    ) -> Result<UrlCheck, StoreError> {
        let key = url_key(dest, k);
        let slot = self.slot(&key);
        let check = self.urls().check_and_open(slot, referral, now);
        match check.map_err(|m| self.damaged(&key, &m))? {
            Check::Reserved | Check::Held => Ok(UrlCheck::Opened),
            Check::Other(r) => Ok(UrlCheck::Duplicate {
                first_referral: r.first_referral,
                count: r.count,
                first_seen: r.first_seen,
            }),
        }
    }

    pub fn hash_sighting(&self, h: &HashRef) -> Result<Option<HashSighting>, StoreError> {
        self.get(&hash_key(h))
    }

    pub fn referral(&self, id: &EnvelopeId) -> Result<Option<ReferralRecord>, StoreError> {
        self.get(&referral_key(id))
    }

    /// Positions of every entry about `id`, in log order.
    pub fn positions(&self, id: &EnvelopeId) -> Result<Vec<EntryPos>, StoreError> {
        self.db
            .scan_prefix(pos_prefix(id))
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                self.decode(&k, &v)
            })
            .collect()
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

/// Sets an open key's record, in memory and (with the batch) in sled.
fn put_open(
    o: &mut Overlay<'_>,
    urls: &mut OpenUrls,
    key: Vec<u8>,
    slot: Slot,
    r: &UrlKeyRecord,
) -> Result<(), StoreError> {
    urls.put(slot, r).map_err(|m| o.index.damaged(&key, &m))?;
    o.put(key, r);
    Ok(())
}

/// A `routed` entry: `id` holds the key (it reserved it, or the reservation was lost).
fn url_routed(
    o: &mut Overlay<'_>,
    dest: &ParticipantId,
    k: &UrlKey,
    id: &EnvelopeId,
    t: DateTime<Utc>,
) -> Result<(), StoreError> {
    let key = url_key(dest, k);
    let slot = o.index.slot(&key);
    let mut urls = o.index.urls();
    let rec = match urls.get(&slot).map_err(|m| o.index.damaged(&key, &m))? {
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
    put_open(o, &mut urls, key, slot, &rec)
}

/// A `duplicate` entry: one more report of a key held by `first`.
fn url_duplicate(
    o: &mut Overlay<'_>,
    dest: &ParticipantId,
    k: &UrlKey,
    first: &EnvelopeId,
    t: DateTime<Utc>,
) -> Result<(), StoreError> {
    let key = url_key(dest, k);
    let slot = o.index.slot(&key);
    let mut urls = o.index.urls();
    if let Some(mut r) = urls.get(&slot).map_err(|m| o.index.damaged(&key, &m))? {
        r.count += 1;
        r.last_seen = t;
        return put_open(o, &mut urls, key, slot, &r);
    }
    let closed_key = closed(&key);
    match o.get::<UrlKeyRecord>(&closed_key)? {
        // Closed since the check (`removed` logged first): count it, it stays closed.
        Some(mut r) if &r.first_referral == first => {
            r.count += 1;
            r.last_seen = t;
            o.put(closed_key, &r);
            Ok(())
        }
        // Logged before the `routed` entry of the first referral (concurrent referrals):
        // open it for that one; its `routed` entry will agree.
        _ => put_open(
            o,
            &mut urls,
            key,
            slot,
            &UrlKeyRecord {
                open: true,
                first_referral: first.clone(),
                count: 2,
                first_seen: t,
                last_seen: t,
            },
        ),
    }
}

/// Closes `(dest, key)` if it is open and held by `referral`.
fn close_if_held(
    o: &mut Overlay<'_>,
    dest: &ParticipantId,
    k: &UrlKey,
    referral: &EnvelopeId,
    t: DateTime<Utc>,
) -> Result<(), StoreError> {
    let key = url_key(dest, k);
    let slot = o.index.slot(&key);
    let mut urls = o.index.urls();
    if let Some(mut r) = urls.get(&slot).map_err(|m| o.index.damaged(&key, &m))?
        && &r.first_referral == referral
    {
        urls.remove(&slot);
        r.open = false;
        r.last_seen = t;
        o.put(closed(&key), &r);
        o.remove(key);
    }
    Ok(())
}

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
        let mut k = pos_prefix(id);
        k.extend_from_slice(&seq.0.to_be_bytes());
        o.put(k, &pos);
    }

    let envelope_update =
        |o: &mut Overlay<'_>, f: &mut dyn FnMut(&mut EnvelopeRecord)| -> Result<(), StoreError> {
            if let Some(id) = &e.envelope {
                let k = env_key(id);
                let mut r: EnvelopeRecord = o.get(&k)?.unwrap_or_default();
                if r.origin.is_none() {
                    r.origin.clone_from(&e.participant);
                }
                f(&mut r);
                o.put(k, &r);
            }
            Ok(())
        };

    match &e.event {
        Event::Received(d) => {
            envelope_update(o, &mut |r| {
                r.kind = Some(d.kind);
                r.received = Some(seq);
            })?;
            if let (Kind::Referral, Some(id), Some(origin)) = (d.kind, &e.envelope, &e.participant)
            {
                let rk = referral_key(id);
                if o.get::<ReferralRecord>(&rk)?.is_none() {
                    o.put(
                        rk,
                        &ReferralRecord {
                            origin: origin.clone(),
                            items: d.items.clone(),
                            destinations: Default::default(),
                        },
                    );
                }
                for h in d.items.iter().flat_map(|i| &i.hashes) {
                    let hk = hash_key(h);
                    let s = match o.get::<HashSighting>(&hk)? {
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
                    o.put(hk, &s);
                }
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
            let rk = referral_key(id);
            if let Some(mut rr) = o.get::<ReferralRecord>(&rk)? {
                rr.destinations.insert(dest.clone(), d.items.clone());
                for &i in &d.items {
                    let Some(item) = rr.items.get(usize::from(i)) else {
                        continue;
                    };
                    url_routed(o, dest, &item.url_key, id, t)?;
                }
                o.put(rk, &rr);
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
            for dup in &d.items {
                url_duplicate(o, dest, &dup.url_key, &dup.first_referral, t)?;
            }
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
                    let k = env_key(id);
                    let mut r: EnvelopeRecord = o.get(&k)?.unwrap_or_default();
                    r.notices.push(NoticeRecord {
                        to,
                        code: d.code,
                        notice: d.notice.clone(),
                        seq,
                    });
                    o.put(k, &r);
                }
            }
        }
        Event::Status(d) if d.state == State::Removed => {
            if let Some(dest) = &e.participant {
                let k = match d.url_key {
                    Some(k) => Some(k),
                    None => o
                        .get::<ReferralRecord>(&referral_key(&d.referral))?
                        .and_then(|rr| rr.items.get(usize::from(d.item)).map(|i| i.url_key)),
                };
                if let Some(k) = k {
                    close_if_held(o, dest, &k, &d.referral, t)?;
                }
            }
        }
        Event::Retraction(d) => {
            if let Some(rr) = o.get::<ReferralRecord>(&referral_key(&d.referral))? {
                for (dest, routed) in &rr.destinations {
                    for i in d.items.iter().filter(|i| routed.contains(i)) {
                        if let Some(item) = rr.items.get(usize::from(*i)) {
                            close_if_held(o, dest, &item.url_key, &d.referral, t)?;
                        }
                    }
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
        | Event::Receipt(_)
        | Event::ParticipantChange(_)
        | Event::KeyChange(_)
        | Event::Purge(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;

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
