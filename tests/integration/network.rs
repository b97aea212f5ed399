//! The end-to-end harness: a whole network on the run's private node, with the real daemon
//! (`referral-broker serve`) as a child process.
//!
//! [`Network::new`] builds, in a fresh vhost of its own ([`TestVhost`]):
//! - a registry: the broker (`net.broker-<suffix>`, role operator) and four participants —
//!   hotlines `fr` (FR), `nl` (NL), `de` (DE) and the police `lea` (`nl.police`, NL). Every
//!   participant has a valid signing key, plus an expired and a revoked one (for the
//!   negative tests); ids are made unique by [`TestVhost::participant`];
//! - RabbitMQ users and permissions ([`referral_broker::provision`]);
//! - certificates from the node's CA, the broker's key file, a `broker.toml` (routing:
//!   `fallback` = `de`, `fallback_lea` = `lea`; window 64; anything else through
//!   [`Options`]) and a data directory.
//!
//! Then:
//! - [`Network::start_broker`] spawns `serve --config broker.toml` and waits until it
//!   consumes; [`Network::kill_broker`] sends SIGKILL, [`Network::stop_broker`] SIGTERM (and
//!   returns the exit status); a new [`Network::start_broker`] restarts it on the same data
//!   directory. The broker's log is kept in the temporary directory
//!   ([`Network::broker_log`]) and printed when it fails to start.
//! - [`Network::peer`] connects a participant with its certificate: [`Peer::send`] signs an
//!   envelope and publishes it with the properties and headers of the design's Wire section;
//!   [`Peer::publish_raw`] publishes crafted bytes and properties; [`Peer::recv`] reads (and
//!   acks) its inbox, setting aside the broker's `checkpoint` messages ([`Peer::checkpoints`]).
//! - [`Received`] checks what arrived the way a real participant must: the origin's
//!   signature over the bytes received ([`Received::verify_origin`]), the broker's
//!   attestation ([`Received::attestation`]), a broker-signed notice ([`Received::notice`]).
//! - [`Network::quarantine`] reads the `quarantine` queue with the broker's identity.
//! - [`referral`] / [`item`] build referrals with synthetic data only (`*.example` URLs,
//!   documentation IP ranges, random hashes).
//!
//! Dropping the [`Network`] kills the broker if it still runs, then deletes the vhost and
//! the users. Everything lives in the test's temporary directory.

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use referral_broker::ids::{EnvelopeId, ParticipantId};
use referral_broker::provision::{self, Desired, Rabbitmqctl};
use referral_broker::registry::Registry;
use referral_broker::signing::{self, HEADER_KEY_ID, HEADER_SIG, Signer};
use referral_broker::transport::topology::{
    INGRESS_EXCHANGE, INGRESS_ROUTING_KEY, QUARANTINE_QUEUE,
};
use referral_broker::transport::{Consumer, PublishError, Publisher, Transport, TransportConfig};
use referral_broker::wire::attestation::{
    self, Attestation, HEADER_ATTESTATION, HEADER_ATTESTATION_KEY_ID, HEADER_ATTESTATION_SIG,
    HEADER_ORIGIN,
};
use referral_broker::wire::{self, Body, Envelope, Notice, Referral};
use serde_json::{Value, json};

use super::util::{Certs, ClientCert, TestVhost};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// The participants of every test network: (name, id base, role, country).
pub const MEMBERS: [(&str, &str, &str, &str); 4] = [
    ("fr", "fr.hotline", "hotline", "FR"),
    ("nl", "nl.hotline", "hotline", "NL"),
    ("de", "de.hotline", "hotline", "DE"),
    ("lea", "nl.police", "lea", "NL"),
];

/// Settings beyond the defaults, as TOML appended to `broker.toml` (whole sections, e.g.
/// `"[flood]\nrate_per_sec = 20.0\n"`), and the `[routing]` lines.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra sections for `broker.toml` (not `[routing]`, `[pipeline]` or `[amqp]`).
    pub extra: String,
    /// Extra lines inside `[routing]` (after `fallback` and `fallback_lea`); `{fr}`, `{nl}`,
    /// `{de}`, `{lea}` are replaced by the participants' ids.
    pub routing: String,
    /// `[pipeline] window` (default 64).
    pub window: Option<usize>,
}

/// One participant of the network.
pub struct Member {
    pub name: &'static str,
    pub id: ParticipantId,
    /// Its valid key, and the seed of it (a [`Peer`] gets its own copy).
    pub signer: Signer,
    pub seed: [u8; 32],
    /// A registered key that expired (not_after in the past), and its seed.
    pub expired: Signer,
    pub expired_seed: [u8; 32],
    /// A registered key that was revoked, and its seed.
    pub revoked: Signer,
    pub revoked_seed: [u8; 32],
    pub cert: ClientCert,
}

/// The broker child process.
struct BrokerProcess {
    child: Child,
    log: PathBuf,
}

/// A test network; see the module documentation.
pub struct Network {
    pub registry: Registry,
    pub broker_id: ParticipantId,
    /// The broker's key (to verify what it signs; the daemon reads its own key file).
    pub broker_signer: Signer,
    pub members: BTreeMap<&'static str, Member>,
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    broker: Option<BrokerProcess>,
    starts: u32,
    // Dropped last: the vhost (and its users), then the files.
    pub vhost: TestVhost,
    pub certs: Certs,
    pub dir: tempfile::TempDir,
}

fn key_entry(s: &Signer, extra: &str) -> String {
    format!(
        "[[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2020-01-01T00:00:00Z\"\n{extra}",
        s.public_key_b64()
    )
}

impl Network {
    /// The standard network with default settings.
    pub async fn new(test: &str) -> Self {
        Self::with(test, Options::default()).await
    }

    /// The standard network with `options`.
    pub async fn with(test: &str, options: Options) -> Self {
        let vhost = TestVhost::new(test);
        let certs = Certs::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let broker_id = vhost.participant("net.broker");
        let broker_signer = Signer::generate().expect("a new signing key");

        let mut members = BTreeMap::new();
        let mut toml = format!(
            "broker = \"{broker_id}\"\n[[participant]]\nid = \"{broker_id}\"\nname = \"Test broker\"\nrole = \"operator\"\n{}",
            key_entry(&broker_signer, "")
        );
        for (name, base, role, country) in MEMBERS {
            let id = vhost.participant(base);
            let [seed, expired_seed, revoked_seed] = [(); 3].map(|()| rand::random::<[u8; 32]>());
            let m = Member {
                name,
                id: id.clone(),
                signer: Signer::from_seed(seed),
                seed,
                expired: Signer::from_seed(expired_seed),
                expired_seed,
                revoked: Signer::from_seed(revoked_seed),
                revoked_seed,
                cert: certs.participant(&id),
            };
            toml.push_str(&format!(
                "[[participant]]\nid = \"{id}\"\nname = \"Test {base}\"\nrole = \"{role}\"\ncountry = \"{country}\"\n{}{}{}",
                key_entry(&m.signer, ""),
                key_entry(&m.expired, "not_after = \"2021-01-01T00:00:00Z\"\n"),
                key_entry(&m.revoked, "revoked_at = \"2021-01-01T00:00:00Z\"\n"),
            ));
            members.insert(name, m);
        }
        let registry_file = dir.path().join("registry.toml");
        std::fs::write(&registry_file, &toml).expect("write the registry");
        let registry = Registry::load(&registry_file).expect("the test registry loads");

        let ctl = Rabbitmqctl::new(vhost.node().rabbitmqctl_path());
        let desired = Desired::from_registry(&registry, vhost.name());
        tokio::task::block_in_place(|| provision::apply(&ctl, &desired)).expect("provision");

        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).expect("keys dir");
        let key_paths = broker_signer
            .write_key_files(&keys, &broker_id)
            .expect("the broker's key files");
        let broker_cert = certs.participant(&broker_id);
        let id_of = |n: &str| {
            members
                .get(n)
                .map(|m: &Member| m.id.to_string())
                .unwrap_or_default()
        };
        let mut routing = options.routing.clone();
        for n in ["fr", "nl", "de", "lea"] {
            routing = routing.replace(&format!("{{{n}}}"), &id_of(n));
        }
        let config = format!(
            "registry = {registry:?}\nsigning_key = {key:?}\ndata_dir = \"data\"\n\
             [amqp]\nport = {port}\nvhost = {vhost:?}\nca = {ca:?}\ncert = {cert:?}\nkey = {certkey:?}\n\
             heartbeat_secs = 5\nconfirm_timeout_secs = 10\nconnect_timeout_secs = 10\n\
             [pipeline]\nwindow = {window}\nshutdown_grace_secs = 20\n\
             [admin]\nlisten = \"127.0.0.1:0\"\npoll_secs = 1\n\
             {extra}\n\
             [routing]\nfallback = \"{de}\"\nfallback_lea = \"{lea}\"\n{routing}\n",
            registry = registry_file.display().to_string(),
            key = key_paths.private.display().to_string(),
            port = vhost.node().amqps_port,
            vhost = vhost.name(),
            ca = certs.ca_cert().display().to_string(),
            cert = broker_cert.cert.display().to_string(),
            certkey = broker_cert.key.display().to_string(),
            window = options.window.unwrap_or(64),
            extra = options.extra,
            de = id_of("de"),
            lea = id_of("lea"),
        );
        let config_file = dir.path().join("broker.toml");
        std::fs::write(&config_file, config).expect("write broker.toml");
        Self {
            registry,
            broker_id,
            broker_signer,
            members,
            config_file,
            data_dir: dir.path().join("data"),
            broker: None,
            starts: 0,
            vhost,
            certs,
            dir,
        }
    }

    pub fn member(&self, name: &str) -> &Member {
        self.members
            .get(name)
            .unwrap_or_else(|| panic!("no member {name} (members: fr, nl, de, lea)"))
    }

    /// The id of member `name`.
    pub fn id(&self, name: &str) -> ParticipantId {
        self.member(name).id.clone()
    }

    /// The path of the daemon binary.
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_referral-broker")
    }

    /// The current (or last) broker log.
    pub fn broker_log(&self) -> Option<String> {
        let path = self.broker.as_ref().map(|b| b.log.clone()).or_else(|| {
            (self.starts > 0).then(|| self.dir.path().join(format!("broker-{}.log", self.starts)))
        })?;
        std::fs::read_to_string(path).ok()
    }

    /// Spawns the daemon and waits until it consumes `ingress` (panics with its log if it
    /// exits or is not ready within [`WAIT`]).
    pub fn start_broker(&mut self) {
        assert!(self.broker.is_none(), "the broker is already running");
        self.starts += 1;
        let log = self.dir.path().join(format!("broker-{}.log", self.starts));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(Self::binary())
            .arg("serve")
            .arg("--config")
            .arg(&self.config_file)
            .env("RUST_LOG", "info,lapin=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawning referral-broker serve");
        self.broker = Some(BrokerProcess {
            child,
            log: log.clone(),
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("serving: consuming") {
                return;
            }
            let exited = self
                .broker
                .as_mut()
                .and_then(|b| b.child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.broker = None;
                panic!("the broker exited during start ({status}):\n{text}");
            }
            if Instant::now() > deadline {
                panic!("the broker is not ready after 60 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the broker dies at once, whatever it was doing.
    pub fn kill_broker(&mut self) {
        if let Some(mut b) = self.broker.take() {
            let _ = b.child.kill();
            let _ = b.child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (at most 60 s) and returns its status.
    pub fn stop_broker(&mut self) -> ExitStatus {
        let mut b = self.broker.take().expect("the broker runs");
        let status = Command::new("kill")
            .args(["-TERM", &b.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = b.child.try_wait().expect("waiting for the broker") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = b.child.kill();
                panic!("the broker did not exit within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the broker process runs.
    pub fn broker_running(&mut self) -> bool {
        self.broker
            .as_mut()
            .is_some_and(|b| matches!(b.child.try_wait(), Ok(None)))
    }

    /// A transport configuration for `id` with a fresh certificate from the node's CA.
    pub fn transport_config(&self, id: &ParticipantId) -> TransportConfig {
        let cert = self.certs.participant(id);
        let mut c = TransportConfig::new(
            self.vhost.node().amqps_port,
            self.vhost.name(),
            self.certs.ca_cert(),
            cert.cert,
            cert.key,
        );
        c.confirm_timeout = Duration::from_secs(10);
        c.connect_timeout = Duration::from_secs(10);
        c.prefetch = 64;
        c.connection_name = format!("test peer {id}");
        c
    }

    /// Connects member `name` and subscribes to its inbox. Needs the topology: start the
    /// broker first.
    pub async fn peer(&self, name: &str) -> Peer {
        let m = self.member(name);
        let transport = Transport::connect(self.transport_config(&m.id))
            .await
            .unwrap_or_else(|e| panic!("{name} connects: {e}"));
        let inbox = transport
            .consume(&m.id.inbox_queue())
            .await
            .unwrap_or_else(|e| panic!("{name} consumes its inbox: {e}"));
        Peer {
            name: m.name,
            id: m.id.clone(),
            signer: Signer::from_seed(m.seed),
            publisher: transport.publisher(),
            transport,
            inbox: tokio::sync::Mutex::new(inbox),
            registry: self.registry.clone(),
            checkpoints: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Reads the `quarantine` queue with the broker's identity.
    pub async fn quarantine(&self) -> Quarantine {
        let transport = Transport::connect(self.transport_config(&self.broker_id))
            .await
            .expect("connecting as the broker to read quarantine");
        let consumer = transport
            .consume(QUARANTINE_QUEUE)
            .await
            .expect("consuming quarantine");
        Quarantine {
            _transport: transport,
            consumer: tokio::sync::Mutex::new(consumer),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.kill_broker();
        if std::thread::panicking() {
            // The daemon's side of a failed test.
            for n in 1..=self.starts {
                let path = self.dir.path().join(format!("broker-{n}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!(
                    "--- broker log {} (last {} lines) ---\n{}",
                    path.display(),
                    tail.len(),
                    tail.join("\n")
                );
            }
            self.print_log_tail(80);
        }
    }
}

impl Network {
    /// Every entry of the daemon's audit log whose text contains one of `needles` (an
    /// envelope id, say), as stored: what the daemon recorded about them, for a failed test.
    pub fn entries_mentioning(&self, needles: &[String]) -> Vec<String> {
        let reader = match referral_broker::store::LogReader::open(&self.data_dir) {
            Ok(r) => r,
            Err(e) => return vec![format!("(no audit log to read: {e})")],
        };
        let entries = match reader.iter_from(referral_broker::store::Seq(0)) {
            Ok(it) => it,
            Err(e) => return vec![format!("(the audit log does not read: {e})")],
        };
        entries
            .filter_map(|le| match le {
                Ok(le) => {
                    let line = String::from_utf8_lossy(&le.bytes).into_owned();
                    needles
                        .iter()
                        .any(|n| line.contains(n.as_str()))
                        .then_some(line)
                }
                Err(e) => Some(format!("(unreadable: {e})")),
            })
            .collect()
    }

    /// The last `n` entries of the daemon's audit log, as stored (one JSON line each): what
    /// it decided, rejected and sent, for a failed test (the data directory is removed).
    fn print_log_tail(&self, n: usize) {
        let reader = match referral_broker::store::LogReader::open(&self.data_dir) {
            Ok(r) => r,
            Err(e) => return eprintln!("--- no audit log to show: {e}"),
        };
        let mut lines = std::collections::VecDeque::with_capacity(n);
        let entries = match reader.iter_from(referral_broker::store::Seq(0)) {
            Ok(it) => it,
            Err(e) => return eprintln!("--- the audit log does not read: {e}"),
        };
        for le in entries {
            let line = match le {
                Ok(le) => String::from_utf8_lossy(&le.bytes).into_owned(),
                Err(e) => format!("(unreadable: {e})"),
            };
            if lines.len() == n {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        eprintln!(
            "--- audit log {} (last {} entries) ---",
            self.data_dir.display(),
            lines.len()
        );
        for l in lines {
            eprintln!("{l}");
        }
    }
}

fn long(s: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The properties and headers of the design's Wire section for a message from `user_id`.
pub fn wire_properties(
    user_id: &str,
    kind: &str,
    message_id: &str,
    sig_b64: &str,
    key_id: &str,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(HEADER_SIG.into(), long(sig_b64));
    headers.insert(HEADER_KEY_ID.into(), long(key_id));
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_type(kind.into())
        .with_message_id(message_id.into())
        .with_user_id(user_id.into())
        .with_timestamp(Utc::now().timestamp() as u64)
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// A participant connected to the network.
pub struct Peer {
    pub name: &'static str,
    pub id: ParticipantId,
    pub signer: Signer,
    pub transport: Transport,
    publisher: Publisher,
    inbox: tokio::sync::Mutex<Consumer>,
    registry: Registry,
    /// `checkpoint` messages set aside by [`Peer::recv`].
    checkpoints: std::sync::Mutex<Vec<Received>>,
}

impl Peer {
    /// A new envelope from this participant.
    pub fn envelope(&self, body: Body) -> Envelope {
        Envelope::new(self.id.clone(), body)
    }

    /// Signs `envelope` with the valid key and publishes it to `ingress` (confirmed).
    pub async fn send(&self, envelope: &Envelope) -> EnvelopeId {
        let bytes = envelope.to_bytes();
        self.send_bytes(
            &bytes,
            envelope.kind.as_str(),
            envelope.id.as_str(),
            &self.signer,
        )
        .await
        .unwrap_or_else(|e| panic!("{} publishes {}: {e}", self.name, envelope.id));
        envelope.id.clone()
    }

    /// Publishes `bytes` signed by `signer`, with the Wire properties (this peer's user_id).
    pub async fn send_bytes(
        &self,
        bytes: &[u8],
        kind: &str,
        message_id: &str,
        signer: &Signer,
    ) -> Result<(), PublishError> {
        let props = wire_properties(
            self.id.as_str(),
            kind,
            message_id,
            &signer.sign_b64(bytes),
            signer.key_id().as_str(),
        );
        self.publish_raw(bytes, props).await
    }

    /// Publishes anything to `ingress` (confirmed).
    pub async fn publish_raw(
        &self,
        bytes: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        self.publisher
            .publish(INGRESS_EXCHANGE, INGRESS_ROUTING_KEY, bytes, props)
            .await
    }

    /// The next message of the inbox within `within`, acked; `None` if nothing came.
    /// `checkpoint` messages (the broker sends them every N entries, T seconds and at
    /// shutdown) are set aside, see [`Peer::checkpoints`]; use [`Peer::recv_any`] to see them.
    pub async fn recv(&self, within: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv_any(left).await?;
            if m.kind() != "checkpoint" {
                return Some(m);
            }
            self.checkpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(m);
        }
    }

    /// The next message of any kind within `within`, acked.
    pub async fn recv_any(&self, within: Duration) -> Option<Received> {
        let mut inbox = self.inbox.lock().await;
        let d = tokio::time::timeout(within, inbox.next()).await.ok()??;
        let d = d.unwrap_or_else(|e| panic!("{} reads its inbox: {e}", self.name));
        d.ack().await.expect("ack");
        Some(Received {
            body: d.body().to_vec(),
            props: d.properties().clone(),
            redelivered: d.redelivered(),
            registry: self.registry.clone(),
            me: self.id.clone(),
        })
    }

    /// The `checkpoint` messages [`Peer::recv`] has set aside so far, oldest first.
    pub fn checkpoints(&self) -> Vec<Received> {
        self.checkpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next message within [`WAIT`]; panics if none.
    pub async fn expect(&self) -> Received {
        self.recv(WAIT)
            .await
            .unwrap_or_else(|| panic!("{} received nothing within {WAIT:?}", self.name))
    }

    /// Messages until the inbox stays quiet for `quiet`.
    pub async fn drain(&self, quiet: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        while let Some(m) = self.recv(quiet).await {
            out.push(m);
        }
        out
    }

    /// Waits for the notice with `code` about `about` (skipping and returning other messages
    /// seen meanwhile); checks it is broker-signed.
    pub async fn expect_notice(
        &self,
        code: &str,
        about: Option<&EnvelopeId>,
    ) -> (Notice, Vec<Received>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut others = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = self.recv(left).await else {
                panic!(
                    "{}: no {code} notice about {about:?} within {WAIT:?}; got {:?}",
                    self.name,
                    others.iter().map(Received::summary).collect::<Vec<_>>()
                );
            };
            if m.kind() == "notice" {
                let n = m.notice();
                if n.code.as_str() == code && (about.is_none() || n.about.as_ref() == about) {
                    return (n, others);
                }
            }
            others.push(m);
        }
    }
}

/// One message read from an inbox.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    pub props: BasicProperties,
    pub redelivered: bool,
    registry: Registry,
    me: ParticipantId,
}

impl Received {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.props.headers().as_ref()?.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            other => Some(format!("{other:?}")),
        }
    }

    pub fn kind(&self) -> String {
        self.props
            .kind()
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default()
    }

    pub fn message_id(&self) -> String {
        self.props
            .message_id()
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default()
    }

    /// The body decoded (panics if it is not a contract envelope).
    pub fn envelope(&self) -> Envelope {
        wire::decode(&self.body).unwrap_or_else(|e| panic!("not an envelope: {e}"))
    }

    /// Verifies `x-sig` over the bytes received with the registered key of the envelope's
    /// origin (valid now) — what a destination must do, end to end. Returns the envelope.
    pub fn verify_origin(&self) -> Envelope {
        let envelope = self.envelope();
        let participant = self
            .registry
            .get(&envelope.origin)
            .unwrap_or_else(|| panic!("origin {} is not in the registry", envelope.origin));
        let key_id = self.header(HEADER_KEY_ID).expect("x-key-id");
        let key = participant
            .key(&key_id.parse().expect("a key id"))
            .unwrap_or_else(|| panic!("key {key_id} is not {}'s", envelope.origin));
        let sig = signing::decode_signature_b64(&self.header(HEADER_SIG).expect("x-sig"))
            .expect("x-sig is a signature");
        signing::verify(&key.public_key, &self.body, &sig)
            .unwrap_or_else(|e| panic!("the origin's signature does not verify: {e}"));
        envelope
    }

    /// Verifies the broker's attestation against the registry and ties it to this delivery
    /// (envelope, kind, origin, body hash, addressed to me); also checks `x-origin` and the
    /// origin's signature.
    pub fn attestation(&self) -> Attestation {
        let envelope = self.verify_origin();
        assert_eq!(
            self.header(HEADER_ORIGIN).as_deref(),
            Some(envelope.origin.as_str()),
            "x-origin"
        );
        let bytes = self.header(HEADER_ATTESTATION).expect("x-attestation");
        let a = attestation::verify(
            bytes.as_bytes(),
            &self
                .header(HEADER_ATTESTATION_SIG)
                .expect("x-attestation-sig"),
            &self
                .header(HEADER_ATTESTATION_KEY_ID)
                .expect("x-attestation-key-id"),
            &self.registry,
            Utc::now(),
        )
        .unwrap_or_else(|e| panic!("the attestation does not verify: {e}"));
        a.check_against(&self.body, &envelope, &self.me)
            .unwrap_or_else(|e| panic!("the attestation does not match the delivery: {e}"));
        a
    }

    /// A notice from the broker: signed by a broker key of the registry, origin = broker.
    pub fn notice(&self) -> Notice {
        let envelope = self.verify_origin();
        assert_eq!(
            &envelope.origin,
            &self.registry.broker().id,
            "a notice comes from the broker"
        );
        assert_eq!(
            self.props.user_id().as_ref().map(|u| u.as_str()),
            Some(self.registry.broker().id.as_str()),
            "user_id of a notice"
        );
        match envelope.body {
            Body::Notice(n) => n,
            other => panic!("not a notice: {other:?}"),
        }
    }

    /// One line for diagnostics.
    pub fn summary(&self) -> String {
        if self.kind() == "notice" {
            let n = wire::decode(&self.body).ok().and_then(|e| match e.body {
                Body::Notice(n) => Some(n),
                _ => None,
            });
            if let Some(n) = n {
                return format!("notice {} about {:?}: {:?}", n.code, n.about, n.detail);
            }
        }
        format!("{} {}", self.kind(), self.message_id())
    }
}

/// The `quarantine` queue, read with the broker's identity.
pub struct Quarantine {
    _transport: Transport,
    consumer: tokio::sync::Mutex<Consumer>,
}

/// One quarantined message.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub body: Vec<u8>,
    pub props: BasicProperties,
}

impl Quarantined {
    pub fn header(&self, name: &str) -> Option<String> {
        match self.props.headers().as_ref()?.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            other => Some(format!("{other:?}")),
        }
    }

    /// The reason code (`x-reason`).
    pub fn reason(&self) -> String {
        self.header("x-reason").unwrap_or_default()
    }
}

impl Quarantine {
    /// The next quarantined message within `within` (acked: taken out of the queue).
    pub async fn recv(&self, within: Duration) -> Option<Quarantined> {
        let mut c = self.consumer.lock().await;
        let d = tokio::time::timeout(within, c.next()).await.ok()??;
        let d = d.expect("reading quarantine");
        d.ack().await.expect("ack");
        Some(Quarantined {
            body: d.body().to_vec(),
            props: d.properties().clone(),
        })
    }

    /// Waits for a quarantined message with reason `code`.
    pub async fn expect(&self, code: &str) -> Quarantined {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(q) = self.recv(left).await else {
                panic!("no {code} in quarantine within {WAIT:?}; saw {seen:?}");
            };
            if q.reason() == code {
                return q;
            }
            seen.push(q.reason());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Synthetic referrals.

/// 64 random lowercase hex characters (a made-up SHA-256).
pub fn random_hash() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// A unique synthetic URL under `images.example`.
pub fn random_url() -> String {
    format!(
        "https://images.example/gallery/{}.jpg",
        &random_hash()[..16]
    )
}

/// One item: `url` hosted in `country`, a random SHA-256, baseline CSAM classification.
pub fn item(url: &str, country: &str) -> Value {
    item_with_hash(url, country, &random_hash())
}

/// [`item`] with a given SHA-256 hash value.
pub fn item_with_hash(url: &str, country: &str, sha256: &str) -> Value {
    json!({
        "url": url,
        "site_type": "image_host",
        "third_party_hosted": false,
        "media_type": "image",
        "hashes": [{"algorithm": "sha256", "value": sha256}],
        "classification": {
            "legal_status": "baseline",
            "assessing_jurisdiction": "FR",
            "category": "csam",
            "victim_age_group": "prepubescent",
            "victim_gender": "female"
        },
        "hosting": {"ip": "192.0.2.10", "country": country},
        "assessed_at": "2026-11-25T09:40:12Z"
    })
}

/// A normal referral of `items`.
pub fn referral(items: Vec<Value>) -> Body {
    referral_with(items, false, None)
}

/// A referral of `items`, urgent or not, with an explicit `to` or not.
pub fn referral_with(items: Vec<Value>, urgent: bool, to: Option<&ParticipantId>) -> Body {
    let mut r = json!({
        "reference": format!("T-{}", &random_hash()[..8]),
        "public_report_received_at": "2026-11-25T08:12:03Z",
        "priority": if urgent { "urgent" } else { "normal" },
        "items": items,
    });
    if urgent {
        r["escalation_reason"] = json!("A child may be in immediate danger (synthetic test).");
    }
    if let Some(to) = to {
        r["to"] = json!(to.as_str());
    }
    let referral: Referral = serde_json::from_value(r).expect("a valid referral body");
    Body::Referral(referral)
}

/// Seconds since `t`, for figures.
pub fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// `created_at` moved by `delta` (to provoke clock skew).
pub fn shifted(mut e: Envelope, delta: chrono::Duration) -> Envelope {
    let t: DateTime<Utc> = e.created_at + delta;
    e.created_at = t;
    e
}
