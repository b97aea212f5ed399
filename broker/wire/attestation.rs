//! The broker's attestation (`schemas/attestation/1.schema.json`): what the broker states, in
//! its own name, about one message it forwarded to one destination.
//!
//! A forwarded message carries the origin's body and `x-sig` / `x-key-id` unchanged (the
//! destination verifies the origin itself, end to end) and, beside them:
//!
//! | header | value |
//! | --- | --- |
//! | [`HEADER_ORIGIN`] `x-origin` | the origin's participant id (RabbitMQ lets the broker set only its own `user_id`) |
//! | [`HEADER_ATTESTATION`] `x-attestation` | the compact JSON bytes of an [`Attestation`] |
//! | [`HEADER_ATTESTATION_SIG`] `x-attestation-sig` | standard base64 (with padding) of the ed25519 signature over those exact bytes |
//! | [`HEADER_ATTESTATION_KEY_ID`] `x-attestation-key-id` | the broker key that signed it |
//!
//! Guarantees:
//! - Pure: no tokio, no I/O, no panic on any input.
//! - [`verify`] parses nothing before the signature verified with a key of the registry's
//!   broker entry; the bytes are bounded ([`MAX_ATTESTATION_BYTES`], depth
//!   [`MAX_ATTESTATION_DEPTH`], no repeated keys) before parsing, then checked against the
//!   JSON Schema and [`Attestation::validate`] (which also checks what the schema cannot:
//!   indexes strictly increasing, duplicates disjoint from items, reasons in strength order).
//! - [`Attestation::check_against`] ties an attestation to the delivery it came with: same
//!   envelope id, kind, origin and body SHA-256, addressed to the receiver. A receiver that
//!   runs [`verify`] and then `check_against` knows that the broker routed *these* bytes to
//!   *it*, for these items and reasons, under audit entry `audit_seq`.
//! - Every attestation this module writes ([`Attestation::sign`]) passes its own `verify`:
//!   `sign` validates first and refuses an attestation that breaks the contract.
//!
//! Not guaranteed here: that `audit_seq` is in a checkpoint the receiver holds (that is the
//! audit proofs' job), nor anything about the origin's signature (the ingress checks'
//! [`crate::signing::verify`] over the body, done by the receiver too).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::check;
use super::depth;
use super::error::FieldError;
use super::json::{self, present};
use super::limits::{MAX_HASHES, MAX_ITEM_INDEX, MAX_ITEMS, MAX_TREE_SIZE};
use super::time;
use super::{Envelope, Kind};
use crate::ids::{EnvelopeId, KeyId, ParticipantId};
use crate::registry::{KeyState, Registry};
use crate::route::RouteReason;
use crate::signing::{self, Signer};

/// AMQP header: the origin of a forwarded message (`user_id` is the broker's on a forward).
pub const HEADER_ORIGIN: &str = "x-origin";
/// AMQP header: the compact JSON bytes of the [`Attestation`].
pub const HEADER_ATTESTATION: &str = "x-attestation";
/// AMQP header: base64 ed25519 signature over the attestation bytes, by the broker.
pub const HEADER_ATTESTATION_SIG: &str = "x-attestation-sig";
/// AMQP header: the [`KeyId`] of the broker key that signed the attestation.
pub const HEADER_ATTESTATION_KEY_ID: &str = "x-attestation-key-id";

/// The version this implementation writes and reads.
pub const ATTESTATION_VERSION: u32 = 1;
/// Largest attestation accepted, in bytes (it travels in an AMQP header, and all headers
/// together must fit one 128 KiB frame). The largest one [`Attestation::sign`] can produce
/// (500 items with every reason, 256 known hashes) is about 60 KiB.
pub const MAX_ATTESTATION_BYTES: usize = 96 * 1024;
/// Deepest JSON nesting of an attestation (object → array → object → array is 4).
pub const MAX_ATTESTATION_DEPTH: usize = 6;
/// Most known hashes listed; beyond, [`Attestation::known_hashes_truncated`] is set.
pub const MAX_KNOWN_HASHES: usize = 256;

/// The schema document, embedded.
pub const SCHEMA: &str = include_str!("../../schemas/attestation/1.schema.json");

/// One item of a referral routed to the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestedItem {
    /// Index in the referral's `items`.
    pub index: u16,
    /// Every rule that sent it here, strongest first.
    pub reasons: Vec<RouteReason>,
}

/// One item not to be acted on again: its URL is already open at the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duplicate {
    pub index: u16,
    /// The referral that first carried the URL to this destination.
    pub first_referral: EnvelopeId,
}

/// A hash the broker saw before (informational: never suppresses anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownHash {
    /// Index of the item in the referral.
    pub item: u16,
    /// Index of the hash in that item's `hashes`.
    pub hash: u16,
    /// The referral that first carried this hash.
    pub first_referral: EnvelopeId,
}

/// The broker's statement about one forwarded message; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub v: u32,
    /// The forwarded envelope's id.
    pub envelope: EnvelopeId,
    /// The forwarded envelope's kind (never `notice` or `checkpoint`: those are the broker's
    /// own and carry its signature directly).
    pub kind: Kind,
    pub origin: ParticipantId,
    pub destination: ParticipantId,
    /// SHA-256 of the forwarded body, lowercase hex.
    pub body_sha256: String,
    /// For a receipt, status or retraction: the referral it is about.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub referral: Option<EnvelopeId>,
    /// For a referral: the items routed here (never empty then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<AttestedItem>,
    /// For a referral: items whose URL is already open here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<Duplicate>,
    /// For a referral: hashes seen before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_hashes: Vec<KnownHash>,
    /// True when more known hashes were found than [`MAX_KNOWN_HASHES`]. Written only when
    /// true; `false` on the wire is refused (the schema's `const: true`).
    #[serde(
        default,
        skip_serializing_if = "std::ops::Not::not",
        deserialize_with = "only_true"
    )]
    pub known_hashes_truncated: bool,
    /// The audit entry that records this hand-off.
    pub audit_seq: u64,
    #[serde(with = "time::required")]
    pub attested_at: DateTime<Utc>,
}

/// An attestation as carried: its bytes, signature and key id, for the three headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAttestation {
    /// Value of [`HEADER_ATTESTATION`].
    pub bytes: Vec<u8>,
    /// Value of [`HEADER_ATTESTATION_SIG`].
    pub sig_b64: String,
    /// Value of [`HEADER_ATTESTATION_KEY_ID`].
    pub key_id: KeyId,
}

/// Why an attestation is not believed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AttestationError {
    #[error("the attestation header is missing")]
    Missing,
    #[error("the attestation is {0} bytes; at most {MAX_ATTESTATION_BYTES} are accepted")]
    TooLarge(usize),
    #[error("{HEADER_ATTESTATION_SIG} or {HEADER_ATTESTATION_KEY_ID} is missing or malformed")]
    MalformedSignature,
    #[error("key {0} is not a key of the broker in the registry")]
    UnknownKey(KeyId),
    #[error("the broker key {key} is {state} for an attestation made at {at}")]
    KeyNotValid {
        key: KeyId,
        state: &'static str,
        at: String,
    },
    #[error("the attestation signature does not verify with broker key {0}")]
    BadSignature(KeyId),
    #[error("the attestation is not well-formed: {0}")]
    Malformed(String),
    #[error("the attestation breaks its schema at {0}")]
    Invalid(FieldError),
    #[error(
        "the attestation does not match the delivery: {field} is {attested:?}, the delivery has {actual:?}"
    )]
    Mismatch {
        field: &'static str,
        attested: String,
        actual: String,
    },
}

static VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
    jsonschema::options()
        .offline()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&doc)
        .map_err(|e| e.to_string())
});

/// Check a JSON value against the embedded attestation schema.
pub fn validate_schema(instance: &Value) -> Result<(), FieldError> {
    let validator = VALIDATOR.as_ref().map_err(|e| {
        FieldError::new("", format!("the attestation schema does not compile: {e}"))
    })?;
    match validator.validate(instance) {
        Ok(()) => Ok(()),
        Err(e) => {
            let message: String = e.masked().to_string().chars().take(300).collect();
            Err(FieldError::new(e.instance_path().as_str(), message))
        }
    }
}

/// Lowercase hex SHA-256 of `body`.
pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

impl Attestation {
    /// Every bound of the schema, plus the rules it cannot express (module documentation).
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.v != ATTESTATION_VERSION {
            return Err(FieldError::new(
                "/v",
                format!("version {} is not supported", self.v),
            ));
        }
        check::envelope_id("/envelope", &self.envelope)?;
        if matches!(self.kind, Kind::Notice | Kind::Checkpoint) {
            return Err(FieldError::new(
                "/kind",
                "only referral, receipt, status and retraction are forwarded with an attestation",
            ));
        }
        if !check::lower_hex(&self.body_sha256, 64) {
            return Err(FieldError::new(
                "/body_sha256",
                "not 64 lowercase hex characters",
            ));
        }
        if self.audit_seq > MAX_TREE_SIZE {
            return Err(FieldError::new("/audit_seq", "greater than 2^53 - 1"));
        }
        check::timestamp("/attested_at", &self.attested_at)?;
        let is_referral = self.kind == Kind::Referral;
        match (&self.referral, is_referral) {
            (Some(_), true) => {
                return Err(FieldError::new("/referral", "not allowed for a referral"));
            }
            (None, false) => {
                return Err(FieldError::new(
                    "/referral",
                    "required for a receipt, status or retraction",
                ));
            }
            (Some(r), false) => check::envelope_id("/referral", r)?,
            (None, true) => {}
        }
        if !is_referral {
            let extra = [
                ("/items", !self.items.is_empty()),
                ("/duplicates", !self.duplicates.is_empty()),
                ("/known_hashes", !self.known_hashes.is_empty()),
                ("/known_hashes_truncated", self.known_hashes_truncated),
            ];
            if let Some((at, _)) = extra.iter().find(|(_, present)| *present) {
                return Err(FieldError::new(*at, "only allowed for a referral"));
            }
            return Ok(());
        }
        check::count("/items", self.items.len(), 1, MAX_ITEMS)?;
        let mut previous: Option<u16> = None;
        for (i, item) in self.items.iter().enumerate() {
            let at = format!("/items/{i}");
            index(&format!("{at}/index"), item.index)?;
            if previous.is_some_and(|p| p >= item.index) {
                return Err(FieldError::new(
                    format!("{at}/index"),
                    "indexes must be strictly increasing",
                ));
            }
            previous = Some(item.index);
            check::count(&format!("{at}/reasons"), item.reasons.len(), 1, 5)?;
            if item.reasons.windows(2).any(|w| w[0] >= w[1]) {
                return Err(FieldError::new(
                    format!("{at}/reasons"),
                    "reasons must be unique and in strength order",
                ));
            }
        }
        let routed: BTreeSet<u16> = self.items.iter().map(|i| i.index).collect();
        if !self.duplicates.is_empty() {
            check::count("/duplicates", self.duplicates.len(), 1, MAX_ITEMS)?;
        }
        let mut previous: Option<u16> = None;
        for (i, dup) in self.duplicates.iter().enumerate() {
            let at = format!("/duplicates/{i}");
            index(&format!("{at}/index"), dup.index)?;
            if previous.is_some_and(|p| p >= dup.index) {
                return Err(FieldError::new(
                    format!("{at}/index"),
                    "indexes must be strictly increasing",
                ));
            }
            previous = Some(dup.index);
            if routed.contains(&dup.index) {
                return Err(FieldError::new(
                    format!("{at}/index"),
                    "an item is either routed or a duplicate, not both",
                ));
            }
            check::envelope_id(&format!("{at}/first_referral"), &dup.first_referral)?;
        }
        if !self.known_hashes.is_empty() {
            check::count(
                "/known_hashes",
                self.known_hashes.len(),
                1,
                MAX_KNOWN_HASHES,
            )?;
        }
        for (i, known) in self.known_hashes.iter().enumerate() {
            let at = format!("/known_hashes/{i}");
            index(&format!("{at}/item"), known.item)?;
            if usize::from(known.hash) >= MAX_HASHES {
                return Err(FieldError::new(
                    format!("{at}/hash"),
                    format!("greater than {}", MAX_HASHES - 1),
                ));
            }
            check::envelope_id(&format!("{at}/first_referral"), &known.first_referral)?;
        }
        Ok(())
    }

    /// The compact JSON bytes (after [`Attestation::validate`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FieldError> {
        self.validate()?;
        let bytes = serde_json::to_vec(self).map_err(|e| FieldError::new("", e.to_string()))?;
        if bytes.len() > MAX_ATTESTATION_BYTES {
            return Err(FieldError::new(
                "",
                format!("{} bytes, more than {MAX_ATTESTATION_BYTES}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Validates, serialises and signs with the broker's key.
    pub fn sign(&self, signer: &Signer) -> Result<SignedAttestation, FieldError> {
        let bytes = self.to_bytes()?;
        let sig_b64 = signer.sign_b64(&bytes);
        Ok(SignedAttestation {
            bytes,
            sig_b64,
            key_id: signer.key_id().clone(),
        })
    }

    /// Bytes → attestation, without the signature (for tests and the contract check; a
    /// receiver calls [`verify`]): size, depth, strict JSON, schema, types, `validate`.
    pub fn decode(bytes: &[u8]) -> Result<Attestation, AttestationError> {
        if bytes.len() > MAX_ATTESTATION_BYTES {
            return Err(AttestationError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| AttestationError::Malformed(format!("not UTF-8: {e}")))?;
        depth::check_max(bytes, MAX_ATTESTATION_DEPTH).map_err(|e| {
            AttestationError::Malformed(format!(
                "nested more than {MAX_ATTESTATION_DEPTH} levels (byte {})",
                e.offset
            ))
        })?;
        let value =
            json::parse(text).map_err(|e| AttestationError::Malformed(format!("JSON: {e}")))?;
        validate_schema(&value).map_err(AttestationError::Invalid)?;
        Attestation::decode_value(value)
    }

    /// JSON value → typed attestation → `validate`, without the schema (the types alone; the
    /// contract test proves they refuse what the schema refuses).
    pub fn decode_value(value: Value) -> Result<Attestation, AttestationError> {
        let attestation: Attestation = serde_json::from_value(value)
            .map_err(|e| AttestationError::Invalid(FieldError::new("", e.to_string())))?;
        attestation.validate().map_err(AttestationError::Invalid)?;
        Ok(attestation)
    }

    /// Ties the attestation to the delivery it came with: `envelope` decoded from `body`
    /// (bytes as received), delivered to `me`. Checks envelope id, kind, origin, destination
    /// and body SHA-256.
    pub fn check_against(
        &self,
        body: &[u8],
        envelope: &Envelope,
        me: &ParticipantId,
    ) -> Result<(), AttestationError> {
        let mismatch = |field, attested: &str, actual: &str| {
            Err(AttestationError::Mismatch {
                field,
                attested: attested.to_owned(),
                actual: actual.to_owned(),
            })
        };
        if &self.destination != me {
            return mismatch("destination", self.destination.as_str(), me.as_str());
        }
        if self.envelope != envelope.id {
            return mismatch("envelope", self.envelope.as_str(), envelope.id.as_str());
        }
        if self.kind != envelope.kind {
            return mismatch("kind", self.kind.as_str(), envelope.kind.as_str());
        }
        if self.origin != envelope.origin {
            return mismatch("origin", self.origin.as_str(), envelope.origin.as_str());
        }
        let actual = sha256_hex(body);
        if self.body_sha256 != actual {
            return mismatch("body_sha256", &self.body_sha256, &actual);
        }
        Ok(())
    }
}

/// A flag that is either absent or `true`.
fn only_true<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match bool::deserialize(d)? {
        true => Ok(true),
        false => Err(serde::de::Error::custom(
            "known_hashes_truncated is either absent or true",
        )),
    }
}

fn index(at: &str, i: u16) -> Result<(), FieldError> {
    if i > MAX_ITEM_INDEX {
        return Err(FieldError::new(
            at,
            format!("greater than {MAX_ITEM_INDEX}"),
        ));
    }
    Ok(())
}

/// Verifies an attestation from its three header values against the registry's broker
/// entry, then decodes it. The key must be one of the broker's, not revoked at `now`, and its
/// validity window must hold the attestation's `attested_at`.
pub fn verify(
    bytes: &[u8],
    sig_b64: &str,
    key_id: &str,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<Attestation, AttestationError> {
    if bytes.len() > MAX_ATTESTATION_BYTES {
        return Err(AttestationError::TooLarge(bytes.len()));
    }
    let key_id: KeyId = key_id
        .parse()
        .map_err(|_| AttestationError::MalformedSignature)?;
    let signature =
        signing::decode_signature_b64(sig_b64).map_err(|_| AttestationError::MalformedSignature)?;
    let broker = registry.broker();
    let key = broker
        .key(&key_id)
        .ok_or_else(|| AttestationError::UnknownKey(key_id.clone()))?;
    if key.revoked_at.is_some_and(|at| at <= now) {
        return Err(AttestationError::KeyNotValid {
            key: key_id,
            state: "revoked",
            at: time::format(&now),
        });
    }
    signing::verify(&key.public_key, bytes, &signature)
        .map_err(|_| AttestationError::BadSignature(key_id.clone()))?;
    let attestation = Attestation::decode(bytes)?;
    let state = match key.state_at(attestation.attested_at) {
        KeyState::Valid | KeyState::Revoked => None,
        KeyState::NotYetValid => Some("not yet valid"),
        KeyState::Expired => Some("expired"),
    };
    if let Some(state) = state {
        return Err(AttestationError::KeyNotValid {
            key: key_id,
            state,
            at: time::format(&attestation.attested_at),
        });
    }
    Ok(attestation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn id(n: u8) -> EnvelopeId {
        format!("019ab9a4-8c00-7000-8000-0000000000{n:02x}")
            .parse()
            .expect("test id")
    }

    fn pid(s: &str) -> ParticipantId {
        s.parse().expect("test participant")
    }

    fn referral_attestation() -> Attestation {
        Attestation {
            v: 1,
            envelope: id(1),
            kind: Kind::Referral,
            origin: pid("fr.hotline"),
            destination: pid("de.hotline"),
            body_sha256: sha256_hex(b"body"),
            referral: None,
            items: vec![
                AttestedItem {
                    index: 0,
                    reasons: vec![RouteReason::Country, RouteReason::CopyRule],
                },
                AttestedItem {
                    index: 2,
                    reasons: vec![RouteReason::Country],
                },
            ],
            duplicates: vec![Duplicate {
                index: 1,
                first_referral: id(9),
            }],
            known_hashes: vec![KnownHash {
                item: 0,
                hash: 0,
                first_referral: id(8),
            }],
            known_hashes_truncated: false,
            audit_seq: 42,
            attested_at: "2026-11-25T10:00:00Z".parse().expect("time"),
        }
    }

    fn registry(broker_key: &Signer) -> Registry {
        let toml = format!(
            "broker = \"net.broker\"\n[[participant]]\nid = \"net.broker\"\nname = \"Broker\"\nrole = \"operator\"\n[[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2026-01-01T00:00:00Z\"\n",
            broker_key.public_key_b64()
        );
        Registry::from_toml(&toml, "test").expect("registry")
    }

    #[test]
    fn schema_compiles() {
        assert!(VALIDATOR.is_ok(), "{:?}", VALIDATOR.as_ref().err());
    }

    #[test]
    fn round_trip_through_sign_and_verify() {
        let signer = Signer::from_seed([7; 32]);
        let registry = registry(&signer);
        let a = referral_attestation();
        let signed = a.sign(&signer).expect("valid");
        let now = "2026-11-25T10:00:01Z".parse().expect("time");
        let back = verify(
            &signed.bytes,
            &signed.sig_b64,
            signed.key_id.as_str(),
            &registry,
            now,
        )
        .expect("verifies");
        assert_eq!(back, a);
        // Schema and types agree on it.
        let value: Value = serde_json::from_slice(&signed.bytes).expect("json");
        assert_eq!(validate_schema(&value), Ok(()));
    }

    #[test]
    fn tampered_bytes_or_other_key_refused() {
        let signer = Signer::from_seed([7; 32]);
        let registry = registry(&signer);
        let now = "2026-11-25T10:00:01Z".parse().expect("time");
        let signed = referral_attestation().sign(&signer).expect("valid");
        let mut bytes = signed.bytes.clone();
        let pos = bytes
            .iter()
            .position(|&b| b == b'4')
            .expect("a 4 in audit_seq");
        bytes[pos] = b'5';
        assert!(matches!(
            verify(
                &bytes,
                &signed.sig_b64,
                signed.key_id.as_str(),
                &registry,
                now
            ),
            Err(AttestationError::BadSignature(_))
        ));
        let other = Signer::from_seed([8; 32]);
        let forged = referral_attestation().sign(&other).expect("valid");
        assert!(matches!(
            verify(
                &forged.bytes,
                &forged.sig_b64,
                forged.key_id.as_str(),
                &registry,
                now
            ),
            Err(AttestationError::UnknownKey(_))
        ));
        assert_eq!(
            verify(
                &signed.bytes,
                "nope",
                signed.key_id.as_str(),
                &registry,
                now
            ),
            Err(AttestationError::MalformedSignature)
        );
    }

    #[test]
    fn key_window_must_hold_attested_at() {
        let signer = Signer::from_seed([7; 32]);
        let registry = registry(&signer);
        let mut a = referral_attestation();
        a.attested_at = "2025-06-01T00:00:00Z".parse().expect("time");
        let signed = a.sign(&signer).expect("valid");
        let now = "2026-11-25T10:00:01Z".parse().expect("time");
        assert!(matches!(
            verify(
                &signed.bytes,
                &signed.sig_b64,
                signed.key_id.as_str(),
                &registry,
                now
            ),
            Err(AttestationError::KeyNotValid { .. })
        ));
    }

    #[test]
    fn rules_beyond_the_schema() {
        let mut a = referral_attestation();
        a.items.swap(0, 1);
        assert!(a.validate().is_err(), "unsorted items");
        let mut a = referral_attestation();
        a.duplicates[0].index = 2;
        assert!(a.validate().is_err(), "duplicate also routed");
        let mut a = referral_attestation();
        a.items[0].reasons = vec![RouteReason::CopyRule, RouteReason::Country];
        assert!(a.validate().is_err(), "reasons out of order");
        let mut a = referral_attestation();
        a.referral = Some(id(3));
        assert!(a.validate().is_err(), "referral on a referral");
        let mut a = referral_attestation();
        a.kind = Kind::Status;
        a.referral = Some(id(3));
        assert!(a.validate().is_err(), "items on a status");
        a.items.clear();
        a.duplicates.clear();
        a.known_hashes.clear();
        assert_eq!(a.validate(), Ok(()));
        a.kind = Kind::Notice;
        assert!(a.validate().is_err(), "notices are not forwarded");
    }

    #[test]
    fn largest_attestation_fits() {
        let mut a = referral_attestation();
        let all: BTreeSet<RouteReason> = [
            RouteReason::Explicit,
            RouteReason::Country,
            RouteReason::Fallback,
            RouteReason::UrgentLea,
            RouteReason::CopyRule,
        ]
        .into();
        a.items = (0..MAX_ITEMS as u16)
            .map(|index| AttestedItem {
                index,
                reasons: all.iter().copied().collect(),
            })
            .collect();
        a.duplicates.clear();
        a.known_hashes = (0..MAX_KNOWN_HASHES as u16)
            .map(|i| KnownHash {
                item: i % 500,
                hash: 31,
                first_referral: id(9),
            })
            .collect();
        a.known_hashes_truncated = true;
        a.audit_seq = MAX_TREE_SIZE;
        let bytes = a.to_bytes().expect("fits");
        assert!(bytes.len() < 64 * 1024, "{} bytes", bytes.len());
        assert_eq!(Attestation::decode(&bytes), Ok(a));
    }

    #[test]
    fn check_against_the_delivery() {
        let body = br#"{"x":1}"#;
        let mut a = referral_attestation();
        a.body_sha256 = sha256_hex(body);
        let envelope = Envelope {
            kind: Kind::Referral,
            v: 1,
            id: a.envelope.clone(),
            origin: a.origin.clone(),
            created_at: a.attested_at,
            body: crate::wire::Body::Retraction(crate::wire::Retraction {
                referral: id(2),
                reason: "x".into(),
            }),
        };
        assert_eq!(a.check_against(body, &envelope, &pid("de.hotline")), Ok(()));
        assert!(matches!(
            a.check_against(body, &envelope, &pid("nl.hotline")),
            Err(AttestationError::Mismatch {
                field: "destination",
                ..
            })
        ));
        assert!(matches!(
            a.check_against(b"other", &envelope, &pid("de.hotline")),
            Err(AttestationError::Mismatch {
                field: "body_sha256",
                ..
            })
        ));
    }

    #[test]
    fn decode_bounds() {
        assert!(matches!(
            Attestation::decode(&vec![b' '; MAX_ATTESTATION_BYTES + 1]),
            Err(AttestationError::TooLarge(_))
        ));
        assert!(matches!(
            Attestation::decode(b"[[[[[[[[1]]]]]]]]"),
            Err(AttestationError::Malformed(_))
        ));
        assert!(matches!(
            Attestation::decode(br#"{"v":1,"v":1}"#),
            Err(AttestationError::Malformed(_))
        ));
    }
}
