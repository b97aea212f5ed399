//! The in-memory index of OPEN URL keys, which [`super::Store::url_check_and_open`] answers
//! from, so that a dedup check costs the same at 100 k and at 10 M keys (a sled lookup that
//! misses sled's bounded page cache costs tens of microseconds; this one is a hash probe).
//!
//! It holds one record per (destination, URL key) that is open: opened by a logged `routed`
//! (or `duplicate`) entry, or reserved by a check whose entry is not applied yet. The two
//! are told apart by a flag: a reservation is never written to a snapshot, and the entries'
//! effects ignore it (they compute what the log alone says: a logged record replaces a
//! reservation of the same slot, a reservation never changes a logged record), so the
//! logged records are exactly what replaying the log gives, whatever was reserved meanwhile.
//! Closed keys are not kept here (they are in sled, under their own prefix, for `url_key`
//! reads). The table also holds the sightings of content hashes, flagged as such, under
//! slots of their own ([`OpenUrls::sighting`]): they are persisted the same way, and count
//! in the memory figures below like a key (they are never reserved or closed). This table is
//! the only copy of the open keys (and sightings) besides the log: [`super::urlsnap`]
//! persists it as a snapshot file from time to time, and opening the store loads that
//! snapshot and replays the URL effects of the entries after it. A reservation is lost when
//! the process stops: its referral was not acked, is redelivered and checks again.
//!
//! # Memory
//!
//! A record is a 16-byte slot digest and 41 packed bytes (holder: tag + 16-byte UUID/ULID;
//! count: u64; first and last seen: i64 milliseconds), stored inline in hashbrown tables
//! (256 shards) with one control byte per bucket: 58 bytes per bucket. A table keeps
//! between 7/16 and 7/8 of its buckets full (it doubles when 7/8 full), so an open key costs
//! 66–133 bytes, about 100 on average (1.0 GB at 10 M open keys, 0.1 GB at 1 M), plus, while
//! a snapshot is written, a copy of the logged records (57 bytes each). The tables do not
//! shrink as keys close: they stay sized for the most keys open at once since the process
//! started (a restart loads only those open then). [`OpenUrls::approx_bytes`] gives the
//! figure for the current table.
//!
//! # The slot digest
//!
//! The first 16 bytes of SHA-256(salt ‖ destination ‖ 0x00 ‖ URL key), where the salt is 16
//! random bytes drawn when the table is first built (no snapshot to load) and kept in the
//! snapshot file, next to the index, from then on. Two distinct pairs share a slot with
//! probability 2^-128 per pair (about 10^-25 among 10 M keys), and because the salt is
//! secret (as secret as the data directory), nobody can search for a colliding URL in
//! advance. A collision would make one URL count as a duplicate of another at one
//! destination.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::records::{HashSighting, UrlKeyRecord};
use crate::ids::EnvelopeId;

/// Where one (destination, URL key) pair lives in the table; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot(pub [u8; 16]);

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a salted cryptographic digest: its first 8 bytes are a uniform hash.
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

/// Passes a [`Slot`]'s own hash through (no second hash function on the hot path).
#[derive(Default)]
pub(super) struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Slot`; a fallback that still mixes every byte.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// An envelope id in 17 bytes: tag (0 UUID, 1 ULID) and the 16 bytes of the id. Exact
/// because an [`EnvelopeId`] only exists in its one canonical spelling.
type PackedId = [u8; 17];

fn pack_id(id: &EnvelopeId) -> Result<PackedId, String> {
    let s = id.as_str();
    let mut out = [0u8; 17];
    if s.len() == 36 {
        let u = uuid::Uuid::try_parse(s).map_err(|e| format!("envelope id {s}: {e}"))?;
        out[1..].copy_from_slice(u.as_bytes());
    } else {
        let u = ulid::Ulid::from_string(s).map_err(|e| format!("envelope id {s}: {e}"))?;
        out[0] = 1;
        out[1..].copy_from_slice(&u.to_bytes());
    }
    Ok(out)
}

fn unpack_id(b: &[u8]) -> Result<EnvelopeId, String> {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&b[1..17]);
    let s = match b[0] & !(RESERVED | SIGHTING) {
        0 => uuid::Uuid::from_bytes(raw).hyphenated().to_string(),
        1 => ulid::Ulid::from_bytes(raw).to_string(),
        t => return Err(format!("packed envelope id with tag {t}")),
    };
    s.parse().map_err(|e| format!("{e}"))
}

/// Set in the holder's tag byte of a record that is only reserved (not logged yet).
const RESERVED: u8 = 0x80;

/// Set in the holder's tag byte of a content hash's sighting (see [`OpenUrls::sighting`]).
const SIGHTING: u8 = 0x40;

/// Bytes of a packed record (see [`Packed`]).
pub(super) const RECORD_BYTES: usize = 41;

/// An open key's record: holder (17) | count u64 LE (8) | first seen ms (8) | last seen ms (8).
/// The holder's tag byte also carries the [`RESERVED`] flag.
#[derive(Clone, Copy)]
struct Packed([u8; RECORD_BYTES]);

impl Packed {
    fn new(holder: &PackedId, count: u64, first: DateTime<Utc>, last: DateTime<Utc>) -> Self {
        let mut b = [0u8; 41];
        b[..17].copy_from_slice(holder);
        b[17..25].copy_from_slice(&count.to_le_bytes());
        b[25..33].copy_from_slice(&first.timestamp_millis().to_le_bytes());
        b[33..41].copy_from_slice(&last.timestamp_millis().to_le_bytes());
        Self(b)
    }

    /// The holder, without the reservation and sighting flags.
    fn holder(&self) -> PackedId {
        let mut h = [0u8; 17];
        h.copy_from_slice(&self.0[..17]);
        h[0] &= !(RESERVED | SIGHTING);
        h
    }

    fn reserved(&self) -> bool {
        self.0[0] & RESERVED != 0
    }

    fn is_sighting(&self) -> bool {
        self.0[0] & SIGHTING != 0
    }

    fn int(&self, at: usize) -> [u8; 8] {
        let mut x = [0u8; 8];
        x.copy_from_slice(&self.0[at..at + 8]);
        x
    }

    fn record(&self) -> Result<UrlKeyRecord, String> {
        let time = |at: usize| {
            DateTime::<Utc>::from_timestamp_millis(i64::from_le_bytes(self.int(at)))
                .ok_or_else(|| "time out of range".to_owned())
        };
        Ok(UrlKeyRecord {
            open: true,
            first_referral: unpack_id(&self.holder())?,
            count: u64::from_le_bytes(self.int(17)),
            first_seen: time(25)?,
            last_seen: time(33)?,
        })
    }
}

/// What a check found.
pub(super) enum Check {
    /// Not open: now reserved for the asking referral.
    Reserved,
    /// Open, held by the asking referral.
    Held,
    /// Open, held by another referral.
    Other(UrlKeyRecord),
}

/// Shards of the table: a snapshot copies one shard at a time (see [`super::urlsnap`]).
pub(super) const SHARDS: usize = 256;

type Shard = HashMap<Slot, Packed, BuildHasherDefault<SlotHasher>>;

/// A logged record as a snapshot holds it: slot and packed record.
pub(super) type Row = ([u8; 16], [u8; RECORD_BYTES]);

/// The open URL keys; see the module documentation. Not synchronised: the index keeps it
/// under a mutex. [`SHARDS`] hash tables, by one byte of the slot (not one the tables hash
/// with), so that a snapshot can copy them one by one and a table doubling moves 1/256 of
/// the keys.
pub(super) struct OpenUrls {
    shards: Vec<Shard>,
    /// Records that are hash sightings (the rest are URL keys).
    sightings: usize,
    /// While replaying the log after a snapshot: per shard, the seq up to which the shard
    /// already holds the entries' effects (see [`Self::covers`]).
    covered: Option<Vec<u64>>,
}

/// Computes slots; immutable, so callers hash outside the table's lock.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Salt(pub [u8; 16]);

impl Salt {
    /// A fresh random salt.
    pub fn random() -> Result<Self, String> {
        let mut s = [0u8; 16];
        getrandom::fill(&mut s).map_err(|e| format!("drawing the URL index salt: {e}"))?;
        Ok(Self(s))
    }

    /// The slot of a content hash's sighting: [`Self::slot`] of 0xFF ‖ `key`, the hash's
    /// sled key (`h`, algorithm, 0x00, value). No URL tail starts with 0xFF (it starts with
    /// a participant id, UTF-8), so the two kinds never share a slot's input.
    pub fn sighting_slot(&self, key: &[u8]) -> Slot {
        let mut tail = Vec::with_capacity(1 + key.len());
        tail.push(0xFF);
        tail.extend_from_slice(key);
        self.slot(&tail)
    }

    /// The slot of `tail` = destination ‖ 0x00 ‖ URL key (the sled key without its prefix).
    pub fn slot(&self, tail: &[u8]) -> Slot {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(tail);
        let d = h.finalize();
        let mut s = [0u8; 16];
        s.copy_from_slice(&d[..16]);
        Slot(s)
    }
}

impl OpenUrls {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            sightings: 0,
            covered: None,
        }
    }

    /// The shard of a slot: byte 8 (the tables hash with bytes 0..8).
    pub fn shard(slot: &Slot) -> usize {
        usize::from(slot.0[8])
    }

    fn map(&self, slot: &Slot) -> &Shard {
        &self.shards[Self::shard(slot)]
    }

    fn map_mut(&mut self, slot: &Slot) -> &mut Shard {
        &mut self.shards[Self::shard(slot)]
    }

    /// Open URL keys held (logged or reserved).
    pub fn len(&self) -> usize {
        self.records().saturating_sub(self.sightings)
    }

    /// Hash sightings held.
    pub fn sightings(&self) -> usize {
        self.sightings
    }

    /// Every record: open URL keys and hash sightings (what a snapshot's cost is in).
    pub fn records(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Inserts `p` at `slot`, keeping the sighting count.
    fn insert(&mut self, slot: Slot, p: Packed) {
        let new = p.is_sighting();
        let old = self.map_mut(&slot).insert(slot, p).map(|o| o.is_sighting());
        match (old, new) {
            (Some(true), false) => self.sightings -= 1,
            (None | Some(false), true) => self.sightings += 1,
            _ => {}
        }
    }

    /// Makes room for `n` more keys in shard `i`.
    pub fn reserve_shard(&mut self, i: usize, n: usize) {
        if let Some(m) = self.shards.get_mut(i) {
            m.reserve(n);
        }
    }

    /// Approximate heap bytes of the table: buckets × (slot + record + control byte).
    pub fn approx_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<(Slot, Packed)>() + 1;
        self.shards
            .iter()
            .map(|m| match m.capacity() {
                0 => 0,
                cap => (cap * 8 / 7).next_power_of_two() * per_bucket,
            })
            .sum()
    }

    /// The record of an open key, logged or reserved (what a check or a read sees).
    pub fn get(&self, slot: &Slot) -> Result<Option<UrlKeyRecord>, String> {
        self.map(slot).get(slot).map(Packed::record).transpose()
    }

    /// The record of an open key as the log alone has it: `None` for a reservation (what
    /// an entry's effect sees).
    pub fn logged(&self, slot: &Slot) -> Result<Option<UrlKeyRecord>, String> {
        self.map(slot)
            .get(slot)
            .filter(|p| !p.reserved())
            .map(Packed::record)
            .transpose()
    }

    /// Sets the logged record of an open key (`r.open` must be true), replacing a
    /// reservation of the slot if there is one.
    pub fn put(&mut self, slot: Slot, r: &UrlKeyRecord) -> Result<(), String> {
        debug_assert!(r.open);
        let holder = pack_id(&r.first_referral)?;
        self.insert(
            slot,
            Packed::new(&holder, r.count, r.first_seen, r.last_seen),
        );
        Ok(())
    }

    /// Forgets a logged key (it was closed). A reservation stays; so does a sighting.
    pub fn remove(&mut self, slot: &Slot) {
        let m = self.map_mut(slot);
        if m.get(slot)
            .is_some_and(|p| !p.reserved() && !p.is_sighting())
        {
            m.remove(slot);
        }
    }

    /// The sighting of a content hash at `slot` (the slot of [`Salt::sighting_slot`]): the
    /// index keeps them in this table too, so that they are persisted with the URL keys (the
    /// same snapshot, the same replay) instead of in sled, where they were half of the keys
    /// every referral wrote, at random places (`ops/bench`). A sighting's record is a URL
    /// key's layout with [`SIGHTING`] in the tag: first referral, count, first seen (ms).
    pub fn sighting(&self, slot: &Slot) -> Result<Option<HashSighting>, String> {
        let Some(p) = self.map(slot).get(slot).filter(|p| p.is_sighting()) else {
            return Ok(None);
        };
        let r = p.record()?;
        Ok(Some(HashSighting {
            first_referral: r.first_referral,
            first_seen: r.first_seen,
            count: r.count,
        }))
    }

    /// Sets the sighting at `slot`.
    pub fn put_sighting(&mut self, slot: Slot, s: &HashSighting) -> Result<(), String> {
        let mut holder = pack_id(&s.first_referral)?;
        holder[0] |= SIGHTING;
        self.insert(
            slot,
            Packed::new(&holder, s.count, s.first_seen, s.first_seen),
        );
        Ok(())
    }

    /// The logged records of shard `i` (reservations left out): what a snapshot holds.
    pub fn copy_shard(&self, i: usize) -> Vec<Row> {
        self.shards.get(i).map_or_else(Vec::new, |m| {
            let mut v = Vec::with_capacity(m.len());
            v.extend(
                m.iter()
                    .filter(|(_, p)| !p.reserved())
                    .map(|(s, p)| (s.0, p.0)),
            );
            v
        })
    }

    /// Adds a logged record read back from a snapshot. Refuses a record that does not
    /// decode or is flagged as a reservation, and a slot already present.
    pub fn insert_logged(&mut self, (slot, record): Row) -> Result<(), String> {
        let p = Packed(record);
        if p.reserved() {
            return Err("a reservation in a snapshot".into());
        }
        p.record()?;
        let slot = Slot(slot);
        match self.map_mut(&slot).entry(slot) {
            std::collections::hash_map::Entry::Occupied(_) => Err("a slot twice".into()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(p);
                self.sightings += usize::from(p.is_sighting());
                Ok(())
            }
        }
    }

    /// While the log after a snapshot is replayed: shard `i` already holds the effects of
    /// the entries before `seqs[i]`. `None` when the replay is done.
    pub fn set_covered(&mut self, seqs: Option<Vec<u64>>) {
        self.covered = seqs;
    }

    /// Whether the table already holds entry `seq`'s effect on `slot` (during a replay
    /// after a snapshot whose shards were copied at different seqs).
    pub fn covers(&self, slot: &Slot, seq: u64) -> bool {
        self.covered
            .as_ref()
            .and_then(|c| c.get(Self::shard(slot)))
            .is_some_and(|&from| seq < from)
    }

    /// Every logged URL record, decoded, in no particular order (tests compare tables).
    #[cfg(test)]
    pub fn logged_list(&self) -> Vec<UrlKeyRecord> {
        self.shards
            .iter()
            .flat_map(HashMap::values)
            .filter(|p| !p.reserved() && !p.is_sighting())
            .filter_map(|p| p.record().ok())
            .collect()
    }

    /// The atomic check-and-open: reserves the key for `referral` unless it is open.
    pub fn check_and_open(
        &mut self,
        slot: Slot,
        referral: &EnvelopeId,
        now: DateTime<Utc>,
    ) -> Result<Check, String> {
        let holder = pack_id(referral)?;
        let m = self.map_mut(&slot);
        match m.get(&slot) {
            Some(p) if p.holder() == holder => Ok(Check::Held),
            Some(p) => Ok(Check::Other(p.record()?)),
            None => {
                let mut p = Packed::new(&holder, 1, now, now);
                p.0[0] |= RESERVED;
                m.insert(slot, p);
                Ok(Check::Reserved)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;

    #[test]
    fn ids_pack_exactly() {
        for id in [
            EnvelopeId::new_v7(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap(),
        ] {
            let p = pack_id(&id).unwrap();
            assert_eq!(unpack_id(&p).unwrap(), id);
        }
    }

    #[test]
    fn records_round_trip_and_the_check_reserves_once() {
        let salt = Salt::random().unwrap();
        let (a, b) = (EnvelopeId::new_v7(), EnvelopeId::new_v7());
        let now = Utc::now().trunc_subsecs(3);
        let s1 = salt.slot(b"de.eco\x00key-one");
        let s2 = salt.slot(b"de.eco\x00key-two");
        assert_ne!(s1, s2);
        assert_eq!(s1, salt.slot(b"de.eco\x00key-one"));
        let mut m = OpenUrls::new();
        assert!(matches!(
            m.check_and_open(s1, &a, now).unwrap(),
            Check::Reserved
        ));
        assert!(matches!(
            m.check_and_open(s1, &a, now).unwrap(),
            Check::Held
        ));
        let Check::Other(r) = m.check_and_open(s1, &b, now).unwrap() else {
            panic!("held by a")
        };
        assert_eq!(
            r,
            UrlKeyRecord {
                open: true,
                first_referral: a.clone(),
                count: 1,
                first_seen: now,
                last_seen: now,
            }
        );
        let r2 = UrlKeyRecord {
            count: u64::MAX,
            first_referral: "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap(),
            ..r
        };
        m.put(s2, &r2).unwrap();
        assert_eq!(m.get(&s2).unwrap(), Some(r2.clone()));
        assert_eq!(m.logged(&s2).unwrap(), Some(r2));
        assert_eq!(m.len(), 2);
        assert!(m.approx_bytes() >= 2 * 58);
        m.remove(&s2);
        assert_eq!(m.get(&s2).unwrap(), None);
    }

    #[test]
    fn sightings_share_the_table_but_not_the_url_keys_count_or_their_operations() {
        let salt = Salt::random().unwrap();
        let (a, b) = (EnvelopeId::new_v7(), EnvelopeId::new_v7());
        let now = Utc::now().trunc_subsecs(3);
        let hk = b"hsha256\x00ab12";
        let (sh, su) = (salt.sighting_slot(hk), salt.slot(b"de.eco\x00key"));
        assert_ne!(sh, salt.slot(hk));
        let mut m = OpenUrls::new();
        let s = HashSighting {
            first_referral: a.clone(),
            first_seen: now,
            count: 1,
        };
        m.put_sighting(sh, &s).unwrap();
        m.put_sighting(
            sh,
            &HashSighting {
                count: 2,
                ..s.clone()
            },
        )
        .unwrap();
        m.check_and_open(su, &b, now).unwrap();
        assert_eq!((m.len(), m.sightings(), m.records()), (1, 1, 2));
        assert_eq!(m.sighting(&sh).unwrap().unwrap().count, 2);
        assert_eq!(m.sighting(&su).unwrap(), None);
        // A close never drops a sighting; a URL record put over one makes it a key.
        m.remove(&sh);
        assert!(m.sighting(&sh).unwrap().is_some());
        let rows: Vec<Row> = (0..SHARDS).flat_map(|i| m.copy_shard(i)).collect();
        assert_eq!(rows.len(), 1);
        let mut back = OpenUrls::new();
        back.insert_logged(rows[0]).unwrap();
        assert_eq!((back.len(), back.sightings()), (0, 1));
        assert_eq!(back.sighting(&sh).unwrap(), m.sighting(&sh).unwrap());
        assert!(back.logged_list().is_empty());
        back.put(
            sh,
            &UrlKeyRecord {
                open: true,
                first_referral: b,
                count: 1,
                first_seen: now,
                last_seen: now,
            },
        )
        .unwrap();
        assert_eq!((back.len(), back.sightings()), (1, 0));
        assert_eq!(back.sighting(&sh).unwrap(), None);
    }

    #[test]
    fn a_reservation_is_invisible_to_entries_and_to_snapshots() {
        let salt = Salt::random().unwrap();
        let (a, b) = (EnvelopeId::new_v7(), EnvelopeId::new_v7());
        let now = Utc::now().trunc_subsecs(3);
        let (s1, s2) = (salt.slot(b"d\x00one"), salt.slot(b"d\x00two"));
        let mut m = OpenUrls::new();
        assert!(matches!(
            m.check_and_open(s1, &a, now).unwrap(),
            Check::Reserved
        ));
        // Checks see it; the log's view does not; a snapshot leaves it out.
        assert_eq!(m.get(&s1).unwrap().unwrap().first_referral, a);
        assert_eq!(m.logged(&s1).unwrap(), None);
        let all = |m: &OpenUrls| {
            (0..SHARDS)
                .flat_map(|i| m.copy_shard(i))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&m).len(), 0);
        // Closing does not drop it.
        m.remove(&s1);
        assert!(m.get(&s1).unwrap().is_some());
        // A logged record replaces it.
        let r = UrlKeyRecord {
            open: true,
            first_referral: b.clone(),
            count: 2,
            first_seen: now,
            last_seen: now,
        };
        m.put(s1, &r).unwrap();
        assert_eq!(m.logged(&s1).unwrap(), Some(r.clone()));
        assert!(matches!(
            m.check_and_open(s1, &b, now).unwrap(),
            Check::Held
        ));
        m.check_and_open(s2, &a, now).unwrap();
        let snap = all(&m);
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].0, s1.0);
        assert_eq!(m.copy_shard(OpenUrls::shard(&s1)), snap);
        // Read back: the same record; a reservation or a repeated slot is refused.
        let mut back = OpenUrls::new();
        back.insert_logged(snap[0]).unwrap();
        assert_eq!(back.logged(&s1).unwrap(), Some(r));
        assert!(back.insert_logged(snap[0]).is_err());
        let mut flagged = snap[0].1;
        flagged[0] |= RESERVED;
        assert!(OpenUrls::new().insert_logged((s2.0, flagged)).is_err());
        // Coverage during a replay: by the slot's shard.
        let mut seqs = vec![0; SHARDS];
        seqs[OpenUrls::shard(&s1)] = 10;
        back.set_covered(Some(seqs));
        assert!(back.covers(&s1, 9) && !back.covers(&s1, 10));
        back.set_covered(None);
        assert!(!back.covers(&s1, 9));
    }
}
