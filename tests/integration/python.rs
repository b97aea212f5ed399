//! A participant in another language (issue 4, item 7): `ops/examples/python/client.py`, with
//! Debian's `python3-pika` and `python3-nacl` under Debian's `/usr/bin/python3`, against the
//! node. It submits a referral the Rust client verifies end to end, reads the receipt and the
//! `removed` status sent back (verifying origin signature and broker attestation with PyNaCl),
//! reads a referral from a Rust participant and answers it with a receipt, drops a second copy,
//! and refuses a tampered one.
//!
//! The packages are installed with apt-get when missing (`apt-get update` first). The test is
//! skipped — loudly — only when apt itself is not there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chrono::{SubsecRound as _, Utc};
use referral_broker::ids::EnvelopeId;
use referral_broker::wire::{self, Body, Kind, Outcome, State, Status};
use serde_json::Value;

use super::client::{REFERRAL_BODY, StubBroker, TestNet, drain};

/// Debian's interpreter: the `python3` on PATH may be another build that does not see
/// Debian's packages.
const PYTHON: &str = "/usr/bin/python3";

fn has_packages() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import pika, nacl.signing"])
        .status()
        .is_ok_and(|s| s.success())
}

/// `Some(python)` once pika and PyNaCl import, installing them with apt-get if needed;
/// `None` only when apt-get is not available (the caller skips, loudly).
fn python() -> Option<&'static Path> {
    static READY: OnceLock<bool> = OnceLock::new();
    let ready = *READY.get_or_init(|| {
        if Path::new(PYTHON).exists() && has_packages() {
            return true;
        }
        if Command::new("apt-get").arg("--version").output().is_err() {
            return false;
        }
        // Test processes run in parallel (nextest): one installs, the others wait on the lock
        // and find the packages there.
        let script = format!(
            "exec 9>/tmp/referral-broker-test-apt.lock; command -v flock >/dev/null && flock 9; \
             {PYTHON} -c 'import pika, nacl.signing' 2>/dev/null && exit 0; \
             export DEBIAN_FRONTEND=noninteractive; \
             apt-get update -q && apt-get install -y -q --no-install-recommends \
             python3 python3-pika python3-nacl"
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "installing python3-pika and python3-nacl with apt-get failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            has_packages(),
            "{PYTHON} cannot import pika and nacl after installing python3-pika and python3-nacl"
        );
        true
    });
    if !ready {
        eprintln!(
            "\n{bar}\nSKIPPED: the Python client test needs {PYTHON} with python3-pika and \
             python3-nacl, and apt-get is not available to install them.\n{bar}\n",
            bar = "!".repeat(78)
        );
    }
    ready.then_some(Path::new(PYTHON))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/examples/python/client.py")
}

/// Runs client.py; returns (exit code, stdout, stderr).
fn run(python: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::task::block_in_place(|| {
        Command::new(python)
            .arg(script())
            .args(args)
            .output()
            .expect("run client.py")
    });
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!("$ client.py {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_submits_and_reads_its_inbox() {
    let Some(py) = python() else { return };
    let net = TestNet::new("python_client").await;
    let broker = StubBroker::start(&net).await;
    let fr_config = net
        .member("fr")
        .config_file
        .to_str()
        .expect("utf8")
        .to_owned();
    let nl_config = net
        .member("nl")
        .config_file
        .to_str()
        .expect("utf8")
        .to_owned();
    let file = net.dir.path().join("referral.json");
    std::fs::write(&file, REFERRAL_BODY).expect("write");

    // Python (as fr) submits; the broker checks it like any message and forwards it.
    let (code, out, err) = run(
        py,
        &[
            "--config",
            &fr_config,
            "submit",
            file.to_str().expect("utf8"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id: EnvelopeId = out.trim().parse().expect("an envelope id (UUIDv7)");
    let forwarded = broker.forward(1).await;
    assert_eq!(forwarded[0].0, net.member("nl").id);

    // The Rust client (as nl) verifies Python's signature over the bytes Python sent.
    let nl = net.connect("nl").await;
    let (got, others) = drain(&nl).await;
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.id, id);
    assert_eq!(got[0].envelope.origin, net.member("fr").id);
    assert_eq!(got[0].bytes, forwarded[0].1.body);

    // nl answers with a receipt and `removed`; Python (as fr) reads and verifies both.
    nl.send_receipt(&id, Outcome::Accepted, None)
        .await
        .expect("receipt");
    nl.send_status(Status {
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
    broker.forward(2).await;
    let (code, out, err) = run(py, &["--config", &fr_config, "inbox", "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, vec!["receipt", "status"], "{out}");
    for l in &lines {
        assert_eq!(l["event"], "message");
        assert_eq!(l["verified"]["origin_signature"], true);
        assert_eq!(l["verified"]["attestation"], true);
        assert_eq!(l["envelope"]["body"]["referral"], id.as_str());
        assert_eq!(
            l["attestation"]["destination"],
            net.member("fr").id.as_str()
        );
    }
    assert_eq!(lines[1]["envelope"]["body"]["state"], "removed");

    // The other way: a Rust participant (de) refers to nl; Python (as nl) reads it and
    // answers with a receipt, drops a second copy, refuses a tampered copy.
    let de = net.connect("de").await;
    let referral = de
        .submit(Body::Referral(
            serde_json::from_str(REFERRAL_BODY).expect("body"),
        ))
        .await
        .expect("submit");
    let (to, genuine) = broker.take(1).await.remove(0);
    broker.publish(&to, &genuine).await;
    broker.publish(&to, &genuine).await;
    let mut tampered = genuine.clone();
    tampered.body = String::from_utf8(genuine.body.clone())
        .expect("utf8")
        .replace("a7f3c9.jpg", "a7f3c8.jpg")
        .into_bytes();
    let envelope = wire::decode(&tampered.body).expect("still decodes");
    tampered.attestation = Some(broker.attest(&envelope, &tampered.body, &to));
    broker.publish(&to, &tampered).await;

    let (code, out, err) = run(py, &["--config", &nl_config, "inbox", "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        events,
        vec!["message", "receipt_sent", "duplicate", "refused"],
        "{out}"
    );
    assert_eq!(lines[0]["id"], referral.as_str());
    assert_eq!(lines[0]["attestation"]["items"][0]["index"], 0);
    assert_eq!(lines[1]["referral"], referral.as_str());
    assert!(
        lines[3]["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("bad_signature")),
        "{out}"
    );

    // Python's receipt, checked by the broker's ingress and verified by the Rust client.
    broker.forward(1).await;
    let (got, _) = drain(&de).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.kind, Kind::Receipt);
    match &got[0].envelope.body {
        Body::Receipt(r) => assert_eq!((&r.referral, r.outcome), (&referral, Outcome::Accepted)),
        other => panic!("expected a receipt, got {other:?}"),
    }

    // Exit code 78 on a bad configuration.
    let bad = net.dir.path().join("bad.toml");
    std::fs::write(&bad, "participant = \"fr\"\n").expect("write");
    let (code, _, _) = run(py, &["--config", bad.to_str().expect("utf8"), "inbox"]);
    assert_eq!(code, 78);
    nl.close().await;
    de.close().await;
}

/// Runs `client.py inbox --json` until a `message` line satisfies `want`; returns every line.
fn poll_inbox(python: &Path, config: &str, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + super::network::WAIT;
    let mut all = Vec::new();
    loop {
        let (code, out, err) = run(python, &["--config", config, "inbox", "--json"]);
        assert_eq!(code, 0, "{err}");
        all.extend(json_lines(&out));
        if all.iter().any(&want) {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not in the Python client's inbox in time: {all:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The same conversation through the real daemon: what Python signs passes the daemon's
/// ingress checks and is verified by the Rust client; what the daemon forwards and attests,
/// Python verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_through_the_daemon() {
    let Some(py) = python() else { return };
    let mut net = super::network::Network::new("python_daemon").await;
    net.start_broker();
    let (_, fr_file) = super::client::network_client(&net, "fr");
    let (_, nl_file) = super::client::network_client(&net, "nl");
    let fr_config = fr_file.to_str().expect("utf8").to_owned();
    let nl_config = nl_file.to_str().expect("utf8").to_owned();
    let url = super::network::random_url();
    let file = net.dir.path().join("referral.json");
    let body = match super::network::referral(vec![super::network::item(&url, "NL")]) {
        Body::Referral(r) => serde_json::to_string_pretty(&r).expect("json"),
        _ => unreachable!("a referral"),
    };
    std::fs::write(&file, body).expect("write");

    // Python (fr) → daemon → Rust (nl).
    let (code, out, err) = run(
        py,
        &[
            "--config",
            &fr_config,
            "submit",
            file.to_str().expect("utf8"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id: EnvelopeId = out.trim().parse().expect("an envelope id");
    let nl = super::client::network_participant(&net, "nl").await;
    let (got, others) =
        super::client::follow_until(&nl, |g| g.iter().any(|r| r.envelope.id == id)).await;
    assert!(others.is_empty(), "{others:?}");
    assert!(
        got.iter()
            .any(|r| r.envelope.origin == net.id("fr") && r.attestation.is_some())
    );

    // Rust (nl) → daemon → Python (fr): the receipt, verified with PyNaCl.
    let receipt = nl
        .send_receipt(&id, Outcome::Accepted, None)
        .await
        .expect("receipt");
    let lines = poll_inbox(py, &fr_config, |l| l["id"] == receipt.as_str());
    let l = lines
        .iter()
        .find(|l| l["id"] == receipt.as_str())
        .expect("the receipt");
    assert_eq!(l["verified"]["origin_signature"], true);
    assert_eq!(l["verified"]["attestation"], true);
    assert_eq!(l["attestation"]["referral"], id.as_str());

    // Rust (de) → daemon → Python (nl), which answers with a receipt → daemon → Rust (de).
    let de = super::client::network_participant(&net, "de").await;
    let referral = de
        .submit(super::network::referral(vec![super::network::item(
            &super::network::random_url(),
            "NL",
        )]))
        .await
        .expect("submit");
    let lines = poll_inbox(py, &nl_config, |l| l["id"] == referral.as_str());
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "receipt_sent" && l["referral"] == referral.as_str()),
        "{lines:#?}"
    );
    let (got, _) =
        super::client::follow_until(&de, |g| g.iter().any(|r| r.envelope.kind == Kind::Receipt))
            .await;
    let receipt = got
        .iter()
        .find(|r| r.envelope.kind == Kind::Receipt)
        .expect("Python's receipt");
    assert_eq!(receipt.envelope.origin, net.id("nl"));
    match &receipt.envelope.body {
        Body::Receipt(r) => assert_eq!(r.referral, referral),
        other => panic!("{other:?}"),
    }
    nl.close().await;
    de.close().await;
    assert!(net.stop_broker().success());
}
