//! The routing daemon, `referral-broker serve`: consumes `ingress`, checks every message,
//! routes referrals to their destinations' inboxes with the origin's signature intact and
//! the broker's signed attestation, carries receipts, statuses and retractions, and refuses
//! the rest with a signed notice and a copy in quarantine — recording every step in the
//! audit log before acknowledging anything.
//!
//! # Layout
//!
//! - [`config`]: `broker.toml`, read and checked before anything is opened or connected.
//! - [`server`]: [`run`]`(config, shutdown)`: the consume loop, the window of concurrent
//!   tasks, acks, shutdown. Nothing else.
//! - [`pipeline`]: one message start to finish (verify → route → dedup → audit → publish →
//!   audit → ready to ack), idempotent on redelivery.
//! - [`flood`]: per-participant rate and in-flight limits (pure); the design is in its
//!   documentation (hold in memory, then spill to the back of `ingress`).
//! - [`message`]: the AMQP properties and headers the daemon reads and writes.
//! - [`notice`]: notices (and checkpoint messages) signed with the broker's key.
//! - [`checkpoint`]: cutting checkpoints when the store says one is due, and at shutdown;
//!   sending them to every participant.
//!
//! # The pipeline (design "Broker pipeline")
//!
//! ```text
//! ingress ─► ingress::verify ─► kind?
//!   referral:   route::plan ─► per destination: URL check-and-open ─► append received,
//!               routed, duplicate ─► publish to each inbox (attestation) + notices
//!               (duplicate, unroutable) ─► append delivered, notice ─► ack
//!   receipt /   referral known? sender a destination (or, for a retraction, the origin)?
//!   status /    ─► append received + receipt|status|retraction ─► publish to the origin
//!   retraction  (or to every destination) ─► append delivered ─► ack
//!   refused:    quarantine (confirmed) + notice to the authenticated sender ─► append
//!               rejected, notice ─► ack
//! ```
//!
//! # What the daemon guarantees
//!
//! - Nothing is acked before every publish it calls for is confirmed (and routed) and every
//!   audit entry is durable (the store's group commit). Throughput comes from the window
//!   (many messages in flight) and group commit, never from acking early.
//! - A crash at any point loses nothing: the unacked message is redelivered and the pipeline
//!   resumes from the envelope's recorded outcome (see [`pipeline`]).
//! - The origin's bytes and `x-sig`/`x-key-id` reach the destination unchanged; the origin
//!   never receives its own referral; everything the broker says in its own name is signed
//!   with the broker key of the registry.
//! - One participant's flood (good or bad messages) never takes the others' place in the
//!   window ([`flood`]).
//! - Checkpoints are cut every N entries or T seconds (the store's `checkpoint_every_*`) and
//!   at shutdown, recorded durably, then sent to every participant's inbox ([`checkpoint`]).
//!
//! # Not guaranteed
//!
//! - Exactly once on the wire: a crash between a confirmed publish and its durable
//!   `delivered` entry publishes again (marked `x-redelivered`; the participant drops the
//!   second copy by envelope id).
//! - A message that keeps failing transiently (a destination's inbox refusing publishes) is
//!   given back to `ingress` each time; after the queue's delivery limit RabbitMQ parks it in
//!   `parked` for an operator.
//! - A message that waited in `ingress` longer than `ingress.max_age_secs` (7 days by
//!   default; e.g. while the broker was down) is refused as `clock_skew` when first
//!   processed. A shorter wait is fine: only `created_at` in the future is held to the
//!   tight `max_clock_skew_secs`. A message already received before a crash is resumed.
//! - Order: messages are processed concurrently; a status or retraction processed before
//!   its referral's `routed` entries exist finds no destinations.

pub mod checkpoint;
pub mod config;
pub mod flood;
pub mod message;
pub mod notice;
pub mod pipeline;
pub mod server;

pub use config::{ConfigError, ServeConfig};
pub use server::{ServeError, Summary, run};
