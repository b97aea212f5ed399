//! The admin HTTP server (axum): the routes, optional TLS (mutual when `client_ca` is set),
//! the address file.
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /healthz` | `200 ok`: the process is alive |
//! | `GET /readyz` | `200 {"ready":true,"reasons":[]}` or `503` with the reasons |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /api/status` | [`super::status::StatusReport`] as JSON |
//! | `GET /` | the status page (HTML, inline CSS, no script, refreshes itself) |
//!
//! Guarantees: read-only (GET and HEAD only; anything else is 405); every response carries
//! `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`, and the page a
//! Content-Security-Policy that allows nothing but its own inline style. With TLS, handshakes
//! run concurrently with a timeout, so a client that never finishes one holds nobody up; with
//! `client_ca`, a client without a certificate of that CA gets no HTTP at all. The bound URL is
//! logged and written to `<data_dir>/admin.url` (loopback when bound to an unspecified
//! address), which is removed on a clean stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::config::AdminTls;
use super::{ADDRESS_FILE, Shared, lock, metrics, page, probe};

/// How long a TLS client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once.
const MAX_HANDSHAKES: usize = 64;
/// How long a stop waits for open connections.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why the admin server could not start.
#[derive(Debug, Error)]
pub enum AdminError {
    #[error("binding the admin address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin TLS: {what} {}: {problem}", path.display())]
    Tls {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("writing the admin address file {}: {source}", path.display())]
    AddressFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
pub(crate) struct Running {
    pub url: String,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    address_file: PathBuf,
}

impl Running {
    pub async fn start(shared: Arc<Shared>) -> Result<Running, AdminError> {
        let addr = shared.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| AdminError::Bind { addr, source })?;
        let tls = match &shared.config.tls {
            Some(t) => Some(server_config(t)?),
            None => None,
        };
        let mutual = shared
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        let (stop, stop_rx) = watch::channel(false);
        let router = router(shared.clone());
        let shutdown = {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let (scheme, task) = match tls {
            None => {
                let serve = axum::serve(listener, router).with_graceful_shutdown(shutdown);
                let task = tokio::spawn(async move {
                    if let Err(e) = serve.await {
                        warn!(error = %e, "admin server stopped");
                    }
                });
                ("http", task)
            }
            Some(config) => {
                let listener = TlsListener::start(listener, config, stop_rx);
                let serve = axum::serve(listener, router).with_graceful_shutdown(shutdown);
                let task = tokio::spawn(async move {
                    if let Err(e) = serve.await {
                        warn!(error = %e, "admin server stopped");
                    }
                });
                ("https", task)
            }
        };
        let mut shown = local;
        if shown.ip().is_unspecified() {
            shown.set_ip(match local {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let url = format!("{scheme}://{shown}/");
        let address_file = shared.data_dir.join(ADDRESS_FILE);
        let written = write_address_file(&address_file, &url);
        if let Err(source) = written {
            let _ = stop.send(true);
            return Err(AdminError::AddressFile {
                path: address_file,
                source,
            });
        }
        info!(
            %url,
            listen = %local,
            tls = scheme == "https",
            client_certificates = mutual,
            file = %address_file.display(),
            "admin server listening"
        );
        Ok(Running {
            url,
            stop,
            task: Mutex::new(Some(task)),
            address_file,
        })
    }

    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = lock(&self.task).take();
        if let Some(task) = task
            && tokio::time::timeout(STOP_GRACE, task).await.is_err()
        {
            debug!("admin server: open connections did not close in time");
        }
        let _ = std::fs::remove_file(&self.address_file);
    }
}

impl Drop for Running {
    /// Dropped without [`Running::stop`] (an early return of the daemon): the server stops
    /// all the same, and the address file no longer names it.
    fn drop(&mut self) {
        if !*self.stop.borrow() {
            let _ = self.stop.send(true);
            let _ = std::fs::remove_file(&self.address_file);
        }
    }
}

fn write_address_file(path: &std::path::Path, url: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("url.tmp");
    std::fs::write(&tmp, format!("{url}\n"))?;
    std::fs::rename(&tmp, path)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page_route))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route))
        .route("/api/status", get(api_status))
        .fallback(not_found)
        .layer(axum::middleware::map_response(common_headers))
        .with_state(shared)
}

async fn common_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let r = probe::readiness(&shared);
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r)).into_response()
}

async fn metrics_route(State(shared): State<Arc<Shared>>) -> Response {
    probe::update_metrics(&shared);
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn api_status(State(shared): State<Arc<Shared>>) -> Response {
    Json(probe::report(&shared)).into_response()
}

async fn page_route(State(shared): State<Arc<Shared>>) -> Response {
    let report = probe::report(&shared);
    let mut r = Html(page::render(&report)).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    r
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found: try /, /api/status, /metrics, /healthz or /readyz\n",
    )
}

// ---------------------------------------------------------------------------------------
// TLS

fn tls_err(what: &'static str, path: &std::path::Path, problem: impl Into<String>) -> AdminError {
    AdminError::Tls {
        what,
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn read_certs(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, AdminError> {
    let pem = std::fs::read(path).map_err(|e| tls_err(what, path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(what, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(what, path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The rustls server configuration: the admin certificate, and with `client_ca` a verifier
/// that accepts only client certificates of that CA.
pub fn server_config(tls: &AdminTls) -> Result<Arc<rustls::ServerConfig>, AdminError> {
    const CERT: &str = "certificate";
    const KEY: &str = "key";
    const CA: &str = "client CA";
    let chain = read_certs(CERT, &tls.cert)?;
    let key_pem = std::fs::read(&tls.key).map_err(|e| tls_err(KEY, &tls.key, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls_err(KEY, &tls.key, format!("no usable private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(CERT, &tls.cert, format!("TLS setup: {e}")))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(CA, ca)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err(CA, ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_err(CA, ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(CERT, &tls.cert, format!("does not go with the key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A listener that hands axum connections whose TLS handshake is done.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(error = %e, "admin: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "admin: TLS handshake refused"),
                        Err(_) => debug!(%peer, "admin: TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor stopped: no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
