//! The `referral` body (`schemas/referral/1.schema.json`): a hotline refers URLs it assessed
//! to the hotline of the hosting country, and to law enforcement when urgent.
//!
//! Guarantees: [`Referral::validate`] accepts exactly what the schema accepts (with the items
//! checked by [`Item::validate`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::check;
use super::error::FieldError;
use super::item::Item;
use super::json::present;
use super::limits::{MAX_CASE_ID_CHARS, MAX_ITEMS, MAX_NOTES_CHARS, MAX_REASON_CHARS};
use super::time;
use crate::ids::ParticipantId;

/// A referral of 1 to [`MAX_ITEMS`] items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Referral {
    /// The origin's own case id.
    pub reference: String,
    /// When the origin received the public report: start of the notice-and-takedown clock.
    #[serde(with = "time::required")]
    pub public_report_received_at: DateTime<Utc>,
    pub priority: Priority,
    /// Required with [`Priority::Urgent`], absent otherwise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub escalation_reason: Option<String>,
    /// Explicit destination; when absent, items are routed by hosting country.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub to: Option<ParticipantId>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub notes: Option<String>,
    pub items: Vec<Item>,
}

/// How fast the destination should act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Normal,
    /// A child may be in immediate danger: also copied to law enforcement.
    Urgent,
}

impl Referral {
    /// Check every bound of the schema; `at` is the body's JSON pointer (`/body`).
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let p = |field: &str| format!("{at}/{field}");
        check::line(&p("reference"), &self.reference, 1, MAX_CASE_ID_CHARS)?;
        check::timestamp(
            &p("public_report_received_at"),
            &self.public_report_received_at,
        )?;
        match (self.priority, &self.escalation_reason) {
            (Priority::Urgent, None) => {
                return Err(FieldError::new(
                    p("escalation_reason"),
                    "required when priority is urgent",
                ));
            }
            (Priority::Normal, Some(_)) => {
                return Err(FieldError::new(
                    p("escalation_reason"),
                    "only allowed when priority is urgent",
                ));
            }
            (_, Some(reason)) => check::text(&p("escalation_reason"), reason, 1, MAX_REASON_CHARS)?,
            (Priority::Normal, None) => {}
        }
        if let Some(notes) = &self.notes {
            check::text(&p("notes"), notes, 1, MAX_NOTES_CHARS)?;
        }
        check::count(&p("items"), self.items.len(), 1, MAX_ITEMS)?;
        for (i, item) in self.items.iter().enumerate() {
            item.validate(&format!("{at}/items/{i}"))?;
        }
        Ok(())
    }
}
