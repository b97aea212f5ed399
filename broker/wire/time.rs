//! Timestamps on the wire: RFC 3339 in UTC, one fixed spelling.
//!
//! Accepted: `YYYY-MM-DDTHH:MM:SS` with an optional fraction of 1 to 9 digits, then `Z`
//! (uppercase `T` and `Z`, no offset, no leap second, a real calendar date) — exactly the
//! schema's `timestamp` (pattern + `format: date-time`). Written: the same form, with no
//! fraction, or 3, 6 or 9 digits as the value needs, so reading back gives the same instant.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Parse a wire timestamp; `None` if it is not exactly the accepted form.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if !(20..=30).contains(&b.len()) || b[b.len() - 1] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let two = |i: usize| u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0');
    let fixed = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !fixed {
        return None;
    }
    let in_range = (1..=12).contains(&two(5))
        && (1..=31).contains(&two(8))
        && two(11) <= 23
        && two(14) <= 59
        && two(17) <= 59;
    if !in_range {
        return None;
    }
    let rest = &b[19..b.len() - 1];
    match rest {
        [] => {}
        [b'.', frac @ ..]
            if (1..=9).contains(&frac.len()) && frac.iter().all(u8::is_ascii_digit) => {}
        _ => return None,
    }
    // The shape is fixed; chrono checks the calendar (no 30 February).
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Write a timestamp in the wire form.
pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Whether `t` can be written in the wire form (year 0000 to 9999, no leap second).
pub fn representable(t: &DateTime<Utc>) -> bool {
    (0..=9999).contains(&t.year()) && t.nanosecond() < 1_000_000_000
}

fn de_str<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse(&s).ok_or_else(|| {
        serde::de::Error::custom(
            "not an RFC 3339 UTC timestamp of the form YYYY-MM-DDTHH:MM:SS[.fraction]Z",
        )
    })
}

/// `#[serde(with = "...")]` for a required timestamp.
pub mod required {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        de_str(d)
    }
}

/// `#[serde(default, skip_serializing_if = "Option::is_none", with = "...")]` for an optional
/// timestamp: absent is `None`; `null` is refused, as the schema refuses it.
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        de_str(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        for ok in [
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00:00.1Z",
            "2026-11-25T10:00:00.123456789Z",
            "2024-02-29T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            let t = parse(ok);
            assert!(t.is_some(), "{ok}");
            // Same instant after a round trip (the spelling of the fraction may change).
            assert_eq!(t.and_then(|t| parse(&format(&t))), t, "{ok}");
        }
        assert_eq!(
            parse("2026-11-25T10:00:00.5Z")
                .map(|t| format(&t))
                .as_deref(),
            Some("2026-11-25T10:00:00.500Z")
        );
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "2026-11-25T10:00:00",
            "2026-11-25T10:00:00z",
            "2026-11-25t10:00:00Z",
            "2026-11-25 10:00:00Z",
            "2026-11-25T10:00:00+00:00",
            "2026-11-25T11:00:00+01:00",
            "2026-11-25T10:00:00.Z",
            "2026-11-25T10:00:00.0000000001Z",
            "2026-11-25T10:00Z",
            "2026-11-25",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-12-31T24:00:00Z",
            "2026-12-31T23:60:00Z",
            "2026-12-31T23:59:60Z",
            "+2026-12-31T23:59:59Z",
            "２026-11-25T10:00:00Z",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn representable_range() {
        let ok = parse("9999-12-31T23:59:59Z");
        assert!(ok.is_some_and(|t| representable(&t)));
        let late = ok.and_then(|t| t.checked_add_signed(chrono::TimeDelta::seconds(1)));
        assert!(late.is_some_and(|t| !representable(&t)));
    }
}
