//! [`CountryCode`]: an ISO 3166-1 alpha-2 code as the contract spells it (two uppercase ASCII
//! letters), the key of routing by hosting country. Whether the code is assigned is not
//! checked: routing looks it up, and an unknown one falls through to the fallback.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Two uppercase ASCII letters, e.g. `NL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII uppercase letters (checked in from_str), so this is UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// Not two uppercase ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("country {0:?} is not an ISO 3166-1 alpha-2 code in upper case (e.g. NL)")]
pub struct CountryError(pub String);

impl FromStr for CountryCode {
    type Err = CountryError;
    fn from_str(s: &str) -> Result<Self, CountryError> {
        match s.as_bytes() {
            &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Self([a, b])),
            _ => Err(CountryError(s.to_owned())),
        }
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CountryCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(
            "NL".parse::<CountryCode>()
                .map(|c| c.to_string())
                .as_deref(),
            Ok("NL")
        );
        for bad in ["nl", "N", "NLD", "", "N1", "ÉÉ"] {
            assert!(bad.parse::<CountryCode>().is_err(), "{bad}");
        }
    }
}
