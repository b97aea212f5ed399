//! [`Inbox`]: reads this participant's queue `inbox.<id>`, verifies every delivery, drops a
//! second copy of an envelope already handed over, and lets the caller hand the rest over
//! before anything is acknowledged.
//!
//! For each delivery, [`Inbox::next`] yields one [`InboxEvent`]:
//! - [`InboxEvent::Message`]: genuine ([`verify_delivery`]) and not handed over before. The
//!   caller hands [`Pending::message`] to its system, *then* calls [`Pending::handed_over`],
//!   which records the envelope id durably and only then acknowledges. If the system cannot take
//!   it now, [`Pending::give_back`] returns it to the queue. Dropping a `Pending` without either
//!   leaves it unacknowledged: RabbitMQ delivers it again after this connection ends.
//! - [`InboxEvent::Duplicate`]: genuine, but its envelope id was handed over before (the broker
//!   published it again after a crash, or RabbitMQ redelivered it after ours). Already
//!   acknowledged and dropped; reported so the caller can count it.
//! - [`InboxEvent::Refused`]: not genuine. **Never handed over.** A copy (raw bytes, headers,
//!   why) is written to `<data_dir>/refused/`, and the delivery is *parked*: rejected without
//!   requeue, so the inbox queue dead-letters it to the operator's `parked` queue, where it is
//!   kept for investigation rather than lost, and it does not block the messages behind it.
//!   Acknowledging it would destroy the network's copy of the evidence; requeueing it would
//!   loop. A delivery refused only because the local registry is out of date (a key registered
//!   since) can be moved back from `parked` by the operator once the registry is updated.
//!
//! Two modes ([`InboxMode`]): `Follow` consumes and waits for new messages forever (across
//! reconnections); `Drain` fetches one message at a time (`basic.get`) and ends when the queue
//! is empty.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use chrono::Utc;
use lapin::Acker;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use tracing::{debug, error, info, warn};

use super::ParticipantError;
use super::datadir::{DataDir, HandoverRecord, RefusedCopy};
use super::verify::{
    DeliveryMeta, HEADER_ATTESTATION, HEADER_ATTESTATION_KEY_ID, HEADER_ATTESTATION_SIG,
    HEADER_ORIGIN, Refusal, verify_delivery,
};
use crate::ids::{EnvelopeId, KeyId, ParticipantId};
use crate::registry::Registry;
use crate::signing;
use crate::transport::{Consumer, Transport, TransportError};
use crate::wire::attestation::Attestation;
use crate::wire::{Envelope, Kind};

/// How the inbox is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxMode {
    /// Wait for new messages until the connection is closed.
    Follow,
    /// Take what is there and stop when the queue is empty.
    Drain,
}

/// A genuine message, as handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub envelope: Envelope,
    /// The body exactly as received and verified (the origin's signed bytes).
    pub bytes: Vec<u8>,
    /// The origin's key that signed it.
    pub key_id: KeyId,
    /// The broker's signed statement about this copy (`None` for the broker's own messages).
    pub attestation: Option<Attestation>,
    /// RabbitMQ delivered it before (to this reader or another) and it was not acknowledged.
    pub redelivered: bool,
}

/// One step of reading the inbox; see the module documentation.
#[derive(Debug)]
pub enum InboxEvent {
    Message(Pending),
    Duplicate {
        envelope_id: EnvelopeId,
        kind: Kind,
        redelivered: bool,
        /// When it was handed over the first time.
        first: HandoverRecord,
    },
    Refused(RefusedDelivery),
}

/// A delivery refused as not genuine, already parked.
#[derive(Debug)]
pub struct RefusedDelivery {
    pub refusal: Refusal,
    /// The `message_id` property as received (not authenticated).
    pub message_id: Option<String>,
    pub redelivered: bool,
    /// Where the copy was kept, unless writing it failed (logged).
    pub kept_at: Option<PathBuf>,
}

/// A genuine message waiting to be handed over; see the module documentation.
#[derive(Debug)]
#[must_use = "call handed_over() once the message is stored, or give_back()"]
pub struct Pending {
    received: Box<Received>,
    acker: Acker,
    data: Arc<DataDir>,
}

impl Pending {
    pub fn message(&self) -> &Received {
        &self.received
    }

    /// The caller's system has the message: record its id durably, then acknowledge. Fails
    /// only if the record cannot be written (then nothing is acknowledged and the message comes
    /// again); a lost acknowledgement is logged, since a redelivery is then dropped as a
    /// duplicate.
    pub async fn handed_over(self) -> Result<Received, ParticipantError> {
        let id = &self.received.envelope.id;
        self.data.record_handed_over(
            id,
            &HandoverRecord {
                at: Utc::now(),
                kind: self.received.envelope.kind,
            },
        )?;
        ack(&self.acker, id.as_str()).await;
        Ok(*self.received)
    }

    /// The caller's system cannot take it now: back to the queue, to be delivered again.
    pub async fn give_back(self) -> Result<(), ParticipantError> {
        self.acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .map_err(|source| amqp("returning a message to the inbox", source))?;
        Ok(())
    }
}

fn amqp(op: &str, source: lapin::Error) -> ParticipantError {
    ParticipantError::from(TransportError::Amqp {
        op: op.to_owned(),
        source,
    })
}

/// Acknowledges; a failure is logged, not returned. By then the outcome is settled: either the
/// id is recorded as handed over (a redelivery is dropped as a duplicate) or the message was a
/// duplicate already. RabbitMQ delivers an unacknowledged message again after a reconnection,
/// and that is harmless.
async fn ack(acker: &Acker, what: &str) {
    if let Err(e) = acker.ack(BasicAckOptions::default()).await {
        warn!(envelope = what, error = %e, "acknowledgement lost (the connection dropped?); a redelivery will be dropped as a duplicate");
    }
}

enum Source {
    Follow(Consumer),
    Drain {
        transport: Transport,
        channel: Option<Channel>,
    },
}

/// This participant's inbox; see the module documentation.
pub struct Inbox {
    registry: Arc<Registry>,
    me: ParticipantId,
    queue: String,
    data: Arc<DataDir>,
    source: Source,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queue", &self.queue)
            .field("data_dir", &self.data.root())
            .finish_non_exhaustive()
    }
}

/// A header's value as bytes (AMQP long string, short string or byte array).
pub fn header_bytes<'a>(properties: &'a lapin::BasicProperties, name: &str) -> Option<&'a [u8]> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        AMQPValue::ByteArray(b) => Some(b.as_slice()),
        _ => None,
    }
}

fn header_str<'a>(properties: &'a lapin::BasicProperties, name: &str) -> Option<&'a str> {
    header_bytes(properties, name).and_then(|b| std::str::from_utf8(b).ok())
}

impl Inbox {
    pub(crate) async fn open(
        transport: Transport,
        registry: Arc<Registry>,
        me: ParticipantId,
        data_dir: &Path,
        mode: InboxMode,
    ) -> Result<Self, ParticipantError> {
        let data = Arc::new(DataDir::open(data_dir)?);
        let queue = me.inbox_queue();
        let source = match mode {
            InboxMode::Follow => Source::Follow(transport.consume(&queue).await?),
            InboxMode::Drain => {
                let channel = transport.open_channel().await?;
                Source::Drain {
                    transport,
                    channel: Some(channel),
                }
            }
        };
        Ok(Self {
            registry,
            me,
            queue,
            data,
            source,
        })
    }

    /// The queue read.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The data directory in use.
    pub fn data_dir(&self) -> &DataDir {
        &self.data
    }

    /// Ends reading: closes the channel of a `Drain` inbox (a `Follow` inbox's channel closes
    /// with the connection). Messages taken but not handed over return to the queue.
    pub async fn close(self) {
        if let Source::Drain {
            channel: Some(ch), ..
        } = &self.source
            && ch.status().connected()
        {
            let _ = ch.close(200, "inbox read".into()).await;
        }
    }

    /// The next delivery, verified and classified. `None`: the queue is empty (`Drain`) or the
    /// connection was closed (`Follow`).
    pub async fn next(&mut self) -> Option<Result<InboxEvent, ParticipantError>> {
        let delivery = match self.fetch().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        Some(self.classify(delivery).await)
    }

    async fn fetch(&mut self) -> Option<Result<lapin::message::Delivery, ParticipantError>> {
        match &mut self.source {
            Source::Follow(consumer) => match consumer.next().await? {
                Ok(d) => Some(Ok(d.into_inner())),
                Err(e) => Some(Err(e.into())),
            },
            Source::Drain { transport, channel } => {
                let ch = match channel {
                    Some(ch) if ch.status().connected() => ch.clone(),
                    _ => match transport.open_channel().await {
                        Ok(ch) => {
                            *channel = Some(ch.clone());
                            ch
                        }
                        Err(e) => return Some(Err(e.into())),
                    },
                };
                match ch
                    .basic_get(
                        self.queue.as_str().into(),
                        BasicGetOptions { no_ack: false },
                    )
                    .await
                {
                    Ok(Some(message)) => Some(Ok(message.delivery)),
                    Ok(None) => None,
                    Err(source) => Some(Err(amqp(
                        &format!("fetching from queue {:?}", self.queue),
                        source,
                    ))),
                }
            }
        }
    }

    async fn classify(
        &self,
        delivery: lapin::message::Delivery,
    ) -> Result<InboxEvent, ParticipantError> {
        let p = &delivery.properties;
        let meta = DeliveryMeta {
            message_id: p.message_id().as_ref().map(|s| s.as_str()),
            kind: p.kind().as_ref().map(|s| s.as_str()),
            sig_b64: header_str(p, signing::HEADER_SIG),
            key_id: header_str(p, signing::HEADER_KEY_ID),
            attestation: header_bytes(p, HEADER_ATTESTATION),
            attestation_sig_b64: header_str(p, HEADER_ATTESTATION_SIG),
            attestation_key_id: header_str(p, HEADER_ATTESTATION_KEY_ID),
            origin: header_str(p, HEADER_ORIGIN),
        };
        let verified = verify_delivery(&delivery.data, &meta, &self.registry, &self.me, Utc::now());
        let genuine = match verified {
            Ok(g) => g,
            Err(refusal) => return self.park(delivery, refusal).await,
        };
        let id = genuine.envelope.id.clone();
        if let Some(first) = self.data.handed_over(&id)? {
            info!(
                envelope = %id,
                redelivered = delivery.redelivered,
                "second copy of an envelope already handed over: dropped"
            );
            ack(&delivery.acker, id.as_str()).await;
            return Ok(InboxEvent::Duplicate {
                envelope_id: id,
                kind: genuine.envelope.kind,
                redelivered: delivery.redelivered,
                first,
            });
        }
        debug!(envelope = %id, kind = %genuine.envelope.kind, "genuine");
        Ok(InboxEvent::Message(Pending {
            received: Box::new(Received {
                envelope: genuine.envelope,
                bytes: delivery.data,
                key_id: genuine.key_id,
                attestation: genuine.attestation,
                redelivered: delivery.redelivered,
            }),
            acker: delivery.acker,
            data: self.data.clone(),
        }))
    }

    /// Keeps a copy of a refused delivery and dead-letters it (see the module documentation).
    async fn park(
        &self,
        delivery: lapin::message::Delivery,
        refusal: Refusal,
    ) -> Result<InboxEvent, ParticipantError> {
        use sha2::Digest as _;
        let p = &delivery.properties;
        let message_id = p.message_id().as_ref().map(|s| s.to_string());
        warn!(
            message_id = message_id.as_deref().unwrap_or("-"),
            problem = %refusal.problem,
            detail = %refusal.detail,
            "delivery refused as not genuine: not handed over, parked"
        );
        let headers: BTreeMap<String, String> = p
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .keys()
                    .filter_map(|k| {
                        header_bytes(p, k.as_str())
                            .map(|b| (k.to_string(), String::from_utf8_lossy(b).into_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let copy = RefusedCopy {
            received_at: crate::wire::time::format(&Utc::now()),
            problem: refusal.problem.as_str(),
            detail: &refusal.detail,
            redelivered: delivery.redelivered,
            message_id: message_id.as_deref(),
            kind: p.kind().as_ref().map(|s| s.as_str()),
            headers,
            body_base64: base64::engine::general_purpose::STANDARD.encode(&delivery.data),
            body_sha256: hex::encode(sha2::Sha256::digest(&delivery.data)),
        };
        let kept_at = match self.data.keep_refused(&copy) {
            Ok(path) => Some(path),
            Err(e) => {
                error!(error = %e, "could not keep a copy of a refused delivery");
                None
            }
        };
        // If the reject is lost with the connection, RabbitMQ delivers the message again, it
        // is refused again and parked then.
        if let Err(e) = delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await
        {
            warn!(error = %e, "parking a refused delivery failed; it will come again");
        }
        Ok(InboxEvent::Refused(RefusedDelivery {
            refusal,
            message_id,
            redelivered: delivery.redelivered,
            kept_at,
        }))
    }
}
