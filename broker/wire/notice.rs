//! The `notice` body (`schemas/notice/1.schema.json`): the broker tells a participant
//! something in its own name, with a stable [`ReasonCode`]. [`Notice::validate`] accepts
//! exactly what the schema accepts.

use serde::{Deserialize, Serialize};

use super::check;
use super::error::FieldError;
use super::json::present;
use super::limits::{MAX_ITEM_INDEX, MAX_ITEMS, MAX_MESSAGE_CHARS, MAX_REASON_CHARS};
use crate::ids::EnvelopeId;
use crate::reason::ReasonCode;

/// A message from the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    pub code: ReasonCode,
    /// A human sentence ([`ReasonCode::sentence`] unless there is something better to say).
    pub message: String,
    /// The envelope this notice is about, when known.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub about: Option<EnvelopeId>,
    /// Specifics, e.g. the JSON pointer of the field that violates the schema.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub detail: Option<String>,
    /// With [`ReasonCode::Duplicate`] only: the referral that first carried the URL there.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub first_referral: Option<EnvelopeId>,
    /// Indexes of the items of `about` concerned (1 to 500, no repeats).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub items: Option<Vec<u16>>,
}

impl Notice {
    /// A notice with the code's standard sentence and nothing else.
    pub fn new(code: ReasonCode) -> Self {
        Self {
            code,
            message: code.sentence().to_owned(),
            about: None,
            detail: None,
            first_referral: None,
            items: None,
        }
    }

    /// Check every bound of the schema; `at` is the body's JSON pointer.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let p = |field: &str| format!("{at}/{field}");
        check::text(&p("message"), &self.message, 1, MAX_MESSAGE_CHARS)?;
        if let Some(about) = &self.about {
            check::envelope_id(&p("about"), about)?;
        }
        if let Some(detail) = &self.detail {
            check::text(&p("detail"), detail, 1, MAX_REASON_CHARS)?;
        }
        if let Some(first) = &self.first_referral {
            check::envelope_id(&p("first_referral"), first)?;
            if self.code != ReasonCode::Duplicate {
                return Err(FieldError::new(
                    p("code"),
                    "must be duplicate when first_referral is given",
                ));
            }
        }
        if let Some(items) = &self.items {
            check::count(&p("items"), items.len(), 1, MAX_ITEMS)?;
            for (i, &index) in items.iter().enumerate() {
                if index > MAX_ITEM_INDEX {
                    return Err(FieldError::new(
                        format!("{at}/items/{i}"),
                        format!("greater than {MAX_ITEM_INDEX}"),
                    ));
                }
                if items[..i].contains(&index) {
                    return Err(FieldError::new(
                        format!("{at}/items/{i}"),
                        "repeats an earlier index",
                    ));
                }
            }
        }
        Ok(())
    }
}
