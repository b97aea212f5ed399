//! `referral-broker bench-e2e` (issue 7): the broker end to end against a minimal relay, on
//! one RabbitMQ node, with the same message mix; and the hidden `bench-relay`, that relay.
//! A benchmark that prints figures, not a test; `ops/bench` runs it on a private node.
//!
//! # What is compared
//!
//! - **baseline**: `referral-broker bench-relay` (a child process), a minimal relay written
//!   with lapin: it consumes `ingress`, reads each body just enough to find its destinations
//!   (items' `hosting.country` → that country's hotline, else the fallback; `urgent` → the
//!   LEA), republishes the bytes to each destination's inbox (`deliver` exchange, `mandatory`,
//!   publisher confirms) and acks once every copy is confirmed. No verification, no dedup, no
//!   audit: the cost of the two RabbitMQ hops alone.
//! - **broker**: `referral-broker serve` (a child process) doing all its work: every check,
//!   routing, URL dedup, attestation, the audit log with group commit, notices, checkpoints,
//!   the admin server. Two settings differ from the defaults, as policy rather than work: flood
//!   control is lifted (the three senders publish far above the default 100/s each) and the
//!   allowed clock skew is an hour (messages are signed before a phase starts).
//!
//! Each system gets a fresh vhost, its own participants (3 hotlines FR, NL, DE and one LEA,
//! provisioned, with certificates from the node's CA and fresh signing keys) and the same
//! mix: referrals of 1–20 items (P(k) ∝ 0.68^k, about 2 KiB on average), every item hosted in
//! another hotline's country, one in ten urgent, every message signed by its sender.
//!
//! # What is measured
//!
//! - warm-up: a few hundred referrals, not counted;
//! - throughput: `--referrals` referrals published by the three hotlines at once (512
//!   confirms in flight each); referrals per second from the first publish to the moment the
//!   last copy is consumed from its destination's inbox (a referral counts once every one of
//!   its destinations consumed it);
//! - latency: `--rate` referrals per second offered for `--latency-secs` (open loop, round
//!   robin over the hotlines); for every delivery, the time from just before its publish to
//!   its consumption at the destination; p50, p99, max;
//! - the CPU time the relay or the broker process used in each phase (`/proc`), and in the
//!   throughput phase also that of the RabbitMQ node (its `node.pid` beside the rabbitmqctl
//!   wrapper) and of this load generator: per referral, where the machine's cores went.
//!   When the machine is saturated, throughput is its cores divided by the total CPU per
//!   referral, so the node's and the generator's share bound the ratio whatever the system
//!   under test costs; the summary prints that bound;
//! - the share of the machine's CPU time the hypervisor stole in the throughput phase
//!   (`/proc/stat`): a round with a high steal measured a slower machine.
//!
//! With `--rounds N` the systems run N times, alternating; the ratio is printed per round
//! (each against the baseline of its own round) and as the median.
//!
//! The consumers ack with `multiple` every 64 deliveries (prefetch 1000), the same for both.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation};
use rand::Rng;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::ids::ParticipantId;
use crate::pki::{DevCa, Validity};
use crate::provision::{self, Desired, Rabbitmqctl};
use crate::registry::{Registry, Role};
use crate::signing::{HEADER_KEY_ID, HEADER_SIG, Signer};
use crate::transport::topology::{
    DELIVER_EXCHANGE, INGRESS_EXCHANGE, INGRESS_QUEUE, INGRESS_ROUTING_KEY,
};
use crate::transport::{Publisher, Topology, Transport, TransportConfig};
use crate::wire::{Body, Envelope, Referral};

/// Measure the broker end to end against a minimal relay (baseline) on one RabbitMQ node.
///
/// Needs a running node (ops/bench starts a private one): its AMQPS port, its PKI directory
/// (ca.pem and ca.key, to issue participant certificates) and its rabbitmqctl wrapper.
/// Prints, for each system, referrals per second end to end over --referrals, and latency
/// p50/p99 at --rate referrals per second offered; then the ratio broker/baseline.
///
/// Example: referral-broker bench-e2e --port 5671 --pki run/pki --rabbitmqctl run/node/rabbitmqctl
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BenchE2eArgs {
    /// The node's AMQPS port on 127.0.0.1.
    #[arg(long, env = "REFBROKER_AMQPS_PORT")]
    port: u16,
    /// The node's PKI directory (ca.pem, ca.key).
    #[arg(long, value_name = "DIR", env = "REFBROKER_PKI_DIR")]
    pki: PathBuf,
    /// rabbitmqctl for the node (the wrapper written by ops/rabbitmq/node).
    #[arg(long, value_name = "PATH", env = "REFBROKER_RABBITMQCTL")]
    rabbitmqctl: PathBuf,
    /// Referrals of the throughput phase.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    referrals: usize,
    /// Referrals per second offered in the latency phase.
    #[arg(long, value_name = "PER_SEC", default_value_t = 500.0)]
    rate: f64,
    /// Length of the latency phase.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    latency_secs: f64,
    /// Which systems, in order.
    #[arg(long, value_delimiter = ',', default_value = "baseline,broker")]
    systems: Vec<System>,
    /// Rounds: each runs every system once, in order; the ratio is printed per round and,
    /// with several, as the median. On a shared machine one round can be off by a third
    /// (see the steal column).
    #[arg(long, value_name = "N", default_value_t = 1)]
    rounds: usize,
    /// `[pipeline] window` of the broker (default: the daemon's own default).
    #[arg(long, value_name = "N")]
    broker_window: Option<usize>,
    /// Scratch directory (default: a new one under the system temp dir, removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the scratch directory (logs of the relay and the broker, the broker's data).
    #[arg(long)]
    keep: bool,
}

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum System {
    Baseline,
    Broker,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Baseline => "baseline",
            System::Broker => "broker",
        }
    }
}

/// The baseline relay (internal to bench-e2e): consume ingress, republish to each
/// destination inbox with confirms, ack. No verification, dedup or audit.
#[derive(Debug, clap::Args)]
pub struct BenchRelayArgs {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    vhost: String,
    #[arg(long)]
    ca: PathBuf,
    /// The broker's certificate and key (the relay runs as the broker user).
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// The network's registry (hotlines by country, the broker's id).
    #[arg(long)]
    registry: PathBuf,
    /// Destination of items whose country has no hotline.
    #[arg(long)]
    fallback: ParticipantId,
    /// Destination of a copy of urgent referrals.
    #[arg(long)]
    lea: ParticipantId,
    /// Prefetch of the ingress consumer (the messages in process at once).
    #[arg(long, default_value_t = 512)]
    prefetch: u16,
}

// ---------------------------------------------------------------------------------------
// The baseline relay.

#[derive(Deserialize)]
struct LightEnvelope {
    body: LightBody,
}

#[derive(Deserialize)]
struct LightBody {
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    items: Vec<LightItem>,
}

#[derive(Deserialize)]
struct LightItem {
    hosting: LightHosting,
}

#[derive(Deserialize)]
struct LightHosting {
    #[serde(default)]
    country: Option<String>,
}

struct Routes {
    by_country: HashMap<String, String>,
    fallback: String,
    lea: String,
}

impl Routes {
    fn destinations(&self, body: &[u8]) -> Vec<String> {
        let Ok(e) = serde_json::from_slice::<LightEnvelope>(body) else {
            return Vec::new();
        };
        let mut out: Vec<String> = e
            .body
            .items
            .iter()
            .map(|i| {
                i.hosting
                    .country
                    .as_ref()
                    .and_then(|c| self.by_country.get(c))
                    .unwrap_or(&self.fallback)
                    .clone()
            })
            .collect();
        if e.body.priority.as_deref() == Some("urgent") {
            out.push(self.lea.clone());
        }
        out.sort();
        out.dedup();
        out
    }
}

pub fn run_relay(args: BenchRelayArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::load(&args.registry).context("the relay's registry")?;
    let routes = Arc::new(Routes {
        by_country: registry
            .participants()
            .filter(|p| p.role == Role::Hotline)
            .filter_map(|p| Some((p.country.clone()?, p.id.to_string())))
            .collect(),
        fallback: args.fallback.to_string(),
        lea: args.lea.to_string(),
    });
    let broker = registry.broker().id.to_string();
    let mut config = TransportConfig::new(args.port, args.vhost, args.ca, args.cert, args.key);
    config.prefetch = args.prefetch;
    config.connection_name = "bench-relay (baseline)".into();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let transport = Transport::connect_declaring(config, Topology::from_registry(&registry))
            .await
            .context("connecting the relay")?;
        let input = transport.open_channel().await?;
        input
            .basic_qos(args.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = input
            .basic_consume(
                INGRESS_QUEUE.into(),
                "bench-relay".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let output = transport.open_channel().await?;
        output
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        eprintln!("relay: consuming {INGRESS_QUEUE}");
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.context("consuming ingress")?;
            let dests = routes.destinations(&delivery.data);
            let props = delivery
                .properties
                .clone()
                .with_user_id(broker.as_str().into());
            let mut confirms = Vec::with_capacity(dests.len());
            for dest in &dests {
                let confirm = output
                    .basic_publish(
                        DELIVER_EXCHANGE.into(),
                        dest.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &delivery.data,
                        props.clone(),
                    )
                    .await
                    .context("publishing to an inbox")?;
                confirms.push(confirm);
            }
            tokio::spawn(async move {
                let mut ok = true;
                for c in confirms {
                    ok &= matches!(c.await, Ok(Confirmation::Ack(None)));
                }
                let done = if ok {
                    delivery.acker.ack(BasicAckOptions::default()).await
                } else {
                    eprintln!("relay: a publish was not confirmed; requeueing");
                    delivery
                        .acker
                        .nack(BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        })
                        .await
                };
                if let Err(e) = done {
                    eprintln!("relay: ack: {e}");
                }
            });
        }
        Ok(ExitCode::SUCCESS)
    })
}

// ---------------------------------------------------------------------------------------
// The network of one system.

const HOTLINES: [(&str, &str); 3] = [("fr", "FR"), ("nl", "NL"), ("de", "DE")];

struct Member {
    id: ParticipantId,
    country: &'static str,
    signer: Signer,
    cert: PathBuf,
    key: PathBuf,
}

struct BenchNet {
    system: System,
    vhost: String,
    dir: PathBuf,
    registry_file: PathBuf,
    broker: Member,
    hotlines: Vec<Member>,
    lea: Member,
}

fn participant(base: &str, suffix: &str) -> anyhow::Result<ParticipantId> {
    format!("{base}-{suffix}")
        .parse()
        .map_err(|e| anyhow!("participant id from {base}: {e}"))
}

impl BenchNet {
    fn new(system: System, args: &BenchE2eArgs, root: &Path) -> anyhow::Result<BenchNet> {
        let suffix = format!("{}{:06x}", system.name(), rand::random::<u32>() >> 8);
        let dir = root.join(system.name());
        std::fs::create_dir_all(&dir)?;
        let ca = DevCa::load(&args.pki).context("the node's CA (ca.pem and ca.key)")?;
        let member = |base: &str, country: &'static str| -> anyhow::Result<Member> {
            let id = participant(base, &suffix)?;
            let issued = ca.issue_participant(&id, Validity::days_from_now(2))?;
            let (cert, key) = issued.write(&dir.join("certs"), id.as_str())?;
            Ok(Member {
                id,
                country,
                signer: Signer::generate()?,
                cert,
                key,
            })
        };
        let broker = member("bench.broker", "")?;
        let hotlines = HOTLINES
            .iter()
            .map(|(n, c)| member(&format!("{n}.hotline"), c))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let lea = member("nl.police", "NL")?;
        let key_entry = |s: &Signer| {
            format!(
                "[[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2020-01-01T00:00:00Z\"\n",
                s.public_key_b64()
            )
        };
        let mut toml = format!(
            "broker = \"{b}\"\n[[participant]]\nid = \"{b}\"\nname = \"Bench broker\"\nrole = \"operator\"\n{}",
            key_entry(&broker.signer),
            b = broker.id
        );
        for (m, role) in hotlines
            .iter()
            .map(|m| (m, "hotline"))
            .chain([(&lea, "lea")])
        {
            toml.push_str(&format!(
                "[[participant]]\nid = \"{}\"\nname = \"Bench {}\"\nrole = \"{role}\"\ncountry = \"{}\"\n{}",
                m.id,
                m.id,
                m.country,
                key_entry(&m.signer)
            ));
        }
        let registry_file = dir.join("registry.toml");
        std::fs::write(&registry_file, toml)?;
        let registry = Registry::load(&registry_file)?;
        let vhost = format!("bench-{suffix}");
        let ctl = Rabbitmqctl::new(&args.rabbitmqctl);
        provision::apply(&ctl, &Desired::from_registry(&registry, &vhost))
            .with_context(|| format!("provisioning vhost {vhost}"))?;
        Ok(BenchNet {
            system,
            vhost,
            dir,
            registry_file,
            broker,
            hotlines,
            lea,
        })
    }

    fn members(&self) -> impl Iterator<Item = &Member> {
        self.hotlines.iter().chain([&self.lea])
    }

    fn transport_config(&self, args: &BenchE2eArgs, m: &Member) -> TransportConfig {
        let mut c = TransportConfig::new(
            args.port,
            &self.vhost,
            args.pki.join(crate::pki::CA_CERT_FILE),
            &m.cert,
            &m.key,
        );
        c.prefetch = CONSUMER_PREFETCH;
        c.connection_name = format!("bench-e2e {}", m.id);
        c
    }

    /// Starts the relay or the broker; returns the child and its log file once it consumes.
    fn start(&self, args: &BenchE2eArgs) -> anyhow::Result<(Child, PathBuf)> {
        let exe = std::env::current_exe().context("finding the referral-broker binary")?;
        let log = self.dir.join(format!("{}.log", self.system.name()));
        let file = std::fs::File::create(&log)?;
        let ca = args.pki.join(crate::pki::CA_CERT_FILE);
        let fallback = &self.hotlines[2].id; // de
        let mut cmd = Command::new(exe);
        let ready = match self.system {
            System::Baseline => {
                cmd.arg("bench-relay")
                    .args(["--port", &args.port.to_string(), "--vhost", &self.vhost])
                    .arg("--ca")
                    .arg(&ca)
                    .arg("--cert")
                    .arg(&self.broker.cert)
                    .arg("--key")
                    .arg(&self.broker.key)
                    .arg("--registry")
                    .arg(&self.registry_file)
                    .args([
                        "--fallback",
                        fallback.as_str(),
                        "--lea",
                        self.lea.id.as_str(),
                    ]);
                "relay: consuming"
            }
            System::Broker => {
                let keys = self.dir.join("keys");
                std::fs::create_dir_all(&keys)?;
                let paths = self.broker.signer.write_key_files(&keys, &self.broker.id)?;
                let window = args
                    .broker_window
                    .map(|w| format!("[pipeline]\nwindow = {w}\n"))
                    .unwrap_or_default();
                let in_flight = args.broker_window.unwrap_or(128);
                let config = format!(
                    "registry = {registry:?}\nsigning_key = {key:?}\ndata_dir = \"data\"\n\
                     [amqp]\nport = {port}\nvhost = {vhost:?}\nca = {ca:?}\ncert = {cert:?}\nkey = {certkey:?}\n\
                     [ingress]\nmax_clock_skew_secs = 3600\n\
                     {window}\
                     [flood]\nrate_per_sec = 1000000.0\nburst = 1000000\nmax_in_flight = {in_flight}\n\
                     [admin]\nlisten = \"127.0.0.1:0\"\n\
                     [routing]\nfallback = \"{fallback}\"\nfallback_lea = \"{lea}\"\n",
                    registry = self.registry_file.display().to_string(),
                    key = paths.private.display().to_string(),
                    port = args.port,
                    vhost = self.vhost,
                    ca = ca.display().to_string(),
                    cert = self.broker.cert.display().to_string(),
                    certkey = self.broker.key.display().to_string(),
                    lea = self.lea.id,
                );
                let file = self.dir.join("broker.toml");
                std::fs::write(&file, config)?;
                cmd.arg("serve")
                    .arg("--config")
                    .arg(&file)
                    .env("RUST_LOG", "info,lapin=warn");
                "serving: consuming"
            }
        };
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting the {}", self.system.name()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(ready) {
                return Ok((child, log));
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the {} exited during start ({status}):\n{text}",
                    self.system.name()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "the {} is not ready after 120 s:\n{text}",
                    self.system.name()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn remove(&self, args: &BenchE2eArgs) {
        let ctl = Rabbitmqctl::new(&args.rabbitmqctl);
        let _ = ctl.run(&["delete_vhost", &self.vhost], None);
        for m in self.members().chain([&self.broker]) {
            let _ = ctl.run(&["delete_user", m.id.as_str()], None);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The message mix.

const CONSUMER_PREFETCH: u16 = 1000;
const ACK_EVERY: u64 = 64;
const PUBLISH_WINDOW: usize = 512;

/// A signed referral ready to publish, and how many destinations it has.
struct Prepared {
    id: String,
    bytes: Vec<u8>,
    props: BasicProperties,
    destinations: u16,
}

fn random_hex(rng: &mut impl Rng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// 1–20 items, P(k) ∝ 0.68^k (about 3.1 on average: bodies of about 2 KiB).
fn item_count(rng: &mut impl Rng) -> usize {
    let mut k = 1;
    while k < 20 && rng.random_bool(0.68) {
        k += 1;
    }
    k
}

fn synthetic_item(rng: &mut impl Rng, country: &str) -> serde_json::Value {
    let nets = ["192.0.2", "198.51.100", "203.0.113"];
    serde_json::json!({
        "url": format!("https://{}.example/gallery/{}/{}.jpg",
            random_hex(rng, 4), random_hex(rng, 3), random_hex(rng, 8)),
        "site_type": "image_host",
        "third_party_hosted": false,
        "media_type": "image",
        "hashes": [
            {"algorithm": "sha256", "value": random_hex(rng, 32)},
            {"algorithm": "md5", "value": random_hex(rng, 16)}
        ],
        "classification": {
            "legal_status": "baseline",
            "assessing_jurisdiction": "FR",
            "category": "csam",
            "victim_age_group": "prepubescent",
            "victim_gender": "female"
        },
        "hosting": {
            "ip": format!("{}.{}", nets[rng.random_range(0..3)], rng.random_range(1..255)),
            "country": country
        },
        "assessed_at": "2026-11-25T09:40:12Z"
    })
}

/// One signed referral from hotline `from`: every item hosted in another hotline's country.
fn prepare(net: &BenchNet, from: usize, rng: &mut impl Rng) -> anyhow::Result<Prepared> {
    let origin = &net.hotlines[from];
    let others: Vec<&Member> = net
        .hotlines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != from)
        .map(|(_, m)| m)
        .collect();
    let urgent = rng.random_range(0..10) == 0;
    let mut dests = std::collections::BTreeSet::new();
    let items: Vec<serde_json::Value> = (0..item_count(rng))
        .map(|_| {
            let m = others[rng.random_range(0..others.len())];
            dests.insert(m.id.as_str());
            synthetic_item(rng, m.country)
        })
        .collect();
    if urgent {
        dests.insert(net.lea.id.as_str());
    }
    let mut r = serde_json::json!({
        "reference": format!("B-{}", random_hex(rng, 4)),
        "public_report_received_at": "2026-11-25T08:12:03Z",
        "priority": if urgent { "urgent" } else { "normal" },
        "items": items,
    });
    if urgent {
        r["escalation_reason"] =
            serde_json::json!("A child may be in immediate danger (synthetic benchmark).");
    }
    let referral: Referral = serde_json::from_value(r).context("a synthetic referral")?;
    let envelope = Envelope::new(origin.id.clone(), Body::Referral(referral));
    let bytes = envelope.to_bytes();
    let mut headers = FieldTable::default();
    headers.insert(
        HEADER_SIG.into(),
        AMQPValue::LongString(LongString::from(origin.signer.sign_b64(&bytes))),
    );
    headers.insert(
        HEADER_KEY_ID.into(),
        AMQPValue::LongString(LongString::from(origin.signer.key_id().as_str())),
    );
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_type("referral".into())
        .with_message_id(envelope.id.as_str().into())
        .with_user_id(origin.id.as_str().into())
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
        .with_delivery_mode(2)
        .with_headers(headers);
    Ok(Prepared {
        id: envelope.id.to_string(),
        bytes,
        props,
        destinations: dests.len() as u16,
    })
}

// ---------------------------------------------------------------------------------------
// Tracking what was consumed.

struct Pending {
    sent: Option<Instant>,
    remaining: u16,
    phase: usize,
}

#[derive(Default)]
struct TrackInner {
    pending: HashMap<String, Pending>,
    done: [usize; 3],
    last_done: [Option<Instant>; 3],
    latencies: [Vec<Duration>; 3],
    deliveries: [usize; 3],
    /// Checkpoints, notices, anything not a tracked referral.
    other: BTreeMap<String, usize>,
}

#[derive(Default)]
struct Tracker {
    inner: Mutex<TrackInner>,
    progress: Notify,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expect(&self, p: &Prepared, phase: usize) {
        self.lock().pending.insert(
            p.id.clone(),
            Pending {
                sent: None,
                remaining: p.destinations,
                phase,
            },
        );
    }

    fn sent(&self, id: &str) {
        if let Some(p) = self.lock().pending.get_mut(id) {
            p.sent = Some(Instant::now());
        }
    }

    fn consumed(&self, kind: Option<&str>, id: Option<&str>) {
        let now = Instant::now();
        let mut t = self.lock();
        let key = id.filter(|id| t.pending.contains_key(*id));
        let Some(id) = key else {
            *t.other.entry(kind.unwrap_or("?").to_owned()).or_default() += 1;
            return;
        };
        let finished = {
            let Some(p) = t.pending.get_mut(id) else {
                return;
            };
            p.remaining = p.remaining.saturating_sub(1);
            (p.phase, p.sent, p.remaining == 0)
        };
        let (phase, sent, all) = finished;
        t.deliveries[phase] += 1;
        if let Some(s) = sent {
            t.latencies[phase].push(now - s);
        }
        if all {
            t.pending.remove(id);
            t.done[phase] += 1;
            t.last_done[phase] = Some(now);
            drop(t);
            self.progress.notify_waiters();
        }
    }

    /// Waits until `n` referrals of `phase` are complete, or `limit` passes.
    async fn wait(&self, phase: usize, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.progress.notified();
            let done = self.lock().done[phase];
            if done >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let done = self.lock().done[phase];
                if done >= n {
                    return Ok(());
                }
                bail!("only {done} of {n} referrals arrived everywhere within {limit:?}");
            }
        }
    }
}

/// The `type` property (the envelope kind).
fn kind_of(props: &BasicProperties) -> Option<&str> {
    props.kind().as_ref().map(|k| k.as_str())
}

/// Consumes `queue` over `transport` into `tracker` until the task is aborted.
async fn consume(transport: Transport, queue: String, tracker: Arc<Tracker>) -> anyhow::Result<()> {
    let channel = transport.open_channel().await?;
    channel
        .basic_qos(CONSUMER_PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut n = 0u64;
    while let Some(d) = consumer.next().await {
        let d = d?;
        tracker.consumed(
            kind_of(&d.properties),
            d.properties.message_id().as_ref().map(|m| m.as_str()),
        );
        n += 1;
        if n.is_multiple_of(ACK_EVERY) {
            d.acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .context("ack")?;
        }
    }
    Ok(())
}

/// Publishes `messages` with up to [`PUBLISH_WINDOW`] confirms pending.
async fn publish_fast(
    publisher: &Publisher,
    messages: &[Prepared],
    tracker: &Tracker,
) -> anyhow::Result<()> {
    let mut pending = FuturesUnordered::new();
    for m in messages {
        while pending.len() >= PUBLISH_WINDOW {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
        tracker.sent(&m.id);
        let confirm = publisher
            .send(
                INGRESS_EXCHANGE,
                INGRESS_ROUTING_KEY,
                &m.bytes,
                m.props.clone(),
            )
            .await?;
        pending.push(confirm.wait());
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

/// CPU seconds (user + system) a process used so far, from /proc (0 when unavailable).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The figures of one system.
#[derive(Debug, Default, Clone)]
struct Figures {
    referrals: usize,
    deliveries: usize,
    secs: f64,
    cpu_throughput: f64,
    /// CPU seconds of the RabbitMQ node in the throughput phase (None: its pid is unknown).
    cpu_node_throughput: Option<f64>,
    /// CPU seconds of this load generator (publishers, consumers) in the throughput phase.
    cpu_generator_throughput: f64,
    /// Other messages the participants consumed in the throughput phase (receipts, notices).
    other_throughput: usize,
    /// Share of the machine's CPU time the hypervisor took (steal) in the throughput phase.
    steal: Option<f64>,
    offered: f64,
    achieved_rate: f64,
    latency_n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu_latency: f64,
    mean_bytes: f64,
    mean_items_dests: f64,
    other: BTreeMap<String, usize>,
}

impl Figures {
    fn per_sec(&self) -> f64 {
        self.referrals as f64 / self.secs.max(1e-9)
    }

    /// Microseconds of CPU per referral of the throughput phase.
    fn us_per_referral(&self, cpu_secs: f64) -> f64 {
        cpu_secs * 1e6 / self.referrals.max(1) as f64
    }

    /// CPU per referral of everything but the system under test (node + generator), in µs.
    fn others_us(&self) -> Option<f64> {
        self.cpu_node_throughput
            .map(|n| self.us_per_referral(n + self.cpu_generator_throughput))
    }
}

/// The machine's CPU time from /proc/stat: (steal, total) in ticks.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
    let total = f.iter().take(8).sum();
    Some((*f.get(7)?, total))
}

/// The pid of the RabbitMQ node (`node.pid`, written by ops/rabbitmq/node beside its
/// rabbitmqctl wrapper), if it names a live process.
fn node_pid(rabbitmqctl: &Path) -> Option<u32> {
    let file = rabbitmqctl.parent()?.join("node.pid");
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

async fn measure(args: &BenchE2eArgs, net: &BenchNet, pid: u32) -> anyhow::Result<Figures> {
    let tracker = Arc::new(Tracker::default());
    let mut transports = Vec::new();
    let mut consumers = Vec::new();
    for m in net.members() {
        let t = Transport::connect(net.transport_config(args, m))
            .await
            .with_context(|| format!("connecting {}", m.id))?;
        consumers.push(tokio::spawn(consume(
            t.clone(),
            m.id.inbox_queue(),
            tracker.clone(),
        )));
        transports.push(t);
    }
    let publishers: Vec<Publisher> = transports[..3].iter().map(|t| t.publisher()).collect();
    let mut rng = rand::rng();
    let mut prepare_batch = |n: usize, phase: usize| -> anyhow::Result<Vec<Vec<Prepared>>> {
        let mut per = vec![Vec::new(), Vec::new(), Vec::new()];
        for i in 0..n {
            let p = prepare(net, i % 3, &mut rng)?;
            tracker.expect(&p, phase);
            per[i % 3].push(p);
        }
        Ok(per)
    };
    let wait_limit = |n: usize| Duration::from_secs(120) + Duration::from_millis(20 * n as u64);
    let mut f = Figures::default();

    // Warm-up.
    let warm = (args.referrals / 20).clamp(200, 2000);
    let batches = prepare_batch(warm, 0)?;
    let runs = batches
        .iter()
        .zip(&publishers)
        .map(|(b, p)| publish_fast(p, b, &tracker));
    futures_util::future::try_join_all(runs).await?;
    tracker.wait(0, warm, wait_limit(warm)).await?;

    // Throughput.
    let n = args.referrals;
    let batches = prepare_batch(n, 1)?;
    let all: Vec<&Prepared> = batches.iter().flatten().collect();
    f.mean_bytes = all.iter().map(|p| p.bytes.len()).sum::<usize>() as f64 / n.max(1) as f64;
    f.mean_items_dests =
        all.iter().map(|p| p.destinations as usize).sum::<usize>() as f64 / n.max(1) as f64;
    let node = node_pid(&args.rabbitmqctl);
    let me = std::process::id();
    let cpu0 = cpu_secs(pid);
    let node0 = node.map(cpu_secs);
    let me0 = cpu_secs(me);
    let other0: usize = tracker.lock().other.values().sum();
    let ticks0 = machine_ticks();
    let t0 = Instant::now();
    let runs = batches
        .iter()
        .zip(&publishers)
        .map(|(b, p)| publish_fast(p, b, &tracker));
    futures_util::future::try_join_all(runs).await?;
    tracker.wait(1, n, wait_limit(n)).await?;
    {
        let t = tracker.lock();
        f.referrals = n;
        f.deliveries = t.deliveries[1];
        f.secs = t.last_done[1].map_or(0.0, |e| (e - t0).as_secs_f64());
        f.other_throughput = t.other.values().sum::<usize>().saturating_sub(other0);
    }
    f.cpu_throughput = cpu_secs(pid) - cpu0;
    f.cpu_node_throughput = node.zip(node0).map(|(p, c0)| cpu_secs(p) - c0);
    f.cpu_generator_throughput = cpu_secs(me) - me0;
    f.steal = ticks0
        .zip(machine_ticks())
        .and_then(|((s0, t0), (s1, t1))| {
            (t1 > t0).then(|| s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
        });
    drop(batches);

    // Latency at a fixed offered load (open loop).
    let count = (args.rate * args.latency_secs).round() as usize;
    let batches = prepare_batch(count, 2)?;
    let mut queues: Vec<std::vec::IntoIter<Prepared>> =
        batches.into_iter().map(|b| b.into_iter()).collect();
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut confirms = FuturesUnordered::new();
    for i in 0..count {
        let due = t0 + Duration::from_secs_f64(i as f64 / args.rate);
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(due.into()) => break,
                Some(r) = confirms.next(), if !confirms.is_empty() => { let r: Result<(), crate::transport::PublishError> = r; r?; }
            }
        }
        let Some(m) = queues[i % 3].next() else {
            continue;
        };
        tracker.sent(&m.id);
        let pc = publishers[i % 3]
            .send(INGRESS_EXCHANGE, INGRESS_ROUTING_KEY, &m.bytes, m.props)
            .await?;
        confirms.push(pc.wait());
    }
    let offered_for = t0.elapsed();
    while let Some(r) = confirms.next().await {
        r?;
    }
    tracker.wait(2, count, wait_limit(count)).await?;
    f.cpu_latency = cpu_secs(pid) - cpu0;
    {
        let mut t = tracker.lock();
        f.offered = args.rate;
        f.achieved_rate = count as f64 / offered_for.as_secs_f64().max(1e-9);
        let lat = &mut t.latencies[2];
        lat.sort();
        f.latency_n = lat.len();
        f.p50 = percentile(lat, 50.0);
        f.p99 = percentile(lat, 99.0);
        f.max = lat.last().copied().unwrap_or_default();
        f.other = t.other.clone();
    }
    for c in consumers {
        c.abort();
    }
    for t in transports {
        t.close().await;
    }
    Ok(f)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(args: BenchE2eArgs) -> anyhow::Result<ExitCode> {
    if args.referrals == 0 || args.rate <= 0.0 || args.latency_secs <= 0.0 || args.rounds == 0 {
        bail!("--referrals, --rate, --latency-secs and --rounds must be positive");
    }
    let (root, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("referral-broker-bench-e2e-{}", std::process::id())),
            !args.keep,
        ),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    println!(
        "bench-e2e: node 127.0.0.1:{}, {} referrals for throughput, {}/s offered for {} s for \
         latency; scratch {}",
        args.port,
        args.referrals,
        args.rate,
        args.latency_secs,
        root.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut results: Vec<(usize, System, Figures)> = Vec::new();
    let runs = (1..=args.rounds).flat_map(|r| args.systems.iter().map(move |&s| (r, s)));
    for (round, system) in runs {
        if args.rounds > 1 {
            println!("--- round {round} of {}", args.rounds);
        }
        let net = BenchNet::new(system, &args, &root)?;
        let (mut child, log) = net.start(&args)?;
        println!(
            "{}: running (pid {}, log {})",
            system.name(),
            child.id(),
            log.display()
        );
        let measured = runtime.block_on(measure(&args, &net, child.id()));
        // SIGTERM, so that the broker drains and closes its store; SIGKILL after 60 s.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        net.remove(&args);
        let f = measured.with_context(|| format!("measuring the {}", system.name()))?;
        println!(
            "{}: {} referrals in {:.2} s = {:.0} referrals/s ({:.0} deliveries/s), process CPU \
             {:.1} s; at {:.0}/s offered ({:.0}/s achieved): p50 {}, p99 {}, max {} over {} \
             deliveries; also received {:?}",
            system.name(),
            f.referrals,
            f.secs,
            f.per_sec(),
            f.deliveries as f64 / f.secs.max(1e-9),
            f.cpu_throughput,
            f.offered,
            f.achieved_rate,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            f.latency_n,
            f.other
        );
        results.push((round, system, f));
    }
    if remove {
        let _ = std::fs::remove_dir_all(&root);
    }

    println!();
    if let Some((_, _, f)) = results.first() {
        println!(
            "message mix: referrals of 1–20 items, mean body {:.0} bytes, {:.2} destinations per \
             referral on average, one in ten urgent, every message signed; 3 hotlines + 1 LEA",
            f.mean_bytes, f.mean_items_dests
        );
    }
    let label = |round: usize, s: System| match args.rounds {
        1 => s.name().to_owned(),
        _ => format!("{} #{round}", s.name()),
    };
    println!(
        "{:<12} {:>12} {:>13} {:>9} {:>11} {:>11} {:>11}",
        "system", "referrals/s", "deliveries/s", "CPU s", "p50", "p99", "max"
    );
    for (round, s, f) in &results {
        println!(
            "{:<12} {:>12.0} {:>13.0} {:>9.1} {:>11} {:>11} {:>11}",
            label(*round, *s),
            f.per_sec(),
            f.deliveries as f64 / f.secs.max(1e-9),
            f.cpu_throughput,
            ms(f.p50),
            ms(f.p99),
            ms(f.max)
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!();
    println!("CPU per referral in the throughput phase (µs), on this machine's {cores} cores:");
    println!(
        "{:<12} {:>9} {:>9} {:>10} {:>9} {:>13} {:>7} {:>9}",
        "system", "itself", "node", "generator", "total", "machine busy", "steal", "msgs/ref"
    );
    let show = |v: Option<f64>, unit: &str| v.map_or("?".to_owned(), |v| format!("{v:.0}{unit}"));
    for (round, s, f) in &results {
        let node = f.cpu_node_throughput.map(|n| f.us_per_referral(n));
        let total = f
            .others_us()
            .map(|o| o + f.us_per_referral(f.cpu_throughput));
        let busy = total.map(|t| t * f.per_sec() / 1e6 / cores as f64 * 100.0);
        // Messages the node carried per referral: the submit, the deliveries, and the
        // others the participants consumed (receipts, notices, status).
        let msgs =
            (f.referrals + f.deliveries + f.other_throughput) as f64 / f.referrals.max(1) as f64;
        println!(
            "{:<12} {:>9.0} {:>9} {:>10.0} {:>9} {:>13} {:>7} {:>9}",
            label(*round, *s),
            f.us_per_referral(f.cpu_throughput),
            show(node, ""),
            f.us_per_referral(f.cpu_generator_throughput),
            show(total, ""),
            show(busy, " %"),
            show(f.steal.map(|x| x * 100.0), " %"),
            format!("{msgs:.2}")
        );
    }
    println!();
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        let get = |s: System| {
            results
                .iter()
                .find(|(r, x, _)| *r == round && *x == s)
                .map(|(_, _, f)| f)
        };
        let (Some(b), Some(r)) = (get(System::Baseline), get(System::Broker)) else {
            continue;
        };
        let ratio = r.per_sec() / b.per_sec().max(1e-9);
        ratios.push(ratio);
        let which = match args.rounds {
            1 => String::new(),
            _ => format!(" (round {round})"),
        };
        println!(
            "ratio broker/baseline{which}: {ratio:.2} (throughput; goal ≥ 0.8); broker p99 at \
             {:.0}/s: {} (goal < 50 ms)",
            r.offered,
            ms(r.p99)
        );
        let b_total = b
            .others_us()
            .map(|o| o + b.us_per_referral(b.cpu_throughput));
        if let (Some(bt), Some(ro)) = (b_total, r.others_us()) {
            println!(
                "  bound on a saturated machine: the node and the generator alone use {ro:.0} \
                 µs per referral with the broker against {bt:.0} µs for everything with the \
                 baseline, so a broker costing nothing would reach ≈ {:.2}; at its measured \
                 cost, 0.8 needs it at ≤ {:.0} µs per referral",
                bt / ro.max(1e-9),
                (bt / 0.8 - ro).max(0.0)
            );
        }
    }
    if ratios.len() > 1 {
        ratios.sort_by(f64::total_cmp);
        let mid = ratios.len() / 2;
        let median = if ratios.len() % 2 == 1 {
            ratios[mid]
        } else {
            (ratios[mid - 1] + ratios[mid]) / 2.0
        };
        println!(
            "ratio broker/baseline, median of {} rounds: {median:.2} (range {:.2}–{:.2})",
            ratios.len(),
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    Ok(ExitCode::SUCCESS)
}
