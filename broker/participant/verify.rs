//! Is a delivery from the inbox genuine? A pure function of the bytes, the properties, the
//! registry, who we are and the time given: no I/O, no panic on any input.
//!
//! [`verify_delivery`] checks, in this order, and nothing from the body is believed before the
//! origin's signature over it verified:
//!
//! | # | check | [`Problem`] |
//! |---|---|---|
//! | 1 | body size ≤ 256 KiB | `too_large` |
//! | 2 | `x-sig`, `x-key-id` present and well-formed | `missing_signature` |
//! | 3 | `x-key-id` is a key of some participant of the registry (keys are unique) | `unknown_key` |
//! | 4 | `verify_strict` over the body bytes as received | `bad_signature` |
//! | 5 | [`wire::decode`]: UTF-8, depth, JSON, schema, types | `undecodable` |
//! | 6 | the envelope's `origin` owns that key | `origin_mismatch` |
//! | 7 | AMQP `type` = kind, `message_id` = envelope id, and `x-origin` (if present) = origin | `property_mismatch` |
//! | 8 | attestation: required unless the origin is the broker itself (its notices, checkpoints); [`attestation::verify`]: signed with a key of the registry's broker entry (strictly, over the `x-attestation` bytes), that key not revoked now and valid at `attested_at`; decodes under its schema | `missing_attestation`, `bad_attestation`, `key_not_valid` |
//! | 9 | [`Attestation::check_against`]: it names this envelope (id, kind, origin, SHA-256 of the body) and this destination; and the referral a receipt/status/retraction is about, item and hash indexes the referral has | `attestation_mismatch` |
//! | 10 | the origin's key was valid (inside its window, not revoked) when the broker took the message in (`attested_at`), or, for the broker's own messages, at `created_at` | `key_not_valid` |
//!
//! Why `attested_at` and not now: the broker checked the origin's key at ingress; a key revoked
//! a week after the referral was sent does not make that referral a forgery. A key revoked
//! *before* the broker attested is refused.
//!
//! The `user_id` property is not used: on the way out it names the broker (RabbitMQ only lets
//! a connection set its own user), and the origin's signature is what identifies the origin.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::ids::{EnvelopeId, KeyId, ParticipantId};
use crate::registry::{KeyState, Participant as Entry, RegisteredKey, Registry};
use crate::signing;
use crate::wire::attestation::{self, Attestation};
use crate::wire::{self, Body, Envelope};

pub use attestation::{
    HEADER_ATTESTATION, HEADER_ATTESTATION_KEY_ID, HEADER_ATTESTATION_SIG, HEADER_ORIGIN,
};

/// The properties and headers of a delivery that verification reads (`None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryMeta<'a> {
    pub message_id: Option<&'a str>,
    /// The `type` property.
    pub kind: Option<&'a str>,
    pub sig_b64: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub attestation: Option<&'a [u8]>,
    pub attestation_sig_b64: Option<&'a str>,
    pub attestation_key_id: Option<&'a str>,
    /// The `x-origin` header the broker adds (compared with the signed origin, never trusted).
    pub origin: Option<&'a str>,
}

/// A delivery that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genuine {
    pub envelope: Envelope,
    /// The origin's key that signed it.
    pub key_id: KeyId,
    /// The broker's statement about this copy; `None` only for the broker's own messages.
    pub attestation: Option<Attestation>,
    /// SHA-256 of the body as received, lowercase hex.
    pub body_sha256: String,
}

/// What is wrong with a refused delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    TooLarge,
    MissingSignature,
    UnknownKey,
    BadSignature,
    Undecodable,
    OriginMismatch,
    PropertyMismatch,
    MissingAttestation,
    BadAttestation,
    AttestationMismatch,
    KeyNotValid,
}

impl Problem {
    /// The snake_case word used in logs, `--json` output and refused copies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::MissingSignature => "missing_signature",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Undecodable => "undecodable",
            Self::OriginMismatch => "origin_mismatch",
            Self::PropertyMismatch => "property_mismatch",
            Self::MissingAttestation => "missing_attestation",
            Self::BadAttestation => "bad_attestation",
            Self::AttestationMismatch => "attestation_mismatch",
            Self::KeyNotValid => "key_not_valid",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a delivery is not genuine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub problem: Problem,
    pub detail: String,
    /// Set only once the origin's signature verified and the body decoded.
    pub envelope_id: Option<EnvelopeId>,
    /// Set only once the origin's signature verified and the body decoded.
    pub origin: Option<ParticipantId>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.problem, self.detail)
    }
}

impl std::error::Error for Refusal {}

/// The participant owning key `key_id`, and the key.
fn key_owner<'r>(registry: &'r Registry, key_id: &KeyId) -> Option<(&'r Entry, &'r RegisteredKey)> {
    registry
        .participants()
        .find_map(|p| p.key(key_id).map(|k| (p, k)))
}

fn state_word(state: KeyState) -> &'static str {
    match state {
        KeyState::Valid => "valid",
        KeyState::NotYetValid => "not valid yet",
        KeyState::Expired => "expired",
        KeyState::Revoked => "revoked",
    }
}

/// Runs the checks of the module documentation. `me` is the participant reading its inbox.
pub fn verify_delivery(
    body: &[u8],
    meta: &DeliveryMeta<'_>,
    registry: &Registry,
    me: &ParticipantId,
    now: DateTime<Utc>,
) -> Result<Genuine, Refusal> {
    let mut envelope_id: Option<EnvelopeId> = None;
    let mut origin: Option<ParticipantId> = None;
    macro_rules! refuse {
        ($problem:expr, $($detail:tt)+) => {
            return Err(Refusal {
                problem: $problem,
                detail: format!($($detail)+),
                envelope_id: envelope_id.clone(),
                origin: origin.clone(),
            })
        };
    }

    // 1.
    if body.len() > wire::limits::MAX_BODY_BYTES {
        refuse!(
            Problem::TooLarge,
            "the body is {} bytes; at most {} exist on this network",
            body.len(),
            wire::limits::MAX_BODY_BYTES
        );
    }
    // 2.
    let (Some(sig_b64), Some(key_id_text)) = (meta.sig_b64, meta.key_id) else {
        refuse!(
            Problem::MissingSignature,
            "the {} or {} header is missing",
            signing::HEADER_SIG,
            signing::HEADER_KEY_ID
        );
    };
    let Ok(signature) = signing::decode_signature_b64(sig_b64) else {
        refuse!(
            Problem::MissingSignature,
            "the {} header is not standard base64 of a 64-byte signature",
            signing::HEADER_SIG
        );
    };
    let Ok(key_id) = key_id_text.parse::<KeyId>() else {
        refuse!(
            Problem::MissingSignature,
            "the {} header is not a key id",
            signing::HEADER_KEY_ID
        );
    };
    // 3.
    let Some((owner, key)) = key_owner(registry, &key_id) else {
        refuse!(
            Problem::UnknownKey,
            "key {key_id} is in no participant's entry of the registry (is the registry file \
             up to date?)"
        );
    };
    // 4.
    if signing::verify(&key.public_key, body, &signature).is_err() {
        refuse!(
            Problem::BadSignature,
            "the signature does not verify over the {} bytes received with key {key_id} of {}",
            body.len(),
            owner.id
        );
    }
    // 5.
    let envelope = match wire::decode(body) {
        Ok(e) => e,
        Err(e) => refuse!(
            Problem::Undecodable,
            "signed by {} but not a valid envelope: {} ({})",
            owner.id,
            e.detail(),
            e.reason()
        ),
    };
    envelope_id = Some(envelope.id.clone());
    origin = Some(envelope.origin.clone());
    // 6.
    if envelope.origin != owner.id {
        refuse!(
            Problem::OriginMismatch,
            "the envelope's origin is {} but it is signed with key {key_id} of {}",
            envelope.origin,
            owner.id
        );
    }
    // 7.
    if meta.kind != Some(envelope.kind.as_str()) || meta.message_id != Some(envelope.id.as_str()) {
        refuse!(
            Problem::PropertyMismatch,
            "AMQP type {:?} / message_id {:?} disagree with the envelope ({}, {})",
            meta.kind,
            meta.message_id,
            envelope.kind,
            envelope.id
        );
    }
    if let Some(claimed) = meta.origin
        && claimed != envelope.origin.as_str()
    {
        refuse!(
            Problem::PropertyMismatch,
            "the {} header says {:?}, the signed envelope {}",
            HEADER_ORIGIN,
            claimed.chars().take(64).collect::<String>(),
            envelope.origin
        );
    }
    let body_sha256 = attestation::sha256_hex(body);
    let from_broker = envelope.origin == registry.broker().id;

    // 8.
    let attestation = match (
        meta.attestation,
        meta.attestation_sig_b64,
        meta.attestation_key_id,
    ) {
        (None, None, None) if from_broker => None,
        (Some(bytes), Some(sig), Some(kid)) => {
            match attestation::verify(bytes, sig, kid, registry, now) {
                Ok(a) => Some(a),
                Err(e @ attestation::AttestationError::KeyNotValid { .. }) => {
                    refuse!(Problem::KeyNotValid, "{e}")
                }
                Err(e) => refuse!(Problem::BadAttestation, "{e}"),
            }
        }
        _ => refuse!(
            Problem::MissingAttestation,
            "a {} from {} must carry the broker's attestation ({}, {}, {})",
            envelope.kind,
            envelope.origin,
            HEADER_ATTESTATION,
            HEADER_ATTESTATION_SIG,
            HEADER_ATTESTATION_KEY_ID
        ),
    };

    // 9.
    if let Some(att) = &attestation {
        if let Err(e) = att.check_against(body, &envelope, me) {
            refuse!(Problem::AttestationMismatch, "{e}");
        }
        if let Err(why) = matches_body(att, &envelope) {
            refuse!(Problem::AttestationMismatch, "{why}");
        }
    }

    // 10.
    let at = attestation
        .as_ref()
        .map_or(envelope.created_at, |a| a.attested_at);
    let state = key.state_at(at);
    if state != KeyState::Valid {
        refuse!(
            Problem::KeyNotValid,
            "{}'s key {key_id} was {} at {}",
            owner.id,
            state_word(state),
            wire::time::format(&at)
        );
    }

    Ok(Genuine {
        envelope,
        key_id,
        attestation,
        body_sha256,
    })
}

/// The referral a receipt, status or retraction is about.
fn about(body: &Body) -> Option<&EnvelopeId> {
    match body {
        Body::Receipt(r) => Some(&r.referral),
        Body::Status(s) => Some(&s.referral),
        Body::Retraction(r) => Some(&r.referral),
        Body::Referral(_) | Body::Notice(_) | Body::Checkpoint(_) => None,
    }
}

/// Check 9, beyond [`Attestation::check_against`]: the referral a receipt, status or
/// retraction is about, and item indexes the referral has.
fn matches_body(att: &Attestation, envelope: &Envelope) -> Result<(), String> {
    if att.referral.as_ref() != about(&envelope.body) {
        return Err(format!(
            "the attestation is about referral {:?}, the {} about {:?}",
            att.referral.as_ref().map(EnvelopeId::as_str),
            envelope.kind,
            about(&envelope.body).map(EnvelopeId::as_str)
        ));
    }
    if let Body::Referral(r) = &envelope.body {
        let n = r.items.len();
        let indexes = att
            .items
            .iter()
            .map(|i| i.index)
            .chain(att.duplicates.iter().map(|d| d.index))
            .chain(att.known_hashes.iter().map(|h| h.item));
        if let Some(bad) = indexes.into_iter().find(|&i| usize::from(i) >= n) {
            return Err(format!(
                "the attestation names item {bad}; the referral has {n} item(s)"
            ));
        }
        if let Some(k) = att.known_hashes.iter().find(|k| {
            r.items
                .get(usize::from(k.item))
                .is_none_or(|item| usize::from(k.hash) >= item.hashes.len())
        }) {
            return Err(format!(
                "the attestation names hash {} of item {}, which the referral does not have",
                k.hash, k.item
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
