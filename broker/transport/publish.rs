//! Publishing with publisher confirms: a message counts as sent only when RabbitMQ confirmed
//! it and routed it to a queue.
//!
//! Guarantees:
//! - Every publish is `mandatory`; a confirm that carries a returned message (312 NO_ROUTE),
//!   a nack, a channel refusal (ACCESS_REFUSED, NOT_FOUND, PRECONDITION_FAILED …) are errors,
//!   never success.
//! - Every publish ends within the confirm timeout, including while the server blocks the
//!   connection or while the transport reconnects: [`PublishError::Timeout`] or
//!   [`PublishError::NotConnected`], both recoverable.
//! - A publish in flight when the connection is lost fails with
//!   [`PublishError::ConnectionLost`] (recoverable): republish it; receivers deduplicate by
//!   message id.
//! - Many publishes may be in flight: [`Publisher::send`] returns once the message is handed
//!   to the connection, and the [`PendingConfirm`] it returns resolves later.
//!
//! A channel closed by a refusal or a reconnection is replaced by a new one on the next publish.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::connection::Transport;
use super::error::{PublishError, TransportError, amqp_reply, is_soft};

/// Publishes on one confirm-mode channel of a [`Transport`]. Shareable (`&self` methods); one
/// per concern, so that a refusal on one does not disturb the others.
pub struct Publisher {
    transport: Transport,
    channel: Mutex<Option<(u64, Channel)>>,
}

/// The confirm of one publish, to await later. Dropping it forgets the outcome (the message
/// may or may not have been delivered).
#[must_use = "a publish is not done until its confirm is awaited"]
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    deadline: Instant,
    timeout: Duration,
    exchange: String,
    routing_key: String,
    transport: Transport,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PendingConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConfirm")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(transport: Transport) -> Self {
        Self {
            transport,
            channel: Mutex::new(None),
        }
    }

    /// Publishes and waits for the confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.send(exchange, routing_key, body, properties)
            .await?
            .wait()
            .await
    }

    /// Hands the message to the connection and returns its pending confirm. The confirm
    /// timeout starts now and covers both steps.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<PendingConfirm, PublishError> {
        let timeout = self.transport.config().confirm_timeout;
        let deadline = Instant::now() + timeout;
        let timed_out = || PublishError::Timeout {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            after: timeout,
            blocked: self.transport.is_blocked(),
        };
        let channel = tokio::time::timeout_at(deadline, self.channel(timeout))
            .await
            .map_err(|_| timed_out())??;
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let published = channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        );
        let confirm = tokio::time::timeout_at(deadline, published)
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| failure(exchange, routing_key, e))?;
        Ok(PendingConfirm {
            confirm,
            deadline,
            timeout,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            transport: self.transport.clone(),
        })
    }

    /// The confirm-mode channel, opened again if the last one closed or belongs to an old
    /// connection.
    async fn channel(&self, wait: Duration) -> Result<Channel, PublishError> {
        let mut slot = self.channel.lock().await;
        if let Some((generation, channel)) = slot.as_ref() {
            let current = matches!(
                self.transport.state(),
                super::LinkState::Up { generation: g } if g == *generation
            );
            if current && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        *slot = None;
        let (conn, generation) = self.transport.current(wait).await.map_err(|e| match e {
            TransportError::Closed => PublishError::Closed,
            e => PublishError::NotConnected(e),
        })?;
        let amqp = |op: &str| {
            let op = op.to_owned();
            move |source| PublishError::NotConnected(TransportError::Amqp { op, source })
        };
        let channel = conn
            .create_channel()
            .await
            .map_err(amqp("opening a publishing channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("enabling publisher confirms"))?;
        *slot = Some((generation, channel.clone()));
        Ok(channel)
    }
}

/// Maps a lapin error of a publish to the publish error.
fn failure(exchange: &str, routing_key: &str, e: lapin::Error) -> PublishError {
    match amqp_reply(&e) {
        Some((code, text)) if is_soft(&e) => PublishError::Refused {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            code,
            text,
        },
        _ => PublishError::ConnectionLost {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            source: e,
        },
    }
}

impl PendingConfirm {
    /// Waits for the confirm: `Ok` only for an ack of a routed message.
    pub async fn wait(self) -> Result<(), PublishError> {
        let Self {
            confirm,
            deadline,
            timeout,
            exchange,
            routing_key,
            transport,
        } = self;
        let outcome = match tokio::time::timeout_at(deadline, confirm).await {
            Err(_) => {
                return Err(PublishError::Timeout {
                    exchange,
                    routing_key,
                    after: timeout,
                    blocked: transport.is_blocked(),
                });
            }
            Ok(Err(e)) => return Err(failure(&exchange, &routing_key, e)),
            Ok(Ok(outcome)) => outcome,
        };
        match outcome {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(PublishError::Returned {
                    exchange,
                    routing_key,
                    code: returned.reply_code,
                    text: returned.reply_text.to_string(),
                })
            }
            Confirmation::Nack(None) | Confirmation::NotRequested => Err(PublishError::Nacked {
                exchange,
                routing_key,
            }),
        }
    }
}
