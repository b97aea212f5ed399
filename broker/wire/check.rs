//! Field checks shared by the kinds' `validate()`, each the twin of a schema definition
//! (`$defs` in `schemas/envelope.schema.json`, or a pattern in a kind's schema).
//!
//! Each returns a [`FieldError`] naming the field by its JSON pointer. Lengths are counted in
//! Unicode code points, as JSON Schema counts them.

use chrono::{DateTime, Utc};

use super::error::FieldError;
use super::time;
use crate::ids::EnvelopeId;

/// `$defs/line`: no control character (U+0000–U+001F, U+007F), `min..=max` characters.
pub fn line(pointer: &str, s: &str, min: usize, max: usize) -> Result<(), FieldError> {
    length(pointer, s, min, max)?;
    if let Some(c) = s.chars().find(|&c| c <= '\u{1f}' || c == '\u{7f}') {
        return Err(FieldError::new(
            pointer,
            format!("control character U+{:04X} not allowed", u32::from(c)),
        ));
    }
    Ok(())
}

/// `$defs/text`: no control character except tab, line feed and carriage return.
pub fn text(pointer: &str, s: &str, min: usize, max: usize) -> Result<(), FieldError> {
    length(pointer, s, min, max)?;
    let bad = |c: char| (c <= '\u{1f}' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{7f}';
    if let Some(c) = s.chars().find(|&c| bad(c)) {
        return Err(FieldError::new(
            pointer,
            format!("control character U+{:04X} not allowed", u32::from(c)),
        ));
    }
    Ok(())
}

/// `min..=max` characters (code points).
pub fn length(pointer: &str, s: &str, min: usize, max: usize) -> Result<(), FieldError> {
    // Bytes bound characters from above: skip counting when the byte length already fits.
    let n = if s.len() <= max {
        s.chars().count()
    } else {
        s.chars().take(max + 1).count()
    };
    if n < min {
        return Err(FieldError::new(
            pointer,
            format!("shorter than {min} characters"),
        ));
    }
    if n > max {
        return Err(FieldError::new(
            pointer,
            format!("longer than {max} characters"),
        ));
    }
    Ok(())
}

/// `min..=max` items in an array.
pub fn count(pointer: &str, n: usize, min: usize, max: usize) -> Result<(), FieldError> {
    if n < min {
        return Err(FieldError::new(pointer, format!("fewer than {min} items")));
    }
    if n > max {
        return Err(FieldError::new(pointer, format!("more than {max} items")));
    }
    Ok(())
}

/// `$defs/timestamp`, for values built in code (parsed ones are checked by [`time::parse`]).
pub fn timestamp(pointer: &str, t: &DateTime<Utc>) -> Result<(), FieldError> {
    if time::representable(t) {
        Ok(())
    } else {
        Err(FieldError::new(
            pointer,
            "timestamp outside years 0000-9999 or a leap second",
        ))
    }
}

/// `$defs/envelope_id`: [`EnvelopeId`] parsing accepts any UUID version-7 bit pattern; the
/// contract also requires the RFC 9562 variant (`8`, `9`, `a` or `b` at position 19).
pub fn envelope_id(pointer: &str, id: &EnvelopeId) -> Result<(), FieldError> {
    let s = id.as_str().as_bytes();
    if s.len() == 36 && !matches!(s[19], b'8' | b'9' | b'a' | b'b') {
        return Err(FieldError::new(
            pointer,
            "UUIDv7 without the RFC 9562 variant bits",
        ));
    }
    Ok(())
}

/// Lowercase hex of exactly `len` characters.
pub fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_b64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// Canonical, padded, standard base64 (as the pattern
/// `^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$`):
/// the unused bits of the last character are zero.
pub fn canonical_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return false;
    }
    let (body, tail) = b.split_at(b.len().saturating_sub(4));
    if !body.iter().all(|&c| is_b64_char(c)) {
        return false;
    }
    match tail {
        [] => true,
        [a, x, b'=', b'='] => is_b64_char(*a) && matches!(x, b'A' | b'Q' | b'g' | b'w'),
        [a, c, x, b'='] => is_b64_char(*a) && is_b64_char(*c) && b"AEIMQUYcgkosw048".contains(x),
        [a, c, d, e] => [a, c, d, e].iter().all(|&&ch| is_b64_char(ch)),
        _ => false,
    }
}

/// Item URL (the schema's pattern): `http://` or `https://`; a host of `[A-Za-z0-9_-]` labels
/// separated by dots (a trailing dot allowed) or a bracketed IPv6 literal of `[0-9A-Fa-f:.]`;
/// an optional port up to 65535; then nothing, or `/`, `?` or `#` followed by printable ASCII
/// (U+0021–U+007E). On top of the schema, the URL must parse as a WHATWG URL.
pub fn url_shape(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !tail.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return false;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some(close) = v6.find(']') else {
            return false;
        };
        let (inner, after) = v6.split_at(close);
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        (None, &after[1..])
    } else {
        match authority.find(':') {
            Some(i) => (Some(&authority[..i]), &authority[i..]),
            None => (Some(authority), ""),
        }
    };
    if let Some(host) = host {
        let host = host.strip_suffix('.').unwrap_or(host);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return false;
        }
    }
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            all_digits
                && match digits.len() {
                    1..=4 => true,
                    5 => {
                        digits.as_bytes()[0] != b'0'
                            && digits.parse::<u32>().is_ok_and(|p| p <= 65535)
                    }
                    _ => false,
                }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_texts() {
        assert!(line("/x", "FR-2026 é", 1, 128).is_ok());
        assert!(line("/x", "", 1, 128).is_err());
        assert!(line("/x", "a\tb", 1, 128).is_err());
        assert!(line("/x", "a\u{7f}", 1, 128).is_err());
        assert!(text("/x", "a\tb\r\nc", 1, 128).is_ok());
        assert!(text("/x", "a\u{0}b", 1, 128).is_err());
        assert!(text("/x", "a\u{1b}[31m", 1, 128).is_err());
        // Code points, not bytes: 1024 'é' (2048 bytes) fit a 1024-character bound.
        assert!(text("/x", &"é".repeat(1024), 1, 1024).is_ok());
        assert!(text("/x", &"é".repeat(1025), 1, 1024).is_err());
        assert_eq!(
            text("/x", &"a".repeat(5), 1, 4).map_err(|e| e.pointer),
            Err("/x".to_owned())
        );
    }

    #[test]
    fn base64_canonical() {
        for ok in ["", "AAAA", "AA==", "AAA=", "Zm9vYg==", "Zm9vYmE=", "+/+/"] {
            assert!(canonical_base64(ok), "{ok}");
        }
        for bad in [
            "A", "AAA", "AB==", "AAB=", "A===", "====", "AA=A", "Zm9v\n", "Zm9-", "Zm9_",
            "AA==AAAA",
        ] {
            assert!(!canonical_base64(bad), "{bad}");
        }
    }

    #[test]
    fn url_shapes() {
        for ok in [
            "http://a",
            "https://images.example/gallery/a.jpg",
            "https://images.example./a",
            "https://my_site.example:8443/x?y=1#z",
            "https://[2001:db8::1]:443/",
            "https://192.0.2.1/a%20b",
            "http://x.test?q",
            "http://x.test#f",
            "http://x.test:65535",
            "http://x.test:0080",
        ] {
            assert!(url_shape(ok), "{ok}");
        }
        for bad in [
            "ftp://x.test/",
            "HTTP://x.test/",
            "https://",
            "https:///a",
            "https://x..test/",
            "https://.x.test/",
            "https://x.test:/",
            "https://x.test:65536/",
            "https://x.test:99999/",
            "https://x.test:08080/",
            "https://x.test:123456/",
            "https://x.test/a b",
            "https://x.test/é",
            "https://user@x.test/",
            "https://[]/",
            "https://[2001:db8::1/",
            "https://[2001:db8::1]x/",
            "https://x.test\t/",
        ] {
            assert!(!url_shape(bad), "{bad}");
        }
    }
}
