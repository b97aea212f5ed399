//! The supervised connection: one AMQP connection over mutual TLS with SASL EXTERNAL, kept
//! alive by a supervisor task that reconnects after any loss.
//!
//! Guarantees:
//! - [`Transport::connect`] makes one attempt and reports its failure as a
//!   [`ConnectError`](super::error::ConnectError) (no silent retry loop hides a bad
//!   certificate). Once connected, any loss — a forced close, a node restart, a missed
//!   heartbeat — is followed by reconnection attempts with exponential backoff and jitter
//!   ([`Backoff`](super::config::Backoff)), forever, until [`Transport::close`] or the last
//!   handle is dropped.
//! - On every (re)connection the topology given to [`Transport::connect_declaring`] (the
//!   broker's) is declared again before anyone may use the new connection.
//! - Each connection gets a new generation number; [`Transport::stats`] tells how many
//!   reconnections there were and how long the last outage lasted.
//! - `connection.blocked` / `unblocked` (memory or disk alarm) are logged and visible through
//!   [`Transport::is_blocked`]; publishes then time out rather than hang.
//!
//! Not guaranteed: lapin's own recovery is not used (it retries the first connection too, and
//! would hide login failures). Channels do not survive a reconnection: [`Publisher`] and
//! [`Consumer`] open new ones, and a publish that was in flight fails with a recoverable error.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::tcp::RustlsConnector;
use lapin::{AsyncTcpStream, Channel, Connection, ConnectionProperties, Event};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::config::TransportConfig;
use super::consume::Consumer;
use super::error::{ConnectError, ConnectFailure, TransportError, classify};
use super::publish::Publisher;
use super::tls;
use super::topology::Topology;

/// How often the supervisor checks the connection's state besides listening to its events.
const STATE_POLL: Duration = Duration::from_millis(200);

/// A connection to the network's RabbitMQ node that heals itself. Cheap to clone; the
/// connection closes when [`Transport::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    config: TransportConfig,
    tls: Arc<rustls::ClientConfig>,
    topology: Option<Topology>,
    link: watch::Sender<Link>,
    blocked: AtomicBool,
    stats: Mutex<ReconnectStats>,
    shutdown: watch::Sender<bool>,
}

#[derive(Clone)]
enum Link {
    Up {
        conn: Arc<Connection>,
        generation: u64,
    },
    Down {
        since: Instant,
        last_error: String,
    },
    Closed,
}

/// The state of the connection, as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connected; `generation` counts connections, starting at 1.
    Up { generation: u64 },
    /// Lost, reconnecting since `since`.
    Reconnecting { since: Instant, last_error: String },
    /// Closed for good.
    Closed,
}

/// Reconnection figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconnectStats {
    /// Successful reconnections.
    pub reconnections: u64,
    /// Failed attempts, all outages together.
    pub failed_attempts: u64,
    /// From the moment the loss was noticed until the new connection (with topology) was up.
    pub last_outage: Option<Duration>,
    pub longest_outage: Option<Duration>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("endpoint", &self.inner.config.endpoint())
            .field("vhost", &self.inner.config.vhost)
            .field("state", &self.state())
            .finish()
    }
}

impl Transport {
    /// Connects as a participant: no topology is declared.
    pub async fn connect(config: TransportConfig) -> Result<Self, TransportError> {
        Self::start(config, None).await
    }

    /// Connects and declares `topology`, now and after every reconnection (the broker).
    pub async fn connect_declaring(
        config: TransportConfig,
        topology: Topology,
    ) -> Result<Self, TransportError> {
        Self::start(config, Some(topology)).await
    }

    async fn start(
        config: TransportConfig,
        topology: Option<Topology>,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        let tls = tls::client_config(&config)?;
        let conn = Arc::new(open(&config, &tls, topology.as_ref()).await?);
        info!(
            endpoint = %config.endpoint(),
            vhost = %config.vhost,
            "connected"
        );
        let (link, _) = watch::channel(Link::Up {
            conn: conn.clone(),
            generation: 1,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            tls,
            topology,
            link,
            blocked: AtomicBool::new(false),
            stats: Mutex::new(ReconnectStats::default()),
            shutdown,
        });
        tokio::spawn(supervise(Arc::downgrade(&inner), conn, shutdown_rx));
        Ok(Self { inner })
    }

    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// The current state of the connection.
    pub fn state(&self) -> LinkState {
        match &*self.inner.link.borrow() {
            Link::Up { generation, .. } => LinkState::Up {
                generation: *generation,
            },
            Link::Down { since, last_error } => LinkState::Reconnecting {
                since: *since,
                last_error: last_error.clone(),
            },
            Link::Closed => LinkState::Closed,
        }
    }

    /// Reconnection figures so far.
    pub fn stats(&self) -> ReconnectStats {
        match self.inner.stats.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// True while the server blocks this connection (memory or disk alarm).
    pub fn is_blocked(&self) -> bool {
        self.inner.blocked.load(Ordering::Relaxed)
    }

    /// Waits until the connection is up; returns its generation.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<u64, TransportError> {
        self.current(timeout).await.map(|(_, g)| g)
    }

    /// Waits until a connection newer than `past_generation` is up; returns its generation.
    pub async fn wait_reconnected(
        &self,
        past_generation: u64,
        timeout: Duration,
    ) -> Result<u64, TransportError> {
        let mut rx = self.inner.link.subscribe();
        let newer = |l: &Link| match l {
            Link::Up { generation, .. } => *generation > past_generation,
            Link::Closed => true,
            Link::Down { .. } => false,
        };
        match tokio::time::timeout(timeout, rx.wait_for(newer)).await {
            Ok(Ok(link)) => match &*link {
                Link::Up { generation, .. } => Ok(*generation),
                _ => Err(TransportError::Closed),
            },
            Ok(Err(_)) => Err(TransportError::Closed),
            Err(_) => Err(self.not_connected(timeout)),
        }
    }

    /// The current connection, waiting up to `wait` for one.
    pub(crate) async fn current(
        &self,
        wait: Duration,
    ) -> Result<(Arc<Connection>, u64), TransportError> {
        let mut rx = self.inner.link.subscribe();
        let ready = |l: &Link| !matches!(l, Link::Down { .. });
        match tokio::time::timeout(wait, rx.wait_for(ready)).await {
            Ok(Ok(link)) => match &*link {
                Link::Up { conn, generation } => Ok((conn.clone(), *generation)),
                _ => Err(TransportError::Closed),
            },
            Ok(Err(_)) => Err(TransportError::Closed),
            Err(_) => Err(self.not_connected(wait)),
        }
    }

    fn not_connected(&self, waited: Duration) -> TransportError {
        let last_error = match &*self.inner.link.borrow() {
            Link::Down { last_error, .. } => last_error.clone(),
            Link::Up { .. } => "none (the connection just came up)".to_owned(),
            Link::Closed => return TransportError::Closed,
        };
        TransportError::NotConnected {
            endpoint: self.inner.config.endpoint(),
            waited,
            last_error,
        }
    }

    /// Resolves once the connection of `generation` is no longer the current one (lost,
    /// replaced by a newer one, or the transport closed).
    pub(crate) async fn left(&self, generation: u64) {
        let mut rx = self.inner.link.subscribe();
        let gone = |l: &Link| !matches!(l, Link::Up { generation: g, .. } if *g == generation);
        // An error means the transport is gone: that is leaving too.
        let _ = rx.wait_for(gone).await;
    }

    /// A new raw channel on the current connection (waiting up to the connect timeout for
    /// one, and as long again for the server to open it). It does not survive a
    /// reconnection; prefer [`Transport::publisher`] and [`Transport::consume`].
    pub async fn open_channel(&self) -> Result<Channel, TransportError> {
        let wait = self.inner.config.connect_timeout;
        let (conn, _) = self.current(wait).await?;
        answered(wait, "opening a channel".to_owned(), conn.create_channel()).await
    }

    /// A publisher with confirms; see [`Publisher`].
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.clone())
    }

    /// Starts consuming `queue` with manual acks and the configured prefetch. Fails now if
    /// the server refuses (no read permission, no such queue); later interruptions are
    /// healed inside [`Consumer::next`].
    pub async fn consume(&self, queue: &str) -> Result<Consumer, TransportError> {
        Consumer::start(self.clone(), queue).await
    }

    /// Closes the connection for good; every publisher and consumer then fails or ends.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        let mut rx = self.inner.link.subscribe();
        let closed = rx.wait_for(|l| matches!(l, Link::Closed));
        let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
    }
}

/// `op`'s outcome, or [`TransportError::Timeout`] if the server did not answer within `wait`.
pub(crate) async fn answered<T>(
    wait: Duration,
    op: String,
    request: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, TransportError> {
    match tokio::time::timeout(wait, request).await {
        Ok(outcome) => outcome.map_err(|source| TransportError::Amqp { op, source }),
        Err(_) => Err(TransportError::Timeout { op, after: wait }),
    }
}

/// One connection attempt: TCP, TLS with only the network's CA trusted, AMQP with SASL
/// EXTERNAL, then the topology if there is one.
async fn open(
    config: &TransportConfig,
    tls: &Arc<rustls::ClientConfig>,
    topology: Option<&Topology>,
) -> Result<Connection, TransportError> {
    let failed = |failure, reported: String, source| {
        TransportError::Connect(Box::new(ConnectError {
            failure,
            endpoint: config.endpoint(),
            vhost: config.vhost.clone(),
            certificate: config.identity.as_ref().map(|i| i.cert_pem.clone()),
            ca: config.ca_pem.clone(),
            reported,
            source,
        }))
    };
    let runtime = lapin::runtime::default_runtime().map_err(|source| TransportError::Amqp {
        op: "starting the AMQP runtime".to_owned(),
        source,
    })?;
    let connector = RustlsConnector::from(tls.clone());
    let host = config.host.clone();
    let port = config.port;
    let properties =
        ConnectionProperties::default().with_connection_name(config.connection_name.clone().into());
    // Set once the TLS handshake is through: a reset after that, before AMQP began, is most
    // likely the server refusing the client certificate (see ClosedAfterTlsHandshake).
    let handshake_done = Arc::new(AtomicBool::new(false));
    let handshake_flag = handshake_done.clone();
    let attempt = Connection::connector(
        config.uri(),
        runtime,
        async move |_uri, runtime| {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let tcp = AsyncTcpStream::connect(&runtime, addrs).await?;
            let tls = tcp.into_rustls(&connector, &host).await?;
            handshake_flag.store(true, Ordering::Release);
            Ok(tls)
        },
        properties,
    );
    let conn = match tokio::time::timeout(config.connect_timeout, attempt).await {
        Err(_) => {
            return Err(failed(
                ConnectFailure::Timeout,
                format!("no complete handshake within {:?}", config.connect_timeout),
                None,
            ));
        }
        Ok(Err(e)) => {
            let failure = match classify(&e) {
                ConnectFailure::Network if handshake_done.load(Ordering::Acquire) => {
                    ConnectFailure::ClosedAfterTlsHandshake
                }
                failure => failure,
            };
            return Err(failed(failure, e.to_string(), Some(e)));
        }
        Ok(Ok(conn)) => conn,
    };
    if let Some(topology) = topology {
        let channel = conn
            .create_channel()
            .await
            .map_err(|source| TransportError::Amqp {
                op: "opening a channel to declare the topology".to_owned(),
                source,
            })?;
        topology.declare(&channel).await?;
        if let Err(e) = channel.close(200, "topology declared".into()).await {
            debug!(error = %e, "closing the topology channel");
        }
    }
    Ok(conn)
}

/// Waits for the loss of `conn`; `None` means shut down.
async fn watch_connection(
    weak: &Weak<Inner>,
    conn: &Connection,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut events = Box::pin(conn.events_listener());
    let mut tick = tokio::time::interval(STATE_POLL);
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return None;
                }
            }
            event = events.next() => match event {
                Some(Event::ConnectionBlocked(reason)) => {
                    warn!(%reason, "the server blocked this connection: publishes stall");
                    if let Some(inner) = weak.upgrade() {
                        inner.blocked.store(true, Ordering::Relaxed);
                    }
                }
                Some(Event::ConnectionUnblocked) => {
                    info!("the server unblocked this connection");
                    if let Some(inner) = weak.upgrade() {
                        inner.blocked.store(false, Ordering::Relaxed);
                    }
                }
                // Channel errors are reported here too; only a dead connection matters.
                Some(Event::Error(e)) if !conn.status().connected() => return Some(e.to_string()),
                Some(Event::Error(e)) => debug!(error = %e, "channel error"),
                Some(_) => {}
                None => return Some("the connection's event stream ended".to_owned()),
            },
            _ = tick.tick() => {
                if !conn.status().connected() {
                    return Some(format!("the connection is no longer up ({:?})", conn.status()));
                }
                if weak.strong_count() == 0 {
                    return None;
                }
            }
        }
    }
}

async fn close_quietly(conn: &Connection) {
    if conn.status().connected() {
        let close = conn.close(200, "shutting down".into());
        match tokio::time::timeout(Duration::from_secs(2), close).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(error = %e, "closing the connection"),
            Err(_) => debug!("closing the connection timed out"),
        }
    }
}

fn mark_closed(weak: &Weak<Inner>) {
    if let Some(inner) = weak.upgrade() {
        inner.link.send_replace(Link::Closed);
    }
}

/// The supervisor: watches the connection, reconnects after a loss, publishes each new
/// connection to the [`Transport`] handles. Ends at shutdown or when every handle is gone.
async fn supervise(
    weak: Weak<Inner>,
    mut conn: Arc<Connection>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut generation = 1u64;
    loop {
        let Some(reason) = watch_connection(&weak, &conn, &mut shutdown).await else {
            close_quietly(&conn).await;
            mark_closed(&weak);
            return;
        };
        let since = Instant::now();
        match weak.upgrade() {
            None => return,
            Some(inner) => {
                warn!(
                    endpoint = %inner.config.endpoint(),
                    vhost = %inner.config.vhost,
                    %reason,
                    "connection lost; reconnecting"
                );
                inner.blocked.store(false, Ordering::Relaxed);
                inner.link.send_replace(Link::Down {
                    since,
                    last_error: reason,
                });
            }
        }

        let mut attempt = 0u32;
        conn = loop {
            let Some(inner) = weak.upgrade() else { return };
            let delay = inner.config.backoff.delay(attempt, &mut rand::rng());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {
                    inner.link.send_replace(Link::Closed);
                    return;
                }
            }
            match open(&inner.config, &inner.tls, inner.topology.as_ref()).await {
                Ok(c) => break Arc::new(c),
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    if let Ok(mut s) = inner.stats.lock() {
                        s.failed_attempts += 1;
                    }
                    warn!(attempt, error = %e, "reconnection attempt failed");
                    inner.link.send_replace(Link::Down {
                        since,
                        last_error: e.to_string(),
                    });
                }
            }
        };

        let Some(inner) = weak.upgrade() else {
            close_quietly(&conn).await;
            return;
        };
        generation += 1;
        let outage = since.elapsed();
        if let Ok(mut s) = inner.stats.lock() {
            s.reconnections += 1;
            s.last_outage = Some(outage);
            s.longest_outage = Some(s.longest_outage.map_or(outage, |l| l.max(outage)));
        }
        info!(
            generation,
            outage_ms = outage.as_millis() as u64,
            attempts = attempt + 1,
            "reconnected"
        );
        inner.link.send_replace(Link::Up {
            conn: conn.clone(),
            generation,
        });
    }
}
