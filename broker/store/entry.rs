//! One audit entry: its typed content, its canonical bytes and its RFC 9162 leaf hash.
//!
//! An entry is `seq, time, event, envelope, participant, destination, sha256, detail`, encoded
//! as compact JSON with exactly that field order, absent fields as `null`, `time` in UTC with
//! milliseconds (`2025-01-02T03:04:05.678Z`), `sha256` in lowercase hex and `detail` the
//! event's own fields in their declared order. That encoding is canonical: [`Entry::decode`]
//! re-encodes what it parsed and refuses bytes that differ, so an entry has exactly one byte
//! form, and the leaf hash (SHA-256 of `0x00 || bytes`) is computed once, at construction.
//!
//! Every `detail` carries what the indexes need (`index.rs`), so sled can be rebuilt
//! from the entries alone.
//!
//! Pure code: no I/O.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::ids::{EnvelopeId, KeyId, ParticipantId};
use crate::reason::ReasonCode;
use crate::wire::{HashAlgorithm, Kind, Outcome, State};

/// The longest encoded entry the store accepts (bytes). Entries are small (ids, hashes, a
/// detail of a few fields); the bound keeps a damaged length prefix from being believed.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// The position of an entry in the log, from 0. It is also the entry's leaf index in the
/// Merkle tree, so the tree size after entry `seq` is `seq + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// SHA-256 of a normalised URL ([`crate::urlnorm::NormalisedUrl::dedup_key`]), hex in entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UrlKey(pub [u8; 32]);

/// A SHA-256 digest of message bytes, hex in entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

macro_rules! hex32 {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(self.0))
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let mut out = [0u8; 32];
                if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(serde::de::Error::custom(
                        "expected 64 lowercase hex characters",
                    ));
                }
                hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
                Ok(Self(out))
            }
        }
    };
}
hex32!(UrlKey);
hex32!(Sha256Digest);

/// A content hash carried by an item (algorithm + value as on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashRef {
    pub algorithm: HashAlgorithm,
    pub value: String,
}

/// What the indexes need to know about one item of a referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFacts {
    /// The item's URL dedup key.
    pub url_key: UrlKey,
    /// The item's content hashes.
    pub hashes: Vec<HashRef>,
}

/// An envelope passed the ingress checks. `envelope` = its id, `participant` = its origin,
/// `sha256` = its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub kind: Kind,
    /// For a referral, its items in order (index = position); empty for other kinds.
    pub items: Vec<ItemFacts>,
}

/// An ingress message failed a check. `envelope`/`participant` when they were known,
/// `sha256` = the raw bytes (kept in quarantine when `quarantined`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub code: ReasonCode,
    /// The raw bytes went to the `quarantine` queue (and the body store).
    pub quarantined: bool,
}

/// Items of a referral routed to `destination` (the URL keys of these items are now open
/// there, first referral = this envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routed {
    pub items: Vec<u16>,
    /// Why this destination (e.g. `explicit`, `country`, `fallback`, `urgent_lea`).
    pub reason: String,
}

/// One item not forwarded to `destination` because its URL key is open there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateItem {
    pub item: u16,
    pub url_key: UrlKey,
    /// The referral that opened the key at that destination.
    pub first_referral: EnvelopeId,
}

/// Items of a referral suppressed at `destination` as duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    pub items: Vec<DuplicateItem>,
}

/// RabbitMQ confirmed the publish of the envelope to `destination`'s inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub items: Vec<u16>,
    /// SHA-256 of the `x-attestation` bytes that went with it.
    pub attestation_sha256: Option<Sha256Digest>,
}

/// The broker sent a notice to `destination`. `envelope` = what it is about (if anything),
/// `sha256` = the notice's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeSent {
    /// The notice's own envelope id.
    pub notice: EnvelopeId,
    pub code: ReasonCode,
    /// For `duplicate` notices: the referral that was first.
    pub first_referral: Option<EnvelopeId>,
}

/// A receipt from a destination about `referral`. `envelope` = the receipt's id,
/// `participant` = its sender, `destination` = the referral's origin it was forwarded to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptEvent {
    pub referral: EnvelopeId,
    pub outcome: Outcome,
}

/// A status of one item of `referral`. `participant` = the destination that sent it; a
/// `removed` state closes the item's URL key there (if this referral is the one that opened it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub referral: EnvelopeId,
    pub item: u16,
    pub state: State,
    pub url_key: Option<UrlKey>,
}

/// The origin retracted items of `referral`: their URL keys opened by it close everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetractionEvent {
    pub referral: EnvelopeId,
    pub items: Vec<u16>,
}

/// A signed checkpoint of the tree at `size` (the entries before this one, or fewer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEvent {
    pub size: u64,
    pub root: Sha256Digest,
    /// The signed note, exactly as sent to participants.
    pub note: String,
}

/// A participant was added, changed or removed in the registry the broker runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantChange {
    pub participant: ParticipantId,
    /// `added`, `changed` or `removed`.
    pub change: String,
}

/// A participant's signing key was added, revoked or expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    pub participant: ParticipantId,
    pub key: KeyId,
    /// `added`, `revoked`, `expired`, `removed`.
    pub change: String,
}

/// Stored message bodies older than `older_than` were dropped (their hashes stay in entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeEvent {
    pub older_than: DateTime<Utc>,
    pub bodies: u64,
}

/// What happened: one variant per audit event, each with its `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Received(Received),
    Rejected(Rejected),
    Routed(Routed),
    Duplicate(Duplicate),
    Delivered(Delivered),
    NoticeSent(NoticeSent),
    Receipt(ReceiptEvent),
    Status(StatusEvent),
    Retraction(RetractionEvent),
    Checkpoint(CheckpointEvent),
    ParticipantChange(ParticipantChange),
    KeyChange(KeyChange),
    Purge(PurgeEvent),
}

macro_rules! events {
    ($($variant:ident => $name:literal),* $(,)?) => {
        impl Event {
            /// Every event name, as written in entries.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The event's name in entries (`received`, `routed`, …).
            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant(_) => $name),* }
            }

            fn detail_json(&self) -> String {
                // Serialising these plain structs to a String cannot fail (no maps with
                // non-string keys, no failing Serialize impls).
                match self {
                    $(Self::$variant(d) => serde_json::to_string(d)
                        .expect("detail structs always serialise")),*
                }
            }

            fn from_parts(name: &str, detail: serde_json::Value) -> Result<Self, EntryError> {
                match name {
                    $($name => serde_json::from_value(detail)
                        .map(Self::$variant)
                        .map_err(|e| EntryError::Detail(name.to_owned(), e.to_string())),)*
                    other => Err(EntryError::UnknownEvent(other.to_owned())),
                }
            }
        }
    };
}

events! {
    Received => "received",
    Rejected => "rejected",
    Routed => "routed",
    Duplicate => "duplicate",
    Delivered => "delivered",
    NoticeSent => "notice",
    Receipt => "receipt",
    Status => "status",
    Retraction => "retraction",
    Checkpoint => "checkpoint",
    ParticipantChange => "participant",
    KeyChange => "key",
    Purge => "purge",
}

/// What a caller hands to [`super::Store::append`]; the store adds `seq` and `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub event: Event,
    pub envelope: Option<EnvelopeId>,
    pub participant: Option<ParticipantId>,
    pub destination: Option<ParticipantId>,
    /// SHA-256 of the message bytes the event is about.
    pub sha256: Option<Sha256Digest>,
}

impl NewEntry {
    /// An entry with only its event; set the other fields with the builder methods.
    pub fn new(event: Event) -> Self {
        Self {
            event,
            envelope: None,
            participant: None,
            destination: None,
            sha256: None,
        }
    }

    pub fn envelope(mut self, id: EnvelopeId) -> Self {
        self.envelope = Some(id);
        self
    }

    pub fn participant(mut self, id: ParticipantId) -> Self {
        self.participant = Some(id);
        self
    }

    pub fn destination(mut self, id: ParticipantId) -> Self {
        self.destination = Some(id);
        self
    }

    /// Records the SHA-256 of `bytes`.
    pub fn message(mut self, bytes: &[u8]) -> Self {
        self.sha256 = Some(Sha256Digest::of(bytes));
        self
    }
}

/// An entry of the log: its fields, its exact bytes and its leaf hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: Seq,
    /// UTC, milliseconds.
    pub time: DateTime<Utc>,
    pub event: Event,
    pub envelope: Option<EnvelopeId>,
    pub participant: Option<ParticipantId>,
    pub destination: Option<ParticipantId>,
    pub sha256: Option<Sha256Digest>,
    bytes: Vec<u8>,
    leaf_hash: [u8; 32],
}

/// Why bytes are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    #[error("not an entry: {0}")]
    Json(String),
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("detail of {0:?}: {1}")]
    Detail(String, String),
    #[error("not in canonical form (the same entry re-encodes to different bytes)")]
    NotCanonical,
    #[error("entry of {0} bytes exceeds the limit of {MAX_ENTRY_BYTES}")]
    TooLarge(usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    seq: u64,
    time: DateTime<Utc>,
    event: String,
    envelope: Option<EnvelopeId>,
    participant: Option<ParticipantId>,
    destination: Option<ParticipantId>,
    sha256: Option<Sha256Digest>,
    detail: serde_json::Value,
}

/// RFC 9162 leaf hash: SHA-256(0x00 || bytes) ([`crate::audit::merkle::leaf_hash`]).
pub fn leaf_hash(bytes: &[u8]) -> [u8; 32] {
    crate::audit::merkle::leaf_hash(bytes)
}

fn json_str(s: &str) -> String {
    // A &str always serialises.
    serde_json::to_string(s).expect("strings always serialise")
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    match v {
        Some(v) => json_str(&v.to_string()),
        None => "null".to_owned(),
    }
}

impl Entry {
    /// Builds the entry `seq` at `time` (truncated to milliseconds): encodes it and computes
    /// its leaf hash.
    pub fn new(seq: Seq, time: DateTime<Utc>, new: NewEntry) -> Result<Self, EntryError> {
        let time = time.trunc_subsecs(3);
        let bytes = format!(
            "{{\"seq\":{},\"time\":{},\"event\":{},\"envelope\":{},\"participant\":{},\
             \"destination\":{},\"sha256\":{},\"detail\":{}}}",
            seq.0,
            json_str(&time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
            json_str(new.event.name()),
            opt(&new.envelope.as_ref().map(|e| e.as_str())),
            opt(&new.participant.as_ref().map(|p| p.as_str())),
            opt(&new.destination.as_ref().map(|p| p.as_str())),
            opt(&new.sha256),
            new.event.detail_json(),
        )
        .into_bytes();
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let leaf_hash = leaf_hash(&bytes);
        Ok(Self {
            seq,
            time,
            event: new.event,
            envelope: new.envelope,
            participant: new.participant,
            destination: new.destination,
            sha256: new.sha256,
            bytes,
            leaf_hash,
        })
    }

    /// Parses stored bytes; refuses anything that is not the canonical encoding of an entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let w: WireEntry =
            serde_json::from_slice(bytes).map_err(|e| EntryError::Json(e.to_string()))?;
        let event = Event::from_parts(&w.event, w.detail)?;
        let entry = Self::new(
            Seq(w.seq),
            w.time,
            NewEntry {
                event,
                envelope: w.envelope,
                participant: w.participant,
                destination: w.destination,
                sha256: w.sha256,
            },
        )?;
        if entry.bytes != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The entry's exact bytes, as stored and hashed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// RFC 9162 leaf hash of [`Self::bytes`], computed at construction.
    pub fn leaf_hash(&self) -> &[u8; 32] {
        &self.leaf_hash
    }

    /// The referral this entry is about: the `envelope` for referral events, the `referral`
    /// field for receipts, statuses and retractions.
    pub fn referral(&self) -> Option<&EnvelopeId> {
        match &self.event {
            Event::Receipt(r) => Some(&r.referral),
            Event::Status(s) => Some(&s.referral),
            Event::Retraction(r) => Some(&r.referral),
            _ => self.envelope.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewEntry {
        NewEntry::new(Event::Routed(Routed {
            items: vec![0, 2],
            reason: "country".into(),
        }))
        .envelope("0190f5c2-6c4e-7cc3-9d1a-3b8e2f1a4c5d".parse().unwrap())
        .participant("fr.pointdecontact".parse().unwrap())
        .destination("de.eco".parse().unwrap())
        .message(b"{}")
    }

    #[test]
    fn encoding_is_fixed_and_round_trips() {
        let t = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678901Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = Entry::new(Seq(7), t, sample()).unwrap();
        let text = std::str::from_utf8(e.bytes()).unwrap();
        assert_eq!(
            text,
            "{\"seq\":7,\"time\":\"2025-01-02T03:04:05.678Z\",\"event\":\"routed\",\
             \"envelope\":\"0190f5c2-6c4e-7cc3-9d1a-3b8e2f1a4c5d\",\"participant\":\
             \"fr.pointdecontact\",\"destination\":\"de.eco\",\"sha256\":\
             \"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\",\
             \"detail\":{\"items\":[0,2],\"reason\":\"country\"}}"
        );
        let back = Entry::decode(e.bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.leaf_hash(), &leaf_hash(e.bytes()));
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let e = Entry::new(Seq(1), Utc::now(), sample()).unwrap();
        let text = std::str::from_utf8(e.bytes()).unwrap();
        let spaced = text.replacen("\"seq\":1", "\"seq\": 1", 1);
        assert_eq!(
            Entry::decode(spaced.as_bytes()),
            Err(EntryError::NotCanonical)
        );
        let upper = text.replace("44136fa3", "44136FA3");
        assert!(Entry::decode(upper.as_bytes()).is_err());
    }

    #[test]
    fn every_event_round_trips() {
        let id: EnvelopeId = "0190f5c2-6c4e-7cc3-9d1a-3b8e2f1a4c5d".parse().unwrap();
        let p: ParticipantId = "fr.pointdecontact".parse().unwrap();
        let events = vec![
            Event::Received(Received {
                kind: Kind::Referral,
                items: vec![ItemFacts {
                    url_key: UrlKey([1; 32]),
                    hashes: vec![HashRef {
                        algorithm: HashAlgorithm::Md5,
                        value: "0".repeat(32),
                    }],
                }],
            }),
            Event::Rejected(Rejected {
                code: ReasonCode::BadSignature,
                quarantined: true,
            }),
            Event::Duplicate(Duplicate {
                items: vec![DuplicateItem {
                    item: 1,
                    url_key: UrlKey([2; 32]),
                    first_referral: id.clone(),
                }],
            }),
            Event::Delivered(Delivered {
                items: vec![1],
                attestation_sha256: Some(Sha256Digest([3; 32])),
            }),
            Event::NoticeSent(NoticeSent {
                notice: id.clone(),
                code: ReasonCode::Replayed,
                first_referral: None,
            }),
            Event::Receipt(ReceiptEvent {
                referral: id.clone(),
                outcome: Outcome::Accepted,
            }),
            Event::Status(StatusEvent {
                referral: id.clone(),
                item: 0,
                state: State::Removed,
                url_key: Some(UrlKey([4; 32])),
            }),
            Event::Retraction(RetractionEvent {
                referral: id.clone(),
                items: vec![0],
            }),
            Event::Checkpoint(CheckpointEvent {
                size: 10,
                root: Sha256Digest([5; 32]),
                note: "example.test/log\n10\nAAAA\n\n— x y\n".into(),
            }),
            Event::ParticipantChange(ParticipantChange {
                participant: p.clone(),
                change: "added".into(),
            }),
            Event::KeyChange(KeyChange {
                participant: p,
                key: "0123456789abcdef".parse().unwrap(),
                change: "revoked".into(),
            }),
            Event::Purge(PurgeEvent {
                older_than: Utc::now().trunc_subsecs(0),
                bodies: 3,
            }),
        ];
        for (i, ev) in events.into_iter().enumerate() {
            let e = Entry::new(Seq(i as u64), Utc::now(), NewEntry::new(ev)).unwrap();
            assert_eq!(Entry::decode(e.bytes()).unwrap(), e, "{}", e.event.name());
        }
    }
}
