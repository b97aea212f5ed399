//! [`Participant`]: one participant's connection to the network — it signs and sends envelopes
//! (referrals, receipts, status updates, retractions) and opens its inbox.
//!
//! Guarantees:
//! - [`Participant::connect`] reads and checks everything before it connects: the registry, the
//!   signing key (mode 0600, registered for this participant and valid now), then connects
//!   once over mutual TLS; a bad file or a key the broker would refuse is a
//!   [`ParticipantError::Config`], not a stream of rejections later.
//! - What is sent is exactly what is signed: the envelope's bytes are produced once, signed
//!   with [`Signer`], and published unchanged, with the properties and headers of the design's
//!   Wire section (`content_type`, `type`, `message_id`, `user_id`, `timestamp`,
//!   `delivery_mode` 2, `x-sig`, `x-key-id`).
//! - A send returns only when RabbitMQ confirmed *and* routed the message to `ingress`. A send
//!   interrupted by a lost connection is retried with the same bytes (same envelope id); if the
//!   first copy had in fact arrived, the broker processes one and answers the other with a
//!   `replayed` notice — expected, and harmless.
//! - Nothing invalid is sent: an envelope built here is validated against the contract first,
//!   and an envelope given as bytes is decoded with [`wire::decode`] and must name this
//!   participant as its origin.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound as _, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use tracing::{debug, warn};

use super::ParticipantError;
use super::config::ParticipantConfig;
use super::inbox::{Inbox, InboxMode};
use crate::ids::{EnvelopeId, ParticipantId};
use crate::registry::{KeyState, Registry};
use crate::signing::{self, Signer};
use crate::transport::topology::{INGRESS_EXCHANGE, INGRESS_ROUTING_KEY};
use crate::transport::{Publisher, Transport};
use crate::wire::{self, Body, Envelope, Outcome, Receipt, Status};

/// How many times one send is attempted when the connection fails under it.
const SEND_ATTEMPTS: u32 = 3;

/// A connected participant; see the module documentation. Cheap to share behind an `Arc`;
/// every method takes `&self`.
pub struct Participant {
    config: ParticipantConfig,
    registry: Arc<Registry>,
    signer: Signer,
    transport: Transport,
    publisher: Publisher,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("id", &self.config.participant)
            .field("signer", &self.signer)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Participant {
    /// Loads the registry and the signing key, checks them, and connects. See the module
    /// documentation.
    pub async fn connect(config: ParticipantConfig) -> Result<Self, ParticipantError> {
        let (registry, signer) = load_identity(&config)?;
        let transport_config = config.transport();
        transport_config
            .validate()
            .map_err(|e| ParticipantError::config(format!("{e}")))?;
        for (what, path) in [
            ("broker.ca", &config.broker.ca),
            ("broker.certificate", &config.broker.certificate),
            ("broker.key", &config.broker.key),
        ] {
            if !path.is_file() {
                return Err(ParticipantError::config(format!(
                    "{what}: {} is not a readable file",
                    path.display()
                )));
            }
        }
        let transport = Transport::connect(transport_config).await?;
        let publisher = transport.publisher();
        Ok(Self {
            config,
            registry: Arc::new(registry),
            signer,
            transport,
            publisher,
        })
    }

    /// This participant's id (certificate CN, RabbitMQ user, origin of what it signs).
    pub fn id(&self) -> &ParticipantId {
        &self.config.participant
    }

    pub fn config(&self) -> &ParticipantConfig {
        &self.config
    }

    /// The registry this participant verifies others with.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The underlying connection (for its state and reconnection figures).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Builds an envelope of `body` from this participant (fresh UUIDv7 id, created now),
    /// signs it and sends it. Returns the envelope id once RabbitMQ confirmed it.
    pub async fn submit(&self, body: Body) -> Result<EnvelopeId, ParticipantError> {
        let envelope = Envelope::new(self.id().clone(), body);
        self.submit_envelope(&envelope).await
    }

    /// Signs and sends an envelope built by the caller. It must validate and name this
    /// participant as its origin.
    pub async fn submit_envelope(
        &self,
        envelope: &Envelope,
    ) -> Result<EnvelopeId, ParticipantError> {
        envelope
            .validate()
            .map_err(|e| ParticipantError::Invalid(e.to_string()))?;
        self.check_origin(envelope)?;
        self.send_signed(&envelope.to_bytes(), envelope).await
    }

    /// Signs and sends an envelope serialised elsewhere, byte for byte (nothing is
    /// re-serialised). The bytes must decode under the contract ([`wire::decode`]) and name
    /// this participant as origin.
    pub async fn submit_bytes(&self, bytes: &[u8]) -> Result<EnvelopeId, ParticipantError> {
        if bytes.len() > wire::limits::MAX_BODY_BYTES {
            return Err(ParticipantError::Invalid(format!(
                "the envelope is {} bytes; at most {} are accepted",
                bytes.len(),
                wire::limits::MAX_BODY_BYTES
            )));
        }
        let envelope = wire::decode(bytes)
            .map_err(|e| ParticipantError::Invalid(format!("{} ({})", e.detail(), e.reason())))?;
        self.check_origin(&envelope)?;
        self.send_signed(bytes, &envelope).await
    }

    /// Sends a signed `receipt` for a referral received.
    pub async fn send_receipt(
        &self,
        referral: &EnvelopeId,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Result<EnvelopeId, ParticipantError> {
        self.submit(Body::Receipt(Receipt {
            referral: referral.clone(),
            outcome,
            reason,
            received_at: Some(Utc::now().trunc_subsecs(3)),
        }))
        .await
    }

    /// Sends a signed `status` update about one item of a referral received.
    pub async fn send_status(&self, status: Status) -> Result<EnvelopeId, ParticipantError> {
        self.submit(Body::Status(status)).await
    }

    /// Opens this participant's inbox (`inbox.<id>`); see [`Inbox`]. Takes the data directory's
    /// lock for as long as the inbox lives.
    pub async fn inbox(&self, mode: InboxMode) -> Result<Inbox, ParticipantError> {
        Inbox::open(
            self.transport.clone(),
            self.registry.clone(),
            self.id().clone(),
            &self.config.data_dir,
            mode,
        )
        .await
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.transport.close().await;
    }

    fn check_origin(&self, envelope: &Envelope) -> Result<(), ParticipantError> {
        if &envelope.origin != self.id() {
            return Err(ParticipantError::Invalid(format!(
                "the envelope's origin is {} but this participant is {}: a participant signs \
                 only in its own name",
                envelope.origin,
                self.id()
            )));
        }
        Ok(())
    }

    /// Signs `bytes` (the serialisation of `envelope`) and publishes them to `ingress`.
    async fn send_signed(
        &self,
        bytes: &[u8],
        envelope: &Envelope,
    ) -> Result<EnvelopeId, ParticipantError> {
        let properties = properties(
            envelope,
            self.id(),
            &self.signer.sign_b64(bytes),
            self.signer.key_id().as_str(),
        );
        let mut attempt = 1;
        loop {
            match self
                .publisher
                .publish(
                    INGRESS_EXCHANGE,
                    INGRESS_ROUTING_KEY,
                    bytes,
                    properties.clone(),
                )
                .await
            {
                Ok(()) => {
                    debug!(id = %envelope.id, kind = %envelope.kind, "sent");
                    return Ok(envelope.id.clone());
                }
                Err(e) if e.is_recoverable() && attempt < SEND_ATTEMPTS => {
                    warn!(id = %envelope.id, attempt, error = %e, "send failed; sending the same bytes again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The AMQP properties of a signed envelope from `me` (design, Wire).
pub fn properties(
    envelope: &Envelope,
    me: &ParticipantId,
    sig_b64: &str,
    key_id: &str,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        signing::HEADER_SIG.into(),
        AMQPValue::LongString(LongString::from(sig_b64)),
    );
    headers.insert(
        signing::HEADER_KEY_ID.into(),
        AMQPValue::LongString(LongString::from(key_id)),
    );
    let timestamp = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_type(envelope.kind.as_str().into())
        .with_message_id(envelope.id.as_str().into())
        .with_user_id(me.as_str().into())
        .with_timestamp(timestamp)
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// Loads the registry and the signing key of `config`, and checks that the key is one of the
/// participant's registered keys, valid now.
pub fn load_identity(config: &ParticipantConfig) -> Result<(Registry, Signer), ParticipantError> {
    let registry =
        Registry::load(&config.registry).map_err(|e| ParticipantError::config(e.to_string()))?;
    let signer = Signer::load(&config.signing_key)
        .map_err(|e| ParticipantError::config(format!("signing.key: {e}")))?;
    let me = &config.participant;
    let Some(entry) = registry.get(me) else {
        return Err(ParticipantError::config(format!(
            "{me} is not a participant of the registry {}",
            config.registry.display()
        )));
    };
    let Some(key) = entry.key(signer.key_id()) else {
        return Err(ParticipantError::config(format!(
            "signing.key {} (key id {}) is not registered for {me} in {}: the broker would \
             refuse everything it signs. Register its public key {} (see `referral-broker keys \
             generate`), or point signing.key at a registered key",
            config.signing_key.display(),
            signer.key_id(),
            config.registry.display(),
            signer.public_key_b64()
        )));
    };
    match key.state_at(Utc::now()) {
        KeyState::Valid => Ok((registry, signer)),
        state => Err(ParticipantError::config(format!(
            "signing.key {} (key id {}) is {} according to {}: the broker would refuse \
             everything it signs",
            config.signing_key.display(),
            signer.key_id(),
            match state {
                KeyState::NotYetValid => "not valid yet",
                KeyState::Expired => "expired",
                KeyState::Revoked => "revoked",
                KeyState::Valid => "valid",
            },
            config.registry.display()
        ))),
    }
}
