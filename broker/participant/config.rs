//! `participant.toml`: everything a participant needs to talk to the network — who it is, where
//! the broker is, its TLS certificate and key, its signing key, the registry it verifies others
//! with, and a data directory of its own.
//!
//! ```toml
//! participant = "fr.hotline-example"     # = certificate CN = RabbitMQ user = envelope origin
//! registry = "registry.toml"             # verifies the origin of what arrives, and the broker
//! data_dir = "state"                     # ids already handed over, copies of refused messages
//!
//! [broker]
//! host = "localhost"                     # a name the server certificate carries
//! port = 5671                            # AMQPS
//! vhost = "referrals"
//! ca = "pki/ca.pem"                      # the network's CA: the only trusted root
//! certificate = "pki/fr.hotline-example.pem"
//! key = "pki/fr.hotline-example.key"     # the TLS private key (PEM)
//! # heartbeat_secs = 10, confirm_timeout_secs = 30, connect_timeout_secs = 15, prefetch = 64
//!
//! [signing]
//! key = "keys/fr.hotline-example.key"    # ed25519 seed, base64, mode 0600 (`keys generate`)
//! ```
//!
//! Guarantees: parsing is pure ([`ParticipantConfig::from_toml`] takes the text and the
//! directory relative paths are resolved against — the config file's own directory); every
//! field is known (a typo is an error, not a silent default), required fields are present, and
//! every error names the file and the field. Whether the files exist and hold what they should is
//! checked by [`Participant::connect`](super::Participant::connect), which reads them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::ids::ParticipantId;
use crate::transport::TransportConfig;

/// Default prefetch of the inbox consumer: small, since every message is handed over one by one.
pub const DEFAULT_INBOX_PREFETCH: u16 = 64;

/// A `participant.toml` that could not be read or is wrong. `field` is a dotted path
/// (`broker.port`), empty for the file as a whole.
#[derive(Debug, Error)]
#[error("{file}: {}{problem}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub problem: String,
}

/// The loaded configuration, every path absolute (or as given, if it was absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantConfig {
    pub participant: ParticipantId,
    pub registry: PathBuf,
    pub data_dir: PathBuf,
    pub broker: BrokerConfig,
    /// The ed25519 private key file ([`crate::signing`] format).
    pub signing_key: PathBuf,
}

/// Where the broker is and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub vhost: String,
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub heartbeat: Duration,
    pub confirm_timeout: Duration,
    pub connect_timeout: Duration,
    pub prefetch: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    participant: String,
    registry: PathBuf,
    data_dir: PathBuf,
    broker: RawBroker,
    signing: RawSigning,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    #[serde(default = "default_host")]
    host: String,
    port: u16,
    vhost: String,
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
    heartbeat_secs: Option<u64>,
    confirm_timeout_secs: Option<u64>,
    connect_timeout_secs: Option<u64>,
    prefetch: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    key: PathBuf,
}

fn default_host() -> String {
    "localhost".to_owned()
}

impl ParticipantConfig {
    /// Reads and checks a `participant.toml`; relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: String::new(),
            problem: format!("cannot read it: {e}"),
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Self::from_toml(&text, &base, &file)
    }

    /// Parses the text of a `participant.toml`; `base` resolves relative paths, `source` names
    /// the file in errors.
    pub fn from_toml(text: &str, base: &Path, source: &str) -> Result<Self, ConfigError> {
        let err = |field: &str, problem: String| ConfigError {
            file: source.to_owned(),
            field: field.to_owned(),
            problem,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            err(
                "",
                match line {
                    Some(l) => format!("line {l}: {}", e.message()),
                    None => e.message().to_owned(),
                },
            )
        })?;
        let participant: ParticipantId = raw
            .participant
            .parse()
            .map_err(|e| err("participant", format!("{e}")))?;
        let b = raw.broker;
        if b.host.is_empty() {
            return Err(err("broker.host", "is empty".into()));
        }
        if b.port == 0 {
            return Err(err("broker.port", "is 0".into()));
        }
        let secs = |field: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(err(field, "must be at least 1".into())),
            Some(s) if s > 3600 => Err(err(field, format!("{s} s is more than an hour"))),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(Duration::from_secs(default)),
        };
        let prefetch = b.prefetch.unwrap_or(DEFAULT_INBOX_PREFETCH);
        if prefetch == 0 || prefetch > crate::transport::config::MAX_PREFETCH {
            return Err(err(
                "broker.prefetch",
                format!(
                    "{prefetch} is outside 1..={}",
                    crate::transport::config::MAX_PREFETCH
                ),
            ));
        }
        let path = |field: &str, p: PathBuf| {
            if p.as_os_str().is_empty() {
                Err(err(field, "is empty".into()))
            } else {
                Ok(base.join(p))
            }
        };
        Ok(Self {
            participant,
            registry: path("registry", raw.registry)?,
            data_dir: path("data_dir", raw.data_dir)?,
            signing_key: path("signing.key", raw.signing.key)?,
            broker: BrokerConfig {
                heartbeat: secs("broker.heartbeat_secs", b.heartbeat_secs, 10)?,
                confirm_timeout: secs("broker.confirm_timeout_secs", b.confirm_timeout_secs, 30)?,
                connect_timeout: secs("broker.connect_timeout_secs", b.connect_timeout_secs, 15)?,
                prefetch,
                ca: path("broker.ca", b.ca)?,
                certificate: path("broker.certificate", b.certificate)?,
                key: path("broker.key", b.key)?,
                host: b.host,
                port: b.port,
                vhost: b.vhost,
            },
        })
    }

    /// The transport configuration this participant connects with.
    pub fn transport(&self) -> TransportConfig {
        let b = &self.broker;
        let mut t = TransportConfig::new(b.port, &b.vhost, &b.ca, &b.certificate, &b.key);
        t.host = b.host.clone();
        t.heartbeat = b.heartbeat;
        t.confirm_timeout = b.confirm_timeout;
        t.connect_timeout = b.connect_timeout;
        t.prefetch = b.prefetch;
        t.connection_name = format!("referral-broker participant {}", self.participant);
        t
    }

    /// The text of a `participant.toml` for these values (paths written as they are). For tests,
    /// demos and `--help` examples; [`ParticipantConfig::from_toml`] reads it back.
    pub fn to_toml(&self) -> String {
        let b = &self.broker;
        let q = |p: &Path| toml_string(&p.display().to_string());
        format!(
            "participant = {}\nregistry = {}\ndata_dir = {}\n\n[broker]\nhost = {}\nport = {}\n\
             vhost = {}\nca = {}\ncertificate = {}\nkey = {}\nheartbeat_secs = {}\n\
             confirm_timeout_secs = {}\nconnect_timeout_secs = {}\nprefetch = {}\n\n\
             [signing]\nkey = {}\n",
            toml_string(self.participant.as_str()),
            q(&self.registry),
            q(&self.data_dir),
            toml_string(&b.host),
            b.port,
            toml_string(&b.vhost),
            q(&b.ca),
            q(&b.certificate),
            q(&b.key),
            b.heartbeat.as_secs(),
            b.confirm_timeout.as_secs(),
            b.connect_timeout.as_secs(),
            b.prefetch,
            q(&self.signing_key),
        )
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
participant = "fr.hotline-example"
registry = "registry.toml"
data_dir = "state"

[broker]
port = 5671
vhost = "referrals"
ca = "pki/ca.pem"
certificate = "pki/fr.pem"
key = "/abs/fr.key"

[signing]
key = "keys/fr.key"
"#;

    fn parse(text: &str) -> Result<ParticipantConfig, ConfigError> {
        ParticipantConfig::from_toml(text, Path::new("/etc/rb"), "participant.toml")
    }

    #[test]
    fn example_parses_with_defaults_and_resolved_paths() {
        let c = parse(EXAMPLE).expect("valid");
        assert_eq!(c.participant.as_str(), "fr.hotline-example");
        assert_eq!(c.registry, Path::new("/etc/rb/registry.toml"));
        assert_eq!(c.data_dir, Path::new("/etc/rb/state"));
        assert_eq!(c.signing_key, Path::new("/etc/rb/keys/fr.key"));
        assert_eq!(c.broker.host, "localhost");
        assert_eq!(c.broker.key, Path::new("/abs/fr.key"));
        assert_eq!(c.broker.prefetch, DEFAULT_INBOX_PREFETCH);
        assert_eq!(c.broker.heartbeat, Duration::from_secs(10));
        let t = c.transport();
        t.validate().expect("transport config valid");
        assert_eq!(t.vhost, "referrals");
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../ops/examples/python/participant.toml");
        let c = parse(text).expect("ops/examples/python/participant.toml is valid");
        assert_eq!(c.participant.as_str(), "fr.hotline-example");
        assert_eq!(c.broker.port, 5671);
    }

    #[test]
    fn round_trips_through_to_toml() {
        let c = parse(EXAMPLE).expect("valid");
        let again = parse(&c.to_toml()).expect("to_toml output parses");
        assert_eq!(c, again);
    }

    #[test]
    fn errors_name_the_field() {
        let typo = EXAMPLE.replace("vhost =", "vhots =");
        let e = parse(&typo).expect_err("unknown field");
        assert!(e.to_string().contains("vhots"), "{e}");
        assert!(e.to_string().starts_with("participant.toml: "), "{e}");

        let bad_id = EXAMPLE.replace("fr.hotline-example", "FR");
        let e = parse(&bad_id).expect_err("bad id");
        assert_eq!(e.field, "participant");

        let zero = EXAMPLE.replace("port = 5671", "port = 5671\nprefetch = 0");
        assert_eq!(
            parse(&zero).expect_err("prefetch 0").field,
            "broker.prefetch"
        );

        let no_signing = EXAMPLE.replace("[signing]\nkey = \"keys/fr.key\"\n", "");
        let e = parse(&no_signing).expect_err("missing section");
        assert!(e.to_string().contains("signing"), "{e}");

        let hb = EXAMPLE.replace("port = 5671", "port = 5671\nheartbeat_secs = 0");
        assert_eq!(parse(&hb).expect_err("0 s").field, "broker.heartbeat_secs");
    }
}
