//! The `receipt` body (`schemas/receipt/1.schema.json`): the destination says whether it
//! accepted a referral. [`Receipt::validate`] accepts exactly what the schema accepts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::check;
use super::error::FieldError;
use super::json::present;
use super::limits::MAX_REASON_CHARS;
use super::time;
use crate::ids::EnvelopeId;

/// Accepted or rejected, about one referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Envelope id of the referral.
    pub referral: EnvelopeId,
    pub outcome: Outcome,
    /// Required when rejected; allowed when accepted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub reason: Option<String>,
    /// When the destination's system took the referral in.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::optional"
    )]
    pub received_at: Option<DateTime<Utc>>,
}

/// The destination's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Rejected,
}

impl Receipt {
    /// Check every bound of the schema; `at` is the body's JSON pointer.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let p = |field: &str| format!("{at}/{field}");
        check::envelope_id(&p("referral"), &self.referral)?;
        match &self.reason {
            Some(reason) => check::text(&p("reason"), reason, 1, MAX_REASON_CHARS)?,
            None if self.outcome == Outcome::Rejected => {
                return Err(FieldError::new(
                    p("reason"),
                    "required when the outcome is rejected",
                ));
            }
            None => {}
        }
        if let Some(t) = &self.received_at {
            check::timestamp(&p("received_at"), t)?;
        }
        Ok(())
    }
}
