//! Nesting depth of JSON text, measured on the bytes before any parser sees them.
//!
//! Guarantees: [`check`] reads each byte once, allocates nothing, never recurses, and never
//! panics, whatever the input (well-formed or not). Brackets inside strings do not count,
//! and `\"` does not end a string. It does not check that the JSON is well-formed: that is
//! the parser's job, which runs next and only on input this let through.

use super::limits::MAX_DEPTH;

/// The text nests deeper than allowed; `offset` is the byte of the first bracket too deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub offset: usize,
}

/// Check that `json` nests at most [`MAX_DEPTH`] levels deep.
pub fn check(json: &[u8]) -> Result<(), TooDeep> {
    check_max(json, MAX_DEPTH)
}

/// Check that `json` nests at most `max` levels deep (`{}` and `[]` are one level each).
pub fn check_max(json: &[u8], max: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in json.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep { offset });
                }
            }
            // Unbalanced closers are malformed JSON; the parser reports them.
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn at_the_limit_passes_one_more_fails() {
        assert_eq!(check(nested(MAX_DEPTH).as_bytes()), Ok(()));
        assert_eq!(
            check(nested(MAX_DEPTH + 1).as_bytes()),
            Err(TooDeep { offset: MAX_DEPTH })
        );
        let objects = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(check(objects.as_bytes()).is_err());
    }

    #[test]
    fn scalars_and_empty_input() {
        for ok in ["", "1", "\"x\"", "null", "{}", "[]"] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let s = format!(r#"{{"a":"{}"}}"#, "[{".repeat(1000));
        assert_eq!(check(s.as_bytes()), Ok(()));
    }

    #[test]
    fn escaped_quote_does_not_end_the_string() {
        // If \" ended the string, the brackets after it would count.
        let s = format!(r#"["a\"{}"]"#, "[".repeat(100));
        assert_eq!(check(s.as_bytes()), Ok(()));
    }

    #[test]
    fn escaped_backslash_does_end_the_string() {
        // "a\\" is a complete string; the brackets after it are structure.
        let s = format!(
            r#"["a\\",{}1{}]"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(check(s.as_bytes()).is_err());
        let s = format!(
            r#"["a\\",{}1{}]"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(check(s.as_bytes()), Ok(()));
    }

    #[test]
    fn siblings_do_not_add_up() {
        let s = format!("[{}]", vec![nested(MAX_DEPTH - 1); 50].join(","));
        assert_eq!(check(s.as_bytes()), Ok(()));
    }

    #[test]
    fn unbalanced_and_non_utf8_input_does_not_panic() {
        for bad in [
            &b"]]]]}}}"[..],
            b"\"unterminated [[[[",
            b"\\\\\\",
            &[0xff, 0xfe, b'[', 0x80],
        ] {
            let _ = check(bad);
        }
        // Closers first must not let a later deep run through (no underflow credit).
        let s = format!("]]]]]]{}", nested(MAX_DEPTH + 1));
        assert!(check(s.as_bytes()).is_err());
    }

    #[test]
    fn huge_flat_input_is_fine() {
        let s = format!("[{}1]", "1,".repeat(200_000));
        assert_eq!(check(s.as_bytes()), Ok(()));
    }
}
