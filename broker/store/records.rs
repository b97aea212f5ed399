//! The records the indexes hold, as the rest of the broker reads them. Each one is derived
//! from audit entries only (see `index.rs`), so `audit rebuild-index` reproduces it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::entry::{ItemFacts, Seq, Sha256Digest};
use crate::ids::{EnvelopeId, ParticipantId};
use crate::reason::ReasonCode;
use crate::wire::Kind;

/// What was done with one envelope id: the daemon reads it to tell a redelivery (finish
/// what is missing) from a replay (notice `replayed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeRecord {
    /// Who sent it (the `participant` of its first entry).
    pub origin: Option<ParticipantId>,
    /// Its kind, once received.
    pub kind: Option<Kind>,
    /// The `received` entry.
    pub received: Option<Seq>,
    /// The `rejected` entry and its code.
    pub rejected: Option<(ReasonCode, Seq)>,
    /// Per destination: what was routed, suppressed and delivered there.
    pub destinations: BTreeMap<ParticipantId, DestinationOutcome>,
    /// Notices sent about this envelope.
    pub notices: Vec<NoticeRecord>,
}

/// The outcome of one envelope at one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationOutcome {
    /// Items routed there, and the `routed` entry.
    pub routed: Option<(Vec<u16>, Seq)>,
    /// Items suppressed there as duplicates, and the `duplicate` entry.
    pub duplicates: Option<(Vec<u16>, Seq)>,
    /// The `delivered` entry (publish confirmed).
    pub delivered: Option<Seq>,
}

/// One notice sent about an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRecord {
    pub to: ParticipantId,
    pub code: ReasonCode,
    pub notice: EnvelopeId,
    pub seq: Seq,
}

/// The state of one URL key at one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlKeyRecord {
    /// Open: a new report of the URL to this destination is a duplicate.
    pub open: bool,
    /// The referral that opened it (most recently).
    pub first_referral: EnvelopeId,
    /// Reports of this URL to this destination while open, the first included.
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// The answer of [`super::Store::url_check_and_open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlCheck {
    /// The key was closed or unknown and is now open with this referral as first (or it was
    /// already opened by this same referral: a redelivery).
    Opened,
    /// The key is open by another referral: do not forward this item.
    Duplicate {
        first_referral: EnvelopeId,
        count: u64,
        first_seen: DateTime<Utc>,
    },
}

/// The first time a content hash was seen, and how often since. Never suppresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashSighting {
    pub first_referral: EnvelopeId,
    pub first_seen: DateTime<Utc>,
    pub count: u64,
}

/// What the broker knows of one referral: who sent it, its items, where it went and every
/// entry about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralRecord {
    pub origin: ParticipantId,
    pub items: Vec<ItemFacts>,
    /// Destination → item indexes routed there.
    pub destinations: BTreeMap<ParticipantId, Vec<u16>>,
}

/// Where an entry is in the log (for reading it back without a scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPos {
    pub seq: Seq,
    /// First seq of the segment file that holds it.
    pub segment: u64,
    /// Byte offset of its frame in that segment.
    pub offset: u64,
}

/// A checkpoint as recorded in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The `checkpoint` entry.
    pub seq: Seq,
    pub time: DateTime<Utc>,
    /// Tree size it covers.
    pub size: u64,
    pub root: Sha256Digest,
    /// The signed note, exactly as sent.
    pub note: String,
}

/// A rejected message kept for investigation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub seq: Seq,
    pub time: DateTime<Utc>,
    pub code: ReasonCode,
    pub envelope: Option<EnvelopeId>,
    pub participant: Option<ParticipantId>,
    /// SHA-256 of the raw bytes; the bytes themselves are in the body store while retained.
    pub sha256: Option<Sha256Digest>,
}

/// The Merkle tree head of the log: size and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    pub size: u64,
    pub root: [u8; 32],
}
