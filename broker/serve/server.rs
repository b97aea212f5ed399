//! The consume loop: take ingress messages, run each through the [`Pipeline`] in a bounded
//! window of concurrent tasks, ack what finished, apply flood control, stop cleanly.
//!
//! Guarantees:
//! - At most `window` tasks run at once (messages, held copies being republished, rate-limit
//!   notices); a slow publish holds one slot, never the loop.
//! - A message is acked only after [`Pipeline::handle`] returned `Ok` (everything confirmed
//!   and durable). A transient failure nacks it back to the queue (redelivered, resumed); a
//!   fatal one (a damaged log, a bug) stops the daemon without acking it.
//! - The audit store cannot write (a full disk, an I/O error: [`Failure::Store`]): the
//!   daemon stays up and stops taking messages; the messages in hand stay unacknowledged
//!   (kept here, not given back: that would count against `ingress`'s delivery limit);
//!   the log and `/readyz` say why. Every few seconds it checks that the data directory
//!   can take a [`RESUME_PROBE_BYTES`] write and reopens the store (rescan, replay, as
//!   after a restart); then the messages in hand are processed again (resumed from their
//!   recorded outcome) and consuming goes on. Nothing is lost and nothing acked meanwhile.
//! - Shutdown (the `shutdown` future resolves): no new message is taken; the tasks already
//!   running finish (up to the grace period); messages held by flood control or read ahead
//!   are left unacknowledged, so RabbitMQ delivers them again; then the store is closed
//!   (every accepted append durable) and the connection closed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::checkpoint;
use super::config::ServeConfig;
use super::flood::{Admission, FloodControl};
use super::message::{self, Sender};
use super::notice;
use super::pipeline::{Failure, Handled, Inbound, Outbound, Pipeline};
use crate::ids::ParticipantId;
use crate::reason::ReasonCode;
use crate::store::{Store, StoreError};
use crate::transport::topology::{INGRESS_EXCHANGE, INGRESS_QUEUE, INGRESS_ROUTING_KEY};
use crate::transport::{Delivery, Publisher, Topology, Transport, TransportError};

/// How often the loop logs its counters.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// How often the loop asks the store whether a checkpoint is due.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);
/// After the store failed: the first attempt to reopen it, and the wait between attempts.
const REOPEN_FIRST: Duration = Duration::from_secs(1);
const REOPEN_EVERY: Duration = Duration::from_secs(3);
/// Before reopening the store: a file of this size must be writable (and fsync) in the data
/// directory, so that a disk with only a few bytes back does not fail again at once.
pub const RESUME_PROBE_BYTES: usize = 4 * 1024 * 1024;

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("opening the store in {dir}: {source}")]
    Store {
        dir: String,
        #[source]
        source: StoreError,
    },
    #[error("connecting to RabbitMQ: {0}")]
    Connect(#[source] TransportError),
    #[error("consuming the ingress queue: {0}")]
    Consume(#[source] TransportError),
    #[error("stopped: {0}")]
    Fatal(String),
}

/// What a run did, for the last log line and for tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub accepted: u64,
    pub rejected: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub notices: u64,
    pub resumed: u64,
    pub spilled: u64,
    pub elapsed: Duration,
}

enum TaskKind {
    /// A message admitted by flood control, of this flood key.
    Message(String),
    /// A message republished to the back of ingress.
    Spill,
    /// A `rate_limited` notice.
    Notice,
    /// Cutting and sending a checkpoint.
    Checkpoint,
    /// Checking for space and reopening the store after it failed.
    Reopen,
}

struct TaskDone {
    kind: TaskKind,
    fatal: Option<String>,
    /// The store could not write (for `Reopen`: is still not back), and why.
    store_down: Option<String>,
    /// A message not finished because the store failed: kept unacknowledged, tried again
    /// once the store is back.
    retry: Option<Delivery>,
}

impl TaskDone {
    fn new(kind: TaskKind, fatal: Option<String>) -> Self {
        Self {
            kind,
            fatal,
            store_down: None,
            retry: None,
        }
    }
}

/// Runs the daemon until `shutdown` resolves (then drains and returns `Ok`) or a fatal error.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, ServeError> {
    let started = Instant::now();
    let ServeConfig {
        registry,
        routing,
        signer,
        transport: transport_config,
        data_dir,
        store: store_config,
        policy,
        window,
        shutdown_grace,
        flood: flood_limits,
        admin: admin_config,
        ..
    } = config;
    let admin = crate::admin::start(admin_config, &registry, &data_dir)
        .await
        .map_err(|e| ServeError::Fatal(format!("the admin server: {e}")))?;

    // The store first: replaying the log may take a while, and nothing should be consumed
    // before the indexes are complete.
    let dir = data_dir.display().to_string();
    let store_dir = data_dir.clone();
    let (store, report) = tokio::task::spawn_blocking(move || {
        let mut last = Instant::now();
        Store::open(&store_dir, store_config, &mut |done, total| {
            if last.elapsed() > Duration::from_secs(2) {
                info!(done, total, "replaying the audit log into the indexes");
                last = Instant::now();
            }
        })
    })
    .await
    .map_err(|e| ServeError::Fatal(format!("the store opening task failed: {e}")))?
    .map_err(|source| ServeError::Store {
        dir: dir.clone(),
        source,
    })?;
    info!(
        data = %dir,
        entries = report.entries,
        replayed = report.replayed,
        truncated_bytes = report.truncated_bytes,
        "store open"
    );
    admin.store_opened(&store);

    let topology = Topology::from_registry(&registry);
    let transport = match Transport::connect_declaring(transport_config, topology).await {
        Ok(t) => t,
        Err(e) => {
            let _ = store.close().await;
            return Err(ServeError::Connect(e));
        }
    };
    admin.connected(&transport);
    let out = Outbound {
        deliver: transport.publisher(),
        notices: transport.publisher(),
        quarantine: transport.publisher(),
    };
    let spill_publisher = Arc::new(transport.publisher());
    let pipeline = Arc::new(Pipeline::new(
        registry,
        routing,
        signer,
        policy,
        store.clone(),
        out,
    ));
    admin.attach(&pipeline.observer);
    let consumer = match transport.consume(INGRESS_QUEUE).await {
        Ok(c) => c,
        Err(e) => {
            transport.close().await;
            let _ = store.close().await;
            return Err(ServeError::Consume(e));
        }
    };
    info!(
        broker = %pipeline.broker,
        window,
        prefetch = transport.config().prefetch,
        "serving: consuming {INGRESS_QUEUE}"
    );
    admin.serving();

    // The consumer feeds a bounded channel (cancel-safe to wait on in the loop).
    let (tx, mut rx) = mpsc::channel::<Result<Delivery, TransportError>>(window);
    let mut consumer = consumer;
    let feeder = tokio::spawn(async move {
        while let Some(d) = consumer.next().await {
            if tx.send(d).await.is_err() {
                break;
            }
        }
    });

    let mut flood: FloodControl<Delivery> = FloodControl::new(flood_limits);
    let mut tasks: JoinSet<TaskDone> = JoinSet::new();
    let mut spilled = 0u64;
    let mut fatal: Option<String> = None;
    let mut next_report = Instant::now() + REPORT_EVERY;
    let mut next_checkpoint_poll = Instant::now() + CHECKPOINT_POLL;
    let mut checkpointing = false;
    let mut input_open = true;
    // The store failed: why, when to try reopening it, and the messages waiting for it.
    let mut store_down: Option<String> = None;
    let mut reopening = false;
    let mut next_reopen = Instant::now();
    let mut stalled: Vec<(String, Delivery)> = Vec::new();
    tokio::pin!(shutdown);

    loop {
        admin.window(tasks.len() + stalled.len(), flood.stats().held);
        let mut wake = (Instant::now() + Duration::from_secs(3600))
            .min(next_report)
            .min(next_checkpoint_poll);
        if store_down.is_none() {
            // Held messages whose turn has come.
            let capacity = window.saturating_sub(tasks.len());
            for (key, delivery) in flood.release(Instant::now(), capacity) {
                spawn_message(&mut tasks, &pipeline, key, delivery, false);
            }
            if let Some(at) = flood.next_release_at(Instant::now()) {
                wake = wake.min(at);
            }
        } else if !reopening {
            if tasks.is_empty() && Instant::now() >= next_reopen {
                reopening = true;
                spawn_reopen(&mut tasks, &pipeline.store);
            } else {
                wake = wake.min(next_reopen.max(Instant::now() + Duration::from_millis(50)));
            }
        }
        let room = tasks.len() < window && store_down.is_none();
        tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("shutdown requested: taking no new messages, finishing {} in process", tasks.len());
                break;
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok(mut done) => {
                        match &done.kind {
                            // A message kept for a retry keeps its in-flight slot until then.
                            TaskKind::Message(key) if done.retry.is_none() => flood.finished(key),
                            TaskKind::Message(_) => {}
                            TaskKind::Checkpoint => checkpointing = false,
                            TaskKind::Reopen => {
                                reopening = false;
                                next_reopen = Instant::now() + REOPEN_EVERY;
                                match done.store_down.take() {
                                    None => {
                                        info!(
                                            waiting = stalled.len(),
                                            "the audit store writes again: resuming"
                                        );
                                        store_down = None;
                                        admin.store_down(None);
                                        for (key, delivery) in stalled.drain(..) {
                                            spawn_message(&mut tasks, &pipeline, key, delivery, true);
                                        }
                                    }
                                    Some(why) => {
                                        warn!(
                                            %why,
                                            waiting = stalled.len(),
                                            "the audit store still cannot write; trying again in {}s",
                                            REOPEN_EVERY.as_secs()
                                        );
                                        admin.store_down(Some(&why));
                                        store_down = Some(why);
                                    }
                                }
                            }
                            TaskKind::Spill | TaskKind::Notice => {}
                        }
                        if let Some(why) = done.store_down.take()
                            && store_down.is_none()
                        {
                            error!(
                                %why,
                                "the audit store cannot write: taking no messages and acknowledging nothing until it can; retrying by itself"
                            );
                            admin.store_down(Some(&why));
                            next_reopen = Instant::now() + REOPEN_FIRST;
                            store_down = Some(why);
                        }
                        if let (TaskKind::Message(key), Some(delivery)) = (&done.kind, done.retry.take()) {
                            stalled.push((key.clone(), delivery));
                        }
                        if let Some(why) = done.fatal {
                            fatal = Some(why);
                            break;
                        }
                        if !input_open && tasks.is_empty() {
                            fatal = Some("the connection to RabbitMQ was closed".into());
                            break;
                        }
                    }
                    Err(e) => {
                        fatal = Some(format!("a pipeline task failed: {e}"));
                        break;
                    }
                }
            }
            received = rx.recv(), if room && input_open => {
                match received {
                    None => {
                        warn!("the ingress consumer ended (transport closed)");
                        input_open = false;
                        if tasks.is_empty() {
                            fatal = Some("the connection to RabbitMQ was closed".into());
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        fatal = Some(format!("consuming {INGRESS_QUEUE}: {e}"));
                        break;
                    }
                    Some(Ok(delivery)) => {
                        let sender = Sender::of(delivery.properties(), &pipeline.broker);
                        let key = sender.flood_key().to_owned();
                        let offer = flood.offer(&key, delivery, Instant::now());
                        if offer.notify {
                            spawn_rate_notice(&mut tasks, &pipeline, &key);
                        }
                        match offer.admission {
                            Admission::Process(delivery) => spawn_message(&mut tasks, &pipeline, key, delivery, false),
                            Admission::Held => debug!(sender = %key, "held: over its rate or in-flight bound"),
                            Admission::Spill(delivery) => {
                                spilled += 1;
                                spawn_spill(&mut tasks, &spill_publisher, &pipeline.broker, sender, delivery);
                            }
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() >= next_checkpoint_poll {
                    next_checkpoint_poll = Instant::now() + CHECKPOINT_POLL;
                    if !checkpointing && store_down.is_none() && pipeline.store.checkpoint_due(chrono::Utc::now()).is_some() {
                        checkpointing = true;
                        spawn_checkpoint(&mut tasks, &pipeline);
                    }
                }
                if Instant::now() >= next_report {
                    next_report = Instant::now() + REPORT_EVERY;
                    let s = summary(&pipeline, spilled, started);
                    let f = flood.stats();
                    info!(
                        accepted = s.accepted, rejected = s.rejected, delivered = s.delivered,
                        duplicates = s.duplicates, notices = s.notices, spilled = s.spilled,
                        held = f.held, in_process = tasks.len(),
                        "progress"
                    );
                }
            }
        }
    }

    // Drain: no new messages; finish what runs; leave the rest unacknowledged.
    admin.stopping();
    feeder.abort();
    drop(rx);
    let held = flood.drain_held();
    if !held.is_empty() {
        info!(
            held = held.len(),
            "leaving held messages unacknowledged (they will be redelivered)"
        );
    }
    drop(held);
    if !stalled.is_empty() {
        info!(
            waiting = stalled.len(),
            "leaving the messages that waited for the store unacknowledged (they will be redelivered)"
        );
    }
    drop(stalled);
    let deadline = tokio::time::Instant::now() + shutdown_grace;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(done))) => {
                if let Some(why) = done.fatal {
                    fatal.get_or_insert(why);
                }
                if let Some(why) = done.store_down {
                    store_down.get_or_insert(why);
                }
            }
            Ok(Some(Err(e))) => {
                fatal.get_or_insert(format!("a pipeline task failed: {e}"));
            }
            Ok(None) => break,
            Err(_) => {
                warn!(
                    unfinished = tasks.len(),
                    "shutdown grace period over: abandoning unfinished messages (they will be redelivered and resumed)"
                );
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    // A last checkpoint covering everything accepted.
    if fatal.is_none() && store_down.is_none() {
        match checkpoint::cut(&pipeline, true).await {
            Ok(Some(cut)) => info!(size = cut.size, "final checkpoint"),
            Ok(None) => {}
            Err(Failure::Transient(why) | Failure::Store(why) | Failure::Fatal(why)) => {
                warn!(%why, "no final checkpoint");
            }
        }
    }
    match (store.close().await, &store_down) {
        (Ok(()), _) => {}
        (Err(e), Some(why)) => {
            warn!(error = %e, %why, "closing the store, which could not write");
        }
        (Err(e), None) => {
            error!(error = %e, "closing the store");
            fatal.get_or_insert(format!("closing the store: {e}"));
        }
    }
    transport.close().await;
    let s = summary(&pipeline, spilled, started);
    let secs = s.elapsed.as_secs_f64().max(1e-3);
    info!(
        accepted = s.accepted,
        rejected = s.rejected,
        delivered = s.delivered,
        duplicates = s.duplicates,
        notices = s.notices,
        resumed = s.resumed,
        spilled = s.spilled,
        per_second = format!("{:.1}", (s.accepted + s.rejected) as f64 / secs),
        "stopped"
    );
    admin.shutdown().await;
    match fatal {
        Some(why) => Err(ServeError::Fatal(why)),
        None => Ok(s),
    }
}

fn summary(pipeline: &Pipeline, spilled: u64, started: Instant) -> Summary {
    let s = &pipeline.stats;
    Summary {
        accepted: s.accepted.load(Ordering::Relaxed),
        rejected: s.rejected.load(Ordering::Relaxed),
        delivered: s.delivered.load(Ordering::Relaxed),
        duplicates: s.duplicates.load(Ordering::Relaxed),
        notices: s.notices.load(Ordering::Relaxed),
        resumed: s.resumed.load(Ordering::Relaxed),
        spilled,
        elapsed: started.elapsed(),
    }
}

fn spawn_message(
    tasks: &mut JoinSet<TaskDone>,
    pipeline: &Arc<Pipeline>,
    key: String,
    delivery: Delivery,
    retried: bool,
) {
    let pipeline = pipeline.clone();
    tasks.spawn(async move {
        let sender = Sender::of(delivery.properties(), &pipeline.broker);
        let inbound = Inbound {
            body: delivery.body(),
            props: delivery.properties(),
            sender: &sender,
            // A message tried again after the store failed is a redelivery too: its first
            // attempt may have recorded `received` (the pipeline checks the bytes' hash).
            redelivered: delivery.redelivered() || retried,
        };
        let outcome = pipeline.handle(inbound).await;
        if let Err(Failure::Store(why)) = outcome {
            warn!(%why, "not finished: the audit store cannot write; kept unacknowledged for a retry");
            return TaskDone {
                kind: TaskKind::Message(key),
                fatal: None,
                store_down: Some(why),
                retry: Some(delivery),
            };
        }
        let fatal = match outcome {
            Ok(handled) => {
                if let Handled::Rejected { code } = &handled {
                    debug!(%code, "rejected and acked");
                }
                if let Err(e) = delivery.ack().await {
                    // The channel is gone: RabbitMQ redelivers it, and the record says it is done.
                    warn!(error = %e, "ack failed after the message was handled");
                }
                None
            }
            Err(Failure::Transient(why)) => {
                warn!(%why, "not finished; giving the message back for redelivery");
                if let Err(e) = delivery.nack(true).await {
                    debug!(error = %e, "nack failed (the channel is gone; it will be redelivered)");
                }
                None
            }
            Err(Failure::Fatal(why)) | Err(Failure::Store(why)) => {
                error!(%why, "fatal: stopping");
                Some(why)
            }
        };
        TaskDone::new(TaskKind::Message(key), fatal)
    });
}

fn spawn_spill(
    tasks: &mut JoinSet<TaskDone>,
    publisher: &Arc<Publisher>,
    broker: &ParticipantId,
    sender: Sender,
    delivery: Delivery,
) {
    let publisher = publisher.clone();
    let props = message::held_copy_properties(delivery.properties(), &sender, broker);
    tasks.spawn(async move {
        let published = publisher
            .publish(
                INGRESS_EXCHANGE,
                INGRESS_ROUTING_KEY,
                delivery.body(),
                props,
            )
            .await;
        match published {
            Ok(()) => {
                if let Err(e) = delivery.ack().await {
                    // Both the copy and the original will be seen: the second is recognised
                    // by its envelope id and the held-copy flag.
                    warn!(error = %e, "ack of a spilled original failed");
                }
            }
            Err(e) => {
                warn!(error = %e, "republishing a held copy failed; giving the original back");
                let _ = delivery.nack(true).await;
            }
        }
        TaskDone::new(TaskKind::Spill, None)
    });
}

fn spawn_checkpoint(tasks: &mut JoinSet<TaskDone>, pipeline: &Arc<Pipeline>) {
    let pipeline = pipeline.clone();
    tasks.spawn(async move {
        match checkpoint::cut(&pipeline, false).await {
            Ok(_) => TaskDone::new(TaskKind::Checkpoint, None),
            Err(Failure::Transient(why)) => {
                warn!(%why, "checkpoint not cut");
                TaskDone::new(TaskKind::Checkpoint, None)
            }
            Err(Failure::Store(why)) => TaskDone {
                store_down: Some(why),
                ..TaskDone::new(TaskKind::Checkpoint, None)
            },
            Err(Failure::Fatal(why)) => TaskDone::new(TaskKind::Checkpoint, Some(why)),
        }
    });
}

fn spawn_rate_notice(tasks: &mut JoinSet<TaskDone>, pipeline: &Arc<Pipeline>, key: &str) {
    let Ok(to) = key.parse::<ParticipantId>() else {
        return;
    };
    if to == pipeline.broker || pipeline.registry.get(&to).is_none() {
        return;
    }
    let pipeline = pipeline.clone();
    tasks.spawn(async move {
        let detail = format!(
            "{to} sends faster than it may, or has too many messages in process: its messages \
             wait and are processed in order as its rate allows; nothing is dropped"
        );
        let n = notice::notice(ReasonCode::RateLimited, None, &detail);
        match pipeline.send_notice(&to, n).await {
            Ok(()) => TaskDone::new(TaskKind::Notice, None),
            Err(Failure::Transient(why)) => {
                warn!(%why, "rate_limited notice not sent");
                TaskDone::new(TaskKind::Notice, None)
            }
            Err(Failure::Store(why)) => TaskDone {
                store_down: Some(why),
                ..TaskDone::new(TaskKind::Notice, None)
            },
            Err(Failure::Fatal(why)) => TaskDone::new(TaskKind::Notice, Some(why)),
        }
    });
}

/// Waits for room in the data directory (a [`RESUME_PROBE_BYTES`] file written, synced and
/// removed), then reopens the store. Done with `store_down: None` when the store is back.
fn spawn_reopen(tasks: &mut JoinSet<TaskDone>, store: &Store) {
    let store = store.clone();
    tasks.spawn(async move {
        let reopened = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let probe = store.dir().join(".resume-probe");
            let written = (|| -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&probe)?;
                f.write_all(&vec![0u8; RESUME_PROBE_BYTES])?;
                f.sync_all()
            })();
            let _ = std::fs::remove_file(&probe);
            written.map_err(|e| {
                format!(
                    "the data directory {} has no room for {} MiB yet: {e}",
                    store.dir().display(),
                    RESUME_PROBE_BYTES >> 20
                )
            })?;
            let report = store
                .reopen()
                .map_err(|e| format!("reopening the store: {e}"))?;
            info!(
                entries = report.entries,
                replayed = report.replayed,
                truncated_bytes = report.truncated_bytes,
                "store reopened"
            );
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the reopening task failed: {e}")));
        TaskDone {
            store_down: reopened.err(),
            ..TaskDone::new(TaskKind::Reopen, None)
        }
    });
}
