//! The AMQP transport: one lapin connection over mutual TLS (the client certificate is the
//! identity, SASL EXTERNAL), the network's topology, publishing with confirms, consuming with
//! manual acks, and reconnection.
//!
//! # Layout
//!
//! - [`config`]: endpoint, vhost, PEM files, heartbeat, prefetch, timeouts, backoff.
//! - [`tls`]: the rustls client configuration; only the network's CA is trusted.
//! - [`connection`]: [`Transport`], the connection and its supervisor (reconnection with
//!   backoff and jitter, topology declared again, `blocked` noticed).
//! - [`publish`]: [`Publisher`]; a publish succeeds only when confirmed and routed.
//! - [`consume`]: [`Consumer`] and [`Delivery`]; manual acks, bounded prefetch, resumes
//!   after reconnection.
//! - [`topology`]: every exchange and queue name, their arguments, and their declaration.
//! - [`error`]: [`TransportError`], [`ConnectError`] with its hint, [`PublishError`].
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use referral_broker::transport::{Transport, TransportConfig, topology};
//! let config = TransportConfig::new(5671, "referrals", "ca.pem", "me.pem", "me.key");
//! let transport = Transport::connect(config).await?;
//! transport
//!     .publisher()
//!     .publish(topology::INGRESS_EXCHANGE, topology::INGRESS_ROUTING_KEY, b"{}", Default::default())
//!     .await?;
//! let mut inbox = transport.consume("inbox.fr.pointdecontact").await?;
//! while let Some(delivery) = inbox.next().await {
//!     let delivery = delivery?;
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```

pub mod config;
pub mod connection;
pub mod consume;
pub mod error;
pub mod publish;
pub mod tls;
pub mod topology;

pub use config::{Backoff, ClientIdentity, TransportConfig};
pub use connection::{LinkState, ReconnectStats, Transport};
pub use consume::{Consumer, Delivery};
pub use error::{ConnectError, ConnectFailure, PublishError, TransportError};
pub use publish::{PendingConfirm, Publisher};
pub use topology::Topology;
