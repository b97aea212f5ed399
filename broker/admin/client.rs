//! A minimal HTTP/1.1 client for the admin server: one `GET`, `Connection: close`, over TCP
//! or TLS (trusting only a given CA, optionally with a client certificate for mutual TLS).
//! Enough for `referral-broker status` and the tests; not a general HTTP client (no redirects,
//! no proxies, no compression).
//!
//! Guarantees: the whole exchange is bounded by the timeout given and the response by
//! [`MAX_RESPONSE_BYTES`]; a TLS server is verified against the CA file alone (never the
//! operating system's roots).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response read.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// TLS settings of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that issued the admin server's certificate.
    pub ca: PathBuf,
    /// Client certificate and key (PEM), for an admin server that demands one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{0}: not an http:// or https:// URL with a host")]
    Url(String),
    #[error("https:// needs the admin server's CA (--ca)")]
    NoCa,
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {0:?}", .timeout)]
    Timeout { addr: String, timeout: Duration },
    #[error("not an HTTP response: {0}")]
    Http(String),
}

/// `GET url`, within `timeout`.
pub async fn get(
    url: &str,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let parsed = url::Url::parse(url).map_err(|_| ClientError::Url(url.to_owned()))?;
    let https = match parsed.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(ClientError::Url(url.to_owned())),
    };
    let host = parsed
        .host()
        .ok_or_else(|| ClientError::Url(url.to_owned()))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| ClientError::Url(url.to_owned()))?;
    let (connect_to, server_name, host_header) = match host {
        url::Host::Ipv4(ip) => (
            SocketAddr::new(IpAddr::V4(ip), port).to_string(),
            ServerName::IpAddress(IpAddr::V4(ip).into()),
            format!("{ip}:{port}"),
        ),
        url::Host::Ipv6(ip) => (
            SocketAddr::new(IpAddr::V6(ip), port).to_string(),
            ServerName::IpAddress(IpAddr::V6(ip).into()),
            format!("[{ip}]:{port}"),
        ),
        url::Host::Domain(d) => (
            format!("{d}:{port}"),
            ServerName::try_from(d.to_owned()).map_err(|_| ClientError::Url(url.to_owned()))?,
            format!("{d}:{port}"),
        ),
    };
    let mut path = parsed.path().to_owned();
    if let Some(q) = parsed.query() {
        path.push('?');
        path.push_str(q);
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: referral-broker/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let addr = connect_to.clone();
    let exchange = async move {
        let tcp = TcpStream::connect(&connect_to)
            .await
            .map_err(|source| ClientError::Connect {
                addr: connect_to.clone(),
                source,
            })?;
        let raw = if https {
            let tls = tls.ok_or(ClientError::NoCa)?;
            let connector = tokio_rustls::TlsConnector::from(client_config(tls)?);
            let stream = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            exchange(stream, &request, &connect_to).await?
        } else {
            exchange(tcp, &request, &connect_to).await?
        };
        parse(&raw)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout { addr, timeout })?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
    addr: &str,
) -> Result<Vec<u8>, ClientError> {
    let io = |source| ClientError::Io {
        addr: addr.to_owned(),
        source,
    };
    s.write_all(request.as_bytes()).await.map_err(io)?;
    s.flush().await.map_err(io)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > MAX_RESPONSE_BYTES {
                    return Err(ClientError::Http(format!(
                        "response larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
            }
            // A TLS peer that closes without close_notify: what arrived is judged below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => break,
            Err(e) => return Err(io(e)),
        }
    }
    Ok(out)
}

fn parse(raw: &[u8]) -> Result<Response, ClientError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Http("no end of headers".into()))?;
    let head = std::str::from_utf8(&raw[..end])
        .map_err(|_| ClientError::Http("headers are not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ClientError::Http(format!("status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Http(format!("status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if rest.len() < len {
            return Err(ClientError::Http(format!(
                "body cut short: {} of {len} bytes",
                rest.len()
            )));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, ClientError> {
    let bad = || ClientError::Http("bad chunked encoding".into());
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn client_config(tls: &ClientTls) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| ClientError::Tls(format!("{}: {e}", p.display())))
    };
    let mut roots = RootCertStore::empty();
    let ca = read(&tls.ca)?;
    for c in CertificateDer::pem_slice_iter(&ca) {
        let c = c.map_err(|e| ClientError::Tls(format!("{}: {e}", tls.ca.display())))?;
        roots
            .add(c)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", tls.ca.display())))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls(format!(
            "{}: no CA certificate",
            tls.ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Tls(format!("{}: {e}", cert.display())))?;
            let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", cert.display())))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            .expect("parse");
        assert_eq!((r.status, r.body.as_slice()), (503, b"{}".as_slice()));
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let r = parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
            .expect("parse");
        assert_eq!(r.body, b"abcde");
        assert!(parse(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc").is_err());
    }

    #[test]
    fn refuses_other_schemes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let e = rt
            .block_on(get("ftp://127.0.0.1/", None, Duration::from_secs(1)))
            .expect_err("ftp");
        assert!(matches!(e, ClientError::Url(_)));
        let e = rt
            .block_on(get("https://127.0.0.1:1/", None, Duration::from_secs(1)))
            .expect_err("no CA");
        assert!(matches!(e, ClientError::NoCa | ClientError::Connect { .. }));
    }
}
