//! Why bytes are not a valid envelope: one variant per stage of [`super::decode`], each
//! mapped to its stable [`ReasonCode`].

use std::fmt;

use thiserror::Error;

use crate::reason::ReasonCode;

/// Longest detail text carried to a notice (the notice's `detail` allows 1024 characters).
const MAX_DETAIL_CHARS: usize = 512;

/// A field that breaks the contract: where (a JSON pointer, RFC 6901, `""` for the whole
/// envelope) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub pointer: String,
    pub message: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "(envelope)"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.message)
    }
}

impl std::error::Error for FieldError {}

/// Why [`super::decode`] refused a body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("the body is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("the JSON nests more than {max} levels deep (at byte {offset})")]
    TooDeep { offset: usize, max: usize },
    #[error("the body is not well-formed JSON: {message}")]
    InvalidJson { message: String },
    #[error("schema violation at {0}")]
    Schema(#[from] FieldError),
}

impl WireError {
    /// The stable reason code sent back to the sender in a notice.
    pub fn reason(&self) -> ReasonCode {
        match self {
            Self::InvalidUtf8 { .. } => ReasonCode::InvalidUtf8,
            Self::TooDeep { .. } => ReasonCode::TooDeep,
            Self::InvalidJson { .. } => ReasonCode::InvalidJson,
            Self::Schema(_) => ReasonCode::SchemaViolation,
        }
    }

    /// The JSON pointer of the offending field, for schema violations.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            Self::Schema(e) => Some(&e.pointer),
            _ => None,
        }
    }

    /// This error as a notice's `detail`: at most 512 characters, no control characters
    /// (so it always fits the notice schema's `text`).
    pub fn detail(&self) -> String {
        let full = self.to_string();
        let clean = |c: char| if c.is_control() { ' ' } else { c };
        if full.chars().count() <= MAX_DETAIL_CHARS {
            return full.chars().map(clean).collect();
        }
        let mut cut: String = full.chars().take(MAX_DETAIL_CHARS - 1).map(clean).collect();
        cut.push('…');
        cut
    }
}
