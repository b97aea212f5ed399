//! The message contract: the envelope and every kind, as serde types that agree with the
//! JSON Schemas in `schemas/` (embedded in [`schema`]), and the one way in: [`decode`].
//!
//! # Layout
//! - [`decode`] / [`Envelope::to_bytes`]: bytes ↔ [`Envelope`]. Decoding runs, in order:
//!   UTF-8 → depth ([`depth`]) → JSON syntax, no repeated keys ([`json`]) → JSON Schema of the
//!   envelope and of its kind ([`schema`]) → typed deserialisation (unknown fields refused) and
//!   `validate()` (the same bounds again, in Rust). Each stage has its [`WireError`] variant
//!   and [`ReasonCode`](crate::reason::ReasonCode).
//! - One file per kind: [`referral`] (+ [`item`]), [`receipt`], [`status`], [`retraction`],
//!   [`notice`], [`checkpoint`]; shared pieces: [`limits`], [`time`], [`country`], [`check`].
//!
//! # Guarantees
//! - No tokio, no I/O, no panic on any input. The body size is *not* checked here: the
//!   ingress checks it first ([`limits::MAX_BODY_BYTES`]); large input is merely slow.
//! - The types reject everything the schemas reject: `validate()` re-checks each bound, and
//!   `tests/contract.rs` runs every example in `schemas/` through the schemas, [`decode`] and
//!   [`decode_without_schema`], and fails on any disagreement.
//! - Round trip: `decode(&e.to_bytes()) == Ok(e)` for every valid `e`. The bytes are not
//!   canonical (the signature covers the bytes as sent; nothing is ever re-serialised to verify).

pub mod attestation;
pub mod check;
pub mod checkpoint;
pub mod country;
pub mod depth;
pub mod error;
pub mod item;
pub mod json;
pub mod limits;
pub mod notice;
pub mod receipt;
pub mod referral;
pub mod retraction;
pub mod schema;
pub mod status;
pub mod time;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use checkpoint::Checkpoint;
pub use country::CountryCode;
pub use error::{FieldError, WireError};
pub use item::{
    AgeGroup, AiGenerated, Category, Classification, Gender, Hash, HashAlgorithm, Hosting, Item,
    LegalStatus, MediaType, SiteType,
};
pub use notice::Notice;
pub use receipt::{Outcome, Receipt};
pub use referral::{Priority, Referral};
pub use retraction::Retraction;
pub use status::{State, Status};

use crate::ids::{EnvelopeId, ParticipantId};

/// The version of every kind this implementation writes (and the only one it reads).
pub const VERSION: u32 = 1;

/// What an envelope's body is; also the AMQP `type` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Referral,
    Receipt,
    Status,
    Retraction,
    Notice,
    Checkpoint,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 6] = [
        Self::Referral,
        Self::Receipt,
        Self::Status,
        Self::Retraction,
        Self::Notice,
        Self::Checkpoint,
    ];

    /// The wire string (`kind` field and AMQP `type` property).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::Receipt => "receipt",
            Self::Status => "status",
            Self::Retraction => "retraction",
            Self::Notice => "notice",
            Self::Checkpoint => "checkpoint",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?}"))
    }
}

/// The body of an envelope, one variant per kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Body {
    Referral(Referral),
    Receipt(Receipt),
    Status(Status),
    Retraction(Retraction),
    Notice(Notice),
    Checkpoint(Checkpoint),
}

impl Body {
    /// The kind this body is.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Referral(_) => Kind::Referral,
            Self::Receipt(_) => Kind::Receipt,
            Self::Status(_) => Kind::Status,
            Self::Retraction(_) => Kind::Retraction,
            Self::Notice(_) => Kind::Notice,
            Self::Checkpoint(_) => Kind::Checkpoint,
        }
    }

    /// Check every bound of the body's schema; `at` is the body's JSON pointer.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        match self {
            Self::Referral(b) => b.validate(at),
            Self::Receipt(b) => b.validate(at),
            Self::Status(b) => b.validate(at),
            Self::Retraction(b) => b.validate(at),
            Self::Notice(b) => b.validate(at),
            Self::Checkpoint(b) => b.validate(at),
        }
    }
}

/// One signed message: kind, version, id, origin, creation time and body.
///
/// Build one with [`Envelope::new`]; read one with [`decode`] (there is deliberately no
/// `Deserialize`, so nothing skips the checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Envelope {
    pub kind: Kind,
    pub v: u32,
    pub id: EnvelopeId,
    pub origin: ParticipantId,
    #[serde(with = "time::required")]
    pub created_at: DateTime<Utc>,
    pub body: Body,
}

impl Envelope {
    /// A new envelope from `origin`: fresh UUIDv7 id, created now (millisecond precision),
    /// kind taken from the body, version [`VERSION`].
    pub fn new(origin: ParticipantId, body: Body) -> Self {
        Self {
            kind: body.kind(),
            v: VERSION,
            id: EnvelopeId::new_v7(),
            origin,
            created_at: Utc::now().trunc_subsecs(3),
            body,
        }
    }

    /// The envelope as compact JSON: the bytes to sign and send. Not canonical: whoever
    /// verifies uses these bytes as received, never a re-serialisation.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self)
            .expect("serialising an envelope cannot fail: strings, integers, bools, arrays, string-keyed objects")
    }

    /// Check the envelope the way [`decode`] would (for envelopes built in code).
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.kind != self.body.kind() {
            return Err(FieldError::new(
                "/kind",
                format!("is {} but the body is a {}", self.kind, self.body.kind()),
            ));
        }
        if self.v != VERSION {
            return Err(FieldError::new(
                "/v",
                format!("version {} is not supported (known: {VERSION})", self.v),
            ));
        }
        check::envelope_id("/id", &self.id)?;
        check::timestamp("/created_at", &self.created_at)?;
        self.body.validate("/body")
    }
}

/// Bytes → envelope, through every stage (see the module documentation). The ingress calls
/// this after the signature verified; an error carries its [`ReasonCode`](crate::reason::ReasonCode)
/// via [`WireError::reason`] and, for schema violations, the field's JSON pointer.
pub fn decode(body: &[u8]) -> Result<Envelope, WireError> {
    let value = parse(body)?;
    schema::validate(&value)?;
    typed(value)
}

/// [`decode`] without the JSON Schema stage: the Rust types alone. For `tests/contract.rs`,
/// which proves on every example that the types reject what the schemas reject; production
/// code calls [`decode`].
pub fn decode_without_schema(body: &[u8]) -> Result<Envelope, WireError> {
    typed(parse(body)?)
}

/// UTF-8 → depth → JSON (no repeated keys).
fn parse(body: &[u8]) -> Result<Value, WireError> {
    let text = std::str::from_utf8(body).map_err(|e| WireError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    depth::check(body).map_err(|e| WireError::TooDeep {
        offset: e.offset,
        max: limits::MAX_DEPTH,
    })?;
    json::parse(text).map_err(|e| WireError::InvalidJson {
        message: e.to_string(),
    })
}

/// The envelope frame as read, before the body's type is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    kind: Kind,
    v: u32,
    id: EnvelopeId,
    origin: ParticipantId,
    #[serde(with = "time::required")]
    created_at: DateTime<Utc>,
    body: Value,
}

/// JSON value → typed envelope → `validate()`.
fn typed(value: Value) -> Result<Envelope, WireError> {
    if !value.is_object() {
        return Err(FieldError::new("", "the envelope must be a JSON object").into());
    }
    let raw: RawEnvelope =
        serde_json::from_value(value).map_err(|e| FieldError::new("", e.to_string()))?;
    if raw.v != VERSION {
        return Err(FieldError::new(
            "/v",
            format!(
                "version {} of {} is not supported (known: {VERSION})",
                raw.v, raw.kind
            ),
        )
        .into());
    }
    fn body<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, FieldError> {
        serde_json::from_value(v).map_err(|e| FieldError::new("/body", e.to_string()))
    }
    let body = match raw.kind {
        Kind::Referral => Body::Referral(body(raw.body)?),
        Kind::Receipt => Body::Receipt(body(raw.body)?),
        Kind::Status => Body::Status(body(raw.body)?),
        Kind::Retraction => Body::Retraction(body(raw.body)?),
        Kind::Notice => Body::Notice(body(raw.body)?),
        Kind::Checkpoint => Body::Checkpoint(body(raw.body)?),
    };
    let envelope = Envelope {
        kind: raw.kind,
        v: raw.v,
        id: raw.id,
        origin: raw.origin,
        created_at: raw.created_at,
        body,
    };
    envelope.validate()?;
    Ok(envelope)
}

#[cfg(test)]
mod tests;
