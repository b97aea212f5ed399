//! `[admin]` of `broker.toml`: where the operators' HTTP server listens, whether it speaks
//! TLS (and then whether it demands a client certificate), how often it looks at RabbitMQ.
//! Read in two stages like the rest of the config: [`AdminSection`] as written, then
//! [`AdminSection::check`] into an [`AdminConfig`].
//!
//! ```toml
//! [admin]                          # optional; defaults shown
//! listen = "127.0.0.1:9187"        # port 0: any free port (the bound address is logged and
//!                                  # written to <data_dir>/admin.url)
//! enabled = true
//! poll_secs = 5                    # inbox depths, queue depths, log size, readiness
//! inbox_age_warn_secs = 3600       # an inbox whose oldest unread message is older needs attention
//! checkpoint_age_warn_secs = 900   # no checkpoint for longer needs attention
//! history_days = 365               # takedown figures cover removals of the last N days
//!
//! [admin.tls]                      # optional: HTTPS
//! cert = "pki/admin.pem"           # the server's certificate chain (PEM)
//! key = "pki/admin.key"            # its private key (PEM)
//! client_ca = "pki/operators-ca.pem"   # optional: mutual TLS, only clients of this CA
//! ```
//!
//! Guarantees: an address other than loopback is refused unless `[admin.tls]` has a
//! `client_ca` (the page names participants and their backlogs: only authenticated operators
//! may read it from another host). Every error names its field. Nothing is bound or opened
//! here; the PEM files are only checked to be readable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[admin]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    pub enabled: bool,
    pub listen: String,
    pub poll_secs: u64,
    pub inbox_age_warn_secs: u64,
    pub checkpoint_age_warn_secs: u64,
    pub history_days: u32,
    pub tls: Option<TlsSection>,
}

/// `[admin.tls]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// The default admin address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_LISTEN.to_owned(),
            poll_secs: 5,
            inbox_age_warn_secs: super::DEFAULT_INBOX_AGE_SECS,
            checkpoint_age_warn_secs: 900,
            history_days: 365,
            tls: None,
        }
    }
}

/// The admin server's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `false`: no admin server at all.
    pub enabled: bool,
    pub listen: SocketAddr,
    pub poll: Duration,
    pub inbox_age_warn: Duration,
    pub checkpoint_age_warn: Duration,
    pub history_days: u32,
    pub tls: Option<AdminTls>,
}

/// HTTPS settings with absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Some: clients must present a certificate issued by this CA.
    pub client_ca: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminSection::default()
            .check(Path::new("."))
            .expect("the default [admin] section is valid (loopback, no files)")
    }
}

/// A problem with one field of `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct AdminConfigError {
    /// TOML path, e.g. `admin.listen`.
    pub field: String,
    pub problem: String,
}

fn err(field: &str, problem: impl Into<String>) -> AdminConfigError {
    AdminConfigError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

impl AdminSection {
    /// Checks every value; relative paths are taken from `base` (the config file's folder).
    pub fn check(&self, base: &Path) -> Result<AdminConfig, AdminConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|e| {
            err(
                "admin.listen",
                format!(
                    "{:?} is not an IP address and port such as \"{DEFAULT_LISTEN}\": {e}",
                    self.listen
                ),
            )
        })?;
        if self.poll_secs == 0 || self.poll_secs > 3600 {
            return Err(err(
                "admin.poll_secs",
                format!("{} is outside 1..=3600", self.poll_secs),
            ));
        }
        if self.inbox_age_warn_secs == 0 {
            return Err(err("admin.inbox_age_warn_secs", "must be at least 1"));
        }
        if self.checkpoint_age_warn_secs == 0 {
            return Err(err("admin.checkpoint_age_warn_secs", "must be at least 1"));
        }
        if self.history_days == 0 || self.history_days > 3660 {
            return Err(err(
                "admin.history_days",
                format!("{} is outside 1..=3660", self.history_days),
            ));
        }
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let tls = match &self.tls {
            None => None,
            Some(t) => {
                let tls = AdminTls {
                    cert: resolve(&t.cert),
                    key: resolve(&t.key),
                    client_ca: t.client_ca.as_deref().map(resolve),
                };
                let mut files = vec![("admin.tls.cert", &tls.cert), ("admin.tls.key", &tls.key)];
                if let Some(ca) = &tls.client_ca {
                    files.push(("admin.tls.client_ca", ca));
                }
                for (field, p) in files {
                    if let Err(e) = std::fs::File::open(p) {
                        return Err(err(field, format!("{}: {e}", p.display())));
                    }
                }
                Some(tls)
            }
        };
        let mutual = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if self.enabled && !listen.ip().is_loopback() && !mutual {
            return Err(err(
                "admin.listen",
                format!(
                    "{listen} is reachable from other hosts: that needs [admin.tls] with a \
                     client_ca (mutual TLS), or a loopback address such as {DEFAULT_LISTEN}"
                ),
            ));
        }
        Ok(AdminConfig {
            enabled: self.enabled,
            listen,
            poll: Duration::from_secs(self.poll_secs),
            inbox_age_warn: Duration::from_secs(self.inbox_age_warn_secs),
            checkpoint_age_warn: Duration::from_secs(self.checkpoint_age_warn_secs),
            history_days: self.history_days,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AdminConfig, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            admin: AdminSection,
        }
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        f.admin.check(Path::new("/etc/rb")).map_err(|e| e.field)
    }

    #[test]
    fn defaults_are_loopback_without_tls() {
        let c = parse("").expect("defaults");
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert!(c.enabled && c.tls.is_none());
        assert_eq!(c, AdminConfig::default());
    }

    #[test]
    fn port_zero_is_allowed() {
        let c = parse("[admin]\nlisten = \"127.0.0.1:0\"\n").expect("port 0");
        assert_eq!(c.listen.port(), 0);
        let c = parse("[admin]\nlisten = \"[::1]:0\"\n").expect("ipv6 loopback");
        assert!(c.listen.ip().is_loopback());
    }

    #[test]
    fn remote_address_needs_mutual_tls() {
        assert_eq!(
            parse("[admin]\nlisten = \"0.0.0.0:9187\"\n"),
            Err("admin.listen".into())
        );
        // Disabled: nothing is bound, nothing to protect.
        assert!(parse("[admin]\nenabled = false\nlisten = \"0.0.0.0:9187\"\n").is_ok());
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(
            parse("[admin]\nlisten = \"localhost:1\"\n"),
            Err("admin.listen".into())
        );
        assert_eq!(
            parse("[admin]\npoll_secs = 0\n"),
            Err("admin.poll_secs".into())
        );
        assert_eq!(
            parse("[admin]\nhistory_days = 0\n"),
            Err("admin.history_days".into())
        );
        assert_eq!(
            parse("[admin.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n"),
            Err("admin.tls.cert".into())
        );
        assert!(parse("[admin]\nlisten_on = \"x\"\n").is_err());
    }

    #[test]
    fn tls_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["s.pem", "s.key", "ca.pem"] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        let section = AdminSection {
            listen: "0.0.0.0:0".into(),
            tls: Some(TlsSection {
                cert: "s.pem".into(),
                key: "s.key".into(),
                client_ca: Some("ca.pem".into()),
            }),
            ..AdminSection::default()
        };
        let c = section
            .check(dir.path())
            .expect("mutual TLS on any address");
        let tls = c.tls.expect("tls");
        assert_eq!(tls.cert, dir.path().join("s.pem"));
        assert_eq!(tls.client_ca, Some(dir.path().join("ca.pem")));
    }
}
