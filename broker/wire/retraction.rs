//! The `retraction` body (`schemas/retraction/1.schema.json`): the origin withdraws a
//! referral it sent in error. [`Retraction::validate`] accepts exactly what the schema accepts.

use serde::{Deserialize, Serialize};

use super::check;
use super::error::FieldError;
use super::limits::MAX_REASON_CHARS;
use crate::ids::EnvelopeId;

/// Withdraws one referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retraction {
    /// Envelope id of the referral withdrawn.
    pub referral: EnvelopeId,
    pub reason: String,
}

impl Retraction {
    /// Check every bound of the schema; `at` is the body's JSON pointer.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        check::envelope_id(&format!("{at}/referral"), &self.referral)?;
        check::text(&format!("{at}/reason"), &self.reason, 1, MAX_REASON_CHARS)
    }
}
