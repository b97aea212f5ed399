//! The operators' view of the daemon: an HTTP server inside `serve` with `/metrics`
//! (Prometheus), `/healthz`, `/readyz`, `/api/status` (JSON) and `/` (a read-only page that
//! needs no external asset and refreshes itself), and the figures behind them.
//!
//! # Layout
//!
//! - [`config`]: `[admin]` of `broker.toml` (address, TLS, thresholds).
//! - [`status`]: the status model, shared by the daemon (JSON out) and the `status` command
//!   (JSON in), and what needs attention.
//! - [`history`]: the figures as a pure fold over audit entries (counts per window, the age
//!   of each inbox's oldest unread message — the method and its limits are documented there —,
//!   time to removal).
//! - [`metrics`]: the Prometheus registry.
//! - [`page`]: the HTML page, rendered from a [`status::StatusReport`].
//! - [`server`]: the HTTP server (axum), its optional (mutual) TLS, the address file.
//! - [`probe`]: what is read from outside on a timer: queue depths from RabbitMQ (passive
//!   declares), the log's size, the latest checkpoint, a write probe of the data directory,
//!   hence readiness.
//! - [`client`]: a minimal HTTP(S) client for `referral-broker status` and tests.
//!
//! # How the daemon feeds it
//!
//! [`Admin`] is one handle; the daemon calls [`start`] before anything else (so `/healthz`
//! answers while the store replays), then [`Admin::store_opened`], [`Admin::connected`],
//! [`Admin::serving`], [`Admin::window`] from its loop, [`Admin::stopping`] and
//! [`Admin::shutdown`]. The pipeline holds an [`Observer`] and hands it every batch of
//! entries it appended; a thread folds them into the [`history::History`] after first
//! reading the log the store had at start (so the page's windows survive a restart).
//!
//! # Guarantees
//!
//! - Nothing here can hold up or fail the pipeline: [`Observer::record`] only queues a copy of
//!   the entries; a failing probe or a slow HTTP client affects the figures, never routing.
//! - Read-only: every route is a GET; nothing on the admin address changes the broker.
//! - Loopback by default; another address only with mutual TLS ([`config`]).
//!
//! # Not guaranteed
//!
//! - Prometheus counters count since the process started; the page's hour/day windows and
//!   takedown figures come from the log (complete once `history.complete` is true).
//! - Inbox ages are derived, not read from RabbitMQ (see [`history`] for the limits).

pub mod client;
pub mod config;
pub mod history;
pub mod metrics;
pub mod page;
pub mod probe;
pub mod server;
pub mod status;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

pub use config::{AdminConfig, AdminConfigError, AdminSection};
pub use metrics::Metrics;
pub use server::AdminError;

use crate::ids::{EnvelopeId, ParticipantId};
use crate::registry::Registry;
use crate::store::{Entry, Seq, Sha256Digest, Store};
use crate::transport::Transport;
use crate::wire::{self, Body};
use history::{Facts, History, ItemClock};

/// Name of the file in the data directory that holds the admin server's URL.
pub const ADDRESS_FILE: &str = "admin.url";

/// Default threshold (seconds) above which an inbox's oldest unread message needs attention.
pub const DEFAULT_INBOX_AGE_SECS: u64 = 3600;

/// What the daemon is doing, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    OpeningStore,
    Connecting,
    Serving,
    Stopping,
}

/// One participant as the page shows it.
#[derive(Debug, Clone)]
pub(crate) struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    pub role: String,
    pub country: Option<String>,
}

/// The state shared by the HTTP handlers, the probe and the history thread.
pub(crate) struct Shared {
    pub config: AdminConfig,
    pub broker: ParticipantId,
    pub participants: Vec<ParticipantInfo>,
    pub countries: HashMap<ParticipantId, String>,
    pub data_dir: PathBuf,
    pub started_at: DateTime<Utc>,
    pub metrics: Metrics,
    pub history: Mutex<History>,
    pub history_complete: std::sync::atomic::AtomicBool,
    pub phase: Mutex<Phase>,
    /// The audit store cannot write (the daemon waits and retries), and why.
    pub store_down: Mutex<Option<String>>,
    pub store: OnceLock<Store>,
    pub transport: OnceLock<Transport>,
    pub probe: Mutex<probe::ProbeState>,
    pub in_flight: AtomicU64,
    pub held: AtomicU64,
    feed: OnceLock<std::sync::mpsc::Sender<Vec<Entry>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data whole (plain assignments and folds).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The daemon's handle on the admin side; cheap to clone.
#[derive(Clone)]
pub struct Admin {
    shared: Arc<Shared>,
    server: Option<Arc<server::Running>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

/// Where the pipeline hands the entries it appended. Default: not attached, a no-op.
#[derive(Clone, Default)]
pub struct Observer {
    tx: Arc<OnceLock<std::sync::mpsc::Sender<Vec<Entry>>>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("attached", &self.tx.get().is_some())
            .finish()
    }
}

impl Observer {
    /// Queues `entries` for the figures (never blocks, never fails the caller).
    pub fn record(&self, entries: Vec<Entry>) {
        if let Some(tx) = self.tx.get()
            && !entries.is_empty()
        {
            let _ = tx.send(entries);
        }
    }
}

/// Binds the admin address (unless disabled), writes its URL to `<data_dir>/admin.url`, and
/// serves. `registry` gives the participants shown and their countries.
pub async fn start(
    config: AdminConfig,
    registry: &Registry,
    data_dir: &Path,
) -> Result<Admin, AdminError> {
    let broker = registry.broker().id.clone();
    let participants: Vec<ParticipantInfo> = registry
        .participants()
        .filter(|p| p.id != broker)
        .map(|p| ParticipantInfo {
            id: p.id.clone(),
            name: p.name.clone(),
            role: p.role.as_str().to_owned(),
            country: p.country.clone(),
        })
        .collect();
    let countries = participants
        .iter()
        .filter_map(|p| Some((p.id.clone(), p.country.clone()?)))
        .collect();
    let ids = participants.iter().map(|p| p.id.clone()).collect();
    let enabled = config.enabled;
    let shared = Arc::new(Shared {
        config,
        broker,
        participants,
        countries,
        data_dir: data_dir.to_owned(),
        started_at: Utc::now(),
        metrics: Metrics::new(),
        history: Mutex::new(History::new().broadcasting_to(ids)),
        history_complete: Default::default(),
        phase: Mutex::new(Phase::OpeningStore),
        store_down: Mutex::new(None),
        store: OnceLock::new(),
        transport: OnceLock::new(),
        probe: Mutex::new(probe::ProbeState::default()),
        in_flight: AtomicU64::new(0),
        held: AtomicU64::new(0),
        feed: OnceLock::new(),
    });
    let server = if enabled {
        Some(Arc::new(server::Running::start(shared.clone()).await?))
    } else {
        info!("admin server disabled ([admin] enabled = false)");
        None
    };
    Ok(Admin { shared, server })
}

impl Admin {
    /// The URL the admin server answers on (`None` when disabled).
    pub fn url(&self) -> Option<String> {
        self.server.as_ref().map(|s| s.url.clone())
    }

    /// The store is open: start the figures (read the log found, then follow the pipeline).
    pub fn store_opened(&self, store: &Store) {
        if self.shared.store.set(store.clone()).is_err() {
            return;
        }
        *lock(&self.shared.phase) = Phase::Connecting;
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Entry>>();
        let _ = self.shared.feed.set(tx);
        let shared = self.shared.clone();
        // The end of the log as it is now: entries from here on come through the observer.
        let end = store.tree_head().size;
        let spawned = std::thread::Builder::new()
            .name("admin-history".into())
            .spawn(move || {
                let weak = Arc::downgrade(&shared);
                read_log(shared, end);
                follow(weak, end, rx);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the admin history thread: the status figures stay empty");
        }
    }

    /// Connected to RabbitMQ (topology declared): start polling the queues.
    pub fn connected(&self, transport: &Transport) {
        if self.shared.transport.set(transport.clone()).is_err() {
            return;
        }
        probe::spawn(self.shared.clone());
    }

    /// Hands the pipeline's observer the feed of the figures.
    pub fn attach(&self, observer: &Observer) {
        if let Some(tx) = self.shared.feed.get() {
            let _ = observer.tx.set(tx.clone());
        }
    }

    /// Consuming ingress.
    pub fn serving(&self) {
        *lock(&self.shared.phase) = Phase::Serving;
    }

    /// The audit store cannot write (`Some(why)`: `/readyz` says so) or writes again (`None`).
    pub fn store_down(&self, why: Option<&str>) {
        *lock(&self.shared.store_down) = why.map(str::to_owned);
    }

    /// The window: messages being processed and held by flood control.
    pub fn window(&self, in_flight: usize, held: usize) {
        self.shared
            .in_flight
            .store(in_flight as u64, Ordering::Relaxed);
        self.shared.held.store(held as u64, Ordering::Relaxed);
    }

    /// Shutting down: `/readyz` says so from now on.
    pub fn stopping(&self) {
        *lock(&self.shared.phase) = Phase::Stopping;
    }

    /// Stops the HTTP server (open connections get a moment to finish) and removes the
    /// address file.
    pub async fn shutdown(&self) {
        self.stopping();
        if let Some(s) = &self.server {
            s.stop().await;
        }
    }

    /// The metrics (for tests and embedding).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

/// The history thread, first: the log as the store found it, up to `end`.
fn read_log(shared: Arc<Shared>, end: u64) {
    let Some(store) = shared.store.get() else {
        return;
    };
    let facts = StoreFacts {
        store,
        countries: &shared.countries,
    };
    let started = std::time::Instant::now();
    let mut scanned = 0u64;
    if end > 0 {
        match store.reader().iter_from(Seq(0)) {
            Err(e) => warn!(error = %e, "cannot read the audit log for the status figures"),
            Ok(iter) => {
                let now = Utc::now();
                let mut chunk = Vec::with_capacity(1024);
                for le in iter {
                    let e = match le.and_then(|le| le.decode()) {
                        Ok(e) => e,
                        Err(e) => {
                            warn!(error = %e, "reading the audit log for the status figures stopped");
                            break;
                        }
                    };
                    if e.seq.get() >= end {
                        break;
                    }
                    chunk.push(e);
                    if chunk.len() == chunk.capacity() {
                        scanned += apply_all(&shared, &facts, &chunk, now, false);
                        chunk.clear();
                    }
                }
                scanned += apply_all(&shared, &facts, &chunk, now, false);
            }
        }
    }
    lock(&shared.history).prune(Utc::now(), shared.config.history_days);
    shared.history_complete.store(true, Ordering::Relaxed);
    shared.metrics.history_complete.set(1);
    info!(
        entries = scanned,
        secs = format!("{:.1}", started.elapsed().as_secs_f64()),
        "status figures: audit log read"
    );
}

/// How long the history thread lets appends gather after the first one it is woken for.
const FOLLOW_GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// The history thread, then: every batch the pipeline appends, until the admin side is gone
/// (it holds no strong reference, so the store can close and be dropped).
fn follow(shared: Weak<Shared>, end: u64, rx: std::sync::mpsc::Receiver<Vec<Entry>>) {
    loop {
        let batch = match rx.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(batch) => batch,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if shared.strong_count() == 0 {
                    return;
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // Let the batches of the next moment gather, then take them all at once: one wake-up
        // of this thread (and one lock of the history) per period, not per append (issue 7).
        std::thread::sleep(FOLLOW_GATHER);
        let mut live: Vec<Entry> = batch.into_iter().filter(|e| e.seq.get() >= end).collect();
        live.extend(rx.try_iter().flatten().filter(|e| e.seq.get() >= end));
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(store) = shared.store.get() else {
            return;
        };
        let facts = StoreFacts {
            store,
            countries: &shared.countries,
        };
        apply_all(&shared, &facts, &live, Utc::now(), true);
    }
}

fn apply_all(
    shared: &Shared,
    facts: &dyn Facts,
    entries: &[Entry],
    now: DateTime<Utc>,
    live: bool,
) -> u64 {
    if entries.is_empty() {
        return 0;
    }
    let mut h = lock(&shared.history);
    for e in entries {
        let seen = h.apply(e, facts, now);
        if live {
            for o in &seen {
                shared.metrics.observe(o);
            }
        }
    }
    entries.len() as u64
}

/// [`Facts`] over the store's retained bodies and the registry.
struct StoreFacts<'a> {
    store: &'a Store,
    countries: &'a HashMap<ParticipantId, String>,
}

impl StoreFacts<'_> {
    fn envelope(&self, sha: &Sha256Digest) -> Option<wire::Envelope> {
        let bytes = self.store.body(sha).ok()??;
        // Accepted once already: the contract's schema was checked then.
        wire::decode_without_schema(&bytes).ok()
    }
}

impl Facts for StoreFacts<'_> {
    fn item_clock(&self, referral: &EnvelopeId, item: u16) -> Option<ItemClock> {
        let entries = self.store.entries_of(referral).ok()?;
        let received = entries
            .iter()
            .find(|e| e.envelope.as_ref() == Some(referral) && e.event.name() == "received")?;
        let envelope = self.envelope(received.sha256.as_ref()?)?;
        match envelope.body {
            Body::Referral(r) => {
                let it = r.items.get(usize::from(item))?;
                Some(ItemClock {
                    public_report_received_at: r.public_report_received_at,
                    hosting_country: it.hosting.country.as_str().to_owned(),
                })
            }
            _ => None,
        }
    }

    fn status_at(&self, body: &Sha256Digest) -> Option<DateTime<Utc>> {
        match self.envelope(body)?.body {
            Body::Status(s) => Some(s.at),
            _ => None,
        }
    }

    fn country_of(&self, participant: &ParticipantId) -> Option<String> {
        self.countries.get(participant).cloned()
    }
}
