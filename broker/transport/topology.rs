//! The RabbitMQ objects of the network — every exchange, queue and binding name in one place —
//! and their declaration by the broker.
//!
//! | object | kind | routing |
//! | --- | --- | --- |
//! | exchange [`INGRESS_EXCHANGE`] → queue [`INGRESS_QUEUE`] | direct; quorum | key [`INGRESS_ROUTING_KEY`]: every participant writes, the broker reads |
//! | exchange [`DELIVER_EXCHANGE`] → queue `inbox.<id>` | direct; quorum, one per participant except the broker | key `<id>`: the broker writes, `<id>` reads |
//! | exchange [`QUARANTINE_EXCHANGE`] → queue [`QUARANTINE_QUEUE`] | direct; quorum | key [`QUARANTINE_ROUTING_KEY`]: broker only |
//! | exchange [`PARKED_EXCHANGE`] → queue [`PARKED_QUEUE`] | fanout; classic | dead letters of every quorum queue |
//!
//! Guarantees:
//! - Every quorum queue dead-letters at least once (`x-dead-letter-strategy=at-least-once`,
//!   which needs `x-overflow=reject-publish`) to [`PARKED_EXCHANGE`], and a message delivered
//!   more than [`DELIVERY_LIMIT`] times is dead-lettered there: a message that keeps failing is
//!   parked, never dropped. A full queue refuses new publishes (the publisher gets a nack)
//!   rather than dropping old messages.
//! - [`Topology::declare`] is idempotent: the same names with the same arguments every time,
//!   so the broker declares it on every (re)connection.
//! - The pure part ([`Topology::for_participants`], [`QueueSpec::arguments`]) does no I/O.
//!
//! Not guaranteed: the inbox of a participant removed from the registry is not deleted (it may
//! still hold messages for an investigation); provisioning removes the participant's access.
//!
//! `quarantine` has its own exchange (the design lists only the queue) so that the broker
//! never needs write access to the default exchange to put something there.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::ids::ParticipantId;

use super::error::TransportError;

/// Exchange every participant publishes to.
pub const INGRESS_EXCHANGE: &str = "ingress";
/// Routing key of every publish to [`INGRESS_EXCHANGE`].
pub const INGRESS_ROUTING_KEY: &str = "ingress";
/// Queue the broker consumes: everything participants send.
pub const INGRESS_QUEUE: &str = "ingress";
/// Exchange the broker publishes to; the routing key is the destination participant id.
pub const DELIVER_EXCHANGE: &str = "deliver";
/// Prefix of a participant's inbox queue (`inbox.<id>`, see [`ParticipantId::inbox_queue`]).
pub const INBOX_PREFIX: &str = "inbox.";
/// Exchange of the quarantine (raw bytes of rejected messages, kept for investigation).
pub const QUARANTINE_EXCHANGE: &str = "quarantine";
/// Routing key of every publish to [`QUARANTINE_EXCHANGE`].
pub const QUARANTINE_ROUTING_KEY: &str = "quarantine";
/// Queue of the quarantine; broker only.
pub const QUARANTINE_QUEUE: &str = "quarantine";
/// Dead-letter exchange of every quorum queue (fanout: the routing key of the dead letter
/// is the original one, kept for the operator, and is irrelevant here).
pub const PARKED_EXCHANGE: &str = "parked";
/// Where dead letters are kept until an operator looks at them.
pub const PARKED_QUEUE: &str = "parked";
/// Deliveries of one message before a quorum queue dead-letters it to [`PARKED_EXCHANGE`].
/// RabbitMQ counts every return (a nack with requeue, a consumer that went away with it
/// unacknowledged), so this leaves room for a few reconnections as well as for real failures.
pub const DELIVERY_LIMIT: i64 = 20;

/// Every object name the broker owns, as one RabbitMQ permission regex (used by provisioning
/// for the broker's configure, write and read permissions): nothing else in the vhost.
pub const BROKER_RESOURCES_REGEX: &str = r"^(ingress|deliver|quarantine|parked|inbox\..+)$";

/// The kind of an exchange of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    Direct,
    Fanout,
}

/// One exchange (always durable, never auto-deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeType,
}

/// The type of a queue of the topology, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated quorum queue, dead-lettering at least once to `dead_letter_exchange` after
    /// `delivery_limit` deliveries.
    Quorum {
        dead_letter_exchange: String,
        delivery_limit: i64,
    },
    /// Classic queue (version 2). Used only for [`PARKED_QUEUE`]: the last stop must not
    /// dead-letter anywhere itself. A quorum queue there would need a dead-letter target of its
    /// own (a loop back to itself, or a message dropped at the delivery limit, which RabbitMQ 4
    /// applies by default); a classic queue has no delivery limit, so a parked message stays
    /// until an operator moves or deletes it. Its cost: not replicated in a cluster.
    Classic,
}

/// One queue (always durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub kind: QueueType,
}

/// One binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
}

/// The whole topology of one vhost, in declaration order (exchanges, queues, bindings; the
/// dead-letter exchange comes before the queues that name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchanges: Vec<ExchangeSpec>,
    pub queues: Vec<QueueSpec>,
    pub bindings: Vec<BindingSpec>,
}

fn quorum(name: &str) -> QueueSpec {
    QueueSpec {
        name: name.to_owned(),
        kind: QueueType::Quorum {
            dead_letter_exchange: PARKED_EXCHANGE.to_owned(),
            delivery_limit: DELIVERY_LIMIT,
        },
    }
}

fn binding(queue: &str, exchange: &str, routing_key: &str) -> BindingSpec {
    BindingSpec {
        queue: queue.to_owned(),
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
    }
}

impl Topology {
    /// The topology for these participants: one inbox for each, except `broker` (which has
    /// none: it reads `ingress`). Duplicates are ignored; inboxes come sorted by id.
    pub fn for_participants<'a>(
        broker: &ParticipantId,
        participants: impl IntoIterator<Item = &'a ParticipantId>,
    ) -> Self {
        let mut ids: Vec<&ParticipantId> = participants
            .into_iter()
            .filter(|id| *id != broker)
            .collect();
        ids.sort();
        ids.dedup();

        let exchange = |name: &str, kind| ExchangeSpec {
            name: name.to_owned(),
            kind,
        };
        let exchanges = vec![
            exchange(PARKED_EXCHANGE, ExchangeType::Fanout),
            exchange(INGRESS_EXCHANGE, ExchangeType::Direct),
            exchange(DELIVER_EXCHANGE, ExchangeType::Direct),
            exchange(QUARANTINE_EXCHANGE, ExchangeType::Direct),
        ];
        let mut queues = vec![
            QueueSpec {
                name: PARKED_QUEUE.to_owned(),
                kind: QueueType::Classic,
            },
            quorum(INGRESS_QUEUE),
            quorum(QUARANTINE_QUEUE),
        ];
        let mut bindings = vec![
            binding(PARKED_QUEUE, PARKED_EXCHANGE, ""),
            binding(INGRESS_QUEUE, INGRESS_EXCHANGE, INGRESS_ROUTING_KEY),
            binding(
                QUARANTINE_QUEUE,
                QUARANTINE_EXCHANGE,
                QUARANTINE_ROUTING_KEY,
            ),
        ];
        for id in ids {
            let inbox = id.inbox_queue();
            queues.push(quorum(&inbox));
            bindings.push(binding(&inbox, DELIVER_EXCHANGE, id.as_str()));
        }
        Self {
            exchanges,
            queues,
            bindings,
        }
    }

    /// The topology for every participant of a registry.
    pub fn from_registry(registry: &crate::registry::Registry) -> Self {
        Self::for_participants(
            &registry.broker().id,
            registry.participants().map(|p| &p.id),
        )
    }

    /// Declares every object on `channel`, in order. Idempotent. Fails on the first refusal
    /// (a queue that exists with other arguments is a `PRECONDITION_FAILED`, which closes the
    /// channel).
    pub async fn declare(&self, channel: &Channel) -> Result<(), TransportError> {
        let amqp = |op: String| move |source| TransportError::Amqp { op, source };
        for e in &self.exchanges {
            let kind = match e.kind {
                ExchangeType::Direct => ExchangeKind::Direct,
                ExchangeType::Fanout => ExchangeKind::Fanout,
            };
            let options = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(e.name.as_str().into(), kind, options, FieldTable::default())
                .await
                .map_err(amqp(format!("declaring exchange {:?}", e.name)))?;
        }
        for q in &self.queues {
            let options = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(q.name.as_str().into(), options, q.arguments())
                .await
                .map_err(amqp(format!("declaring queue {:?}", q.name)))?;
        }
        for b in &self.bindings {
            channel
                .queue_bind(
                    b.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp(format!(
                    "binding queue {:?} to exchange {:?} with key {:?}",
                    b.queue, b.exchange, b.routing_key
                )))?;
        }
        Ok(())
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

impl QueueSpec {
    /// The `x-…` arguments this queue is declared with.
    pub fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        match &self.kind {
            QueueType::Quorum {
                dead_letter_exchange,
                delivery_limit,
            } => {
                args.insert("x-queue-type".into(), long_string("quorum"));
                args.insert(
                    "x-dead-letter-exchange".into(),
                    long_string(dead_letter_exchange),
                );
                args.insert(
                    "x-dead-letter-strategy".into(),
                    long_string("at-least-once"),
                );
                args.insert("x-overflow".into(), long_string("reject-publish"));
                args.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongLongInt(*delivery_limit),
                );
            }
            QueueType::Classic => {
                args.insert("x-queue-type".into(), long_string("classic"));
                args.insert("x-queue-version".into(), AMQPValue::LongInt(2));
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ParticipantId {
        s.parse().expect("valid test id")
    }

    #[test]
    fn inbox_names_use_the_prefix() {
        assert!(
            pid("fr.pointdecontact")
                .inbox_queue()
                .starts_with(INBOX_PREFIX)
        );
        assert_eq!(pid("de.eco").inbox_queue(), "inbox.de.eco");
    }

    #[test]
    fn one_inbox_per_participant_but_the_broker() {
        let broker = pid("int.broker");
        let ids = [
            pid("fr.pointdecontact"),
            broker.clone(),
            pid("de.eco"),
            pid("de.eco"),
        ];
        let t = Topology::for_participants(&broker, &ids);
        let names: Vec<&str> = t.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "parked",
                "ingress",
                "quarantine",
                "inbox.de.eco",
                "inbox.fr.pointdecontact"
            ]
        );
        assert!(
            t.bindings
                .contains(&binding("inbox.de.eco", DELIVER_EXCHANGE, "de.eco"))
        );
        assert!(t.bindings.contains(&binding(
            INGRESS_QUEUE,
            INGRESS_EXCHANGE,
            INGRESS_ROUTING_KEY
        )));
        // The dead-letter exchange is declared before any queue that names it.
        assert_eq!(t.exchanges[0].name, PARKED_EXCHANGE);
        assert_eq!(t.exchanges[0].kind, ExchangeType::Fanout);
    }

    #[test]
    fn every_quorum_queue_parks_instead_of_dropping() {
        let broker = pid("int.broker");
        let t = Topology::for_participants(&broker, &[pid("fr.pointdecontact")]);
        for q in &t.queues {
            let args = q.arguments();
            let get = |k: &str| args.inner().get(k).cloned();
            match q.kind {
                QueueType::Quorum { .. } => {
                    assert_eq!(
                        get("x-queue-type"),
                        Some(long_string("quorum")),
                        "{}",
                        q.name
                    );
                    assert_eq!(
                        get("x-dead-letter-exchange"),
                        Some(long_string(PARKED_EXCHANGE))
                    );
                    assert_eq!(
                        get("x-dead-letter-strategy"),
                        Some(long_string("at-least-once"))
                    );
                    assert_eq!(get("x-overflow"), Some(long_string("reject-publish")));
                    assert_eq!(
                        get("x-delivery-limit"),
                        Some(AMQPValue::LongLongInt(DELIVERY_LIMIT))
                    );
                }
                QueueType::Classic => {
                    assert_eq!(q.name, PARKED_QUEUE);
                    assert!(get("x-dead-letter-exchange").is_none());
                    assert!(get("x-delivery-limit").is_none());
                }
            }
        }
    }

    #[test]
    fn broker_regex_names_every_object() {
        let t = Topology::for_participants(&pid("int.broker"), &[pid("fr.pointdecontact")]);
        let names = t
            .exchanges
            .iter()
            .map(|e| e.name.clone())
            .chain(t.queues.iter().map(|q| q.name.clone()));
        // The regex is ^(a|b|…|inbox\..+)$: check it by hand, without a regex engine.
        let inner = BROKER_RESOURCES_REGEX
            .strip_prefix("^(")
            .and_then(|s| s.strip_suffix(")$"))
            .expect("regex shape");
        let alternatives: Vec<&str> = inner.split('|').collect();
        for name in names {
            let ok = alternatives
                .iter()
                .any(|alt| match alt.strip_suffix(r"\..+") {
                    Some(prefix) => {
                        name.starts_with(&format!("{prefix}.")) && name.len() > prefix.len() + 1
                    }
                    None => *alt == name,
                });
            assert!(ok, "{name} not covered by {BROKER_RESOURCES_REGEX}");
        }
    }
}
