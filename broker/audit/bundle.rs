//! The evidence bundle: every audit entry about one envelope, each with its exact bytes, its
//! sequence number (= leaf index) and its inclusion proof against one broker-signed
//! checkpoint. Anyone holding only the bundle and the broker's public key can check it
//! offline with [`check_bundle`] (`referral-broker audit check-bundle`).
//!
//! The file is JSON, versioned (`format` + `version`), written by [`Bundle::to_bytes`] in one
//! canonical form (pretty-printed, fields in a fixed order, a final newline). [`check_bundle`]:
//! 1. refuses more than [`MAX_BUNDLE_BYTES`], unknown fields, and any byte sequence that is
//!    not exactly the canonical form of what it parsed — so **any changed byte fails**, even
//!    in whitespace (a bundle is an exhibit: keep the file as written);
//! 2. verifies the checkpoint's signature with the given key (signature first), then parses it;
//! 3. for each entry: decodes it ([`crate::store::entry::Entry::decode`], canonical too),
//!    checks its `seq` field against the bundle's, that it is about the bundle's envelope,
//!    that it lies inside the checkpoint, and its inclusion proof from its leaf hash to the
//!    checkpoint's root.
//!
//! What a bundle proves, and what it does not: that each entry, with exactly these bytes, is
//! entry `seq` of the log whose head the broker signed in the checkpoint — so the broker can
//! no longer deny or change them without the participants' checkpoints exposing it. It does
//! not prove that no other entry about the envelope exists (completeness): an omitted entry
//! cannot be seen from inclusion proofs. `audit verify` on the whole log answers that.
//!
//! Pure code: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::checkpoint::{BrokerCheckpoint, CheckpointError};
use super::merkle::{Hash, LeafSource};
use super::proof::{ProofError, VerifyError, inclusion_proof, verify_inclusion};
use crate::ids::{EnvelopeId, KeyId};
use crate::signing::{VerifyingKey, key_id_of};
use crate::store::entry::{Entry, EntryError};

/// The `format` field of every bundle.
pub const BUNDLE_FORMAT: &str = "referral-broker/evidence-bundle";
/// The only version this implementation writes and reads.
pub const BUNDLE_VERSION: u32 = 1;
/// Largest bundle accepted (bytes).
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024 * 1024;
/// Most entries in one bundle.
pub const MAX_BUNDLE_ENTRIES: usize = 10_000;

/// An evidence bundle, as stored in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Always [`BUNDLE_VERSION`].
    pub version: u32,
    /// The envelope (a referral, usually) the entries are about.
    pub envelope: EnvelopeId,
    /// The key id of the broker key that signed the checkpoint (which key to check it with).
    pub broker_key_id: KeyId,
    /// The name on the broker's signature line of the checkpoint.
    pub key_name: String,
    /// The broker-signed checkpoint (C2SP signed note), exactly as the broker wrote it.
    pub checkpoint: String,
    /// The entries, in log order.
    pub entries: Vec<BundleEntry>,
}

/// One entry of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    /// Sequence number = leaf index in the tree.
    pub seq: u64,
    /// The entry's bytes exactly as in the log (standard base64).
    #[serde(with = "b64_bytes")]
    pub entry: Vec<u8>,
    /// Inclusion proof of leaf `seq` in the checkpoint's tree (standard base64 hashes).
    #[serde(with = "b64_hashes")]
    pub proof: Vec<Hash>,
}

/// Why a bundle does not check.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    #[error("the bundle is {0} bytes; at most {MAX_BUNDLE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("not an evidence bundle: {0}")]
    Json(String),
    #[error(
        "the bundle is not byte for byte as written (a bundle is checked exactly; any change, \
         even to spacing, breaks it)"
    )]
    NotCanonical,
    #[error("unknown bundle format {format:?} version {version}")]
    UnknownFormat { format: String, version: u32 },
    #[error("the bundle has {0} entries; 1 to {MAX_BUNDLE_ENTRIES} are accepted")]
    EntryCount(usize),
    #[error("the bundle names broker key {bundle}, but the key given is {given}")]
    WrongKey { bundle: KeyId, given: KeyId },
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the bundle's key name {bundle:?} is not the checkpoint's signer {signed:?}")]
    KeyNameMismatch { bundle: String, signed: String },
    #[error("entry {seq}: entries must be in increasing sequence order")]
    Order { seq: u64 },
    #[error("entry {seq}: beyond the checkpoint, which covers {size} entries")]
    NotCovered { seq: u64, size: u64 },
    #[error("entry {seq}: not a valid audit entry: {source}")]
    Entry { seq: u64, source: EntryError },
    #[error("entry {seq}: its bytes say seq {inner}")]
    SeqMismatch { seq: u64, inner: u64 },
    #[error("entry {seq}: not about envelope {envelope}")]
    NotAboutEnvelope { seq: u64, envelope: EnvelopeId },
    #[error("entry {seq}: inclusion proof: {source}")]
    Proof { seq: u64, source: VerifyError },
}

/// What a bundle that checks proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    pub envelope: EnvelopeId,
    /// The checkpoint, signature verified.
    pub checkpoint: BrokerCheckpoint,
    /// The entries, decoded; each is proven to be entry `seq` of the checkpoint's tree.
    pub entries: Vec<Entry>,
}

impl Bundle {
    /// Builds a bundle: an inclusion proof for each `(seq, entry bytes)` (in log order) in the
    /// checkpoint's tree, from `source` (the log's leaf hashes; see
    /// [`super::merkle::TiledLeaves`] for large logs).
    pub fn prove<S: LeafSource>(
        envelope: EnvelopeId,
        checkpoint: &BrokerCheckpoint,
        broker_key: &VerifyingKey,
        entries: Vec<(u64, Vec<u8>)>,
        source: &mut S,
    ) -> Result<Bundle, ProofError<S::Error>> {
        let mut out = Vec::with_capacity(entries.len());
        for (seq, bytes) in entries {
            let proof = inclusion_proof(source, seq, checkpoint.size)?;
            out.push(BundleEntry {
                seq,
                entry: bytes,
                proof,
            });
        }
        Ok(Bundle {
            format: BUNDLE_FORMAT.to_owned(),
            version: BUNDLE_VERSION,
            envelope,
            broker_key_id: key_id_of(broker_key),
            key_name: checkpoint.key_name.clone(),
            checkpoint: checkpoint.note.clone(),
            entries: out,
        })
    }

    /// The canonical bytes of the bundle (what `audit prove` writes).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain strings, numbers and lists: serialising cannot fail.
        let mut v = serde_json::to_vec_pretty(self).expect("a bundle always serialises");
        v.push(b'\n');
        v
    }
}

/// Checks a bundle offline with the broker's public key; see the module documentation.
pub fn check_bundle(bytes: &[u8], broker_key: &VerifyingKey) -> Result<BundleReport, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(bytes.len()));
    }
    let bundle: Bundle =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
    if bundle.to_bytes() != bytes {
        return Err(BundleError::NotCanonical);
    }
    if bundle.format != BUNDLE_FORMAT || bundle.version != BUNDLE_VERSION {
        return Err(BundleError::UnknownFormat {
            format: bundle.format,
            version: bundle.version,
        });
    }
    if bundle.entries.is_empty() || bundle.entries.len() > MAX_BUNDLE_ENTRIES {
        return Err(BundleError::EntryCount(bundle.entries.len()));
    }
    let given = key_id_of(broker_key);
    if bundle.broker_key_id != given {
        return Err(BundleError::WrongKey {
            bundle: bundle.broker_key_id,
            given,
        });
    }
    // Signature first: BrokerCheckpoint::verify parses the note only after it verifies.
    let checkpoint = BrokerCheckpoint::verify(&bundle.checkpoint, broker_key, None)?;
    if checkpoint.key_name != bundle.key_name {
        return Err(BundleError::KeyNameMismatch {
            bundle: bundle.key_name,
            signed: checkpoint.key_name,
        });
    }
    let mut entries = Vec::with_capacity(bundle.entries.len());
    let mut previous: Option<u64> = None;
    for e in &bundle.entries {
        let seq = e.seq;
        if previous.is_some_and(|p| p >= seq) {
            return Err(BundleError::Order { seq });
        }
        previous = Some(seq);
        if seq >= checkpoint.size {
            return Err(BundleError::NotCovered {
                seq,
                size: checkpoint.size,
            });
        }
        let entry = Entry::decode(&e.entry).map_err(|source| BundleError::Entry { seq, source })?;
        if entry.seq.get() != seq {
            return Err(BundleError::SeqMismatch {
                seq,
                inner: entry.seq.get(),
            });
        }
        let about = entry.referral() == Some(&bundle.envelope)
            || entry.envelope.as_ref() == Some(&bundle.envelope);
        if !about {
            return Err(BundleError::NotAboutEnvelope {
                seq,
                envelope: bundle.envelope,
            });
        }
        verify_inclusion(
            entry.leaf_hash(),
            seq,
            checkpoint.size,
            &e.proof,
            &checkpoint.root,
        )
        .map_err(|source| BundleError::Proof { seq, source })?;
        entries.push(entry);
    }
    Ok(BundleReport {
        envelope: bundle.envelope,
        checkpoint,
        entries,
    })
}

mod b64_bytes {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        B64.decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("not canonical standard base64"))
    }
}

mod b64_hashes {
    use super::*;
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    /// A proof never has more hashes than this (64 levels and the right border).
    const MAX_PROOF_HASHES: usize = 128;

    pub fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&B64.encode(h))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let texts = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        if texts.len() > MAX_PROOF_HASHES {
            return Err(serde::de::Error::custom("proof too long"));
        }
        texts
            .iter()
            .map(|t| {
                B64.decode(t.as_bytes())
                    .ok()
                    .and_then(|v| Hash::try_from(v).ok())
                    .ok_or_else(|| serde::de::Error::custom("not base64 of a 32-byte hash"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::CompactTree;
    use crate::signing::Signer;
    use crate::store::entry::{Delivered, Event, NewEntry, ReceiptEvent, Received, Routed, Seq};
    use crate::wire::{Kind, Outcome};
    use chrono::{DateTime, Utc};

    fn t(s: &str) -> DateTime<Utc> {
        crate::wire::time::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    fn id(s: &str) -> EnvelopeId {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// A log of 11 entries, 4 of them about the referral, a checkpoint of it and a bundle.
    fn fixture() -> (Signer, Bundle, Vec<Entry>) {
        let signer = Signer::from_seed([42; 32]);
        let referral = id("0190f5c2-6c4e-7cc3-9d1a-3b8e2f1a4c5d");
        let other = id("0190f5c2-6c4e-7cc3-9d1a-3b8e2f1a4c5e");
        let origin: crate::ids::ParticipantId = "fr.hotline-example"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let dest: crate::ids::ParticipantId = "de.hotline-example"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut entries = Vec::new();
        for i in 0..11u64 {
            let env = if [2, 3, 5, 9].contains(&i) {
                &referral
            } else {
                &other
            };
            let event = match i {
                2 => Event::Received(Received {
                    kind: Kind::Referral,
                    items: vec![],
                }),
                3 => Event::Routed(Routed {
                    items: vec![0],
                    reason: "country".into(),
                }),
                5 => Event::Delivered(Delivered {
                    items: vec![0],
                    attestation_sha256: None,
                }),
                9 => Event::Receipt(ReceiptEvent {
                    referral: referral.clone(),
                    outcome: Outcome::Accepted,
                }),
                _ => Event::Received(Received {
                    kind: Kind::Referral,
                    items: vec![],
                }),
            };
            let envelope = if i == 9 {
                id("0190f5c2-6c4e-7cc3-9d1a-3b8e2f1a4c5f")
            } else {
                env.clone()
            };
            let new = NewEntry::new(event)
                .envelope(envelope)
                .participant(origin.clone())
                .destination(dest.clone())
                .message(format!("message {i}").as_bytes());
            let time = t("2026-11-25T10:00:00Z") + chrono::Duration::seconds(i as i64);
            entries.push(Entry::new(Seq(i), time, new).unwrap_or_else(|e| panic!("{e}")));
        }
        let leaves: Vec<Hash> = entries.iter().map(|e| *e.leaf_hash()).collect();
        let mut tree = CompactTree::new();
        leaves.iter().for_each(|l| tree.push(*l));
        let cp = BrokerCheckpoint::sign(
            "broker.referral-example/audit",
            11,
            tree.root(),
            t("2026-11-25T10:01:00Z"),
            "broker.referral-example",
            &signer,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let about: Vec<(u64, Vec<u8>)> = [2u64, 3, 5, 9]
            .iter()
            .map(|&i| (i, entries[i as usize].bytes().to_vec()))
            .collect();
        let mut src: &[Hash] = &leaves;
        let bundle = Bundle::prove(referral, &cp, &signer.verifying_key(), about, &mut src)
            .unwrap_or_else(|e| panic!("{e}"));
        (signer, bundle, entries)
    }

    #[test]
    fn a_bundle_checks_offline_with_the_key_alone() {
        let (signer, bundle, entries) = fixture();
        let bytes = bundle.to_bytes();
        let report =
            check_bundle(&bytes, &signer.verifying_key()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.checkpoint.size, 11);
        assert_eq!(report.entries.len(), 4);
        assert_eq!(report.entries[3], entries[9]);
        // Another key: refused by name before anything else.
        let other = Signer::from_seed([1; 32]);
        assert!(matches!(
            check_bundle(&bytes, &other.verifying_key()),
            Err(BundleError::WrongKey { .. })
        ));
    }

    #[test]
    fn every_changed_byte_fails() {
        let (signer, bundle, _) = fixture();
        let bytes = bundle.to_bytes();
        let key = signer.verifying_key();
        assert!(bytes.len() > 2000);
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x02, 0x10, 0x20, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                assert!(
                    check_bundle(&b, &key).is_err(),
                    "byte {i} ({:?}) ^ {flip:#04x} accepted",
                    bytes[i] as char
                );
            }
        }
        // Removing or adding one byte anywhere fails too.
        for i in (0..bytes.len()).step_by(7) {
            let mut shorter = bytes.clone();
            shorter.remove(i);
            assert!(check_bundle(&shorter, &key).is_err(), "without byte {i}");
            let mut longer = bytes.clone();
            longer.insert(i, b' ');
            assert!(
                check_bundle(&longer, &key).is_err(),
                "space before byte {i}"
            );
        }
    }

    #[test]
    fn semantic_tampering_is_named() {
        let (signer, bundle, entries) = fixture();
        let key = signer.verifying_key();
        let check = |b: &Bundle| check_bundle(&b.to_bytes(), &key);
        // An entry swapped for another of the log (same envelope field): its proof fails.
        let mut b = bundle.clone();
        b.entries[1].entry = entries[4].bytes().to_vec();
        assert!(matches!(
            check(&b),
            Err(BundleError::SeqMismatch { seq: 3, inner: 4 })
        ));
        let mut b = bundle.clone();
        b.entries[1].seq = 4;
        assert!(matches!(
            check(&b),
            Err(BundleError::SeqMismatch { seq: 4, inner: 3 })
        ));
        // An entry about another envelope.
        let mut b = bundle.clone();
        b.entries[0] = BundleEntry {
            seq: 0,
            entry: entries[0].bytes().to_vec(),
            proof: vec![],
        };
        assert!(matches!(
            check(&b),
            Err(BundleError::NotAboutEnvelope { seq: 0, .. })
        ));
        // Out of order, duplicated, beyond the checkpoint, empty.
        let mut b = bundle.clone();
        b.entries.swap(0, 1);
        assert!(matches!(check(&b), Err(BundleError::Order { .. })));
        let mut b = bundle.clone();
        b.entries[3].seq = 11;
        assert!(matches!(
            check(&b),
            Err(BundleError::NotCovered { seq: 11, size: 11 })
        ));
        let mut b = bundle.clone();
        b.entries.clear();
        assert!(matches!(check(&b), Err(BundleError::EntryCount(0))));
        // A proof hash changed.
        let mut b = bundle.clone();
        b.entries[2].proof[0][5] ^= 1;
        assert!(matches!(
            check(&b),
            Err(BundleError::Proof {
                seq: 5,
                source: VerifyError::RootMismatch
            })
        ));
        // A checkpoint of a different tree, validly signed: the proofs fail.
        let mut b = bundle.clone();
        let cp = BrokerCheckpoint::sign(
            "broker.referral-example/audit",
            11,
            [0; 32],
            t("2026-11-25T10:01:00Z"),
            "broker.referral-example",
            &signer,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        b.checkpoint = cp.note;
        assert!(matches!(check(&b), Err(BundleError::Proof { seq: 2, .. })));
        // The key name differs from the checkpoint's signer.
        let mut b = bundle.clone();
        b.key_name = "someone.else".into();
        assert!(matches!(
            check(&b),
            Err(BundleError::KeyNameMismatch { .. })
        ));
        // Unknown version.
        let mut b = bundle;
        b.version = 2;
        assert!(matches!(check(&b), Err(BundleError::UnknownFormat { .. })));
        assert!(matches!(
            check_bundle(&vec![b' '; MAX_BUNDLE_BYTES + 1], &key),
            Err(BundleError::TooLarge(_))
        ));
    }
}
