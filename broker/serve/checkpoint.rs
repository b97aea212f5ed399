//! Cutting checkpoints (design "Audit log", issue 5): the store says when one is due
//! ([`crate::store::Store::checkpoint_due`]: every N entries or T seconds), the audit
//! module signs it ([`BrokerCheckpoint::sign`]: a C2SP signed note, origin
//! [`origin_for`]`(broker)`, key name = the broker's participant id), the daemon appends the
//! `checkpoint` entry and sends a broker-signed `checkpoint` envelope to every participant's
//! inbox, so that each keeps the tree heads it was shown.
//!
//! Guarantees:
//! - The checkpoint entry is durable before the checkpoint is sent: a participant never holds
//!   a checkpoint the log does not record.
//! - [`cut`] with `force` (at shutdown) covers every entry accepted before it, unless
//!   nothing was appended since the last checkpoint.
//! - Sending is best effort (a participant that misses one gets the next); a failure is
//!   logged, never retried in a loop, and holds up no message.

use chrono::Utc;
use tracing::{info, warn};

use super::notice;
use super::pipeline::{Failure, Pipeline};
use crate::audit::checkpoint::{BrokerCheckpoint, origin_for};
use crate::ids::ParticipantId;
use crate::store::{CheckpointEvent, Event, NewEntry, Sha256Digest};
use crate::wire::{Body, Envelope};

/// What [`cut`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Tree size covered.
    pub size: u64,
    /// Participants whose inbox confirmed the checkpoint.
    pub sent: usize,
    /// Participants it could not be sent to.
    pub failed: usize,
}

/// Cuts a checkpoint if one is due (or, with `force`, if anything was appended since the
/// last one), records it and sends it; `Ok(None)` if there was nothing to do.
pub async fn cut(pipeline: &Pipeline, force: bool) -> Result<Option<Cut>, Failure> {
    let now = Utc::now();
    let store = &pipeline.store;
    let head = match store.checkpoint_due(now) {
        Some(head) => head,
        None if force => {
            let head = store.tree_head();
            let covered = store.latest_checkpoint()?.map_or(0, |c| c.seq.get() + 1);
            if head.size <= covered {
                return Ok(None);
            }
            head
        }
        None => return Ok(None),
    };
    let broker = &pipeline.broker;
    let cp = BrokerCheckpoint::sign(
        &origin_for(broker),
        head.size,
        head.root,
        now,
        broker.as_str(),
        &pipeline.signer,
    )
    .map_err(|e| Failure::Fatal(format!("signing a checkpoint: {e}")))?;
    let appended = store
        .append(vec![
            NewEntry::new(Event::Checkpoint(CheckpointEvent {
                size: cp.size,
                root: Sha256Digest(cp.root),
                note: cp.note.clone(),
            }))
            .participant(broker.clone()),
        ])
        .await?;
    pipeline.observer.record(appended);

    let envelope = Envelope::new(broker.clone(), Body::Checkpoint(cp.to_wire()));
    let signed = notice::sign_envelope(&pipeline.signer, envelope)
        .map_err(|e| Failure::Fatal(format!("building the checkpoint message: {e}")))?;
    let to: Vec<ParticipantId> = pipeline
        .registry
        .participants()
        .map(|p| p.id.clone())
        .filter(|id| id != broker)
        .collect();
    let outcomes = pipeline.broadcast(&signed, &to).await;
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    for (id, e) in to
        .iter()
        .zip(&outcomes)
        .filter_map(|(id, o)| Some((id, o.as_ref().err()?)))
    {
        warn!(participant = %id, error = %e, size = cp.size, "checkpoint not sent");
    }
    info!(
        size = cp.size,
        sent = to.len() - failed,
        failed,
        "checkpoint cut and sent"
    );
    Ok(Some(Cut {
        size: cp.size,
        sent: to.len() - failed,
        failed,
    }))
}
