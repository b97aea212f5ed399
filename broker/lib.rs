//! referral-broker: routes signed cross-border referrals of online child sexual abuse
//! material between hotlines and law enforcement, over AMQP with mutual TLS.
//!
//! # Layout
//!
//! Pure code (no tokio, no I/O) that the daemon, the CLI and an auditor share:
//! - [`ids`]: newtypes for participant ids, envelope ids and key ids, parsed once at the edge.
//! - [`wire`]: the message contract — envelope and every kind (serde types with the same
//!   bounds as the JSON Schemas in `schemas/`), and the embedded schemas themselves.
//! - [`signing`]: ed25519 signatures over the exact body bytes, key ids, the `x-sig` /
//!   `x-key-id` headers.
//! - [`registry`]: the participant registry (TOML): who is on the network, with which keys.
//! - [`route`]: the routing table (config) and the routing decision: referral → one plan of
//!   destinations, items and reasons.
//! - [`ingress`]: the ingress checks as one pure function, bytes + properties + registry +
//!   clock → verified envelope or a rejection with a stable [`reason`] code.
//! - [`urlnorm`]: URL normalisation, the key of URL deduplication.
//! - [`audit`]: the Merkle tree (RFC 9162), inclusion/consistency proofs, signed checkpoints
//!   (C2SP signed note) and evidence bundles, verified without I/O.
//!
//! I/O at the edges:
//! - [`pki`]: development CA and participant certificates (rcgen).
//! - [`transport`]: the lapin connection over mutual TLS, topology, publishing with
//!   confirms, consuming with manual acks, reconnection.
//! - [`provision`]: RabbitMQ users and permissions from the registry.
//! - [`serve`]: the routing daemon: consume ingress, check, route, deliver, audit, ack.
//! - [`store`]: the audit log (write-ahead log, group commit) and the sled indexes derived from it.
//! - [`participant`]: the participant side, a library a hotline embeds: sign and send, read the
//!   inbox verifying origin and attestation, hand each message over exactly once.
//! - [`admin`]: the operators' HTTP server inside `serve`: Prometheus metrics, health,
//!   readiness, the status API and page, and the figures behind them.
//! - [`cli`]: the subcommands of the `referral-broker` binary.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod cli;
pub mod ids;
pub mod ingress;
pub mod participant;
pub mod pki;
pub mod provision;
pub mod reason;
pub mod registry;
pub mod route;
pub mod serve;
pub mod signing;
pub mod store;
pub mod transport;
pub mod urlnorm;
pub mod wire;
