//! `broker.toml`: the daemon's configuration, read in two stages (as ripgrep does): the file
//! as written ([`ConfigFile`], plain values), then [`ServeConfig::load`], which checks every
//! value and builds the objects the daemon runs with (registry, routing table, signing key,
//! transport settings, store settings, policies).
//!
//! ```toml
//! registry = "registry.toml"          # the participant registry (paths: relative to this file)
//! signing_key = "keys/net.refbroker.key"   # the broker's ed25519 key (a key of the registry's broker entry)
//! data_dir = "data"                   # the store: audit log, indexes, bodies
//!
//! [amqp]
//! host = "localhost"                  # a name the server certificate carries
//! port = 5671
//! vhost = "referrals"
//! ca = "pki/ca.pem"                   # the network's CA: the only trusted root
//! cert = "pki/net.refbroker.pem"      # the broker's client certificate (CN = broker id)
//! key = "pki/net.refbroker.key"
//! heartbeat_secs = 10                 # optional, defaults shown
//! prefetch = 512
//! confirm_timeout_secs = 30
//! connect_timeout_secs = 15
//!
//! [ingress]                           # optional
//! max_clock_skew_secs = 300          # how far created_at may be ahead of our clock
//! max_age_secs = 604800              # how far behind (a backlog after an outage is fine)
//! max_body_bytes = 262144
//!
//! [pipeline]                          # optional
//! window = 128                        # messages processed at once
//! shutdown_grace_secs = 30            # how long a shutdown waits for them
//!
//! [flood]                             # optional: per participant
//! rate_per_sec = 100.0                # sustained messages per second
//! burst = 200                         # bucket size
//! max_in_flight = 32                  # of its messages processed at once
//! max_held = 64                       # of its messages held in memory while over the rate
//! notice_every_secs = 60              # at most one rate_limited notice per this period
//!
//! [store]                             # optional: crate::store::StoreConfig, e.g.
//! commit_wait_us = 0                  # group commit: no wait for more appends after the first
//! flush_index_each_batch = false      # the log and the bodies are fsynced before every answer;
//!                                     # the index (derived from the log) every 500 ms and on close
//! [routing]                           # optional: crate::route::RoutingConfig
//! [admin]                             # optional: crate::admin::AdminSection (operators' HTTP)
//! ```
//!
//! Guarantees: [`ServeConfig::load`] touches no network and writes nothing; it reads the
//! config, the registry, the signing key and checks that the PEM files are readable. Every
//! error names the file and the field. Unknown fields are refused everywhere (a typo is an
//! error, not a silently ignored setting).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::ingress::Policy;
use crate::registry::{KeyState, Registry};
use crate::route::{RoutingConfig, RoutingTable};
use crate::signing::Signer;
use crate::store::StoreConfig;
use crate::transport::TransportConfig;
use crate::transport::config::MAX_PREFETCH;
use crate::wire;

/// Why `broker.toml` cannot be used. The daemon exits with code 78 (EX_CONFIG) on any.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a valid configuration: {message}")]
    Syntax { file: String, message: String },
    /// `field` is the TOML path, e.g. `flood.burst`.
    #[error("{file}: {field}: {problem}")]
    Invalid {
        file: String,
        field: String,
        problem: String,
    },
}

/// `[amqp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSection {
    #[serde(default = "default_host")]
    pub host: String,
    pub port: u16,
    pub vhost: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout_secs: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

/// `[ingress]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressSection {
    pub max_clock_skew_secs: u64,
    pub max_age_secs: u64,
    pub max_body_bytes: usize,
}

impl Default for IngressSection {
    fn default() -> Self {
        Self {
            max_clock_skew_secs: 300,
            max_age_secs: 7 * 24 * 3600,
            max_body_bytes: wire::limits::MAX_BODY_BYTES,
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSection {
    pub window: usize,
    pub shutdown_grace_secs: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            window: 128,
            shutdown_grace_secs: 30,
        }
    }
}

/// `[flood]`: per-participant limits (see [`super::flood`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FloodSection {
    pub rate_per_sec: f64,
    pub burst: u32,
    pub max_in_flight: usize,
    pub max_held: usize,
    pub notice_every_secs: u64,
}

impl Default for FloodSection {
    fn default() -> Self {
        Self {
            rate_per_sec: 100.0,
            burst: 200,
            max_in_flight: 32,
            max_held: 64,
            notice_every_secs: 60,
        }
    }
}

/// `broker.toml` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub registry: PathBuf,
    pub signing_key: PathBuf,
    pub data_dir: PathBuf,
    pub amqp: AmqpSection,
    #[serde(default)]
    pub ingress: IngressSection,
    #[serde(default)]
    pub pipeline: PipelineSection,
    #[serde(default)]
    pub flood: FloodSection,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub admin: crate::admin::AdminSection,
}

fn default_host() -> String {
    "localhost".to_owned()
}
fn default_heartbeat() -> u64 {
    10
}
fn default_prefetch() -> u16 {
    512
}
fn default_confirm_timeout() -> u64 {
    30
}
fn default_connect_timeout() -> u64 {
    15
}

/// Flood-control limits, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodLimits {
    /// Tokens per second, > 0.
    pub rate_per_sec: f64,
    /// Bucket size, ≥ 1.
    pub burst: u32,
    /// Messages of one participant processed at once, 1..=window.
    pub max_in_flight: usize,
    /// Messages of one participant held in memory (unacknowledged) while it is over its rate.
    pub max_held: usize,
    /// Messages held in memory for all participants together (prefetch − window): held
    /// messages occupy prefetch slots, and this leaves the window's worth for everyone else.
    pub max_held_total: usize,
    /// Least time between two `rate_limited` notices to one participant.
    pub notice_every: Duration,
}

/// Everything the daemon runs with, checked and built.
#[derive(Debug)]
pub struct ServeConfig {
    /// The file it was read from.
    pub source: PathBuf,
    pub registry: Registry,
    pub routing: RoutingTable,
    pub signer: Signer,
    pub transport: TransportConfig,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub policy: Policy,
    pub window: usize,
    pub shutdown_grace: Duration,
    pub flood: FloodLimits,
    pub admin: crate::admin::AdminConfig,
}

impl ServeConfig {
    /// Reads `path` and everything it names, and checks it all; see the module documentation.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let parsed: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            file: file.clone(),
            message: e.to_string().trim().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        ServeConfig::build(parsed, base, path)
    }

    /// Checks a parsed file; relative paths are taken from `base`. `source` names it in errors.
    pub fn build(
        parsed: ConfigFile,
        base: &Path,
        source: &Path,
    ) -> Result<ServeConfig, ConfigError> {
        let file = source.display().to_string();
        let invalid = |field: &str, problem: String| ConfigError::Invalid {
            file: file.clone(),
            field: field.to_owned(),
            problem,
        };
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };

        // Registry, signing key, routing.
        let registry_path = resolve(&parsed.registry);
        let registry =
            Registry::load(&registry_path).map_err(|e| invalid("registry", e.to_string()))?;
        let key_path = resolve(&parsed.signing_key);
        let signer = Signer::load(&key_path).map_err(|e| invalid("signing_key", e.to_string()))?;
        let broker = registry.broker();
        match broker.key(signer.key_id()) {
            None => {
                return Err(invalid(
                    "signing_key",
                    format!(
                        "{}: key {} is not a key of the broker entry {} in the registry",
                        key_path.display(),
                        signer.key_id(),
                        broker.id
                    ),
                ));
            }
            Some(k) => {
                let state = k.state_at(chrono::Utc::now());
                if state != KeyState::Valid {
                    return Err(invalid(
                        "signing_key",
                        format!(
                            "{}: key {} is {state:?} now according to the registry",
                            key_path.display(),
                            signer.key_id()
                        ),
                    ));
                }
            }
        }
        let routing = RoutingTable::resolve(&parsed.routing, &registry)
            .map_err(|e| invalid("routing", e.to_string()))?;

        // AMQP.
        let a = &parsed.amqp;
        let mut transport = TransportConfig::new(
            a.port,
            a.vhost.clone(),
            resolve(&a.ca),
            resolve(&a.cert),
            resolve(&a.key),
        );
        transport.host = a.host.clone();
        transport.heartbeat = Duration::from_secs(a.heartbeat_secs);
        transport.prefetch = a.prefetch;
        transport.confirm_timeout = Duration::from_secs(a.confirm_timeout_secs);
        transport.connect_timeout = Duration::from_secs(a.connect_timeout_secs);
        transport.connection_name = format!("referral-broker serve ({})", broker.id);
        if a.vhost.is_empty() {
            return Err(invalid("amqp.vhost", "must not be empty".into()));
        }
        transport
            .validate()
            .map_err(|e| invalid("amqp", e.to_string()))?;
        for (field, p) in [
            ("amqp.ca", &a.ca),
            ("amqp.cert", &a.cert),
            ("amqp.key", &a.key),
        ] {
            let p = resolve(p);
            if let Err(e) = std::fs::File::open(&p) {
                return Err(invalid(field, format!("{}: {e}", p.display())));
            }
        }

        // Ingress policy.
        let i = &parsed.ingress;
        if i.max_body_bytes == 0 || i.max_body_bytes > wire::limits::MAX_BODY_BYTES {
            return Err(invalid(
                "ingress.max_body_bytes",
                format!(
                    "{} is outside 1..={} (the contract's limit)",
                    i.max_body_bytes,
                    wire::limits::MAX_BODY_BYTES
                ),
            ));
        }
        if i.max_clock_skew_secs == 0 || i.max_clock_skew_secs > 7 * 24 * 3600 {
            return Err(invalid(
                "ingress.max_clock_skew_secs",
                format!("{} is outside 1..=604800", i.max_clock_skew_secs),
            ));
        }
        if i.max_age_secs < i.max_clock_skew_secs || i.max_age_secs > 90 * 24 * 3600 {
            return Err(invalid(
                "ingress.max_age_secs",
                format!(
                    "{} is outside {}..=7776000 (at least max_clock_skew_secs, at most 90 days)",
                    i.max_age_secs, i.max_clock_skew_secs
                ),
            ));
        }
        let policy = Policy {
            max_body_bytes: i.max_body_bytes,
            max_clock_skew: chrono::Duration::seconds(i.max_clock_skew_secs as i64),
            max_age: chrono::Duration::seconds(i.max_age_secs as i64),
        };

        // Window, flood control.
        let p = &parsed.pipeline;
        let prefetch = usize::from(a.prefetch);
        if p.window == 0 || p.window >= prefetch {
            return Err(invalid(
                "pipeline.window",
                format!(
                    "{} must be at least 1 and below amqp.prefetch ({prefetch}): the prefetch \
                     beyond the window is where messages of participants over their rate wait",
                    p.window
                ),
            ));
        }
        let f = &parsed.flood;
        if !(f.rate_per_sec.is_finite() && f.rate_per_sec > 0.0 && f.rate_per_sec <= 1e6) {
            return Err(invalid(
                "flood.rate_per_sec",
                format!("{} is not a rate in (0, 1000000]", f.rate_per_sec),
            ));
        }
        if f.burst == 0 {
            return Err(invalid("flood.burst", "must be at least 1".into()));
        }
        if f.max_in_flight == 0 || f.max_in_flight > p.window {
            return Err(invalid(
                "flood.max_in_flight",
                format!(
                    "{} is outside 1..=pipeline.window ({})",
                    f.max_in_flight, p.window
                ),
            ));
        }
        if f.max_held > usize::from(MAX_PREFETCH) {
            return Err(invalid(
                "flood.max_held",
                format!("{} is more than {MAX_PREFETCH}", f.max_held),
            ));
        }
        if parsed.store.commit_max_entries == 0 {
            return Err(invalid(
                "store.commit_max_entries",
                "must be at least 1".into(),
            ));
        }

        Ok(ServeConfig {
            source: source.to_owned(),
            registry,
            routing,
            signer,
            transport,
            data_dir: resolve(&parsed.data_dir),
            store: parsed.store,
            policy,
            window: p.window,
            shutdown_grace: Duration::from_secs(p.shutdown_grace_secs),
            flood: FloodLimits {
                rate_per_sec: f.rate_per_sec,
                burst: f.burst,
                max_in_flight: f.max_in_flight,
                max_held: f.max_held,
                max_held_total: prefetch - p.window,
                notice_every: Duration::from_secs(f.notice_every_secs),
            },
            admin: parsed
                .admin
                .check(base)
                .map_err(|e| invalid(&e.field, e.problem))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with a registry, the broker's key and empty PEM files.
    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = Signer::generate().expect("key");
        let broker = "net.broker".parse().expect("id");
        signer
            .write_key_files(dir.path(), &broker)
            .expect("write key");
        let registry = format!(
            "broker = \"net.broker\"\n\
             [[participant]]\nid = \"net.broker\"\nname = \"Broker\"\nrole = \"operator\"\n\
             [[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2020-01-01T00:00:00Z\"\n\
             [[participant]]\nid = \"fr.hotline\"\nname = \"FR\"\nrole = \"hotline\"\ncountry = \"FR\"\n",
            signer.public_key_b64()
        );
        std::fs::write(dir.path().join("registry.toml"), registry).expect("write");
        for f in ["ca.pem", "broker.pem", "broker.key"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let config = dir.path().join("broker.toml");
        (dir, config)
    }

    const MINIMAL: &str = "registry = \"registry.toml\"\nsigning_key = \"net.broker.key\"\ndata_dir = \"data\"\n\
        [amqp]\nport = 5671\nvhost = \"v\"\nca = \"ca.pem\"\ncert = \"broker.pem\"\nkey = \"broker.key\"\n";

    fn load(extra: &str) -> Result<ServeConfig, ConfigError> {
        let (dir, config) = fixture();
        std::fs::write(&config, format!("{MINIMAL}{extra}")).expect("write");
        let out = ServeConfig::load(&config);
        drop(dir);
        out
    }

    fn field_of(r: Result<ServeConfig, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { field, .. }) => field,
            Err(e) => format!("other: {e}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = load("").expect("loads");
        assert_eq!(c.window, 128);
        assert_eq!(c.transport.prefetch, 512);
        assert_eq!(c.flood.max_held_total, 512 - 128);
        assert_eq!(c.policy.max_clock_skew, chrono::Duration::minutes(5));
        assert!(c.data_dir.ends_with("data"));
        assert!(c.data_dir.is_absolute() || c.data_dir.starts_with(std::env::temp_dir()));
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(
            field_of(load("[pipeline]\nwindow = 0\n")),
            "pipeline.window"
        );
        assert_eq!(
            field_of(load("[pipeline]\nwindow = 600\n")),
            "pipeline.window"
        );
        assert_eq!(
            field_of(load("[flood]\nrate_per_sec = 0.0\n")),
            "flood.rate_per_sec"
        );
        assert_eq!(field_of(load("[flood]\nburst = 0\n")), "flood.burst");
        assert_eq!(
            field_of(load("[flood]\nmax_in_flight = 1000\n")),
            "flood.max_in_flight"
        );
        assert_eq!(
            field_of(load("[ingress]\nmax_body_bytes = 0\n")),
            "ingress.max_body_bytes"
        );
        assert_eq!(
            field_of(load("[routing]\nfallback = \"xx.nobody\"\n")),
            "routing"
        );
    }

    #[test]
    fn unknown_fields_and_syntax_are_refused() {
        assert!(matches!(
            load("[flood]\nrate = 1\n"),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            load("typo = 1\n"),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn signing_key_must_be_the_brokers() {
        let (dir, config) = fixture();
        let other = Signer::generate().expect("key");
        other
            .write_key_files(dir.path(), &"xx.other".parse().expect("id"))
            .expect("write");
        std::fs::write(&config, MINIMAL.replace("net.broker.key", "xx.other.key")).expect("write");
        assert_eq!(field_of(ServeConfig::load(&config)), "signing_key");
    }

    #[test]
    fn missing_pem_file_is_named() {
        let (dir, config) = fixture();
        std::fs::remove_file(dir.path().join("ca.pem")).expect("rm");
        std::fs::write(&config, MINIMAL).expect("write");
        assert_eq!(field_of(ServeConfig::load(&config)), "amqp.ca");
    }
}
