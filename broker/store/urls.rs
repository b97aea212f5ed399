//! The in-memory index of OPEN URL keys, which [`super::Store::url_check_and_open`] answers
//! from, so that a dedup check costs the same at 100 k and at 10 M keys (a sled lookup that
//! misses sled's bounded page cache costs tens of microseconds; this one is a hash probe).
//!
//! It holds one record per (destination, URL key) that is open: opened by a logged `routed`
//! (or `duplicate`) entry, or reserved by a check whose entry is not written yet. Closed
//! keys are not kept here (they are in sled, under their own prefix, for `url_key` reads).
//! sled keeps the persistent copy of every logged record ([`super::index`]); this index is
//! loaded from it on open and updated where the writer applies each batch, so it is always
//! "sled's open records + reservations not yet logged". A reservation is lost when the
//! process stops, exactly as a reservation written to sled could be lost in a crash before:
//! its referral was not acked, is redelivered and checks again.
//!
//! # Memory
//!
//! A record is a 16-byte slot digest and 41 packed bytes (holder: tag + 16-byte UUID/ULID;
//! count: u64; first and last seen: i64 milliseconds), stored inline in a hashbrown table
//! with one control byte per bucket: 58 bytes per bucket. The table keeps between 7/16 and
//! 7/8 of its buckets full (it doubles when 7/8 full), so an open key costs 66–133 bytes,
//! about 100 on average (1.0 GB at 10 M open keys, 0.1 GB at 1 M), plus, for a moment while
//! the table doubles, the old table as well. The table does not shrink as keys close: it
//! stays sized for the most keys open at once since the process started (a restart loads
//! only those open then). [`OpenUrls::approx_bytes`] gives the figure for the current table.
//!
//! # The slot digest
//!
//! The first 16 bytes of SHA-256(salt ‖ destination ‖ 0x00 ‖ URL key), where the salt is 16
//! random bytes drawn when the store opens. Two distinct pairs share a slot with probability
//! 2^-128 per pair (about 10^-25 among 10 M keys), and because the salt is secret and new in
//! every process, nobody can search for a colliding URL in advance. A collision would make
//! one URL count as a duplicate of another at one destination.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::records::UrlKeyRecord;
use crate::ids::EnvelopeId;

/// Where one (destination, URL key) pair lives in the table; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot([u8; 16]);

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
    let s = match b[0] {
        0 => uuid::Uuid::from_bytes(raw).hyphenated().to_string(),
        1 => ulid::Ulid::from_bytes(raw).to_string(),
        t => return Err(format!("packed envelope id with tag {t}")),
    };
    s.parse().map_err(|e| format!("{e}"))
}

/// An open key's record: holder (17) | count u64 LE (8) | first seen ms (8) | last seen ms (8).
#[derive(Clone, Copy)]
struct Packed([u8; 41]);

impl Packed {
    fn new(holder: &PackedId, count: u64, first: DateTime<Utc>, last: DateTime<Utc>) -> Self {
        let mut b = [0u8; 41];
        b[..17].copy_from_slice(holder);
        b[17..25].copy_from_slice(&count.to_le_bytes());
        b[25..33].copy_from_slice(&first.timestamp_millis().to_le_bytes());
        b[33..41].copy_from_slice(&last.timestamp_millis().to_le_bytes());
        Self(b)
    }

    fn holder(&self) -> &[u8] {
        &self.0[..17]
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
            first_referral: unpack_id(self.holder())?,
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

/// The open URL keys; see the module documentation. Not synchronised: the index keeps it
/// under a mutex.
pub(super) struct OpenUrls {
    map: HashMap<Slot, Packed, BuildHasherDefault<SlotHasher>>,
}

/// Computes slots; immutable, so callers hash outside the table's lock.
#[derive(Clone)]
pub(super) struct Salt([u8; 16]);

impl Salt {
    /// A fresh random salt.
    pub fn random() -> Result<Self, String> {
        let mut s = [0u8; 16];
        getrandom::fill(&mut s).map_err(|e| format!("drawing the URL index salt: {e}"))?;
        Ok(Self(s))
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
            map: HashMap::default(),
        }
    }

    /// Open keys held (logged or reserved).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Approximate heap bytes of the table: buckets × (slot + record + control byte).
    pub fn approx_bytes(&self) -> usize {
        let cap = self.map.capacity();
        if cap == 0 {
            return 0;
        }
        let buckets = (cap * 8 / 7).next_power_of_two();
        buckets * (std::mem::size_of::<(Slot, Packed)>() + 1)
    }

    /// The record of an open key.
    pub fn get(&self, slot: &Slot) -> Result<Option<UrlKeyRecord>, String> {
        self.map.get(slot).map(Packed::record).transpose()
    }

    /// Sets the record of an open key (`r.open` must be true).
    pub fn put(&mut self, slot: Slot, r: &UrlKeyRecord) -> Result<(), String> {
        debug_assert!(r.open);
        let holder = pack_id(&r.first_referral)?;
        self.map.insert(
            slot,
            Packed::new(&holder, r.count, r.first_seen, r.last_seen),
        );
        Ok(())
    }

    /// Forgets a key (it was closed).
    pub fn remove(&mut self, slot: &Slot) {
        self.map.remove(slot);
    }

    /// The atomic check-and-open: reserves the key for `referral` unless it is open.
    pub fn check_and_open(
        &mut self,
        slot: Slot,
        referral: &EnvelopeId,
        now: DateTime<Utc>,
    ) -> Result<Check, String> {
        let holder = pack_id(referral)?;
        match self.map.get(&slot) {
            Some(p) if p.holder() == holder => Ok(Check::Held),
            Some(p) => Ok(Check::Other(p.record()?)),
            None => {
                self.map.insert(slot, Packed::new(&holder, 1, now, now));
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
        assert_eq!(m.get(&s2).unwrap(), Some(r2));
        assert_eq!(m.len(), 2);
        assert!(m.approx_bytes() >= 2 * 58);
        m.remove(&s1);
        assert_eq!(m.get(&s1).unwrap(), None);
    }
}
