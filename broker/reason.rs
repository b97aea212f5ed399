//! Stable reason codes: why the broker refused or held back a message.
//!
//! A code is part of the wire contract (`body.code` of a notice, `schemas/notice/1.schema.json`,
//! listed in `schemas/README.md`): once published it never changes meaning and is never
//! reused. Add new codes at the end; never rename one.
//!
//! The ingress codes are listed in the order the checks run (cheapest first, nothing parsed
//! before it is authenticated), as in the design's "Ingress checks".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One stable reason code. Serialised as its snake_case string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    // --- ingress checks, in order ---
    /// The AMQP body is larger than the contract allows (256 KiB).
    TooLarge,
    /// No AMQP `user_id` property: the sender is not identified.
    MissingUserId,
    /// `user_id` names no participant in the registry.
    UnknownParticipant,
    /// `x-sig` or `x-key-id` header missing or not well-formed.
    MissingSignature,
    /// `x-key-id` is not one of the sender's keys.
    UnknownKey,
    /// The key's `not_before` is in the future.
    KeyNotYetValid,
    /// The key's `not_after` has passed.
    KeyExpired,
    /// The key was revoked before the message was received.
    KeyRevoked,
    /// The ed25519 signature does not verify (strictly) over the body bytes.
    BadSignature,
    /// The body is not valid UTF-8.
    InvalidUtf8,
    /// The JSON nests deeper than the contract allows (16); checked before parsing.
    TooDeep,
    /// The body is not well-formed JSON.
    InvalidJson,
    /// The JSON does not match the schema of its kind (detail names the field).
    SchemaViolation,
    /// AMQP properties disagree with the envelope (`type` ≠ kind, `message_id` ≠ id).
    PropertyMismatch,
    /// The envelope's `origin` is not the authenticated sender (`user_id`).
    OriginMismatch,
    /// This envelope id was already received.
    Replayed,
    /// `created_at` is too far from the broker's clock.
    ClockSkew,
    // --- after ingress ---
    /// No destination could be found for an item (no `to`, no hotline for its country, no fallback).
    Unroutable,
    /// A receipt, status or retraction about a referral the sender may not report on.
    NotAuthorized,
    /// The referral a receipt, status or retraction names is not known to the broker.
    UnknownReferral,
    /// The sender is over its rate limit; its messages wait.
    RateLimited,
    /// The same URL is already open at that destination (informational: not a rejection).
    Duplicate,
}

impl ReasonCode {
    /// Every code, in declaration order.
    pub const ALL: [ReasonCode; 22] = [
        Self::TooLarge,
        Self::MissingUserId,
        Self::UnknownParticipant,
        Self::MissingSignature,
        Self::UnknownKey,
        Self::KeyNotYetValid,
        Self::KeyExpired,
        Self::KeyRevoked,
        Self::BadSignature,
        Self::InvalidUtf8,
        Self::TooDeep,
        Self::InvalidJson,
        Self::SchemaViolation,
        Self::PropertyMismatch,
        Self::OriginMismatch,
        Self::Replayed,
        Self::ClockSkew,
        Self::Unroutable,
        Self::NotAuthorized,
        Self::UnknownReferral,
        Self::RateLimited,
        Self::Duplicate,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::MissingUserId => "missing_user_id",
            Self::UnknownParticipant => "unknown_participant",
            Self::MissingSignature => "missing_signature",
            Self::UnknownKey => "unknown_key",
            Self::KeyNotYetValid => "key_not_yet_valid",
            Self::KeyExpired => "key_expired",
            Self::KeyRevoked => "key_revoked",
            Self::BadSignature => "bad_signature",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::TooDeep => "too_deep",
            Self::SchemaViolation => "schema_violation",
            Self::PropertyMismatch => "property_mismatch",
            Self::OriginMismatch => "origin_mismatch",
            Self::Replayed => "replayed",
            Self::ClockSkew => "clock_skew",
            Self::Unroutable => "unroutable",
            Self::NotAuthorized => "not_authorized",
            Self::UnknownReferral => "unknown_referral",
            Self::RateLimited => "rate_limited",
            Self::Duplicate => "duplicate",
        }
    }

    /// The human sentence sent with the code in a notice.
    pub fn sentence(self) -> &'static str {
        match self {
            Self::TooLarge => "The message is larger than 256 KiB.",
            Self::MissingUserId => "The message has no user_id property, so its sender is unknown.",
            Self::UnknownParticipant => "The sender is not a participant of this network.",
            Self::MissingSignature => "The x-sig or x-key-id header is missing or malformed.",
            Self::UnknownKey => {
                "The signing key named in x-key-id is not registered for the sender."
            }
            Self::KeyNotYetValid => "The signing key is not valid yet.",
            Self::KeyExpired => "The signing key has expired.",
            Self::KeyRevoked => "The signing key has been revoked.",
            Self::BadSignature => "The signature does not match the message body.",
            Self::InvalidUtf8 => "The message body is not valid UTF-8.",
            Self::InvalidJson => "The message body is not valid JSON.",
            Self::TooDeep => "The JSON is nested more than 16 levels deep.",
            Self::SchemaViolation => "The message does not match the schema of its kind.",
            Self::PropertyMismatch => {
                "The AMQP type or message_id property does not match the envelope."
            }
            Self::OriginMismatch => "The envelope origin is not the authenticated sender.",
            Self::Replayed => "A message with this envelope id was already received.",
            Self::ClockSkew => "The message's created_at is too far from the broker's clock.",
            Self::Unroutable => "No destination could be found for an item.",
            Self::NotAuthorized => "The sender may not report on this referral.",
            Self::UnknownReferral => "The referral named is not known to the broker.",
            Self::RateLimited => {
                "The sender is over its rate limit; messages will be processed later."
            }
            Self::Duplicate => {
                "The URL is already open at the destination; it was not forwarded again."
            }
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReasonCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown reason code {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ReasonCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(code.as_str().parse::<ReasonCode>(), Ok(code));
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
