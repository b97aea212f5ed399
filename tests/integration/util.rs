//! The harness every integration test builds on: the run's private RabbitMQ node, a vhost
//! of its own per test, certificates from the node's CA, and `rabbitmqctl`.
//!
//! # The node
//!
//! Tests never start RabbitMQ. `ops/test` starts one private node per run
//! (`ops/rabbitmq/node start`) and exports its `env` file; [`Node::get`] finds it, in this
//! order:
//! 1. the variables `REFBROKER_AMQPS_PORT`, `REFBROKER_PKI_DIR`, `REFBROKER_RABBITMQCTL`
//!    (and optionally `REFBROKER_NODE`, `REFBROKER_NODE_DIR`);
//! 2. else `$REFBROKER_NODE_DIR/env`;
//! 3. else `.run/rabbitmq/env` in the repository (the default of `ops/rabbitmq/node start`).
//!
//! and panics with a message saying how to start one when none is there or it does not
//! answer. So `ops/rabbitmq/node start && cargo nextest run --test integration` works too.
//!
//! # Isolation
//!
//! Tests run in parallel (cargo-nextest, one process per test) against the one node. Each
//! test takes a [`TestVhost`]: a fresh vhost with a unique name, deleted on drop (best
//! effort, also when the test panics). RabbitMQ users are global, not per vhost, so a test
//! names its participants through [`TestVhost::participant`], which appends the vhost's
//! unique suffix and deletes those users on drop too.
//!
//! # Users and permissions
//!
//! The harness creates no users: provisioning is `referral_broker::provision`'s job, and the
//! tests exercise it. The place for it is after [`TestVhost::new`]: provision the ids from
//! [`TestVhost::participant`] into [`TestVhost::name`] with [`Node::rabbitmqctl_path`]; the
//! drop of the vhost cleans up.
//!
//! # Certificates
//!
//! [`Certs`] issues participant certificates from the node's CA (`ca.pem` + `ca.key` in
//! `REFBROKER_PKI_DIR`) into a temporary directory of the test, plus the negative cases:
//! expired, not yet valid, and from a second CA with the same name and another key.

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use referral_broker::ids::ParticipantId;
use referral_broker::pki::{self, DevCa, Validity};

/// The run's private RabbitMQ node, as `ops/rabbitmq/node start` described it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node name, e.g. `refbroker-0123456789@localhost` (empty when not given).
    pub name: String,
    /// The AMQPS port on 127.0.0.1 (the only listener; plain AMQP is off).
    pub amqps_port: u16,
    /// The node's PKI: `ca.pem` (trust root), `ca.key` (to issue), `server.pem`, `server.key`.
    pub pki_dir: PathBuf,
    /// A wrapper that runs `rabbitmqctl` against this node (takes rabbitmqctl's arguments).
    pub rabbitmqctl: PathBuf,
    /// The node's state directory, when known.
    pub dir: Option<PathBuf>,
}

const HOW_TO_START: &str = "no RabbitMQ node for the integration tests: run `ops/test`, or \
     `ops/rabbitmq/node start` and `export REFBROKER_NODE_DIR=.run/rabbitmq` (or `. .run/rabbitmq/env`)";

impl Node {
    /// The run's node (found once per test process); panics with instructions when there is
    /// none or it does not accept connections.
    pub fn get() -> &'static Node {
        static NODE: OnceLock<Node> = OnceLock::new();
        NODE.get_or_init(|| {
            let node = Node::find().unwrap_or_else(|why| panic!("{HOW_TO_START}\n({why})"));
            let addr = node.amqps_addr();
            if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                panic!(
                    "{HOW_TO_START}\n(nothing answers on {addr}: {e}; node described by {node})"
                );
            }
            node
        })
    }

    /// The node from the environment, without checking that it runs.
    pub fn find() -> Result<Node, String> {
        if let Ok(port) = std::env::var("REFBROKER_AMQPS_PORT") {
            let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
            return Ok(Node {
                name: std::env::var("REFBROKER_NODE").unwrap_or_default(),
                amqps_port: port
                    .parse()
                    .map_err(|_| format!("REFBROKER_AMQPS_PORT={port:?} is not a port"))?,
                pki_dir: var("REFBROKER_PKI_DIR")?.into(),
                rabbitmqctl: var("REFBROKER_RABBITMQCTL")?.into(),
                dir: std::env::var_os("REFBROKER_NODE_DIR").map(PathBuf::from),
            });
        }
        let file = match std::env::var_os("REFBROKER_NODE_DIR") {
            Some(dir) => PathBuf::from(dir).join("env"),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".run/rabbitmq/env"),
        };
        if !file.exists() {
            return Err(format!(
                "REFBROKER_AMQPS_PORT is not set and {} does not exist",
                file.display()
            ));
        }
        Node::from_env_file(&file)
    }

    /// Reads an `env` file written by `ops/rabbitmq/node start`. The values are shell-quoted,
    /// so bash itself reads them.
    pub fn from_env_file(file: &Path) -> Result<Node, String> {
        let vars = [
            "REFBROKER_NODE",
            "REFBROKER_AMQPS_PORT",
            "REFBROKER_PKI_DIR",
            "REFBROKER_RABBITMQCTL",
            "REFBROKER_NODE_DIR",
        ];
        let script = format!(
            ". \"$1\" && printf '%s\\0' {}",
            vars.map(|v| format!("\"${v}\"")).join(" ")
        );
        let out = Command::new("bash")
            .args(["-c", &script, "bash"])
            .arg(file)
            .output()
            .map_err(|e| format!("running bash to read {}: {e}", file.display()))?;
        if !out.status.success() {
            return Err(format!(
                "cannot source {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8(out.stdout)
            .map_err(|_| format!("{} is not UTF-8", file.display()))?;
        let values: Vec<&str> = text.split('\0').collect();
        let get = |i: usize| -> Result<&str, String> {
            match values.get(i) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(format!("{} does not set {}", file.display(), vars[i])),
            }
        };
        Ok(Node {
            name: get(0)?.to_owned(),
            amqps_port: get(1)?
                .parse()
                .map_err(|_| format!("{}: REFBROKER_AMQPS_PORT is not a port", file.display()))?,
            pki_dir: get(2)?.into(),
            rabbitmqctl: get(3)?.into(),
            dir: get(4).ok().map(PathBuf::from),
        })
    }

    /// `127.0.0.1:<amqps port>`.
    pub fn amqps_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.amqps_port))
    }

    /// The trust root of the network: `ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.pki_dir.join(pki::CA_CERT_FILE)
    }

    /// The node's CA, able to issue (needs `ca.key`, present when `pki init` made the PKI).
    pub fn ca(&self) -> DevCa {
        DevCa::load(&self.pki_dir).unwrap_or_else(|e| {
            panic!("loading the node's CA from {}: {e}", self.pki_dir.display())
        })
    }

    /// The `rabbitmqctl` wrapper (what `referral_broker::provision` needs).
    pub fn rabbitmqctl_path(&self) -> &Path {
        &self.rabbitmqctl
    }

    /// `rabbitmqctl -q ARGS` against the node: its stdout, or the failure.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, CtlFailure> {
        let out = Command::new(&self.rabbitmqctl)
            .arg("-q")
            .args(args)
            .output()
            .map_err(|e| CtlFailure {
                args: args.iter().map(|a| a.to_string()).collect(),
                status: None,
                output: format!("cannot run {}: {e}", self.rabbitmqctl.display()),
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(CtlFailure {
                args: args.iter().map(|a| a.to_string()).collect(),
                status: out.status.code(),
                output: String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            })
        }
    }

    /// `rabbitmqctl -q ARGS`, panicking with rabbitmqctl's own words when it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The plain AMQP port the node was given and must keep closed (`listeners.tcp = none`),
    /// when the state directory is known.
    pub fn plain_port(&self) -> Option<u16> {
        let text = std::fs::read_to_string(self.dir.as_ref()?.join("ports")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("plain_port=")?.trim().parse().ok())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} on 127.0.0.1:{}, PKI {}, rabbitmqctl {}",
            self.name,
            self.amqps_port,
            self.pki_dir.display(),
            self.rabbitmqctl.display()
        )
    }
}

/// `rabbitmqctl` failed.
#[derive(Debug)]
pub struct CtlFailure {
    pub args: Vec<String>,
    /// Exit code (None: killed by a signal or not run at all).
    pub status: Option<i32>,
    /// stdout and stderr.
    pub output: String,
}

impl fmt::Display for CtlFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rabbitmqctl {} failed (exit {:?}): {}",
            self.args.join(" "),
            self.status,
            self.output.trim()
        )
    }
}

/// Eight random hex digits: makes names unique across parallel tests and runs.
pub fn unique_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A vhost of one test, deleted on drop together with the users named through it.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
    suffix: String,
    node: &'static Node,
    users: std::sync::Mutex<Vec<String>>,
}

impl TestVhost {
    /// Creates `t-<test_name>-<random>` on the run's node.
    pub fn new(test_name: &str) -> Self {
        let node = Node::get();
        let suffix = unique_suffix();
        let clean: String = test_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(60)
            .collect();
        let name = format!("t-{clean}-{suffix}");
        node.ctl(&["add_vhost", &name]);
        Self {
            name,
            suffix,
            node,
            users: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node it lives on.
    pub fn node(&self) -> &'static Node {
        self.node
    }

    /// `base` made unique to this test (`fr.hotline` → `fr.hotline-1a2b3c4d`); the user of
    /// that name, if someone creates it, is deleted when the vhost is dropped.
    pub fn participant(&self, base: &str) -> ParticipantId {
        let id: ParticipantId = format!("{base}-{}", self.suffix)
            .parse()
            .unwrap_or_else(|e| panic!("test participant from {base:?}: {e}"));
        self.adopt_user(id.as_str());
        id
    }

    /// Deletes user `name` (if it exists) when the vhost is dropped.
    pub fn adopt_user(&self, name: &str) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if !users.iter().any(|u| u == name) {
            users.push(name.to_owned());
        }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        // Best effort: a leftover vhost or user costs nothing but a name on a private node.
        let users = std::mem::take(self.users.get_mut().unwrap_or_else(|p| p.into_inner()));
        for user in users {
            let _ = self.node.try_ctl(&["delete_user", &user]);
        }
        if let Err(e) = self.node.try_ctl(&["delete_vhost", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// A certificate and key on disk, for one participant.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub id: ParticipantId,
    /// The leaf certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PKCS#8 PEM.
    pub key: PathBuf,
}

impl ClientCert {
    /// (certificate PEM, key PEM) as bytes, e.g. for `OwnedIdentity::PKCS8`.
    pub fn read(&self) -> (Vec<u8>, Vec<u8>) {
        let read =
            |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        (read(&self.cert), read(&self.key))
    }
}

/// Issues certificates from the node's CA into a temporary directory of the test.
pub struct Certs {
    dir: tempfile::TempDir,
    ca: DevCa,
    node: &'static Node,
}

impl Certs {
    pub fn new() -> Self {
        let node = Node::get();
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            ca: node.ca(),
            node,
        }
    }

    /// The temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The network's trust root (the node's `ca.pem`).
    pub fn ca_cert(&self) -> PathBuf {
        self.node.ca_cert()
    }

    /// A valid client certificate for `id` (one day).
    pub fn participant(&self, id: &ParticipantId) -> ClientCert {
        self.participant_with(id, Validity::days_from_now(1))
    }

    /// A client certificate for `id` with the given validity (e.g. expired).
    pub fn participant_with(&self, id: &ParticipantId, validity: Validity) -> ClientCert {
        let issued = self
            .ca
            .issue_participant(id, validity)
            .unwrap_or_else(|e| panic!("issuing a certificate for {id}: {e}"));
        self.write(id, &issued, "")
    }

    /// A certificate for `id` that expired yesterday.
    pub fn expired(&self, id: &ParticipantId) -> ClientCert {
        let now = chrono::Utc::now();
        self.participant_with(
            id,
            Validity {
                not_before: now - chrono::Duration::days(30),
                not_after: now - chrono::Duration::days(1),
            },
        )
    }

    /// A certificate for `id` from a second CA with the node CA's name and another key.
    pub fn issued_by_impostor_ca(&self, id: &ParticipantId) -> ClientCert {
        let impostor = self.impostor_ca();
        let issued = impostor
            .issue_participant(id, Validity::days_from_now(1))
            .unwrap_or_else(|e| panic!("issuing an impostor certificate for {id}: {e}"));
        self.write(id, &issued, "impostor-")
    }

    /// A CA with the same name as the node's and another key (its `ca.pem` is written into
    /// the temporary directory as `impostor-ca-*.pem` by [`Certs::impostor_ca_file`]).
    pub fn impostor_ca(&self) -> DevCa {
        // Every CA made by `pki init` has this name unless told otherwise; the node's is.
        DevCa::generate(pki::DEFAULT_CA_NAME).expect("generating a second CA")
    }

    /// The certificate of a fresh impostor CA, written to a file (to trust the wrong root).
    pub fn impostor_ca_file(&self) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("impostor-ca-{}.pem", unique_suffix()));
        std::fs::write(&path, self.impostor_ca().cert_pem()).expect("writing the impostor CA");
        path
    }

    fn write(&self, id: &ParticipantId, issued: &pki::IssuedCert, prefix: &str) -> ClientCert {
        // A fresh stem each time: a test may issue several certificates for one id.
        let stem = format!("{prefix}{id}-{}", unique_suffix());
        let (cert, key) = issued
            .write(self.dir.path(), &stem)
            .unwrap_or_else(|e| panic!("writing a certificate: {e}"));
        ClientCert {
            id: id.clone(),
            cert,
            key,
        }
    }
}

impl Default for Certs {
    fn default() -> Self {
        Self::new()
    }
}
