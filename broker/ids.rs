//! Identifier newtypes, each parsed once at the edge and trusted after.
//!
//! - [`ParticipantId`]: a lowercase dotted name (`fr.pointdecontact`, `int.interpol`). The same
//!   string is the TLS certificate CN, the RabbitMQ user, the AMQP `user_id` property and the
//!   `origin` of everything the participant signs.
//! - [`EnvelopeId`]: a UUIDv7 (lowercase, hyphenated) or a ULID (26 Crockford base32
//!   characters, upper case), as the sender chose.
//! - [`KeyId`]: names one signing key of a participant: 16 lowercase hex characters, the first
//!   8 bytes of SHA-256 over the 32-byte ed25519 public key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error(
        "participant id {0:?} is not a lowercase dotted name of at least two labels \
         (a-z, 0-9, '-', at most 64 characters), e.g. fr.pointdecontact"
    )]
    Participant(String),
    #[error("envelope id {0:?} is neither a lowercase UUIDv7 nor a ULID")]
    Envelope(String),
    #[error("key id {0:?} is not 16 lowercase hex characters")]
    Key(String),
}

/// Longest participant id accepted (it is also a RabbitMQ user name and part of a queue name).
pub const PARTICIPANT_ID_MAX: usize = 64;

/// A participant's identity; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantId(String);

impl ParticipantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of this participant's inbox queue (`inbox.<id>`).
    pub fn inbox_queue(&self) -> String {
        format!("inbox.{}", self.0)
    }
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

impl FromStr for ParticipantId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let labels: Vec<&str> = s.split('.').collect();
        if s.len() > PARTICIPANT_ID_MAX || labels.len() < 2 || !labels.iter().all(|l| is_label(l)) {
            return Err(IdError::Participant(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

/// The id of one envelope, chosen by its sender: UUIDv7 or ULID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvelopeId(String);

impl EnvelopeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh UUIDv7 (time-ordered), the form this implementation sends.
    pub fn new_v7() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }
}

impl FromStr for EnvelopeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Envelope(s.to_owned());
        if s.len() == 36 {
            // Only the canonical lowercase hyphenated form, so one id has one spelling.
            let u = uuid::Uuid::try_parse(s).map_err(|_| bad())?;
            if u.get_version_num() != 7
                || u.get_variant() != uuid::Variant::RFC4122
                || u.hyphenated().to_string() != s
            {
                return Err(bad());
            }
            return Ok(Self(s.to_owned()));
        }
        if s.len() == 26 {
            let u = ulid::Ulid::from_string(s).map_err(|_| bad())?;
            if u.to_string() != s {
                return Err(bad());
            }
            return Ok(Self(s.to_owned()));
        }
        Err(bad())
    }
}

/// The id of one signing key; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key id of a 32-byte ed25519 public key.
    pub fn of_public_key(public_key: &[u8; 32]) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(public_key);
        Self(hex::encode(&digest[..8]))
    }
}

impl FromStr for KeyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Key(s.to_owned()))
        }
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_newtype_impls!(ParticipantId);
string_newtype_impls!(EnvelopeId);
string_newtype_impls!(KeyId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids() {
        for ok in [
            "fr.pointdecontact",
            "int.interpol",
            "de.eco",
            "us.ncmec-2",
            "a.b.c",
        ] {
            assert!(ok.parse::<ParticipantId>().is_ok(), "{ok}");
        }
        for bad in [
            "", "fr", "Fr.x", "fr..x", "fr.-x", "fr.x-", ".fr", "fr.", "fr x.y", "fr_x.y",
        ] {
            assert!(bad.parse::<ParticipantId>().is_err(), "{bad}");
        }
        assert!(
            format!("a.{}", "b".repeat(63))
                .parse::<ParticipantId>()
                .is_err()
        );
    }

    #[test]
    fn envelope_ids() {
        let v7 = EnvelopeId::new_v7();
        assert_eq!(v7.as_str().parse::<EnvelopeId>().as_ref(), Ok(&v7));
        assert!("01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<EnvelopeId>().is_ok());
        // v4, upper-case v7, v7 with the wrong variant bits, lower-case ULID, garbage.
        for bad in [
            "0192f0c1-7c3a-7b1e-cc2d-3e4f5a6b7c8d",
            "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "0192F0C1-7C3A-7B1E-8C2D-3E4F5A6B7C8D",
            "01arz3ndektsv4rrffq69g5fav",
            "not-an-id",
        ] {
            assert!(bad.parse::<EnvelopeId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn key_ids() {
        let id = KeyId::of_public_key(&[7u8; 32]);
        assert_eq!(id.as_str().len(), 16);
        assert!(id.as_str().parse::<KeyId>().is_ok());
        assert!("ABCDEF0123456789".parse::<KeyId>().is_err());
    }
}
