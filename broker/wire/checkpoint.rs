//! The `checkpoint` body (`schemas/checkpoint/1.schema.json`): the broker-signed head of the
//! audit log. [`Checkpoint::validate`] accepts exactly what the schema accepts: the shape of
//! the C2SP signed note, not its signature nor its agreement with `log`/`size`/`root`/`time`,
//! which the checkpoint verifier checks (a checkpoint is believed only after that).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::check;
use super::error::FieldError;
use super::limits::{MAX_NAME_CHARS, MAX_SIGNED_NOTE_CHARS, MAX_TREE_SIZE};
use super::time;

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The log's origin line (first line of the note).
    pub log: String,
    /// Tree size: entries covered (at most 2^53 - 1).
    pub size: u64,
    /// Merkle tree root (RFC 9162), standard padded base64 on the wire.
    #[serde(with = "root_b64")]
    pub root: [u8; 32],
    /// When the checkpoint was cut.
    #[serde(with = "time::required")]
    pub time: DateTime<Utc>,
    /// The full C2SP signed note: text, a blank line, signature lines (`— name base64`).
    pub note: String,
}

impl Checkpoint {
    /// Check every bound of the schema; `at` is the body's JSON pointer.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let p = |field: &str| format!("{at}/{field}");
        check::line(&p("log"), &self.log, 1, MAX_NAME_CHARS)?;
        if self.size > MAX_TREE_SIZE {
            return Err(FieldError::new(
                p("size"),
                format!("greater than {MAX_TREE_SIZE}"),
            ));
        }
        check::timestamp(&p("time"), &self.time)?;
        check::length(&p("note"), &self.note, 1, MAX_SIGNED_NOTE_CHARS)?;
        if let Some(c) = self
            .note
            .chars()
            .find(|&c| (c <= '\u{1f}' && c != '\n') || c == '\u{7f}')
        {
            return Err(FieldError::new(
                p("note"),
                format!("control character U+{:04X} not allowed", u32::from(c)),
            ));
        }
        if !signed_note_shape(&self.note) {
            return Err(FieldError::new(
                p("note"),
                "not a signed note: text, a blank line, then signature lines starting with '— '",
            ));
        }
        Ok(())
    }
}

/// The schema's pattern `\n\n(— [^\n]+\n)+$`: after the last blank line come one or more
/// signature lines, each `— ` and at least one more character, each ending in a newline.
fn signed_note_shape(note: &str) -> bool {
    let Some(blank) = note.rfind("\n\n") else {
        return false;
    };
    let sigs = &note[blank + 2..];
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return false;
    };
    sigs.split('\n').all(|line| {
        line.strip_prefix("\u{2014} ")
            .is_some_and(|rest| !rest.is_empty())
    })
}

mod root_b64 {
    use super::*;

    pub fn serialize<S: Serializer>(root: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(root))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bad = || serde::de::Error::custom("root is not canonical standard base64 of 32 bytes");
        if text.len() != 44 || !check::canonical_base64(&text) {
            return Err(bad());
        }
        let bytes = STANDARD.decode(text.as_bytes()).map_err(|_| bad())?;
        bytes.try_into().map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_shapes() {
        assert!(signed_note_shape("o\n1\nr\n\n\u{2014} k sig\n"));
        assert!(signed_note_shape(
            "o\n1\nr\n\n\u{2014} k sig\n\u{2014} w sig2\n"
        ));
        assert!(signed_note_shape("o\n\n\n\u{2014} k sig\n"));
        for bad in [
            "o\n1\nr\n",
            "o\n1\nr\n\n\u{2014} k sig",
            "o\n1\nr\n\n- k sig\n",
            "o\n1\nr\n\n\u{2014} \n",
            "o\n1\nr\n\n\u{2014} k sig\n\n",
            "o\n1\nr\n\n\u{2014} k sig\nextra\n",
            "\n\n",
        ] {
            assert!(!signed_note_shape(bad), "{bad:?}");
        }
    }
}
