//! The ingress checks as one pure function: body bytes + AMQP properties + registry + clock
//! → a verified envelope, or a rejection with a stable [`ReasonCode`].
//!
//! [`verify`] runs the design's checks in exactly this order, cheapest first, and nothing in
//! the body is parsed before the signature over it verified:
//!
//! | # | check | code |
//! |---|---|---|
//! | 1 | body size ≤ [`Policy::max_body_bytes`] | `too_large` |
//! | 2 | `user_id` present | `missing_user_id` |
//! | 3 | `user_id` is a participant of the registry | `unknown_participant` |
//! | 4 | `x-sig` and `x-key-id` present and well-formed | `missing_signature` |
//! | 5 | `x-key-id` is one of the sender's keys | `unknown_key` |
//! | 6 | the key's validity window holds `now` | `key_not_yet_valid`, `key_expired` |
//! | 7 | the key is not revoked (`revoked_at <= now`) | `key_revoked` |
//! | 8 | `verify_strict` over the body bytes | `bad_signature` |
//! | 9 | [`wire::decode`]: UTF-8, depth, JSON, schema and types | `invalid_utf8`, `too_deep`, `invalid_json`, `schema_violation` |
//! | 10 | AMQP `type` = kind and `message_id` = envelope id | `property_mismatch` |
//! | 11 | `origin` = `user_id` | `origin_mismatch` |
//! | 12 | envelope id not seen before | `replayed` |
//! | 13 | `created_at` at most [`Policy::max_clock_skew`] ahead of `now` and at most [`Policy::max_age`] behind it | `clock_skew` |
//!
//! Guarantees:
//! - No I/O, no tokio, no panic on any input; the same inputs give the same answer.
//! - `user_id` is trusted as the sender because RabbitMQ refuses a `user_id` that is not the
//!   connection's authenticated user; everything else in the properties is only compared.
//! - [`Rejection::envelope_id`] is set only from authenticated, decoded data (checks 10–13);
//!   before that nothing from the body is believed, so a forged id cannot be blamed on anyone.
//! - `seen` is asked only about envelopes that passed checks 1–11, so an unauthenticated
//!   message cannot probe which ids the broker has seen.
//! - Details never contain key material or signatures; values echoed from properties are
//!   quoted, stripped of control characters and cut to a short length.
//!
//! Not done here: recording the envelope id as seen (the caller does it once the outcome is
//! durable), quarantine, notices and audit entries.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::ids::{EnvelopeId, KeyId, ParticipantId};
use crate::reason::ReasonCode;
use crate::registry::{KeyState, Registry};
use crate::signing;
use crate::wire::{self, Envelope};

/// The AMQP properties and headers the checks read. `None` when absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct AmqpMeta<'a> {
    /// `user_id` property: the authenticated sender (RabbitMQ enforces it).
    pub user_id: Option<&'a str>,
    /// `message_id` property: must equal the envelope id.
    pub message_id: Option<&'a str>,
    /// `type` property: must equal the envelope kind.
    pub kind: Option<&'a str>,
    /// `x-sig` header: standard base64 of the 64-byte signature.
    pub sig_b64: Option<&'a str>,
    /// `x-key-id` header.
    pub key_id: Option<&'a str>,
}

/// The tunable bounds of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Largest body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How far `created_at` may be ahead of the broker's clock (clocks disagree a little).
    pub max_clock_skew: chrono::Duration,
    /// How far `created_at` may be behind the broker's clock. Much longer than the skew on
    /// purpose: a referral that waited in `ingress` while the broker was down is still good.
    /// Replays are caught by the envelope id, not by this bound; it only bounds how long
    /// envelope ids must be remembered.
    pub max_age: chrono::Duration,
}

impl Default for Policy {
    /// 256 KiB ([`wire::limits::MAX_BODY_BYTES`]), 5 minutes ahead, 7 days behind.
    fn default() -> Policy {
        Policy {
            max_body_bytes: wire::limits::MAX_BODY_BYTES,
            max_clock_skew: chrono::Duration::minutes(5),
            max_age: chrono::Duration::days(7),
        }
    }
}

/// A message that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub envelope: Envelope,
    /// The key that signed it (one of `envelope.origin`'s keys, valid at `now`).
    pub key_id: KeyId,
    /// SHA-256 of the body bytes exactly as received.
    pub body_sha256: [u8; 32],
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ReasonCode,
    /// Known only once the signature verified and the body decoded.
    pub envelope_id: Option<EnvelopeId>,
    /// The authenticated sender, once `user_id` named a participant.
    pub sender: Option<ParticipantId>,
    /// For the sender and the operator: what exactly was wrong. Never key material.
    pub detail: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// Longest value echoed from a property into a detail, in characters.
const ECHO_MAX: usize = 64;

/// A property value as shown in a detail: quoted, no control characters, cut short.
fn echo(value: &str) -> String {
    let mut shown: String = value
        .chars()
        .take(ECHO_MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > ECHO_MAX {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// Runs the ingress checks (see the module documentation for the order and the codes).
///
/// `seen` answers whether an envelope id was already received; it is called at most once,
/// and only for an authenticated, well-formed envelope.
pub fn verify(
    body: &[u8],
    meta: &AmqpMeta<'_>,
    registry: &Registry,
    now: DateTime<Utc>,
    seen: &dyn Fn(&EnvelopeId) -> bool,
    policy: &Policy,
) -> Result<Verified, Rejection> {
    let mut sender: Option<ParticipantId> = None;
    let mut envelope_id: Option<EnvelopeId> = None;
    macro_rules! reject {
        ($code:expr, $($detail:tt)+) => {
            return Err(Rejection {
                code: $code,
                envelope_id: envelope_id.clone(),
                sender: sender.clone(),
                detail: format!($($detail)+),
            })
        };
    }

    // 1. Size.
    if body.len() > policy.max_body_bytes {
        reject!(
            ReasonCode::TooLarge,
            "the body is {} bytes; at most {} are accepted",
            body.len(),
            policy.max_body_bytes
        );
    }

    // 2–3. Sender.
    let user_id = match meta.user_id {
        Some(u) if !u.is_empty() => u,
        _ => reject!(
            ReasonCode::MissingUserId,
            "the message has no user_id property"
        ),
    };
    let participant = match user_id
        .parse::<ParticipantId>()
        .ok()
        .and_then(|id| registry.get(&id))
    {
        Some(p) => p,
        None => reject!(
            ReasonCode::UnknownParticipant,
            "user_id {} is not a participant of this network",
            echo(user_id)
        ),
    };
    sender = Some(participant.id.clone());

    // 4. Signature headers, well-formed.
    let Some(sig_b64) = meta.sig_b64 else {
        reject!(
            ReasonCode::MissingSignature,
            "the {} header is missing",
            signing::HEADER_SIG
        );
    };
    let Some(key_id_text) = meta.key_id else {
        reject!(
            ReasonCode::MissingSignature,
            "the {} header is missing",
            signing::HEADER_KEY_ID
        );
    };
    let Ok(signature) = signing::decode_signature_b64(sig_b64) else {
        reject!(
            ReasonCode::MissingSignature,
            "the {} header is not standard base64 (with padding) of a 64-byte ed25519 signature",
            signing::HEADER_SIG
        );
    };
    let Ok(key_id) = key_id_text.parse::<KeyId>() else {
        reject!(
            ReasonCode::MissingSignature,
            "the {} header {} is not a key id (16 lowercase hex characters)",
            signing::HEADER_KEY_ID,
            echo(key_id_text)
        );
    };

    // 5–7. The key: the sender's, valid now, not revoked.
    let Some(key) = participant.key(&key_id) else {
        reject!(
            ReasonCode::UnknownKey,
            "key {key_id} is not registered for {}",
            participant.id
        );
    };
    match key.state_at(now) {
        KeyState::Valid => {}
        KeyState::NotYetValid => reject!(
            ReasonCode::KeyNotYetValid,
            "key {key_id} is valid from {}",
            wire::time::format(&key.not_before)
        ),
        KeyState::Expired => reject!(
            ReasonCode::KeyExpired,
            "key {key_id} expired at {}",
            key.not_after
                .as_ref()
                .map_or_else(String::new, wire::time::format)
        ),
        KeyState::Revoked => reject!(
            ReasonCode::KeyRevoked,
            "key {key_id} was revoked at {}",
            key.revoked_at
                .as_ref()
                .map_or_else(String::new, wire::time::format)
        ),
    }

    // 8. The signature, strictly, over the bytes as received.
    if signing::verify(&key.public_key, body, &signature).is_err() {
        reject!(
            ReasonCode::BadSignature,
            "the signature does not verify over the {} body bytes with key {key_id}",
            body.len()
        );
    }

    // 9. Only now is the body read.
    let envelope = match wire::decode(body) {
        Ok(envelope) => envelope,
        Err(e) => reject!(e.reason(), "{}", e.detail()),
    };
    envelope_id = Some(envelope.id.clone());

    // 10. Properties agree with the envelope.
    let kind = envelope.kind.as_str();
    if meta.kind != Some(kind) {
        reject!(
            ReasonCode::PropertyMismatch,
            "the AMQP type property is {} but the envelope kind is {kind:?}",
            meta.kind.map_or_else(|| "absent".to_owned(), echo)
        );
    }
    if meta.message_id != Some(envelope.id.as_str()) {
        reject!(
            ReasonCode::PropertyMismatch,
            "the AMQP message_id property is {} but the envelope id is {:?}",
            meta.message_id.map_or_else(|| "absent".to_owned(), echo),
            envelope.id.as_str()
        );
    }

    // 11. The signer speaks for itself only.
    if envelope.origin != participant.id {
        reject!(
            ReasonCode::OriginMismatch,
            "the envelope origin is {:?} but the sender is {:?}",
            envelope.origin.as_str(),
            participant.id.as_str()
        );
    }

    // 12. Once only.
    if seen(&envelope.id) {
        reject!(
            ReasonCode::Replayed,
            "envelope {} was already received",
            envelope.id
        );
    }

    // 13. Fresh.
    let skew = envelope.created_at.signed_duration_since(now);
    if skew > policy.max_clock_skew {
        reject!(
            ReasonCode::ClockSkew,
            "created_at {} is {} s ahead of the broker's clock ({}); at most {} s ahead",
            wire::time::format(&envelope.created_at),
            skew.num_seconds(),
            wire::time::format(&now),
            policy.max_clock_skew.num_seconds()
        );
    }
    if -skew > policy.max_age {
        reject!(
            ReasonCode::ClockSkew,
            "created_at {} is {} s behind the broker's clock ({}); at most {} s behind",
            wire::time::format(&envelope.created_at),
            (-skew).num_seconds(),
            wire::time::format(&now),
            policy.max_age.num_seconds()
        );
    }

    Ok(Verified {
        envelope,
        key_id,
        body_sha256: Sha256::digest(body).into(),
    })
}

#[cfg(test)]
mod tests;
