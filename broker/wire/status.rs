//! The `status` body (`schemas/status/1.schema.json`): what happened to one item of a
//! referral at its destination. [`Status::validate`] accepts exactly what the schema accepts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::check;
use super::error::FieldError;
use super::json::present;
use super::limits::{MAX_CASE_ID_CHARS, MAX_ITEM_INDEX, MAX_REASON_CHARS};
use super::time;
use crate::ids::EnvelopeId;

/// One step in the life of one item at its destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Envelope id of the referral.
    pub referral: EnvelopeId,
    /// Index of the item in the referral's `items` (0 ..= 499).
    pub item: u16,
    pub state: State,
    /// When it happened.
    #[serde(with = "time::required")]
    pub at: DateTime<Utc>,
    /// Required with [`State::Disputed`], allowed with any state.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub reason: Option<String>,
    /// Required with [`State::ForwardedToLea`], not allowed otherwise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub lea_case_number: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub note: Option<String>,
}

/// Lifecycle states of an item at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// In the destination's queue.
    Received,
    /// A notice was sent to the host.
    TakedownRequested,
    /// Gone from the URL; closes the URL for deduplication.
    Removed,
    /// Already gone when checked.
    NotFound,
    /// The destination does not agree with the classification.
    Disputed,
    /// Handed to law enforcement.
    ForwardedToLea,
    /// The destination cannot act (no legal basis, host unresponsive, …).
    UnableToAct,
}

impl Status {
    /// Check every bound of the schema; `at` is the body's JSON pointer.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let p = |field: &str| format!("{at}/{field}");
        check::envelope_id(&p("referral"), &self.referral)?;
        if self.item > MAX_ITEM_INDEX {
            return Err(FieldError::new(
                p("item"),
                format!("greater than {MAX_ITEM_INDEX}"),
            ));
        }
        check::timestamp(&p("at"), &self.at)?;
        match &self.reason {
            Some(reason) => check::text(&p("reason"), reason, 1, MAX_REASON_CHARS)?,
            None if self.state == State::Disputed => {
                return Err(FieldError::new(
                    p("reason"),
                    "required when the state is disputed",
                ));
            }
            None => {}
        }
        match (&self.lea_case_number, self.state == State::ForwardedToLea) {
            (Some(n), true) => check::line(&p("lea_case_number"), n, 1, MAX_CASE_ID_CHARS)?,
            (None, true) => {
                return Err(FieldError::new(
                    p("lea_case_number"),
                    "required when the state is forwarded_to_lea",
                ));
            }
            (Some(_), false) => {
                return Err(FieldError::new(
                    p("lea_case_number"),
                    "only allowed when the state is forwarded_to_lea",
                ));
            }
            (None, false) => {}
        }
        if let Some(note) = &self.note {
            check::text(&p("note"), note, 1, MAX_REASON_CHARS)?;
        }
        Ok(())
    }
}
