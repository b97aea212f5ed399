//! Where and how to connect: endpoint, vhost, the three PEM files, heartbeat, prefetch,
//! timeouts, and the reconnection backoff.
//!
//! Guarantees: [`TransportConfig::validate`] rejects values that would make the transport
//! misbehave (a prefetch of 0, i.e. unbounded, or above [`MAX_PREFETCH`]; a zero timeout) before
//! anything connects. [`Backoff::delay`] is pure: exponential growth, capped, with jitter so
//! that many clients cut off at once do not all come back in the same instant.

use std::path::PathBuf;
use std::time::Duration;

use lapin::uri::{
    AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo, SASLMechanism,
};

use super::error::TransportError;

/// Default prefetch of a consuming channel (unacknowledged deliveries in flight).
pub const DEFAULT_PREFETCH: u16 = 256;
/// Largest prefetch accepted: a bound on the memory a consumer may hold.
pub const MAX_PREFETCH: u16 = 10_000;

/// The client certificate (CN = participant id) and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// Exponential backoff with jitter between reconnection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first attempt (before jitter).
    pub initial: Duration,
    /// Longest delay between two attempts (before jitter).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before attempt number `attempt` (0-based): `min(max, initial · 2^attempt)`,
    /// then a uniformly random point in its upper half ("equal jitter": never less than half,
    /// so a crowd spreads out without anyone hammering the server).
    pub fn delay(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let base = self.initial.saturating_mul(factor).min(self.max);
        let half = base / 2;
        let extra_ns = rng.random_range(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_nanos(extra_ns)
    }
}

/// Everything needed to connect. Build with [`TransportConfig::new`], then adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Server host name; must be a name the server certificate carries. Default `localhost`.
    pub host: String,
    /// The AMQPS port.
    pub port: u16,
    pub vhost: String,
    /// The network's CA: the only trusted root.
    pub ca_pem: PathBuf,
    /// The client certificate and key. `None` only to diagnose a server (it will refuse).
    pub identity: Option<ClientIdentity>,
    /// AMQP heartbeat; a dead peer is noticed after about two of these. Default 10 s.
    pub heartbeat: Duration,
    /// Prefetch of every consuming channel. Default [`DEFAULT_PREFETCH`].
    pub prefetch: u16,
    /// How long a publish may wait for its confirm (including waiting for a reconnection).
    /// Default 30 s.
    pub confirm_timeout: Duration,
    /// How long one connection attempt (TCP, TLS, AMQP handshake) may take. Default 15 s.
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    /// Shown by `rabbitmqctl list_connections client_properties` and the management UI.
    pub connection_name: String,
}

impl TransportConfig {
    /// A configuration with the defaults for everything else.
    pub fn new(
        port: u16,
        vhost: impl Into<String>,
        ca_pem: impl Into<PathBuf>,
        cert_pem: impl Into<PathBuf>,
        key_pem: impl Into<PathBuf>,
    ) -> Self {
        Self {
            host: "localhost".to_owned(),
            port,
            vhost: vhost.into(),
            ca_pem: ca_pem.into(),
            identity: Some(ClientIdentity {
                cert_pem: cert_pem.into(),
                key_pem: key_pem.into(),
            }),
            heartbeat: Duration::from_secs(10),
            prefetch: DEFAULT_PREFETCH,
            confirm_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            backoff: Backoff::default(),
            connection_name: "referral-broker".to_owned(),
        }
    }

    /// `host:port`.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Checks the values that do not need the file system.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |m: String| Err(TransportError::Config(m));
        if self.host.is_empty() {
            return bad("the host is empty".into());
        }
        if self.port == 0 {
            return bad("the port is 0".into());
        }
        if self.prefetch == 0 || self.prefetch > MAX_PREFETCH {
            return bad(format!(
                "prefetch {} is outside 1..={MAX_PREFETCH} (0 would mean unbounded)",
                self.prefetch
            ));
        }
        if self.heartbeat.as_secs() > u64::from(u16::MAX) {
            return bad(format!("heartbeat {:?} is too long", self.heartbeat));
        }
        for (name, t) in [
            ("confirm timeout", self.confirm_timeout),
            ("connect timeout", self.connect_timeout),
            ("initial backoff", self.backoff.initial),
        ] {
            if t.is_zero() {
                return bad(format!("the {name} is zero"));
            }
        }
        if self.backoff.max < self.backoff.initial {
            return bad("the maximum backoff is shorter than the initial one".into());
        }
        Ok(())
    }

    /// The AMQP URI: `amqps://host:port/vhost?heartbeat=…&auth_mechanism=external`.
    pub fn uri(&self) -> AMQPUri {
        AMQPUri {
            scheme: AMQPScheme::AMQPS,
            authority: AMQPAuthority {
                // Ignored under EXTERNAL: the user is the certificate's CN.
                userinfo: AMQPUserInfo::default(),
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(u16::try_from(self.heartbeat.as_secs()).unwrap_or(u16::MAX)),
                auth_mechanism: Some(SASLMechanism::External),
                ..AMQPQueryString::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        TransportConfig::new(5671, "v", "/ca.pem", "/c.pem", "/k.pem")
    }

    #[test]
    fn defaults_validate() {
        config().validate().expect("defaults are valid");
        let mut c = config();
        c.prefetch = 0;
        assert!(c.validate().is_err());
        c.prefetch = MAX_PREFETCH + 1;
        assert!(c.validate().is_err());
    }

    #[test]
    fn uri_uses_external_and_tls() {
        let mut c = config();
        c.vhost = "test/one".into();
        let uri = c.uri();
        assert_eq!(uri.scheme, AMQPScheme::AMQPS);
        assert_eq!(uri.query.auth_mechanism, Some(SASLMechanism::External));
        assert_eq!(uri.query.heartbeat, Some(10));
        assert_eq!(uri.vhost, "test/one");
        assert!(
            uri.to_string()
                .to_lowercase()
                .contains("auth_mechanism=external"),
            "{uri}"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let mut rng = rand::rng();
        for attempt in 0..64 {
            let base = (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(20)))
                .min(Duration::from_secs(5));
            for _ in 0..20 {
                let d = b.delay(attempt, &mut rng);
                assert!(
                    d >= base / 2 && d <= base,
                    "attempt {attempt}: {d:?} vs {base:?}"
                );
            }
        }
        // Jitter: not always the same value.
        let samples: std::collections::BTreeSet<_> =
            (0..50).map(|_| b.delay(3, &mut rng)).collect();
        assert!(samples.len() > 1);
    }
}
