//! The participant client (issue 4, items 6 and 7) against the private node: submit → inbox →
//! receipt → status update, end to end; a second copy of an envelope id is dropped, also after
//! the inbox is reopened; a tampered body or a wrong signature is never handed over as genuine
//! (it is parked and a copy kept), and a valid message right after still flows; the CLI's
//! `submit` (also `--envelope`), `inbox` (`--json`, `--follow`), `status-update` and their exit
//! codes.
//!
//! Two brokers:
//! - [`StubBroker`], the test itself acting as the broker: it consumes `ingress` with the
//!   broker's certificate, runs the real ingress checks ([`referral_broker::ingress::verify`]),
//!   and forwards the origin's bytes and signature unchanged with a broker-signed attestation.
//!   It can also publish what a real broker never should (a second copy, tampered bytes, a
//!   wrong signature), to show what the client does with them.
//! - the real daemon (`referral-broker serve`, through the DAEMON helper's
//!   [`Network`](super::network::Network)): the `daemon_*` tests show that what the client
//!   signs passes the daemon's checks, that the client verifies the daemon's attestations and
//!   its own signed notices, and that receipts and statuses travel back to the origin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SubsecRound as _, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use referral_broker::ids::{EnvelopeId, ParticipantId};
use referral_broker::ingress::{self, AmqpMeta, Policy};
use referral_broker::participant::config::BrokerConfig;
use referral_broker::participant::{
    InboxEvent, InboxMode, Participant, ParticipantConfig, Problem, Received,
};
use referral_broker::provision::{self, Desired, Rabbitmqctl};
use referral_broker::registry::Registry;
use referral_broker::route::RouteReason;
use referral_broker::signing::{self, Signer};
use referral_broker::transport::topology::{DELIVER_EXCHANGE, INGRESS_QUEUE, PARKED_QUEUE};
use referral_broker::transport::{Consumer, Delivery, Topology, Transport, TransportConfig};
use referral_broker::wire::attestation::{
    self, Attestation, AttestedItem, HEADER_ATTESTATION, HEADER_ATTESTATION_KEY_ID,
    HEADER_ATTESTATION_SIG, HEADER_ORIGIN,
};
use referral_broker::wire::{self, Body, Envelope, Kind, Outcome, State, Status};

use super::network::{self, Network, random_url};
use super::util::{Certs, TestVhost};

/// The referral of the contract's `minimal` example: one item hosted in NL.
pub const REFERRAL_BODY: &str = r#"{
  "reference": "FR-2026-004211",
  "public_report_received_at": "2026-11-25T08:12:03Z",
  "priority": "normal",
  "items": [{
    "url": "https://images.example/gallery/2026/11/a7f3c9.jpg",
    "site_type": "image_host", "third_party_hosted": false, "media_type": "image",
    "hashes": [{"algorithm": "sha256",
                "value": "1c5f39e191095278da7bb8a0aece3e47de6e169f233c5ae6e90052a38b8dd277"}],
    "classification": {"legal_status": "baseline", "assessing_jurisdiction": "FR",
                       "category": "csam", "victim_age_group": "prepubescent",
                       "victim_gender": "female"},
    "hosting": {"ip": "192.0.2.10", "country": "NL"},
    "assessed_at": "2026-11-25T09:40:12Z"
  }]
}"#;

/// How long a test waits for a message to arrive.
const WAIT: Duration = Duration::from_secs(20);

/// One participant of a test network: its id, key, certificate and `participant.toml`.
pub struct Member {
    pub id: ParticipantId,
    pub signer: Signer,
    pub config: ParticipantConfig,
    pub config_file: PathBuf,
}

/// A test network on the run's node: a vhost, a registry (broker + hotlines `fr`, `nl`, `de`),
/// users and permissions provisioned from it, the topology declared, and each hotline's files.
pub struct TestNet {
    pub vhost: TestVhost,
    pub certs: Certs,
    pub registry: Registry,
    pub broker_id: ParticipantId,
    pub broker_signer: Signer,
    pub members: BTreeMap<&'static str, Member>,
    pub dir: tempfile::TempDir,
}

impl TestNet {
    pub async fn new(test: &str) -> Self {
        let vhost = TestVhost::new(test);
        let certs = Certs::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let broker_id = vhost.participant("net.broker");
        let broker_signer = Signer::generate().expect("key");
        let names = [("fr", "FR"), ("nl", "NL"), ("de", "DE")];
        let signers: Vec<(&'static str, &'static str, ParticipantId, Signer)> = names
            .iter()
            .map(|(n, c)| {
                (
                    *n,
                    *c,
                    vhost.participant(&format!("{n}.hotline")),
                    Signer::generate().expect("key"),
                )
            })
            .collect();
        let key = |s: &Signer| {
            format!(
                "[[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2026-01-01T00:00:00Z\"\n",
                s.public_key_b64()
            )
        };
        let mut toml = format!(
            "broker = \"{broker_id}\"\n[[participant]]\nid = \"{broker_id}\"\nname = \"Test broker\"\nrole = \"operator\"\n{}",
            key(&broker_signer)
        );
        for (n, country, id, signer) in &signers {
            toml.push_str(&format!(
                "[[participant]]\nid = \"{id}\"\nname = \"Hotline {n}\"\nrole = \"hotline\"\ncountry = \"{country}\"\n{}",
                key(signer)
            ));
        }
        let registry_file = dir.path().join("registry.toml");
        std::fs::write(&registry_file, &toml).expect("write registry");
        let registry = Registry::load(&registry_file).expect("registry");

        let ctl = Rabbitmqctl::new(vhost.node().rabbitmqctl_path());
        let desired = Desired::from_registry(&registry, vhost.name());
        tokio::task::block_in_place(|| provision::apply(&ctl, &desired)).expect("provision");

        let mut members = BTreeMap::new();
        for (n, _, id, signer) in signers {
            let keys = dir.path().join("keys");
            std::fs::create_dir_all(&keys).expect("keys dir");
            let paths = signer.write_key_files(&keys, &id).expect("key files");
            let cert = certs.participant(&id);
            let config = ParticipantConfig {
                participant: id.clone(),
                registry: registry_file.clone(),
                data_dir: dir.path().join(format!("data-{n}")),
                signing_key: paths.private,
                broker: BrokerConfig {
                    host: "localhost".into(),
                    port: vhost.node().amqps_port,
                    vhost: vhost.name().to_owned(),
                    ca: certs.ca_cert(),
                    certificate: cert.cert,
                    key: cert.key,
                    heartbeat: Duration::from_secs(10),
                    confirm_timeout: Duration::from_secs(10),
                    connect_timeout: Duration::from_secs(10),
                    prefetch: 16,
                },
            };
            let config_file = dir.path().join(format!("participant-{n}.toml"));
            std::fs::write(&config_file, config.to_toml()).expect("write participant.toml");
            members.insert(
                n,
                Member {
                    id,
                    signer,
                    config,
                    config_file,
                },
            );
        }
        Self {
            vhost,
            certs,
            registry,
            broker_id,
            broker_signer,
            members,
            dir,
        }
    }

    pub fn member(&self, name: &str) -> &Member {
        self.members
            .get(name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    pub async fn connect(&self, name: &str) -> Participant {
        Participant::connect(self.member(name).config.clone())
            .await
            .unwrap_or_else(|e| panic!("{name} connects: {e}"))
    }

    /// The broker's transport config (its own certificate), topology declared on connect.
    pub async fn broker_transport(&self) -> Transport {
        let cert = self.certs.participant(&self.broker_id);
        let mut config = TransportConfig::new(
            self.vhost.node().amqps_port,
            self.vhost.name(),
            self.certs.ca_cert(),
            cert.cert,
            cert.key,
        );
        config.confirm_timeout = Duration::from_secs(10);
        config.connection_name = "test stub broker".into();
        Transport::connect_declaring(config, Topology::from_registry(&self.registry))
            .await
            .expect("broker connects and declares the topology")
    }
}

/// A forwarded delivery as the stub publishes it: the origin's bytes and signature headers,
/// plus the attestation.
#[derive(Debug, Clone)]
pub struct Forward {
    pub body: Vec<u8>,
    pub kind: String,
    pub message_id: String,
    pub sig: String,
    pub key_id: String,
    pub origin: String,
    pub attestation: Option<attestation::SignedAttestation>,
}

/// The test acting as the broker; see the module documentation.
pub struct StubBroker {
    pub transport: Transport,
    ingress: tokio::sync::Mutex<Consumer>,
    signer: Signer,
    registry: Registry,
    seq: Mutex<u64>,
    /// referral id → origin, so receipts and statuses go back to the origin.
    origins: Mutex<BTreeMap<EnvelopeId, ParticipantId>>,
}

impl StubBroker {
    pub async fn start(net: &TestNet) -> Arc<Self> {
        let transport = net.broker_transport().await;
        let ingress = transport
            .consume(INGRESS_QUEUE)
            .await
            .expect("broker consumes ingress");
        Arc::new(Self {
            transport,
            ingress: tokio::sync::Mutex::new(ingress),
            signer: Signer::from_seed(seed_of(&net.broker_signer)),
            registry: net.registry.clone(),
            seq: Mutex::new(0),
            origins: Mutex::new(BTreeMap::new()),
        })
    }

    /// Takes `n` messages from `ingress`, checks them, forwards each; returns the forwards.
    pub async fn forward(&self, n: usize) -> Vec<(ParticipantId, Forward)> {
        let routed = self.take(n).await;
        for (to, fwd) in &routed {
            self.publish(to, fwd).await;
        }
        routed
    }

    /// Takes `n` messages from `ingress` and checks them, without forwarding them.
    pub async fn take(&self, n: usize) -> Vec<(ParticipantId, Forward)> {
        let mut ingress = self.ingress.lock().await;
        let mut out = Vec::new();
        for _ in 0..n {
            let d = tokio::time::timeout(WAIT, ingress.next())
                .await
                .expect("a message on ingress in time")
                .expect("consumer open")
                .expect("delivery");
            out.push(self.route(&d));
            d.ack().await.expect("ack ingress");
        }
        out
    }

    /// Checks an ingress delivery like the daemon does, and decides where it goes.
    fn route(&self, d: &Delivery) -> (ParticipantId, Forward) {
        let header = |k: &str| match d.header(k) {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            _ => None,
        };
        let sig = header(signing::HEADER_SIG);
        let key_id = header(signing::HEADER_KEY_ID);
        let kind = d.properties().kind().as_ref().map(|k| k.to_string());
        let meta = AmqpMeta {
            user_id: d.user_id(),
            message_id: d.message_id(),
            kind: kind.as_deref(),
            sig_b64: sig.as_deref(),
            key_id: key_id.as_deref(),
        };
        let verified = ingress::verify(
            d.body(),
            &meta,
            &self.registry,
            Utc::now(),
            &|_| false,
            &Policy::default(),
        )
        .unwrap_or_else(|r| panic!("the client's message passes the ingress checks: {r}"));
        let e = &verified.envelope;
        let to = match &e.body {
            Body::Referral(r) => {
                let country = r.items[0].hosting.country.to_string();
                let to = self
                    .registry
                    .participants()
                    .find(|p| p.country.as_deref() == Some(&country))
                    .map(|p| p.id.clone())
                    .expect("a hotline for the item's country");
                self.origins
                    .lock()
                    .expect("lock")
                    .insert(e.id.clone(), e.origin.clone());
                to
            }
            Body::Receipt(r) => self.origin_of(&r.referral),
            Body::Status(s) => self.origin_of(&s.referral),
            other => panic!("the stub does not forward {:?}", other.kind()),
        };
        let fwd = Forward {
            body: d.body().to_vec(),
            kind: e.kind.to_string(),
            message_id: e.id.to_string(),
            sig: sig.expect("x-sig"),
            key_id: key_id.expect("x-key-id"),
            origin: e.origin.to_string(),
            attestation: Some(self.attest(e, d.body(), &to)),
        };
        (to, fwd)
    }

    fn origin_of(&self, referral: &EnvelopeId) -> ParticipantId {
        self.origins
            .lock()
            .expect("lock")
            .get(referral)
            .cloned()
            .expect("a referral the stub forwarded")
    }

    /// The broker's signed attestation for `envelope` (bytes `body`) going to `to`.
    pub fn attest(
        &self,
        envelope: &Envelope,
        body: &[u8],
        to: &ParticipantId,
    ) -> attestation::SignedAttestation {
        let mut seq = self.seq.lock().expect("lock");
        *seq += 1;
        let (referral, items) = match &envelope.body {
            Body::Referral(r) => (
                None,
                (0..r.items.len() as u16)
                    .map(|index| AttestedItem {
                        index,
                        reasons: vec![RouteReason::Country],
                    })
                    .collect(),
            ),
            Body::Receipt(r) => (Some(r.referral.clone()), vec![]),
            Body::Status(s) => (Some(s.referral.clone()), vec![]),
            Body::Retraction(r) => (Some(r.referral.clone()), vec![]),
            _ => (None, vec![]),
        };
        Attestation {
            v: 1,
            envelope: envelope.id.clone(),
            kind: envelope.kind,
            origin: envelope.origin.clone(),
            destination: to.clone(),
            body_sha256: attestation::sha256_hex(body),
            referral,
            items,
            duplicates: vec![],
            known_hashes: vec![],
            known_hashes_truncated: false,
            audit_seq: *seq,
            attested_at: Utc::now().trunc_subsecs(3),
        }
        .sign(&self.signer)
        .expect("a valid attestation")
    }

    /// Publishes `fwd` to `to`'s inbox, as the broker.
    pub async fn publish(&self, to: &ParticipantId, fwd: &Forward) {
        let mut headers = FieldTable::default();
        let mut put = |k: &str, v: &[u8]| {
            headers.insert(
                k.into(),
                AMQPValue::LongString(LongString::from(v.to_vec())),
            );
        };
        put(signing::HEADER_SIG, fwd.sig.as_bytes());
        put(signing::HEADER_KEY_ID, fwd.key_id.as_bytes());
        put(HEADER_ORIGIN, fwd.origin.as_bytes());
        if let Some(a) = &fwd.attestation {
            put(HEADER_ATTESTATION, &a.bytes);
            put(HEADER_ATTESTATION_SIG, a.sig_b64.as_bytes());
            put(HEADER_ATTESTATION_KEY_ID, a.key_id.as_str().as_bytes());
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(fwd.kind.as_str().into())
            .with_message_id(fwd.message_id.as_str().into())
            .with_user_id(self.registry.broker().id.as_str().into())
            .with_delivery_mode(2)
            .with_headers(headers);
        self.transport
            .publisher()
            .publish(DELIVER_EXCHANGE, to.as_str(), &fwd.body, props)
            .await
            .expect("publish to the inbox is confirmed");
    }

    /// Messages in the operator's `parked` queue (taken and acknowledged).
    pub async fn take_parked(&self, expected: usize) -> Vec<Vec<u8>> {
        let mut parked = self
            .transport
            .consume(PARKED_QUEUE)
            .await
            .expect("broker reads parked");
        let mut out = Vec::new();
        for _ in 0..expected {
            let d = tokio::time::timeout(WAIT, parked.next())
                .await
                .expect("a parked message in time")
                .expect("consumer open")
                .expect("delivery");
            out.push(d.body().to_vec());
            d.ack().await.expect("ack parked");
        }
        out
    }
}

/// The seed of a signer, through its key file format (tests only).
fn seed_of(signer: &Signer) -> [u8; 32] {
    let dir = tempfile::tempdir().expect("tempdir");
    let id: ParticipantId = "tmp.seed".parse().expect("id");
    let paths = signer.write_key_files(dir.path(), &id).expect("write");
    let text = std::fs::read_to_string(paths.private).expect("read");
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .expect("base64")
        .try_into()
        .expect("32 bytes")
}

/// Reads the inbox in `Drain` mode until it is empty; hands every genuine message over.
pub async fn drain(p: &Participant) -> (Vec<Received>, Vec<InboxEvent>) {
    let mut inbox = p.inbox(InboxMode::Drain).await.expect("inbox opens");
    let mut handed = Vec::new();
    let mut others = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, inbox.next())
        .await
        .expect("the inbox answers in time")
    {
        match event.expect("inbox event") {
            InboxEvent::Message(pending) => {
                handed.push(pending.handed_over().await.expect("handed over"))
            }
            other => others.push(other),
        }
    }
    (handed, others)
}

/// Waits until `p`'s inbox queue holds `n` ready messages (the broker's publish is confirmed
/// before it returns, so this is immediate in practice; it guards against a slow node).
async fn wait_ready(net: &TestNet, p: &ParticipantId, n: usize) {
    let queue = p.inbox_queue();
    for _ in 0..100 {
        let out = net.vhost.node().ctl(&[
            "list_queues",
            "-p",
            net.vhost.name(),
            "name",
            "messages_ready",
        ]);
        let ready = out
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(queue.as_str())).then(|| f.next()?.parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if ready >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{queue} never held {n} ready message(s)");
}

fn body_of(text: &str) -> Body {
    Body::Referral(serde_json::from_str(text).expect("referral body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_inbox_receipt_and_status_end_to_end() {
    let net = TestNet::new("client_end_to_end").await;
    let broker = StubBroker::start(&net).await;
    let fr = net.connect("fr").await;
    let nl = net.connect("nl").await;

    // fr refers a URL hosted in NL.
    let id = fr.submit(body_of(REFERRAL_BODY)).await.expect("submit");
    let forwarded = broker.forward(1).await;
    assert_eq!(forwarded[0].0, net.member("nl").id);

    // nl reads it: genuine, attested, exactly the bytes fr signed.
    let (got, others) = drain(&nl).await;
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(got.len(), 1);
    let referral = &got[0];
    assert_eq!(referral.envelope.id, id);
    assert_eq!(referral.envelope.origin, net.member("fr").id);
    assert_eq!(&referral.key_id, net.member("fr").signer.key_id());
    assert_eq!(referral.bytes, forwarded[0].1.body);
    let att = referral.attestation.as_ref().expect("attested");
    assert_eq!(att.destination, net.member("nl").id);
    assert_eq!(att.items.len(), 1);
    let text = referral_broker::participant::render::text(referral, nl.registry());
    println!("{text}");
    assert!(text.contains("https://images.example/gallery/2026/11/a7f3c9.jpg"));
    assert!(text.contains("NL · 192.0.2.10"));
    assert!(text.contains("baseline · csam"));

    // nl answers with a receipt and a `removed` status; both reach fr, verified.
    let receipt = nl
        .send_receipt(&id, Outcome::Accepted, None)
        .await
        .expect("receipt");
    let status = nl
        .send_status(Status {
            referral: id.clone(),
            item: 0,
            state: State::Removed,
            at: Utc::now().trunc_subsecs(3),
            reason: None,
            lea_case_number: None,
            note: Some("host removed it within the hour".into()),
        })
        .await
        .expect("status");
    let back = broker.forward(2).await;
    assert!(back.iter().all(|(to, _)| to == &net.member("fr").id));
    let (got, others) = drain(&fr).await;
    assert!(others.is_empty(), "{others:?}");
    let ids: Vec<&EnvelopeId> = got.iter().map(|r| &r.envelope.id).collect();
    assert_eq!(ids, vec![&receipt, &status]);
    match &got[1].envelope.body {
        Body::Status(s) => {
            assert_eq!(s.state, State::Removed);
            assert_eq!(s.referral, id);
        }
        other => panic!("expected a status, got {other:?}"),
    }
    assert_eq!(got[0].envelope.kind, Kind::Receipt);
    fr.close().await;
    nl.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_drops_a_second_copy_of_an_envelope_id() {
    let net = TestNet::new("client_duplicate").await;
    let broker = StubBroker::start(&net).await;
    let fr = net.connect("fr").await;
    let nl = net.connect("nl").await;
    let nl_id = net.member("nl").id.clone();

    let id = fr.submit(body_of(REFERRAL_BODY)).await.expect("submit");
    let (to, fwd) = broker.forward(1).await.remove(0);
    // The broker publishes it again (as after a crash between confirm and audit).
    broker.publish(&to, &fwd).await;
    wait_ready(&net, &nl_id, 2).await;

    let (got, others) = drain(&nl).await;
    assert_eq!(got.len(), 1, "handed over once");
    assert_eq!(got[0].envelope.id, id);
    assert!(
        matches!(&others[..], [InboxEvent::Duplicate { envelope_id, .. }] if envelope_id == &id),
        "{others:?}"
    );

    // And again later, with a fresh attestation, after the inbox was closed and reopened:
    // the handed-over ids are on disk.
    let envelope = wire::decode(&fwd.body).expect("decodes");
    let again = Forward {
        attestation: Some(broker.attest(&envelope, &fwd.body, &to)),
        ..fwd.clone()
    };
    broker.publish(&to, &again).await;
    wait_ready(&net, &nl_id, 1).await;
    let (got, others) = drain(&nl).await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(others.len(), 1);
    assert!(matches!(others[0], InboxEvent::Duplicate { .. }));
    fr.close().await;
    nl.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_wrongly_signed_messages_are_not_handed_over() {
    let net = TestNet::new("client_refused").await;
    let broker = StubBroker::start(&net).await;
    let fr = net.connect("fr").await;
    let nl = net.connect("nl").await;
    let nl_id = net.member("nl").id.clone();

    fr.submit(body_of(REFERRAL_BODY)).await.expect("submit");
    let (to, genuine) = broker.take(1).await.remove(0);

    // 1. One byte of the body changed, the origin's signature kept.
    let mut tampered = genuine.clone();
    let text = String::from_utf8(tampered.body.clone()).expect("utf8");
    tampered.body = text.replace("192.0.2.10", "192.0.2.99").into_bytes();
    let envelope = wire::decode(&tampered.body).expect("still a valid envelope");
    tampered.attestation = Some(broker.attest(&envelope, &tampered.body, &to));
    broker.publish(&to, &tampered).await;

    // 2. Signed by de's key, claiming to come from fr.
    let de = &net.member("de").signer;
    let mut wrong_key = genuine.clone();
    wrong_key.sig = de.sign_b64(&wrong_key.body);
    wrong_key.key_id = de.key_id().to_string();
    broker.publish(&to, &wrong_key).await;

    // 3. A signature that is not fr's over these bytes at all.
    let mut wrong_sig = genuine.clone();
    wrong_sig.sig = net.member("fr").signer.sign_b64(b"other bytes");
    broker.publish(&to, &wrong_sig).await;

    // 4. The genuine one, right after: still flows.
    broker.publish(&to, &genuine).await;
    wait_ready(&net, &nl_id, 4).await;

    let (got, others) = drain(&nl).await;
    assert_eq!(got.len(), 1, "only the genuine message is handed over");
    assert_eq!(got[0].bytes, genuine.body);
    let problems: Vec<Problem> = others
        .iter()
        .map(|e| match e {
            InboxEvent::Refused(r) => {
                assert!(r.kept_at.as_ref().is_some_and(|p| p.exists()), "copy kept");
                r.refusal.problem
            }
            other => panic!("expected refusals, got {other:?}"),
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            Problem::BadSignature,
            Problem::OriginMismatch,
            Problem::BadSignature
        ]
    );
    // Parked for the operator, bytes intact.
    let parked = broker.take_parked(3).await;
    assert!(parked.contains(&tampered.body));
    assert!(parked.contains(&genuine.body));
    fr.close().await;
    nl.close().await;
}

/// Runs the binary; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_referral-broker"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run referral-broker");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!("$ referral-broker {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_inbox_status_update() {
    let net = TestNet::new("client_cli").await;
    let broker = StubBroker::start(&net).await;
    let fr = path(&net.member("fr").config_file).to_owned();
    let nl = path(&net.member("nl").config_file).to_owned();
    let file = net.dir.path().join("referral.json");
    std::fs::write(&file, REFERRAL_BODY).expect("write");

    // submit prints the envelope id and nothing else on stdout.
    let (code, out, _) = tokio::task::block_in_place(|| cli(&["submit", path(&file), "-c", &fr]));
    assert_eq!(code, 0);
    let id: EnvelopeId = out.trim().parse().expect("an envelope id");
    broker.forward(1).await;

    // inbox --json: the message, then the receipt it sent; then the inbox is empty.
    let (code, out, err) = tokio::task::block_in_place(|| cli(&["inbox", "--json", "-c", &nl]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["event"], "message");
    assert_eq!(lines[0]["id"], id.as_str());
    assert_eq!(
        lines[0]["envelope"]["body"]["items"][0]["hosting"]["country"],
        "NL"
    );
    assert_eq!(lines[1]["event"], "receipt_sent");
    assert_eq!(lines[1]["referral"], id.as_str());
    let (code, out, _) = tokio::task::block_in_place(|| cli(&["inbox", "-c", &nl]));
    assert_eq!((code, out.as_str()), (0, ""), "acknowledged: nothing left");

    // status-update from nl; the receipt and the status reach fr, printed for an analyst.
    let (code, out, _) = tokio::task::block_in_place(|| {
        cli(&[
            "status-update",
            "--referral",
            id.as_str(),
            "--item",
            "0",
            "--status",
            "removed",
            "-c",
            &nl,
        ])
    });
    assert_eq!(code, 0);
    let _: EnvelopeId = out.trim().parse().expect("an envelope id");
    broker.forward(2).await;
    let (code, out, _) = tokio::task::block_in_place(|| cli(&["inbox", "-c", &fr]));
    assert_eq!(code, 0);
    assert!(out.contains("━━ RECEIPT"), "{out}");
    assert!(out.contains("ACCEPTED"), "{out}");
    assert!(out.contains("━━ STATUS"), "{out}");
    assert!(out.contains("item 0: REMOVED"), "{out}");

    // Exit codes: a bad configuration is 78, a usage error of status-update too.
    let bad = net.dir.path().join("bad.toml");
    std::fs::write(&bad, "participant = \"fr\"\n").expect("write");
    let (code, _, err) = tokio::task::block_in_place(|| cli(&["inbox", "-c", path(&bad)]));
    assert_eq!(code, 78, "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        cli(&[
            "status-update",
            "--referral",
            id.as_str(),
            "--item",
            "0",
            "--status",
            "disputed",
            "-c",
            &nl,
        ])
    });
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("reason"), "{err}");
    // A body that breaks the contract: 1, with the field named.
    std::fs::write(&file, REFERRAL_BODY.replace("\"NL\"", "\"nl\"")).expect("write");
    let (code, _, err) = tokio::task::block_in_place(|| cli(&["submit", path(&file), "-c", &fr]));
    assert_eq!(code, 1, "{err}");
}

// ---------------------------------------------------------------------------------------
// Through the real daemon (`referral-broker serve`, the DAEMON helper's [`Network`]).

/// A `participant.toml` (and the signing key file it names) for member `name` of a daemon
/// [`Network`]; returns the configuration and the file.
pub fn network_client(net: &Network, name: &str) -> (ParticipantConfig, PathBuf) {
    let m = net.member(name);
    let keys = net.dir.path().join(format!("client-keys-{name}"));
    std::fs::create_dir_all(&keys).expect("keys dir");
    let paths = match Signer::from_seed(m.seed).write_key_files(&keys, &m.id) {
        Ok(p) => p,
        Err(signing::SigningError::KeyExists { .. }) => signing::KeyFilePaths::new(&keys, &m.id),
        Err(e) => panic!("key files: {e}"),
    };
    let config = ParticipantConfig {
        participant: m.id.clone(),
        registry: net.dir.path().join("registry.toml"),
        data_dir: net.dir.path().join(format!("client-data-{name}")),
        signing_key: paths.private,
        broker: BrokerConfig {
            host: "localhost".into(),
            port: net.vhost.node().amqps_port,
            vhost: net.vhost.name().to_owned(),
            ca: net.certs.ca_cert(),
            certificate: m.cert.cert.clone(),
            key: m.cert.key.clone(),
            heartbeat: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            prefetch: 16,
        },
    };
    let file = net.dir.path().join(format!("participant-{name}.toml"));
    std::fs::write(&file, config.to_toml()).expect("write participant.toml");
    (config, file)
}

/// Connects member `name` of a daemon [`Network`] as a [`Participant`].
pub async fn network_participant(net: &Network, name: &str) -> Participant {
    Participant::connect(network_client(net, name).0)
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}"))
}

/// One handed-over message, for a failure message: kind and id, and what a notice says.
fn describe(r: &Received) -> String {
    match &r.envelope.body {
        Body::Notice(n) => format!(
            "notice {} ({}, about {:?}): {}{}",
            r.envelope.id,
            n.code.as_str(),
            n.about.as_ref().map(|a| a.as_str()),
            n.message,
            n.detail
                .as_deref()
                .map(|d| format!(" — {d}"))
                .unwrap_or_default()
        ),
        _ => format!("{} {}", r.envelope.kind, r.envelope.id),
    }
}

/// Follows the inbox until `pred` says enough was handed over (within [`WAIT`]); returns
/// every genuine message handed over and every other event, in order.
pub async fn follow_until(
    p: &Participant,
    mut enough: impl FnMut(&[Received]) -> bool,
) -> (Vec<Received>, Vec<InboxEvent>) {
    let mut inbox = p.inbox(InboxMode::Follow).await.expect("inbox opens");
    let mut handed = Vec::new();
    let mut others = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !enough(&handed) {
        let event = tokio::time::timeout_at(deadline, inbox.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: not enough within {WAIT:?}; handed over {:?}, other events {others:?}",
                    p.id(),
                    handed.iter().map(describe).collect::<Vec<_>>()
                )
            })
            .expect("the connection stays open")
            .expect("inbox event");
        match event {
            InboxEvent::Message(pending) => {
                handed.push(pending.handed_over().await.expect("handed over"))
            }
            other => others.push(other),
        }
    }
    (handed, others)
}

/// The handed-over messages of `kind`.
fn of_kind(got: &[Received], kind: Kind) -> Vec<&Received> {
    got.iter().filter(|r| r.envelope.kind == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_submit_inbox_receipt_status_and_notice() {
    let mut net = Network::new("client_daemon").await;
    net.start_broker();
    let fr = network_participant(&net, "fr").await;
    let nl = network_participant(&net, "nl").await;

    // fr refers a URL hosted in NL; the daemon routes it to nl with its attestation.
    let url = random_url();
    let id = fr
        .submit(network::referral(vec![network::item(&url, "NL")]))
        .await
        .expect("submit");
    let (got, others) = follow_until(&nl, |g| g.iter().any(|r| r.envelope.id == id)).await;
    assert!(others.is_empty(), "{others:?}");
    let referral = got
        .iter()
        .find(|r| r.envelope.id == id)
        .expect("the referral");
    assert_eq!(referral.envelope.origin, net.id("fr"));
    let att = referral
        .attestation
        .as_ref()
        .expect("the daemon's attestation");
    assert_eq!(att.destination, net.id("nl"));
    assert_eq!(att.items.len(), 1);
    assert_eq!(att.items[0].reasons, vec![RouteReason::Country]);
    println!(
        "{}",
        referral_broker::participant::render::text(referral, nl.registry())
    );

    // nl: receipt and `removed`; both reach fr through the daemon, verified.
    let receipt = nl
        .send_receipt(&id, Outcome::Accepted, None)
        .await
        .expect("receipt");
    let status = nl
        .send_status(Status {
            referral: id.clone(),
            item: 0,
            state: State::Removed,
            at: Utc::now().trunc_subsecs(3),
            reason: None,
            lea_case_number: None,
            note: None,
        })
        .await
        .expect("status");
    let (got, others) = follow_until(&fr, |g| {
        g.iter().any(|r| r.envelope.id == receipt) && g.iter().any(|r| r.envelope.id == status)
    })
    .await;
    assert!(others.is_empty(), "{others:?}");
    for r in got
        .iter()
        .filter(|r| [&receipt, &status].contains(&&r.envelope.id))
    {
        assert_eq!(r.envelope.origin, net.id("nl"));
        let att = r.attestation.as_ref().expect("attested");
        assert_eq!(att.referral.as_ref(), Some(&id));
        assert_eq!(att.destination, net.id("fr"));
    }

    // A URL referred twice: one of the two is a duplicate of the other, and fr gets the
    // broker's own signed notice (verified with the broker's key; no attestation needed).
    // Which one: the daemon works on several messages at once, so the second submitted can
    // reach the URL check first (seen under load: the notice was about the first).
    let url2 = random_url();
    let first = fr
        .submit(network::referral(vec![network::item(&url2, "NL")]))
        .await
        .expect("submit");
    let second = fr
        .submit(network::referral(vec![network::item(&url2, "NL")]))
        .await
        .expect("submit");
    let pair = [first, second];
    let about_pair = |r: &Received| match &r.envelope.body {
        Body::Notice(n) => n.about.as_ref().is_some_and(|a| pair.contains(a)),
        _ => false,
    };
    let (got, _) = follow_until(&fr, |g| g.iter().any(about_pair)).await;
    let notice = of_kind(&got, Kind::Notice)
        .into_iter()
        .find(|r| about_pair(r))
        .expect("a notice about one of the two referrals");
    assert_eq!(notice.envelope.origin, net.broker_id);
    assert!(notice.attestation.is_none());
    match &notice.envelope.body {
        Body::Notice(n) => {
            assert_eq!(n.code.as_str(), "duplicate");
            let forwarded = if n.about.as_ref() == Some(&pair[0]) {
                &pair[1]
            } else {
                &pair[0]
            };
            assert_eq!(n.first_referral.as_ref(), Some(forwarded));
        }
        other => panic!("{other:?}"),
    }
    // nl got the one forwarded, and never the duplicate.
    let (got, _) = follow_until(&nl, |g| g.iter().any(|r| pair.contains(&r.envelope.id))).await;
    let to_nl: Vec<&EnvelopeId> = got
        .iter()
        .map(|r| &r.envelope.id)
        .filter(|id| pair.contains(id))
        .collect();
    assert_eq!(to_nl.len(), 1, "{to_nl:?}");
    fr.close().await;
    nl.close().await;
    assert!(net.stop_broker().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_cli_submit_inbox_status_update() {
    let mut net = Network::new("client_daemon_cli").await;
    net.start_broker();
    let (_, fr) = network_client(&net, "fr");
    let (_, nl) = network_client(&net, "nl");
    let (fr, nl) = (path(&fr).to_owned(), path(&nl).to_owned());
    let file = net.dir.path().join("referral.json");
    let body = match network::referral(vec![network::item(&random_url(), "NL")]) {
        Body::Referral(r) => serde_json::to_string_pretty(&r).expect("json"),
        _ => unreachable!("a referral"),
    };
    std::fs::write(&file, body).expect("write");

    let (code, out, err) = tokio::task::block_in_place(|| cli(&["submit", path(&file), "-c", &fr]));
    assert_eq!(code, 0, "{err}");
    let id: EnvelopeId = out.trim().parse().expect("an envelope id");

    // `inbox` (drain) until the referral is there: the daemon works asynchronously.
    let out = poll_cli_inbox(&nl, id.as_str());
    assert!(out.contains(&format!("━━ REFERRAL {id} ━━")), "{out}");
    assert!(out.contains("Why you:  hosted in your country"), "{out}");
    assert!(out.contains("audit entry #"), "{out}");
    assert!(out.contains("→ receipt sent"), "{out}");

    let (code, out, err) = tokio::task::block_in_place(|| {
        cli(&[
            "status-update",
            "--referral",
            id.as_str(),
            "--item",
            "0",
            "--status",
            "removed",
            "-c",
            &nl,
        ])
    });
    assert_eq!(code, 0, "{err}");
    let status: EnvelopeId = out.trim().parse().expect("an envelope id");
    let out = poll_cli_inbox(&fr, status.as_str());
    assert!(out.contains("ACCEPTED"), "the receipt came first: {out}");
    assert!(out.contains("item 0: REMOVED"), "{out}");
    assert!(net.stop_broker().success());
}

/// Runs `inbox -c config` until its output mentions `needle` (everything printed so far is
/// returned), within [`WAIT`].
fn poll_cli_inbox(config: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    let mut all = String::new();
    loop {
        let (code, out, err) = tokio::task::block_in_place(|| cli(&["inbox", "-c", config]));
        assert_eq!(code, 0, "{err}");
        all.push_str(&out);
        if all.contains(needle) {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle} not in the inbox within {WAIT:?}: {all}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_envelope_bytes_and_inbox_follow() {
    let net = TestNet::new("client_cli_follow").await;
    let broker = StubBroker::start(&net).await;
    let fr = path(&net.member("fr").config_file).to_owned();
    let nl = path(&net.member("nl").config_file).to_owned();

    // `submit --envelope`: a whole envelope built elsewhere, sent byte for byte.
    let envelope = Envelope::new(net.member("fr").id.clone(), body_of(REFERRAL_BODY));
    let mut text = serde_json::to_string_pretty(&envelope).expect("json");
    text.push('\n');
    let file = net.dir.path().join("envelope.json");
    std::fs::write(&file, &text).expect("write");
    let (code, out, err) =
        tokio::task::block_in_place(|| cli(&["submit", "--envelope", path(&file), "-c", &fr]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), envelope.id.as_str());
    let (to, fwd) = broker.take(1).await.remove(0);
    assert_eq!(fwd.body, text.as_bytes(), "the file's bytes, unchanged");

    // Someone else's envelope is refused before anything is sent.
    let foreign = Envelope::new(net.member("de").id.clone(), body_of(REFERRAL_BODY));
    std::fs::write(&file, foreign.to_bytes()).expect("write");
    let (code, _, err) =
        tokio::task::block_in_place(|| cli(&["submit", "--envelope", path(&file), "-c", &fr]));
    assert_eq!(code, 1);
    assert!(err.contains("signs only in its own name"), "{err}");

    // `inbox --follow --json` prints messages as they come and stops cleanly on SIGTERM.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_referral-broker"))
        .args(["inbox", "--follow", "--json", "--no-receipt", "-c", &nl])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn inbox --follow");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    broker.publish(&to, &fwd).await;
    let line = tokio::task::block_in_place(|| rx.recv_timeout(WAIT)).expect("a line in time");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["event"], "message");
    assert_eq!(v["id"], envelope.id.as_str());
    use base64::Engine as _;
    let signed = base64::engine::general_purpose::STANDARD
        .decode(v["signed_bytes_base64"].as_str().expect("base64"))
        .expect("base64");
    assert_eq!(signed, text.as_bytes());
    // A second copy while following: dropped, reported as a duplicate event.
    broker.publish(&to, &fwd).await;
    let line = tokio::task::block_in_place(|| rx.recv_timeout(WAIT)).expect("a line in time");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["event"], "duplicate");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::task::block_in_place(|| child.wait_with_output()).expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.contains("1 handed over"), "{err}");
    assert!(err.contains("1 duplicate(s) dropped"), "{err}");
}
