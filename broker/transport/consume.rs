//! Consuming a queue with manual acknowledgements and a bounded prefetch, across
//! reconnections.
//!
//! Guarantees:
//! - Nothing is acknowledged automatically: every [`Delivery`] is acked, nacked or rejected by
//!   the caller, and at most `prefetch` deliveries are unacknowledged at a time (`basic.qos`).
//! - [`Consumer::next`] keeps yielding deliveries after the connection is lost and restored:
//!   it subscribes again on the new connection. Deliveries not acknowledged before the loss
//!   are redelivered by RabbitMQ (with `redelivered` set); deliveries still buffered from the
//!   dead channel are dropped rather than handed out, and acknowledging one handed out just
//!   before the loss fails harmlessly ([`TransportError::ChannelClosed`]: lapin itself
//!   reports success without sending it).
//! - A subscription never waits forever: each step of subscribing waits at most the connect
//!   timeout for the server, and a subscription whose connection was lost or replaced is
//!   made again even if lapin's consumer stream did not end. An ack, nack or reject waits
//!   at most [`SETTLE_WAIT`], then fails (the message will be redelivered).
//! - A refusal by the server (no read permission, no such queue) is returned as an error, both
//!   from [`Transport::consume`](super::Transport::consume) and from `next` if it happens on
//!   a resubscription; `next` returns `None` only once the transport is closed.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tracing::{debug, warn};

use super::connection::{Transport, answered};
use super::error::TransportError;

/// Longest wait for an ack, nack or reject to be handed to the connection (none of them has
/// a reply: a longer wait means the connection is dying, and RabbitMQ will redeliver).
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// Pause before subscribing again after a failed subscription.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(250);

/// A subscription to one queue; see the module documentation.
pub struct Consumer {
    transport: Transport,
    queue: String,
    current: Option<Subscription>,
    failed_last: bool,
}

struct Subscription {
    channel: Channel,
    consumer: lapin::Consumer,
    /// The generation of the connection it was made on.
    generation: u64,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.queue)
            .field("subscribed", &self.current.is_some())
            .finish()
    }
}

impl Consumer {
    pub(crate) async fn start(transport: Transport, queue: &str) -> Result<Self, TransportError> {
        let mut consumer = Self {
            transport,
            queue: queue.to_owned(),
            current: None,
            failed_last: false,
        };
        consumer.subscribe().await?;
        Ok(consumer)
    }

    /// The queue this consumer reads.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Subscribes on the current connection. Each step waits at most the connect timeout
    /// for the server's answer: a request sent on a connection that is dying may never get
    /// one, and the subscription must then be made again on the next connection.
    async fn subscribe(&mut self) -> Result<(), TransportError> {
        let config = self.transport.config();
        let wait = config.connect_timeout;
        let (conn, generation) = self.transport.current(wait).await?;
        let channel = answered(
            wait,
            "opening a consuming channel".to_owned(),
            conn.create_channel(),
        )
        .await?;
        answered(
            wait,
            format!("setting prefetch {}", config.prefetch),
            channel.basic_qos(config.prefetch, BasicQosOptions::default()),
        )
        .await?;
        let consumer = answered(
            wait,
            format!("consuming queue {:?}", self.queue),
            channel.basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        self.current = Some(Subscription {
            channel,
            consumer,
            generation,
        });
        Ok(())
    }

    /// The next delivery. Waits across reconnections; `None` once the transport is closed.
    pub async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        loop {
            if self.current.is_none() {
                if self.failed_last {
                    tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                }
                match self.subscribe().await {
                    Ok(()) => {
                        self.failed_last = false;
                        debug!(queue = %self.queue, "subscribed again");
                    }
                    Err(TransportError::Closed) => return None,
                    Err(e) if e.is_refusal() => {
                        self.failed_last = true;
                        return Some(Err(e));
                    }
                    Err(e @ TransportError::Timeout { .. }) => {
                        // Sent on a connection that died meanwhile, most likely: try again.
                        self.failed_last = true;
                        warn!(queue = %self.queue, error = %e, "subscribing got no answer; trying again");
                        continue;
                    }
                    Err(e) => {
                        // Not connected yet, or lost again while subscribing: keep waiting.
                        self.failed_last = true;
                        debug!(queue = %self.queue, error = %e, "cannot subscribe yet");
                        continue;
                    }
                }
            }
            let Some(sub) = self.current.as_mut() else {
                continue;
            };
            let next = tokio::select! {
                next = sub.consumer.next() => next,
                // The connection of this subscription is gone and lapin's stream has not said
                // so (yet: usually its error comes at the same moment): what it still holds
                // cannot be acked. Subscribe on the new one rather than rely on it ending.
                () = self.transport.left(sub.generation) => {
                    debug!(queue = %self.queue, generation = sub.generation, "the connection of the subscription is gone; subscribing again");
                    self.current = None;
                    continue;
                }
            };
            match next {
                Some(Ok(delivery)) if sub.channel.status().connected() => {
                    return Some(Ok(Delivery { inner: delivery }));
                }
                Some(Ok(delivery)) => {
                    // Buffered before the channel died: it cannot be acked any more, and
                    // RabbitMQ delivers it again on the new subscription.
                    debug!(
                        queue = %self.queue,
                        tag = delivery.delivery_tag,
                        "dropping a delivery of a closed channel"
                    );
                }
                Some(Err(e)) => {
                    warn!(queue = %self.queue, error = %e, "consumer interrupted; subscribing again");
                    self.current = None;
                }
                None => {
                    debug!(queue = %self.queue, "consumer ended; subscribing again");
                    self.current = None;
                }
            }
        }
    }
}

/// One message received. Must be acked, nacked or rejected; see the module documentation.
#[derive(Debug)]
pub struct Delivery {
    inner: lapin::message::Delivery,
}

impl Delivery {
    pub fn body(&self) -> &[u8] {
        &self.inner.data
    }

    pub fn properties(&self) -> &BasicProperties {
        &self.inner.properties
    }

    pub fn exchange(&self) -> &str {
        self.inner.exchange.as_str()
    }

    pub fn routing_key(&self) -> &str {
        self.inner.routing_key.as_str()
    }

    /// True if RabbitMQ delivered this message before (to this or another consumer).
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// The `message_id` property, if set.
    pub fn message_id(&self) -> Option<&str> {
        self.inner
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str())
    }

    /// The `user_id` property: the authenticated sender, checked by RabbitMQ.
    pub fn user_id(&self) -> Option<&str> {
        self.inner.properties.user_id().as_ref().map(|s| s.as_str())
    }

    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&AMQPValue> {
        self.inner
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name))
    }

    /// Waits at most [`SETTLE_WAIT`] for `settle` (an ack, nack or reject) to be handed to
    /// the connection. An error, no answer, or lapin declining to send it (the channel is
    /// gone) is an `Err`: RabbitMQ will deliver the message again.
    async fn settled(
        &self,
        what: &str,
        settle: impl std::future::Future<Output = lapin::Result<bool>>,
    ) -> Result<(), TransportError> {
        let op = || {
            format!(
                "{what} delivery {} of queue-bound message (it will be redelivered)",
                self.inner.delivery_tag
            )
        };
        match tokio::time::timeout(SETTLE_WAIT, settle).await {
            Ok(Ok(true)) => Ok(()),
            // lapin's answer for a delivery of a channel that is gone.
            Ok(Ok(false)) => Err(TransportError::ChannelClosed { op: op() }),
            Ok(Err(source)) => Err(TransportError::Amqp { op: op(), source }),
            Err(_) => Err(TransportError::Timeout {
                op: op(),
                after: SETTLE_WAIT,
            }),
        }
    }

    /// Acknowledges: RabbitMQ forgets the message.
    pub async fn ack(&self) -> Result<(), TransportError> {
        let acked = self.inner.acker.ack(BasicAckOptions::default());
        self.settled("acknowledging", acked).await
    }

    /// Negative acknowledgement; `requeue: false` dead-letters it (to `parked`).
    pub async fn nack(&self, requeue: bool) -> Result<(), TransportError> {
        let options = BasicNackOptions {
            multiple: false,
            requeue,
        };
        let nacked = self.inner.acker.nack(options);
        self.settled("nacking", nacked).await
    }

    /// Rejects; `requeue: false` dead-letters it (to `parked`).
    pub async fn reject(&self, requeue: bool) -> Result<(), TransportError> {
        let rejected = self.inner.acker.reject(BasicRejectOptions { requeue });
        self.settled("rejecting", rejected).await
    }

    /// The lapin delivery, for what this type does not expose.
    pub fn into_inner(self) -> lapin::message::Delivery {
        self.inner
    }
}
