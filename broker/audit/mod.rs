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
