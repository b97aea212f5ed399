//! The operators' view end to end (issue 6, "Done when"), against the private node, with
//! `referral-broker serve` as a child process ([`super::network`]):
//! - real traffic (referrals, a duplicate, a refused message, `removed` statuses with known
//!   times, a participant that does not read) drives the `/metrics` values and the
//!   `/api/status` figures asserted here; `/healthz` and `/readyz`, and `/readyz` answering 503
//!   with its reason when an inbox disappears;
//! - the page in headless Chromium: the figures it shows, and a screenshot saved as
//!   `target/test-output/status-page.png` (with the DOM beside it);
//! - `referral-broker status` prints the tables and exits 1 when an inbox backlog is older
//!   than `--max-inbox-age`, 0 when nothing needs attention, 3 when the broker is gone;
//! - the admin server over mutual TLS: an operator certificate of the configured CA gets in,
//!   no certificate or another CA's does not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use referral_broker::admin::client::{self, ClientTls, Response};
use referral_broker::admin::status::{ParticipantStatus, StatusReport};
use referral_broker::ids::{EnvelopeId, ParticipantId};
use referral_broker::pki::{DevCa, Validity};
use referral_broker::wire::{Body, State, Status};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::network::{
    Network, Options, Peer, Received, WAIT, item, random_url, referral, wire_properties,
};

/// The `[admin]` section the harness writes (port 0: parallel brokers never collide).
const HARNESS_ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\npoll_secs = 1\n";

/// Adds `lines` to the `[admin]` section of the network's `broker.toml`.
fn set_admin(net: &Network, lines: &str) {
    let text = std::fs::read_to_string(&net.config_file).expect("reading broker.toml");
    assert!(
        text.contains(HARNESS_ADMIN),
        "the harness writes {HARNESS_ADMIN:?} into broker.toml:\n{text}"
    );
    let text = text.replace(HARNESS_ADMIN, &format!("{HARNESS_ADMIN}{lines}"));
    std::fs::write(&net.config_file, text).expect("writing broker.toml");
}

/// The admin server's URL, as `serve` wrote it into the data directory.
fn admin_url(net: &Network) -> String {
    let file = net.data_dir.join("admin.url");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{:?}", file.display(), net.broker_log()));
    text.trim().trim_end_matches('/').to_owned()
}

async fn get(url: &str) -> Response {
    client::get(url, None, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn status(base: &str) -> StatusReport {
    let r = get(&format!("{base}/api/status")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("/api/status is not a status report: {e}\n{}", r.text()))
}

/// Polls `/api/status` until `ok` holds (the figures follow the log asynchronously).
async fn status_until(base: &str, what: &str, ok: impl Fn(&StatusReport) -> bool) -> StatusReport {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(base).await;
        if ok(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!(
                "/api/status: {what} not reached within {WAIT:?}:\n{}",
                serde_json::to_string_pretty(&s).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn participant<'a>(s: &'a StatusReport, id: &ParticipantId) -> &'a ParticipantStatus {
    s.participants
        .iter()
        .find(|p| p.id == id.as_str())
        .unwrap_or_else(|| panic!("{id} is not in the status"))
}

/// The value of one series of the metrics text (panics if absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.strip_prefix(' ')?.split(' ').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
}

/// A referral whose public report came in at `reported`.
fn referral_reported_at(items: Vec<Value>, reported: DateTime<Utc>) -> Body {
    let r = json!({
        "reference": "T-ADMIN-1",
        "public_report_received_at": reported.to_rfc3339_opts(SecondsFormat::Secs, true),
        "priority": "normal",
        "items": items,
    });
    Body::Referral(serde_json::from_value(r).expect("a valid referral body"))
}

fn removed(referral: &EnvelopeId, item: u16, at: DateTime<Utc>) -> Body {
    Body::Status(Status {
        referral: referral.clone(),
        item,
        state: State::Removed,
        at,
        reason: None,
        lea_case_number: None,
        note: None,
    })
}

/// The next message of `peer`'s inbox that is not a checkpoint.
async fn next_message(peer: &Peer) -> Received {
    loop {
        let m = peer.expect().await;
        if m.kind() != "checkpoint" {
            return m;
        }
    }
}

/// Only the first checkpoint (due as soon as the log is not empty) during a test.
fn quiet_checkpoints() -> Options {
    Options {
        extra: "[store]\ncheckpoint_every_entries = 1000000\ncheckpoint_every_secs = 86400\n"
            .into(),
        ..Options::default()
    }
}

/// What [`traffic`] sent.
struct Traffic {
    /// The referral to `de`, which never reads its inbox.
    r2: EnvelopeId,
    /// The connected peers (they keep reading their inboxes while the test runs).
    _fr: Peer,
    _nl: Peer,
}

/// The traffic every test here asserts on:
/// - `fr` refers two NL items (r1; public report 5 days ago) and one DE item (r2);
/// - `fr` refers r1's first URL again: a duplicate at `nl`;
/// - `fr` sends a referral with a signature that does not match: `bad_signature`;
/// - `nl` reads r1 and reports item 0 removed 10 h and item 1 removed 100 h after the report;
/// - `de` is not connected: r2 waits in its inbox.
async fn traffic(net: &Network) -> Traffic {
    let fr = net.peer("fr").await;
    let nl = net.peer("nl").await;
    // de reads only until the broker's first checkpoint (sent to every inbox) is out of the
    // way, then leaves: from then on its inbox holds exactly what is routed to it.
    let de = net.peer("de").await;
    let reported = Utc::now() - chrono::Duration::days(5);
    let u1 = random_url();
    let r1 = fr
        .send(&fr.envelope(referral_reported_at(
            vec![item(&u1, "NL"), item(&random_url(), "NL")],
            reported,
        )))
        .await;
    let got = next_message(&nl).await;
    assert_eq!(got.message_id(), r1.as_str());
    let base = admin_url(net);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&base).await.checkpoint.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while let Some(m) = de.recv(Duration::from_secs(1)).await {
        assert_eq!(m.kind(), "checkpoint", "{}", m.summary());
    }
    de.transport.close().await;
    drop(de);
    let r2 = fr
        .send(&fr.envelope(referral(vec![item(&random_url(), "DE")])))
        .await;
    let dup = fr.send(&fr.envelope(referral(vec![item(&u1, "NL")]))).await;
    fr.expect_notice("duplicate", Some(&dup)).await;

    let bad = fr.envelope(referral(vec![item(&random_url(), "NL")]));
    let props = wire_properties(
        fr.id.as_str(),
        "referral",
        bad.id.as_str(),
        &fr.signer.sign_b64(b"other bytes than the body"),
        fr.signer.key_id().as_str(),
    );
    fr.publish_raw(&bad.to_bytes(), props)
        .await
        .expect("publishing the badly signed referral");
    // Nothing of an unauthenticated body is believed: the notice names no envelope.
    fr.expect_notice("bad_signature", None).await;

    nl.send(&nl.envelope(removed(&r1, 0, reported + chrono::Duration::hours(10))))
        .await;
    nl.send(&nl.envelope(removed(&r1, 1, reported + chrono::Duration::hours(100))))
        .await;
    for _ in 0..2 {
        let m = next_message(&fr).await;
        assert_eq!(m.kind(), "status", "{}", m.summary());
    }
    Traffic {
        r2,
        _fr: fr,
        _nl: nl,
    }
}

/// The figures traffic produces, in `/api/status` and `/metrics`; health and readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_follow_real_traffic() {
    let mut net = Network::with("admin-figures", quiet_checkpoints()).await;
    net.start_broker();
    let base = admin_url(&net);
    let (fr, nl, de) = (net.id("fr"), net.id("nl"), net.id("de"));

    let h = get(&format!("{base}/healthz")).await;
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    let t = traffic(&net).await;

    let s = status_until(&base, "every figure of the traffic", |s| {
        let p = |id: &ParticipantId| participant(s, id);
        p(&fr).last_hour.received == 3
            && p(&nl).last_hour.received == 2
            && p(&fr).last_hour.rejected == 1
            && p(&de).inbox.as_ref().is_some_and(|i| i.depth == 1)
            && s.takedown.countries.iter().any(|c| c.removed == 2)
    })
    .await;
    assert!(s.readiness.ready, "{:?}", s.readiness);
    assert_eq!(s.connection.state, "up");
    assert!(s.history.complete);
    assert_eq!(s.broker, net.broker_id.as_str());

    // Counts over the last hour (and day).
    let f = participant(&s, &fr);
    assert_eq!(f.last_hour.received, 3, "r1, r2 and the duplicate");
    assert_eq!(f.last_hour.rejected, 1);
    assert_eq!(f.last_hour.duplicates, 1);
    assert_eq!(f.last_hour.delivered, 2, "the two statuses");
    assert_eq!(f.last_hour.notices, 2, "duplicate and bad_signature");
    assert_eq!(f.last_day, f.last_hour);
    let n = participant(&s, &nl);
    assert_eq!((n.last_hour.delivered, n.last_hour.received), (1, 2));
    let d = participant(&s, &de);
    assert_eq!((d.last_hour.delivered, d.last_hour.received), (1, 0));

    // The backlog of the participant that does not read.
    let inbox = d.inbox.as_ref().expect("de's inbox polled");
    assert_eq!((inbox.depth, inbox.consumers), (1, 0));
    let oldest = inbox.oldest.as_ref().expect("the oldest unread message");
    assert_eq!(oldest.envelope.as_deref(), Some(t.r2.as_str()));
    assert_eq!(oldest.kind, "referral");
    assert!(!oldest.at_least);
    assert!(oldest.age_secs < 120, "{oldest:?}");

    // The rejection, by reason.
    let rej = &s.recent_rejections[0];
    assert_eq!(rej.code, "bad_signature");
    assert_eq!(rej.participant.as_deref(), Some(fr.as_str()));

    // Time to removal from the statuses' known times: NL, 10 h and 100 h.
    let nl_fig = s
        .takedown
        .countries
        .iter()
        .find(|c| c.country == "NL")
        .expect("NL takedown figures");
    assert_eq!(nl_fig.removed, 2);
    assert_eq!(nl_fig.median_secs, 10 * 3600);
    assert_eq!(nl_fig.p90_secs, 100 * 3600);
    assert!((nl_fig.within_3_days - 0.5).abs() < 1e-9);
    assert_eq!(s.takedown.unknown, 0);

    assert!(s.audit_log.entries >= 10, "{:?}", s.audit_log);
    // The first checkpoint (cut as soon as the log was not empty): size, root, time.
    let cp = s.checkpoint.as_ref().expect("the first checkpoint");
    assert!(cp.size > 0 && cp.size <= s.audit_log.entries, "{cp:?}");
    assert_eq!(cp.root.len(), 64);
    assert!(s.checkpoint_age_secs.is_some_and(|a| a < 120));
    assert!(s.audit_log.bytes > 0);
    assert!(
        s.queues
            .iter()
            .any(|q| q.name == "ingress" && q.consumers == 1)
    );

    // The same in /metrics.
    let m = get(&format!("{base}/metrics")).await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        m.headers
    );
    let text = m.text();
    let series = |name: &str, labels: &str| format!("refbroker_{name}{{{labels}}}");
    assert_eq!(
        metric(
            &text,
            &series(
                "messages_received_total",
                &format!("participant=\"{fr}\",kind=\"referral\"")
            )
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            &series(
                "messages_received_total",
                &format!("participant=\"{nl}\",kind=\"status\"")
            )
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            &series(
                "messages_delivered_total",
                &format!("participant=\"{nl}\",kind=\"referral\"")
            )
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            &series(
                "messages_delivered_total",
                &format!("participant=\"{fr}\",kind=\"status\"")
            )
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            &series(
                "messages_rejected_total",
                &format!("participant=\"{fr}\",reason=\"bad_signature\"")
            )
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            &series("duplicates_total", &format!("participant=\"{fr}\""))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            &series(
                "notices_sent_total",
                &format!("participant=\"{fr}\",reason=\"duplicate\"")
            )
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            &series("inbox_depth", &format!("participant=\"{de}\""))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            &series("inbox_consumers", &format!("participant=\"{de}\""))
        ),
        0.0
    );
    let age = metric(
        &text,
        &series(
            "inbox_oldest_unread_age_seconds",
            &format!("participant=\"{de}\""),
        ),
    );
    assert!((0.0..120.0).contains(&age), "{age}");
    assert_eq!(
        metric(
            &text,
            &series("time_to_removal_seconds_count", "country=\"NL\"")
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            &series(
                "time_to_removal_seconds_bucket",
                "le=\"86400.0\",country=\"NL\""
            )
        ),
        1.0
    );
    assert_eq!(
        metric(&text, &series("takedown_median_seconds", "country=\"NL\"")),
        36_000.0
    );
    assert_eq!(
        metric(
            &text,
            &series("takedown_removed_within_3_days_ratio", "country=\"NL\"")
        ),
        0.5
    );
    // Deliveries: r1 to nl, r2 to de, two statuses to fr.
    assert!(metric(&text, "refbroker_routing_latency_seconds_count") >= 4.0);
    for (name, want) in [
        ("refbroker_ready", 1.0),
        ("refbroker_amqp_connected", 1.0),
        ("refbroker_amqp_reconnections_total", 0.0),
        ("refbroker_history_complete", 1.0),
    ] {
        assert_eq!(metric(&text, name), want, "{name}");
    }
    assert!(metric(&text, "refbroker_audit_log_entries") >= 10.0);
    assert!(metric(&text, "refbroker_audit_log_bytes") > 0.0);
    assert!(text.trim_end().ends_with("# EOF"));

    // A restart: the windows, the backlog and the takedown figures come back from the log.
    // (The shutdown checkpoint went to every inbox after r2: de's oldest is still r2.)
    let status_code = net.stop_broker();
    assert!(status_code.success(), "{status_code}");
    net.start_broker();
    let base = admin_url(&net);
    let again = status_until(&base, "the figures read back from the log", |s| {
        s.history.complete
            && participant(s, &de)
                .inbox
                .as_ref()
                .is_some_and(|i| i.depth == 2)
    })
    .await;
    for id in [&fr, &nl, &de] {
        let (before, after) = (participant(&s, id), participant(&again, id));
        assert_eq!(before.last_hour, after.last_hour, "{id}");
    }
    let oldest = participant(&again, &de)
        .inbox
        .as_ref()
        .and_then(|i| i.oldest.clone())
        .expect("de's oldest unread");
    assert_eq!(oldest.envelope.as_deref(), Some(t.r2.as_str()));
    assert_eq!(again.takedown, s.takedown);
    assert_eq!(again.recent_rejections, s.recent_rejections);
    assert!(again.history.entries > s.audit_log.entries);

    // Ready; then de's inbox disappears: not ready, with the reason.
    let r = get(&format!("{base}/readyz")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["ready"], json!(true));
    let inbox = de.inbox_queue();
    net.vhost
        .node()
        .ctl(&["delete_queue", "-p", net.vhost.name(), &inbox]);
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let r = get(&format!("{base}/readyz")).await;
        if r.status == 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(r.status, 503, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["ready"], json!(false));
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("topology not declared") && reasons.contains(&inbox),
        "{reasons}"
    );
    let m = get(&format!("{base}/metrics")).await;
    assert_eq!(metric(&m.text(), "refbroker_ready"), 0.0);

    // Read-only: nothing but GET (and HEAD).
    let addr = base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    tcp.write_all(
        b"POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await
    .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    drop(t);
    let status = net.stop_broker();
    assert!(status.success(), "{status}\n{:?}", net.broker_log());
    assert!(
        !net.data_dir.join("admin.url").exists(),
        "a clean stop removes the address file"
    );
}

fn binary() -> &'static str {
    Network::binary()
}

/// `referral-broker status` against a running broker: tables, exit codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_prints_tables_and_flags_backlogs() {
    let mut net = Network::with("admin-status-cli", quiet_checkpoints()).await;
    net.start_broker();
    let base = admin_url(&net);
    let _t = traffic(&net).await;
    let de = net.id("de");
    // Wait until de's backlog is visible and at least 2 s old.
    status_until(&base, "de's backlog older than 2 s", |s| {
        participant(s, &de)
            .inbox
            .as_ref()
            .and_then(|i| i.oldest.as_ref())
            .is_some_and(|o| o.age_secs >= 2)
            && s.takedown.all.is_some()
    })
    .await;
    let data = net.data_dir.display().to_string();

    let run = |args: &[&str]| {
        let out = Command::new(binary())
            .arg("status")
            .args(args)
            .output()
            .expect("running referral-broker status");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Backlog older than the threshold: exit 1, and the table says why.
    let (code, out, err) = run(&["--data", &data, "--max-inbox-age", "1"]);
    println!("{out}");
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("NEEDS ATTENTION"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("- inbox_backlog:") && l.contains(de.as_str())),
        "{out}"
    );
    assert!(
        out.contains("PARTICIPANT") && out.contains("OLDEST UNREAD"),
        "{out}"
    );
    let de_row = out
        .lines()
        .find(|l| l.starts_with(de.as_str()))
        .unwrap_or_else(|| panic!("no row for {de}:\n{out}"));
    let cells: Vec<&str> = de_row.split_whitespace().collect();
    assert_eq!(cells[1..4], ["hotline", "1", "0"], "{de_row}");
    assert!(de_row.contains("referral !"), "{de_row}");
    let fr = net.id("fr");
    let fr_row = out
        .lines()
        .find(|l| l.starts_with(fr.as_str()))
        .expect("fr's row");
    // DELIVERED SENT REJECTED DUPLICATES, each last hour/last day.
    let cells: Vec<&str> = fr_row.split_whitespace().collect();
    assert_eq!(
        cells[cells.len() - 4..],
        ["2/2", "3/3", "1/1", "1/1"],
        "{fr_row}"
    );
    assert!(out.contains("NOTICE AND TAKEDOWN"), "{out}");
    let nl_line = out
        .lines()
        .find(|l| l.starts_with("NL "))
        .unwrap_or_else(|| panic!("no NL takedown row:\n{out}"));
    let cells: Vec<&str> = nl_line.split_whitespace().collect();
    assert_eq!(
        cells,
        ["NL", "2", "10h", "4d", "4h", "50", "%"],
        "{nl_line}"
    );
    assert!(out.contains("bad_signature"), "{out}");

    // Generous threshold: nothing needs attention.
    let (code, out, err) = run(&["--admin", &base, "--max-inbox-age", "3600"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("OK: nothing needs attention"), "{out}");

    // JSON: the report and the attention list.
    let (code, out, _) = run(&["--data", &data, "--json", "--max-inbox-age", "1"]);
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(v["attention"][0]["what"], json!("inbox_backlog"));
    assert_eq!(v["broker"], json!(net.broker_id.as_str()));

    // The broker gone: exit 3.
    let _ = net.stop_broker();
    let (code, _, err) = run(&["--admin", &base]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("Connection refused") || err.contains("connecting"),
        "{err}"
    );
}

/// Where test artefacts go: `$CARGO_TARGET_DIR/test-output` or `target/test-output`.
fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("creating the test output directory");
    dir
}

/// Headless Chromium (Debian's `chromium`, installed by `ops/test`) with `args`, its own
/// fresh profile, no network beyond what the page asks (nothing), killed after 90 s.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "headless Chromium is needed for this test: apt-get install chromium (ops/test does)",
        );
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("waiting for chromium").is_some() {
            return child.wait_with_output().expect("chromium's output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("chromium's output");
            panic!(
                "chromium did not finish within 90 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text of the element with `data-field="field"` (and `data-participant`/`data-country`
/// when given) in a DOM dump.
fn field(dom: &str, field: &str, owner: Option<(&str, &str)>) -> String {
    let attr = format!("data-field=\"{field}\"");
    for (i, _) in dom.match_indices(&attr) {
        let start = dom[..i].rfind('<').expect("an element");
        let end = start + dom[start..].find('>').expect("end of the tag");
        let tag = &dom[start..end];
        if let Some((k, v)) = owner
            && !tag.contains(&format!("data-{k}=\"{v}\""))
        {
            continue;
        }
        let close = dom[end..].find('<').expect("closing tag");
        return dom[end + 1..end + close].to_owned();
    }
    panic!("no element {attr} {owner:?} in the page:\n{dom}");
}

/// The page in a real browser: the figures it shows, and a screenshot for people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let mut net = Network::with("admin-page", quiet_checkpoints()).await;
    net.start_broker();
    let base = admin_url(&net);
    let _t = traffic(&net).await;
    let (fr, nl, de) = (net.id("fr"), net.id("nl"), net.id("de"));
    status_until(&base, "the traffic's figures", |s| {
        participant(s, &de)
            .inbox
            .as_ref()
            .is_some_and(|i| i.depth == 1)
            && participant(s, &nl).last_hour.received == 2
            && s.takedown.all.is_some()
    })
    .await;

    let profile = tempfile::tempdir().expect("a profile directory");
    let url = format!("{base}/");
    let out = tokio::task::block_in_place(|| chromium(profile.path(), &["--dump-dom", &url]));
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = output_dir();
    std::fs::write(dir.join("status-page.html"), &dom).expect("writing the DOM");

    assert_eq!(field(&dom, "readiness", None), "ready");
    assert_eq!(
        field(&dom, "inbox-depth", Some(("participant", de.as_str()))),
        "1"
    );
    assert_eq!(
        field(&dom, "inbox-consumers", Some(("participant", de.as_str()))),
        "0"
    );
    assert_eq!(
        field(&dom, "oldest-envelope", Some(("participant", de.as_str()))),
        _t.r2.as_str()
    );
    assert_eq!(
        field(&dom, "received-hour", Some(("participant", fr.as_str()))),
        "3"
    );
    assert_eq!(
        field(&dom, "rejected-day", Some(("participant", fr.as_str()))),
        "1"
    );
    assert_eq!(
        field(&dom, "duplicates-hour", Some(("participant", fr.as_str()))),
        "1"
    );
    assert_eq!(
        field(&dom, "delivered-hour", Some(("participant", nl.as_str()))),
        "1"
    );
    assert_eq!(field(&dom, "removed", Some(("country", "NL"))), "2");
    assert_eq!(field(&dom, "median", Some(("country", "NL"))), "10h");
    assert_eq!(field(&dom, "p90", Some(("country", "NL"))), "4d 4h");
    assert_eq!(
        field(&dom, "within-3-days", Some(("country", "NL"))),
        "50 %"
    );
    assert_eq!(field(&dom, "rejection-code", None), "bad_signature");
    assert_eq!(field(&dom, "connection", None), "up");
    assert!(
        field(&dom, "checkpoint-size", None)
            .parse::<u64>()
            .is_ok_and(|n| n > 0)
    );
    assert_eq!(field(&dom, "checkpoint-root", None).len(), 64);
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "the page refreshes itself"
    );

    // The picture, for people (and for the closing note).
    let shot = dir.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = tokio::task::block_in_place(|| {
        chromium(
            profile.path(),
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1400,1300",
                &url,
            ],
        )
    });
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}): {}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
}

/// The admin server with mutual TLS: operators of the configured CA get in, nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_over_mutual_tls() {
    let mut net = Network::new("admin-mtls").await;
    let dir = net.certs.dir().join("admin-tls");
    std::fs::create_dir_all(&dir).expect("dir");
    let day = || Validity::days_from_now(1);
    // The server certificate from the node's CA; operators from a CA of their own.
    let server = net
        .vhost
        .node()
        .ca()
        .issue_server(day())
        .expect("a server certificate");
    let (server_cert, server_key) = server.write(&dir, "admin-server").expect("write");
    let operators = DevCa::generate("test operators CA").expect("operators CA");
    let operators_ca = dir.join("operators-ca.pem");
    std::fs::write(&operators_ca, operators.cert_pem()).expect("write");
    let alice: ParticipantId = "ops.alice".parse().expect("id");
    let (alice_cert, alice_key) = operators
        .issue_participant(&alice, day())
        .expect("alice")
        .write(&dir, "alice")
        .expect("write");
    let (mallory_cert, mallory_key) = net
        .vhost
        .node()
        .ca()
        .issue_participant(&"ops.mallory".parse().expect("id"), day())
        .expect("mallory")
        .write(&dir, "mallory")
        .expect("write");
    set_admin(
        &net,
        &format!(
            "[admin.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            server_cert.display().to_string(),
            server_key.display().to_string(),
            operators_ca.display().to_string()
        ),
    );
    net.start_broker();
    let base = admin_url(&net);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let port = base.rsplit(':').next().expect("port").to_owned();
    let node_ca = net.certs.ca_cert();
    let tls = |id: Option<(&Path, &Path)>| ClientTls {
        ca: node_ca.clone(),
        identity: id.map(|(c, k)| (c.to_owned(), k.to_owned())),
    };
    let t = Duration::from_secs(10);

    let ok = client::get(
        &format!("{base}/healthz"),
        Some(&tls(Some((&alice_cert, &alice_key)))),
        t,
    )
    .await
    .expect("alice gets in");
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok\n"));

    let none = client::get(&format!("{base}/healthz"), Some(&tls(None)), t).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let other = client::get(
        &format!("{base}/healthz"),
        Some(&tls(Some((&mallory_cert, &mallory_key)))),
        t,
    )
    .await;
    assert!(other.is_err(), "a certificate of another CA: {other:?}");
    let plain = client::get(&format!("http://127.0.0.1:{port}/healthz"), None, t).await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP on the TLS port: {plain:?}"
    );

    // The status command over mutual TLS.
    let out = Command::new(binary())
        .args([
            "status",
            "--admin",
            &base,
            "--max-inbox-age",
            "3600",
            "--ca",
        ])
        .arg(&node_ca)
        .arg("--cert")
        .arg(&alice_cert)
        .arg("--key")
        .arg(&alice_key)
        .output()
        .expect("running status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(net.broker_id.as_str()), "{stdout}");
}
