//! The participant side of the network, as a library a hotline's Rust system embeds (the
//! `submit`, `inbox` and `status-update` commands are thin layers over it).
//!
//! # Layout
//! - [`config`]: `participant.toml` — id, broker address, TLS files, signing key, registry,
//!   data directory.
//! - [`client`]: [`Participant`] — connect, sign and send (referrals, receipts, status updates),
//!   open the inbox.
//! - [`verify`]: pure — is a delivery genuine? The origin's signature over the bytes received,
//!   strictly, with the key the registry gives for `x-key-id`; the broker's attestation signed
//!   with the registry's broker key; both naming the same envelope and this destination.
//! - [`inbox`]: [`Inbox`] — reads `inbox.<id>`, verifies each delivery, drops a second copy of
//!   an envelope id already handed over, hands the rest over, and acknowledges only after.
//! - [`datadir`]: the ids already handed over (sled, flushed before each ack) and copies of
//!   refused deliveries.
//! - [`render`]: pure — a received message as text for an analyst, or as one JSON line.
//!
//! # Guarantees
//! Delivery is at least once on the wire and exactly once to the hotline's system (the design's
//! "Broker pipeline"): the inbox keeps the envelope ids it handed over and drops a second copy.
//! The one window it cannot close is documented in [`datadir`]. A delivery that fails
//! verification is never handed over as genuine: it is reported, a copy is kept in the data
//! directory, and it is parked (dead-lettered to the operator's `parked` queue) — see [`inbox`].
//!
//! # Example
//! ```no_run
//! # async fn example() -> Result<(), referral_broker::participant::ParticipantError> {
//! use referral_broker::participant::{InboxEvent, InboxMode, Participant, ParticipantConfig};
//! let config = ParticipantConfig::load("participant.toml".as_ref())?;
//! let me = Participant::connect(config).await?;
//! let mut inbox = me.inbox(InboxMode::Drain).await?;
//! while let Some(event) = inbox.next().await {
//!     match event? {
//!         InboxEvent::Message(pending) => {
//!             // … store pending.message() in the hotline's system, then:
//!             pending.handed_over().await?;
//!         }
//!         InboxEvent::Duplicate { .. } | InboxEvent::Refused(_) => {}
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod config;
pub mod datadir;
pub mod inbox;
pub mod render;
pub mod verify;

use thiserror::Error;

pub use client::Participant;
pub use config::{ConfigError, ParticipantConfig};
pub use datadir::{DataDir, DataDirError};
pub use inbox::{Inbox, InboxEvent, InboxMode, Pending, Received, RefusedDelivery};
pub use verify::{DeliveryMeta, Genuine, Problem, Refusal};

use crate::transport::{PublishError, TransportError};

/// Why a participant operation failed.
#[derive(Debug, Error)]
pub enum ParticipantError {
    /// `participant.toml`, the registry, a key or certificate file is missing or wrong; nothing
    /// was sent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configuration problem found while loading what the configuration names.
    #[error("{0}")]
    Setup(String),
    /// An envelope that would not pass the broker's checks; nothing was sent.
    #[error("invalid envelope: {0}")]
    Invalid(String),
    #[error(transparent)]
    Transport(Box<TransportError>),
    #[error("sending failed: {0}")]
    Publish(Box<PublishError>),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

impl From<TransportError> for ParticipantError {
    fn from(e: TransportError) -> Self {
        Self::Transport(Box::new(e))
    }
}

impl From<PublishError> for ParticipantError {
    fn from(e: PublishError) -> Self {
        Self::Publish(Box::new(e))
    }
}

impl ParticipantError {
    pub(crate) fn config(message: String) -> Self {
        Self::Setup(message)
    }

    /// True for a problem of configuration (exit code 78 in the CLI): fix a file, not the
    /// network.
    pub fn is_config(&self) -> bool {
        match self {
            Self::Config(_) | Self::Setup(_) => true,
            Self::Transport(e) => matches!(
                **e,
                TransportError::ReadFile { .. }
                    | TransportError::BadPem { .. }
                    | TransportError::Config(_)
            ),
            _ => false,
        }
    }
}
