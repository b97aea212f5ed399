//! What the admin side reads from outside, every `poll_secs`: queue depths and consumers from
//! RabbitMQ (passive declares on a channel of its own: a missing queue closes that channel,
//! never one the pipeline uses), the audit log's size, the latest checkpoint, a write probe of
//! the data directory. From these and the daemon's phase: readiness (`readiness`) and the
//! status report (`report`).
//!
//! Guarantees: a probe that fails says why (in `/readyz` and the report) and is tried again at
//! the next poll; nothing here writes anywhere but `<data_dir>/.admin-probe`, which it removes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use tracing::{debug, warn};

use super::metrics::{ParticipantLabel, QueueLabel, gauge};
use super::status::{
    AuditLogStatus, CheckpointStatus, ConnectionStatus, HistoryStatus, InboxStatus,
    ParticipantStatus, QueueStatus, Readiness, StatusReport,
};
use super::{Phase, Shared, lock};
use crate::ids::ParticipantId;
use crate::transport::topology::{INGRESS_QUEUE, PARKED_QUEUE, QUARANTINE_QUEUE};
use crate::transport::{LinkState, Transport};

/// A queue as last polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFigures {
    pub depth: u64,
    pub consumers: u64,
    pub checked_at: DateTime<Utc>,
}

/// The results of the latest poll.
#[derive(Debug, Default)]
pub struct ProbeState {
    /// At least one poll of RabbitMQ finished since the connection came up.
    pub polled: bool,
    pub inboxes: BTreeMap<ParticipantId, QueueFigures>,
    /// Broker queues, by name.
    pub queues: BTreeMap<String, QueueFigures>,
    /// Queues the topology should have and RabbitMQ does not know.
    pub missing: Vec<String>,
    /// Why the last poll of RabbitMQ failed, if it did.
    pub amqp_error: Option<String>,
    /// Why the data directory could not be written, if it could not.
    pub store_error: Option<String>,
    pub log_bytes: u64,
    /// Reconnection figures already counted into the counters.
    counted_reconnections: u64,
    counted_failures: u64,
}

/// Starts the poll loop (until the daemon stops or the connection closes for good).
/// Holds no strong reference between polls: once the admin side is dropped, it stops.
pub(crate) fn spawn(shared: Arc<Shared>) {
    let weak = Arc::downgrade(&shared);
    let poll = shared.config.poll;
    drop(shared);
    tokio::spawn(async move {
        let mut channel: Option<lapin::Channel> = None;
        loop {
            let Some(shared) = weak.upgrade() else {
                break;
            };
            poll_once(&shared, &mut channel).await;
            let stop = *lock(&shared.phase) == Phase::Stopping
                || shared
                    .transport
                    .get()
                    .is_some_and(|t| t.state() == LinkState::Closed);
            drop(shared);
            if stop {
                break;
            }
            tokio::time::sleep(poll).await;
        }
    });
}

async fn poll_once(shared: &Arc<Shared>, channel: &mut Option<lapin::Channel>) {
    // The data directory: a small write, fsync, remove.
    let dir = shared.data_dir.clone();
    let (store_error, log_bytes) = tokio::task::spawn_blocking(move || {
        let probe = dir.join(".admin-probe");
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(b"referral-broker admin write probe\n")?;
            f.sync_all()?;
            std::fs::remove_file(&probe)
        })();
        let bytes = std::fs::read_dir(dir.join("log"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or(0);
        (
            written.err().map(|e| format!("{}: {e}", probe.display())),
            bytes,
        )
    })
    .await
    .unwrap_or_else(|e| (Some(format!("the probe task failed: {e}")), 0));

    // RabbitMQ: every queue of the topology, passively.
    let mut inboxes = BTreeMap::new();
    let mut queues = BTreeMap::new();
    let mut missing = Vec::new();
    let mut amqp_error = None;
    if let Some(transport) = shared.transport.get()
        && matches!(transport.state(), LinkState::Up { .. })
    {
        let now = Utc::now();
        let names = [INGRESS_QUEUE, QUARANTINE_QUEUE, PARKED_QUEUE]
            .into_iter()
            .map(|q| (q.to_owned(), None))
            .chain(
                shared
                    .participants
                    .iter()
                    .map(|p| (p.id.inbox_queue(), Some(p.id.clone()))),
            );
        for (name, participant) in names {
            match declare_passive(transport, channel, &name).await {
                Ok(Some((depth, consumers))) => {
                    let f = QueueFigures {
                        depth,
                        consumers,
                        checked_at: now,
                    };
                    match participant {
                        Some(p) => {
                            inboxes.insert(p, f);
                        }
                        None => {
                            queues.insert(name, f);
                        }
                    }
                }
                Ok(None) => missing.push(name),
                Err(e) => {
                    amqp_error = Some(e);
                    break;
                }
            }
        }
    }

    let complete = shared.history_complete.load(Ordering::Relaxed);
    {
        let mut h = lock(&shared.history);
        if complete {
            for (p, f) in &inboxes {
                h.trim_inbox(p, f.depth);
            }
        }
        h.prune(Utc::now(), shared.config.history_days);
    }
    {
        let mut st = lock(&shared.probe);
        if amqp_error.is_none() && shared.transport.get().is_some() {
            st.polled = true;
        }
        if !inboxes.is_empty() || !queues.is_empty() || amqp_error.is_some() {
            st.inboxes = inboxes;
            st.queues = queues;
            st.missing = missing;
        }
        if let Some(e) = &amqp_error {
            warn!(error = %e, "admin: polling the queues failed");
        }
        st.amqp_error = amqp_error;
        st.store_error = store_error;
        st.log_bytes = log_bytes;
    }
    update_metrics(shared);
}

/// `Ok(Some((messages, consumers)))`, `Ok(None)` if the queue does not exist, `Err` if the
/// question could not be asked.
async fn declare_passive(
    transport: &Transport,
    channel: &mut Option<lapin::Channel>,
    queue: &str,
) -> Result<Option<(u64, u64)>, String> {
    if channel.as_ref().is_none_or(|c| !c.status().connected()) {
        *channel = Some(
            transport
                .open_channel()
                .await
                .map_err(|e| format!("opening a channel: {e}"))?,
        );
    }
    let Some(ch) = channel.as_ref() else {
        return Err("no channel".into());
    };
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
    {
        Ok(q) => Ok(Some((
            u64::from(q.message_count()),
            u64::from(q.consumer_count()),
        ))),
        Err(e) => {
            // The server closes the channel on a refusal; the next question opens another.
            *channel = None;
            let not_found = matches!(
                e.kind(),
                lapin::ErrorKind::ProtocolError(p)
                    if p.kind() == &AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
            );
            if not_found {
                debug!(queue, "passive declare: no such queue");
                Ok(None)
            } else {
                Err(format!("passive declare of {queue}: {e}"))
            }
        }
    }
}

/// Ready, or why not.
pub(crate) fn readiness(shared: &Shared) -> Readiness {
    let mut reasons = Vec::new();
    match *lock(&shared.phase) {
        Phase::OpeningStore => reasons.push("opening the store (replaying the audit log)".into()),
        Phase::Connecting => reasons.push("connecting to RabbitMQ".into()),
        Phase::Stopping => reasons.push("shutting down".into()),
        Phase::Serving => {}
    }
    if let Some(t) = shared.transport.get() {
        match t.state() {
            LinkState::Up { .. } => {
                if t.is_blocked() {
                    reasons.push(
                        "RabbitMQ blocks the broker's publishes (memory or disk alarm)".into(),
                    );
                }
            }
            LinkState::Reconnecting { since, last_error } => reasons.push(format!(
                "the connection to RabbitMQ was lost {}s ago, reconnecting (last error: {last_error})",
                since.elapsed().as_secs()
            )),
            LinkState::Closed => reasons.push("the connection to RabbitMQ is closed".into()),
        }
        let st = lock(&shared.probe);
        if let Some(e) = &st.amqp_error {
            reasons.push(format!("cannot check the queues: {e}"));
        } else if !st.polled {
            reasons.push("checking the topology".into());
        }
        if !st.missing.is_empty() {
            reasons.push(format!(
                "topology not declared: missing queue(s) {}",
                st.missing.join(", ")
            ));
        }
    }
    if let Some(why) = &*lock(&shared.store_down) {
        reasons.push(format!(
            "the audit store cannot write, so nothing is acknowledged; retrying by itself: {why}"
        ));
    }
    if let Some(e) = &lock(&shared.probe).store_error {
        reasons.push(format!("the data directory is not writable: {e}"));
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}

fn connection(shared: &Shared) -> ConnectionStatus {
    let Some(t) = shared.transport.get() else {
        return ConnectionStatus {
            state: "starting".into(),
            generation: None,
            reconnections: 0,
            failed_attempts: 0,
            blocked: false,
            last_error: None,
        };
    };
    let stats = t.stats();
    let (state, generation, last_error) = match t.state() {
        LinkState::Up { generation } => ("up", Some(generation), None),
        LinkState::Reconnecting { last_error, .. } => ("reconnecting", None, Some(last_error)),
        LinkState::Closed => ("closed", None, None),
    };
    ConnectionStatus {
        state: state.into(),
        generation,
        reconnections: stats.reconnections,
        failed_attempts: stats.failed_attempts,
        blocked: t.is_blocked(),
        last_error,
    }
}

/// Seconds since the latest checkpoint (with none: since the first entry); `None` for an
/// empty log or while the first entry's time is not known yet.
fn checkpoint_age(
    checkpoint: Option<&CheckpointStatus>,
    first: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<u64> {
    let since = checkpoint.map(|c| c.time).or(first)?;
    Some((now - since).num_seconds().max(0) as u64)
}

fn latest_checkpoint(shared: &Shared) -> Option<CheckpointStatus> {
    let store = shared.store.get()?;
    match store.latest_checkpoint() {
        Ok(c) => c.map(|c| CheckpointStatus {
            size: c.size,
            root: hex::encode(c.root.0),
            time: c.time,
            seq: c.seq.get(),
        }),
        Err(e) => {
            warn!(error = %e, "admin: reading the latest checkpoint");
            None
        }
    }
}

/// The whole status, now.
pub(crate) fn report(shared: &Shared) -> StatusReport {
    let now = Utc::now();
    let readiness = readiness(shared);
    let checkpoint = latest_checkpoint(shared);
    let entries = shared.store.get().map_or(0, |s| s.tree_head().size);
    let complete = shared.history_complete.load(Ordering::Relaxed);
    let st = lock(&shared.probe);
    let h = lock(&shared.history);
    let participants = shared
        .participants
        .iter()
        .map(|p| {
            let (last_hour, last_day) = h.counts(&p.id, now);
            let inbox = st.inboxes.get(&p.id).map(|f| InboxStatus {
                depth: f.depth,
                consumers: f.consumers,
                oldest: h.oldest_unread(&p.id, f.depth, now),
                checked_at: f.checked_at,
            });
            ParticipantStatus {
                id: p.id.as_str().to_owned(),
                name: p.name.clone(),
                role: p.role.clone(),
                country: p.country.clone(),
                inbox,
                last_hour,
                last_day,
            }
        })
        .collect();
    let first = h.first_time();
    StatusReport {
        broker: shared.broker.as_str().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        generated_at: now,
        started_at: shared.started_at,
        readiness,
        connection: connection(shared),
        in_flight: shared.in_flight.load(Ordering::Relaxed),
        held: shared.held.load(Ordering::Relaxed),
        inbox_age_warn_secs: shared.config.inbox_age_warn.as_secs(),
        participants,
        queues: st
            .queues
            .iter()
            .map(|(name, f)| QueueStatus {
                name: name.clone(),
                depth: f.depth,
                consumers: f.consumers,
            })
            .collect(),
        takedown: h.takedown(now, shared.config.history_days),
        checkpoint_age_secs: if entries == 0 {
            None
        } else if complete || checkpoint.is_some() {
            checkpoint_age(checkpoint.as_ref(), first, now)
        } else {
            None
        },
        checkpoint,
        checkpoint_age_warn_secs: shared.config.checkpoint_age_warn.as_secs(),
        audit_log: AuditLogStatus {
            entries,
            bytes: st.log_bytes,
        },
        recent_rejections: h.rejections(),
        history: HistoryStatus {
            complete,
            entries: h.entries(),
        },
    }
}

/// Sets every gauge from the current state.
pub(crate) fn update_metrics(shared: &Shared) {
    let m = &shared.metrics;
    let r = report(shared);
    m.ready.set(i64::from(r.readiness.ready));
    m.in_flight.set(gauge(r.in_flight));
    m.held.set(gauge(r.held));
    for p in &r.participants {
        let l = ParticipantLabel {
            participant: p.id.clone(),
        };
        match &p.inbox {
            Some(i) => {
                m.inbox_depth.get_or_create(&l).set(gauge(i.depth));
                m.inbox_consumers.get_or_create(&l).set(gauge(i.consumers));
                m.inbox_oldest_age
                    .get_or_create(&l)
                    .set(i.oldest.as_ref().map_or(0.0, |o| o.age_secs as f64));
            }
            None => {
                m.inbox_depth.remove(&l);
                m.inbox_consumers.remove(&l);
                m.inbox_oldest_age.remove(&l);
            }
        }
    }
    for q in &r.queues {
        let l = QueueLabel {
            queue: q.name.clone(),
        };
        m.queue_depth.get_or_create(&l).set(gauge(q.depth));
        m.queue_consumers.get_or_create(&l).set(gauge(q.consumers));
    }
    m.log_entries.set(gauge(r.audit_log.entries));
    m.log_bytes.set(gauge(r.audit_log.bytes));
    m.checkpoint_age
        .set(r.checkpoint_age_secs.map_or(0.0, |s| s as f64));
    m.checkpoint_size
        .set(gauge(r.checkpoint.as_ref().map_or(0, |c| c.size)));
    m.checkpoint_time
        .set(r.checkpoint.as_ref().map_or(0, |c| c.time.timestamp()));
    m.connected.set(i64::from(r.connection.state == "up"));
    m.blocked.set(i64::from(r.connection.blocked));
    {
        let mut st = lock(&shared.probe);
        let rec = r.connection.reconnections;
        if rec > st.counted_reconnections {
            m.reconnections.inc_by(rec - st.counted_reconnections);
            st.counted_reconnections = rec;
        }
        let failed = r.connection.failed_attempts;
        if failed > st.counted_failures {
            m.connect_failures.inc_by(failed - st.counted_failures);
            st.counted_failures = failed;
        }
    }
    m.set_takedown(&r.takedown);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn checkpoint_age_prefers_the_checkpoint_then_the_first_entry() {
        let now = Utc::now();
        let c = CheckpointStatus {
            size: 3,
            root: "00".into(),
            time: now - Duration::seconds(40),
            seq: 3,
        };
        assert_eq!(
            checkpoint_age(Some(&c), Some(now - Duration::hours(2)), now),
            Some(40)
        );
        assert_eq!(
            checkpoint_age(None, Some(now - Duration::seconds(90)), now),
            Some(90)
        );
        assert_eq!(checkpoint_age(None, None, now), None);
    }
}
