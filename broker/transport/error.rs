//! Every error of the transport, typed, and the translation of what lapin and rustls report
//! into something an operator can act on.
//!
//! Guarantees:
//! - A failed connection is a [`ConnectError`]: which endpoint and vhost, which certificate
//!   file, what the server (or the TLS layer) said, what kind of failure it is
//!   ([`ConnectFailure`]) and a hint. Its `Display` says all of that in one message.
//! - A publish is successful only if RabbitMQ confirmed it *and* routed it: a returned
//!   message, a nack, a channel refusal, a lost connection and a timeout are all
//!   [`PublishError`]s, and [`PublishError::is_recoverable`] says whether republishing
//!   the same message later makes sense.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use thiserror::Error;

/// What went wrong while connecting; decides the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// TCP connection refused: nothing listens there.
    NothingListening,
    /// Another network error (unreachable, reset, closed during the handshake).
    Network,
    /// No complete connection within the configured connect timeout.
    Timeout,
    /// The server requires a client certificate and none was sent.
    ClientCertificateRequired,
    /// The server does not know the CA that issued the client certificate.
    ClientCertificateUnknownCa,
    /// The client certificate has expired (or is not valid yet).
    ClientCertificateExpired,
    /// The server refused the client certificate for another reason.
    ClientCertificateRejected,
    /// The TLS handshake completed, then the server closed the connection before AMQP began.
    /// Under TLS 1.3 the server checks the client certificate only after the client's side of
    /// the handshake is done; when it refuses it, its alert can be lost to the connection
    /// reset, and this is all the client sees.
    ClosedAfterTlsHandshake,
    /// The server's certificate is not trusted by the configured CA (or does not name the host).
    ServerCertificateRejected,
    /// Another TLS failure.
    Tls,
    /// TLS was fine, but the certificate's CN is not a RabbitMQ user that may log in.
    LoginRefused,
    /// The user may not use this vhost.
    VhostNotAllowed,
    /// Anything else the server or lapin reported.
    Other,
}

/// A connection that could not be established. See the module documentation.
#[derive(Debug)]
pub struct ConnectError {
    pub failure: ConnectFailure,
    /// `host:port`.
    pub endpoint: String,
    pub vhost: String,
    /// The client certificate file sent, if any.
    pub certificate: Option<PathBuf>,
    /// The CA file the server certificate was checked against.
    pub ca: PathBuf,
    /// What the server or the TLS layer said, as reported.
    pub reported: String,
    /// The underlying lapin error, when there is one.
    pub source: Option<lapin::Error>,
}

impl ConnectError {
    /// What to check, for this kind of failure.
    pub fn hint(&self) -> String {
        let cert = match &self.certificate {
            Some(p) => p.display().to_string(),
            None => "(no certificate)".to_owned(),
        };
        match self.failure {
            ConnectFailure::NothingListening => format!(
                "nothing listens on {}: is the RabbitMQ node running, and is this its AMQPS \
                 port? Plain AMQP is closed on this network; participants connect with TLS only.",
                self.endpoint
            ),
            ConnectFailure::Network => format!(
                "the connection to {} failed or was closed during the handshake: check the host \
                 and port, and that the port speaks AMQP over TLS.",
                self.endpoint
            ),
            ConnectFailure::Timeout => format!(
                "{} did not complete the handshake in time: a firewall dropping packets, a \
                 frozen node, or a port that is not AMQPS.",
                self.endpoint
            ),
            ConnectFailure::ClientCertificateRequired => "the server accepts only clients \
                 with a certificate: configure the participant's certificate and key (the \
                 certificate is the identity; there are no passwords)."
                .to_owned(),
            ConnectFailure::ClientCertificateUnknownCa => format!(
                "the server does not trust the CA that issued {cert}: use a certificate issued \
                 by this network's CA (a CA with the same name but another key is a different CA)."
            ),
            ConnectFailure::ClientCertificateExpired => format!(
                "{cert} has expired or is not valid yet: ask the network operator for a new \
                 certificate (and check this machine's clock)."
            ),
            ConnectFailure::ClientCertificateRejected => format!(
                "the server rejected {cert}: it must be a client certificate (extended key usage \
                 clientAuth) issued by this network's CA, with its matching key."
            ),
            ConnectFailure::ClosedAfterTlsHandshake => format!(
                "the server closed the connection right after the TLS handshake, before AMQP \
                 began: under TLS 1.3 that is how a refused client certificate looks when the \
                 server's alert is lost to the reset. Check that {cert} was issued by this \
                 network's CA, has not expired and is a client certificate (extended key usage \
                 clientAuth); the node's log says which."
            ),
            ConnectFailure::ServerCertificateRejected => format!(
                "the server's certificate is not trusted by {}: point the CA setting at this \
                 network's CA, and connect with a host name the server certificate names.",
                self.ca.display()
            ),
            ConnectFailure::Tls => format!(
                "TLS with {} failed: check that the port speaks TLS and that {cert} and its key \
                 belong together.",
                self.endpoint
            ),
            ConnectFailure::LoginRefused => format!(
                "TLS accepted {cert}, but no RabbitMQ user is named after its CN (the \
                 participant id): the participant is not provisioned (run `referral-broker \
                 provision`) or was removed from the registry."
            ),
            ConnectFailure::VhostNotAllowed => format!(
                "the user has no permissions in vhost {:?}: provision the participant for \
                 this vhost, or check the vhost name.",
                self.vhost
            ),
            ConnectFailure::Other => "see the server's log for details.".to_owned(),
        }
    }

    fn summary(&self) -> &'static str {
        match self.failure {
            ConnectFailure::NothingListening => "connection refused",
            ConnectFailure::Network => "network error",
            ConnectFailure::Timeout => "timed out",
            ConnectFailure::ClientCertificateRequired => "client certificate required",
            ConnectFailure::ClientCertificateUnknownCa => "client certificate from an unknown CA",
            ConnectFailure::ClientCertificateExpired => "client certificate expired",
            ConnectFailure::ClientCertificateRejected => "client certificate rejected",
            ConnectFailure::ClosedAfterTlsHandshake => "closed right after the TLS handshake",
            ConnectFailure::ServerCertificateRejected => "server certificate not trusted",
            ConnectFailure::Tls => "TLS failure",
            ConnectFailure::LoginRefused => "login refused",
            ConnectFailure::VhostNotAllowed => "vhost access refused",
            ConnectFailure::Other => "connection failed",
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connecting to amqps://{} (vhost {:?}) with ",
            self.summary(),
            self.endpoint,
            self.vhost
        )?;
        match &self.certificate {
            Some(p) => write!(f, "client certificate {}", p.display())?,
            None => f.write_str("no client certificate")?,
        }
        write!(f, ": {}; hint: {}", self.reported, self.hint())
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// An error of the transport.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot read the {what} {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the {what} {} is unusable: {problem}", path.display())]
    BadPem {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("invalid transport configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Connect(Box<ConnectError>),
    /// An AMQP operation failed; `op` says which (e.g. "consuming queue \"inbox.x\"").
    #[error("{op}: {source}")]
    Amqp { op: String, source: lapin::Error },
    #[error(
        "not connected to amqps://{endpoint} after waiting {waited:?}; reconnecting, last \
         error: {last_error}"
    )]
    NotConnected {
        endpoint: String,
        waited: Duration,
        last_error: String,
    },
    /// An AMQP operation got no answer in time (e.g. sent on a connection that died in the
    /// meantime); trying again on the next connection may well work.
    #[error("{op}: no answer from the server within {after:?}")]
    Timeout { op: String, after: Duration },
    /// An ack, nack or reject that lapin did not send: the delivery's channel is closed (or it
    /// was settled already). RabbitMQ will deliver the message again.
    #[error("{op}: not sent, its channel is closed")]
    ChannelClosed { op: String },
    #[error("the transport was closed")]
    Closed,
}

impl TransportError {
    /// The connection failure, if this is one.
    pub fn connect_failure(&self) -> Option<ConnectFailure> {
        match self {
            Self::Connect(e) => Some(e.failure),
            _ => None,
        }
    }

    /// The server's reply code and text, when the server refused an AMQP operation
    /// (e.g. `(403, "ACCESS_REFUSED - access to queue 'inbox.x' in vhost 'v' refused …")`).
    pub fn server_reply(&self) -> Option<(u16, String)> {
        match self {
            Self::Amqp { source, .. } => amqp_reply(source),
            Self::Connect(e) => e.source.as_ref().and_then(amqp_reply),
            _ => None,
        }
    }

    /// True if the server refused the operation itself (permissions, a missing or
    /// inequivalent object): trying again on a new connection would fail the same way.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Amqp { source, .. } => is_soft(source),
            Self::Connect(e) => matches!(
                e.failure,
                ConnectFailure::LoginRefused | ConnectFailure::VhostNotAllowed
            ),
            _ => false,
        }
    }
}

/// A publish that did not end in a confirmed, routed message.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error(
        "the message to exchange {exchange:?} with routing key {routing_key:?} was returned \
         unroutable ({code} {text}): no queue is bound for that key"
    )]
    Returned {
        exchange: String,
        routing_key: String,
        code: u16,
        text: String,
    },
    #[error(
        "the message to exchange {exchange:?} with routing key {routing_key:?} was nacked by \
         the server (a full queue, or an internal error): republish it later"
    )]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error(
        "the server refused the message to exchange {exchange:?} with routing key \
         {routing_key:?}: {code} {text}"
    )]
    Refused {
        exchange: String,
        routing_key: String,
        code: u16,
        text: String,
    },
    #[error(
        "the connection was lost before the message to exchange {exchange:?} with routing key \
         {routing_key:?} was confirmed: republish it ({source})"
    )]
    ConnectionLost {
        exchange: String,
        routing_key: String,
        source: lapin::Error,
    },
    #[error(
        "no confirm for the message to exchange {exchange:?} with routing key {routing_key:?} \
         after {after:?}{}: republish it",
        if *blocked { " (the server has blocked this connection: memory or disk alarm)" } else { "" }
    )]
    Timeout {
        exchange: String,
        routing_key: String,
        after: Duration,
        blocked: bool,
    },
    #[error("cannot publish: {0}")]
    NotConnected(#[source] TransportError),
    #[error("cannot publish: the transport was closed")]
    Closed,
}

impl PublishError {
    /// True if the message may well be accepted if published again later (after a
    /// reconnection, or once the queue has room): the outcome of this attempt is "not
    /// delivered" or unknown, never "refused for good". Receivers deduplicate by message id.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            Self::Nacked { .. }
                | Self::ConnectionLost { .. }
                | Self::Timeout { .. }
                | Self::NotConnected(_)
        )
    }
}

/// Reply code and text of an AMQP error from the server.
pub(crate) fn amqp_reply(err: &lapin::Error) -> Option<(u16, String)> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.get_message().to_string())),
        _ => None,
    }
}

/// True for a channel-level (soft) error from the server.
pub(crate) fn is_soft(err: &lapin::Error) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(e) if matches!(e.kind(), AMQPErrorKind::Soft(_)))
}

/// The rustls error somewhere in the chain of `err`, if any.
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // io::Error's own `source` skips the error it wraps: look inside it explicitly.
        cur = match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Classifies a TLS-layer error.
pub(crate) fn classify_tls(err: &rustls::Error) -> ConnectFailure {
    use rustls::AlertDescription as A;
    match err {
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            ConnectFailure::ClientCertificateRequired
        }
        rustls::Error::AlertReceived(A::UnknownCA) => ConnectFailure::ClientCertificateUnknownCa,
        rustls::Error::AlertReceived(A::CertificateExpired) => {
            ConnectFailure::ClientCertificateExpired
        }
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::AccessDenied
            | A::HandshakeFailure,
        ) => ConnectFailure::ClientCertificateRejected,
        rustls::Error::InvalidCertificate(_) => ConnectFailure::ServerCertificateRejected,
        _ => ConnectFailure::Tls,
    }
}

/// Classifies an I/O error from connecting (TCP or TLS).
pub(crate) fn classify_io(err: &io::Error) -> ConnectFailure {
    if let Some(tls) = find_rustls(err) {
        return classify_tls(tls);
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => ConnectFailure::NothingListening,
        io::ErrorKind::TimedOut => ConnectFailure::Timeout,
        _ => ConnectFailure::Network,
    }
}

/// Classifies what lapin reported for a failed connection.
pub(crate) fn classify(err: &lapin::Error) -> ConnectFailure {
    match err.kind() {
        lapin::ErrorKind::IOError(io) => classify_io(io),
        lapin::ErrorKind::ProtocolError(e) => match e.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => ConnectFailure::LoginRefused,
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => ConnectFailure::VhostNotAllowed,
            _ => ConnectFailure::Other,
        },
        _ => match find_rustls(err) {
            Some(tls) => classify_tls(tls),
            None => ConnectFailure::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_tls(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn tls_alerts_are_classified() {
        use rustls::AlertDescription as A;
        let cases = [
            (
                A::CertificateRequired,
                ConnectFailure::ClientCertificateRequired,
            ),
            (A::UnknownCA, ConnectFailure::ClientCertificateUnknownCa),
            (
                A::CertificateExpired,
                ConnectFailure::ClientCertificateExpired,
            ),
            (A::BadCertificate, ConnectFailure::ClientCertificateRejected),
        ];
        for (alert, want) in cases {
            let err: lapin::Error = io_tls(rustls::Error::AlertReceived(alert)).into();
            assert_eq!(classify(&err), want, "{alert:?}");
        }
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(
            classify(&io_tls(untrusted).into()),
            ConnectFailure::ServerCertificateRejected
        );
        // Wrapped once more, as an I/O error of an I/O error.
        let nested = io::Error::other(io_tls(rustls::Error::AlertReceived(A::UnknownCA)));
        assert_eq!(
            classify_io(&nested),
            ConnectFailure::ClientCertificateUnknownCa
        );
    }

    #[test]
    fn tcp_errors_are_classified() {
        let refused: lapin::Error = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        assert_eq!(classify(&refused), ConnectFailure::NothingListening);
        let reset: lapin::Error = io::Error::from(io::ErrorKind::ConnectionReset).into();
        assert_eq!(classify(&reset), ConnectFailure::Network);
    }

    #[test]
    fn display_names_file_endpoint_and_hint() {
        let e = ConnectError {
            failure: ConnectFailure::ClientCertificateExpired,
            endpoint: "localhost:5671".into(),
            vhost: "v".into(),
            certificate: Some(PathBuf::from("/tmp/x.test/cert.pem")),
            ca: PathBuf::from("/tmp/ca.pem"),
            reported: "received fatal alert: CertificateExpired".into(),
            source: None,
        };
        let s = e.to_string();
        for part in [
            "expired",
            "localhost:5671",
            "/tmp/x.test/cert.pem",
            "CertificateExpired",
            "hint:",
        ] {
            assert!(s.contains(part), "{part} missing from {s}");
        }
    }

    #[test]
    fn recoverable_publish_errors() {
        let lost = PublishError::ConnectionLost {
            exchange: "ingress".into(),
            routing_key: "ingress".into(),
            source: io::Error::from(io::ErrorKind::ConnectionReset).into(),
        };
        assert!(lost.is_recoverable());
        let returned = PublishError::Returned {
            exchange: "deliver".into(),
            routing_key: "xx.none".into(),
            code: 312,
            text: "NO_ROUTE".into(),
        };
        assert!(!returned.is_recoverable());
    }
}
