//! The chain of custody, as pure code: the RFC 9162 Merkle tree over the audit log's entries
//! ([`merkle`]), inclusion and consistency proofs ([`proof`]), the broker-signed checkpoint in
//! C2SP signed-note form ([`checkpoint`]) and the evidence bundle a court can check offline
//! ([`bundle`]).
//!
//! What this module guarantees:
//! - No tokio, no I/O, no panic on any input: the daemon, the `audit` commands, a
//!   participant's auditor and the tests all run the same code.
//! - Verification returns typed errors and compares roots in constant time.
//! - A checkpoint is believed only after its signature verifies: its text is not parsed before.
//!
//! What the tree does not guarantee by itself, and who closes the gap:
//! - Entries after the latest checkpoint are covered by no signature: rewriting them (or
//!   truncating the log and growing it again) leaves a log that verifies on its own. The
//!   next checkpoint, and every checkpoint a participant already holds, expose it through a
//!   consistency proof (`audit consistency --checkpoint`).
//! - Whoever holds the broker's signing key can sign a rewritten log. Only checkpoints kept
//!   outside the broker (each participant keeps those it receives) expose that.
//! - When an entry's bytes change with its frame re-written to match, only the tree can tell:
//!   `audit verify` then knows the first bad entry lies between the last checkpoint that
//!   still matches and the first that does not, not which one it is.
//!
//! The log itself (segment files, sequence numbers) belongs to [`crate::store`]; this module
//! sees entries as bytes and leaf hashes, and decodes them only to report on a bundle (with
//! the store's pure [`crate::store::entry`]).

pub mod bundle;
pub mod checkpoint;
pub mod merkle;
pub mod proof;

pub use bundle::{Bundle, BundleError, BundleReport, check_bundle};
pub use checkpoint::{BrokerCheckpoint, CheckpointError};
pub use merkle::{CompactTree, EMPTY_ROOT, Hash, LeafSource, TiledLeaves, leaf_hash, node_hash};
pub use proof::{
    ProofError, VerifyError, consistency_proof, inclusion_proof, verify_consistency,
    verify_inclusion,
};
