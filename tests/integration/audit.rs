//! The chain of custody on real logs (issue 5): tamper tests (`audit verify` names the first
//! bad sequence number; a kept checkpoint exposes a rewrite through `audit consistency`) and
//! evidence bundles that verify offline with only the broker's public key and fail when any
//! byte changes.
//!
//! Two kinds of log:
//! - written through the store's API ([`referral_broker::store::Store`]) with the entries the
//!   daemon writes (received, routed, delivered, receipts) and signed checkpoints — no
//!   RabbitMQ needed;
//! - written by the daemon itself during an end-to-end exchange on the run's node
//!   ([`super::network::Network`]). The daemon does not cut checkpoints yet, so after it
//!   stops the test appends one the way the daemon will: the store's tree head, signed with
//!   the broker's key ([`BrokerCheckpoint::sign`]).
//!
//! The tampering edits segment files directly (frames `len u32 LE | check u32 LE | bytes`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{Duration as ChronoDuration, Utc};
use indicatif::ProgressBar;
use referral_broker::audit::bundle::check_bundle;
use referral_broker::audit::checkpoint::{BrokerCheckpoint, origin_for};
use referral_broker::audit::merkle::leaf_hash;
use referral_broker::cli::audit::{check_consistency, prove_envelope, verify_log};
use referral_broker::ids::{EnvelopeId, ParticipantId};
use referral_broker::signing::{Signer, VerifyingKey};
use referral_broker::store::{
    CheckpointEvent, Delivered, Event, NewEntry, ReceiptEvent, Received, Routed, Sha256Digest,
    Store, StoreConfig,
};
use referral_broker::wire::{Kind, Outcome};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_referral-broker")
}

fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running referral-broker")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn pid(s: &str) -> ParticipantId {
    s.parse().expect("participant id")
}

fn open_store(dir: &Path) -> Store {
    let (store, _) = Store::open(dir, StoreConfig::default(), &mut |_, _| {}).expect("open store");
    store
}

fn close_store(store: Store) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(store.close()).expect("close store");
}

/// Cuts a checkpoint of everything in the store, as the daemon does, and logs it.
fn append_checkpoint(store: &Store, broker: &ParticipantId, signer: &Signer) -> BrokerCheckpoint {
    let head = store.tree_head();
    let cp = BrokerCheckpoint::sign(
        &origin_for(broker),
        head.size,
        head.root,
        Utc::now(),
        broker.as_str(),
        signer,
    )
    .expect("sign a checkpoint");
    store
        .append_blocking(vec![NewEntry::new(Event::Checkpoint(CheckpointEvent {
            size: cp.size,
            root: Sha256Digest(cp.root),
            note: cp.note.clone(),
        }))])
        .expect("append the checkpoint");
    cp
}

/// A log like the daemon's: for each of 8 referrals from fr to de, `received`, `routed`,
/// `delivered` and a `receipt`, interleaved, with a checkpoint after every third referral
/// and one at the end (the one a participant keeps).
struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    signer: Signer,
    referrals: Vec<EnvelopeId>,
    kept: BrokerCheckpoint,
}

fn store_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let signer = Signer::generate().expect("key");
    let broker = pid("net.broker-example");
    let (fr, de) = (pid("fr.hotline-example"), pid("de.hotline-example"));
    let store = open_store(&data);
    let mut referrals = Vec::new();
    let mut kept = None;
    for i in 0..8u32 {
        let id = EnvelopeId::new_v7();
        let msg = format!("referral {i}");
        let entries = vec![
            NewEntry::new(Event::Received(Received {
                kind: Kind::Referral,
                items: vec![],
            }))
            .envelope(id.clone())
            .participant(fr.clone())
            .message(msg.as_bytes()),
            NewEntry::new(Event::Routed(Routed {
                items: vec![0],
                reason: "country".into(),
            }))
            .envelope(id.clone())
            .participant(fr.clone())
            .destination(de.clone()),
            NewEntry::new(Event::Delivered(Delivered {
                items: vec![0],
                attestation_sha256: Some(Sha256Digest::of(msg.as_bytes())),
            }))
            .envelope(id.clone())
            .participant(fr.clone())
            .destination(de.clone()),
            NewEntry::new(Event::Receipt(ReceiptEvent {
                referral: id.clone(),
                outcome: Outcome::Accepted,
            }))
            .envelope(EnvelopeId::new_v7())
            .participant(de.clone())
            .destination(fr.clone())
            .message(format!("receipt {i}").as_bytes()),
        ];
        store.append_blocking(entries).expect("append");
        referrals.push(id);
        if i % 3 == 2 || i == 7 {
            kept = Some(append_checkpoint(&store, &broker, &signer));
        }
    }
    close_store(store);
    Fixture {
        _dir: dir,
        data,
        signer,
        referrals,
        kept: kept.expect("a final checkpoint"),
    }
}

// ----------------------------------------------------------------------------------------
// Segment files, frame by frame.

struct Frame {
    check: [u8; 4],
    bytes: Vec<u8>,
}

impl Frame {
    /// A frame whose check matches its bytes (what a forger who knows the format writes).
    fn honest(bytes: Vec<u8>) -> Frame {
        let h = leaf_hash(&bytes);
        Frame {
            check: [h[0], h[1], h[2], h[3]],
            bytes,
        }
    }
}

fn segment(data: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .expect("log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "these tests expect one segment: {segs:?}");
    segs.pop().expect("one segment")
}

fn read_frames(data: &Path) -> Vec<Frame> {
    let buf = std::fs::read(segment(data)).expect("read segment");
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let check = buf[at + 4..at + 8].try_into().expect("4 bytes");
        out.push(Frame {
            check,
            bytes: buf[at + 8..at + 8 + len].to_vec(),
        });
        at += 8 + len;
    }
    assert_eq!(at, buf.len(), "whole frames only");
    out
}

fn write_frames(data: &Path, frames: &[Frame]) {
    let mut buf = Vec::new();
    for f in frames {
        buf.extend_from_slice(&(f.bytes.len() as u32).to_le_bytes());
        buf.extend_from_slice(&f.check);
        buf.extend_from_slice(&f.bytes);
    }
    std::fs::write(segment(data), buf).expect("write segment");
}

/// A copy of the data directory's log only (the index is derived; a forger rebuilds it).
fn copy_log(data: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("data");
    std::fs::create_dir_all(copy.join("log")).expect("mkdir");
    let seg = segment(data);
    std::fs::copy(&seg, copy.join("log").join(seg.file_name().expect("name"))).expect("copy");
    (dir, copy)
}

fn is_checkpoint(f: &Frame) -> bool {
    String::from_utf8_lossy(&f.bytes).contains("\"event\":\"checkpoint\"")
}

/// A non-checkpoint entry in the middle of the log, whose next entry is not one either.
fn middle(frames: &[Frame]) -> usize {
    (frames.len() / 2..frames.len() - 2)
        .find(|&k| !is_checkpoint(&frames[k]) && !is_checkpoint(&frames[k + 1]))
        .expect("an entry to tamper with")
}

fn key_b64(key: &VerifyingKey) -> String {
    referral_broker::signing::encode_public_key_b64(key)
}

// ----------------------------------------------------------------------------------------
// The scenarios, for any log with a final kept checkpoint.

/// `audit verify` on `data`: Ok(()) or the failure's (first bad seq, bad before).
fn verify(data: &Path, key: &VerifyingKey) -> Result<u64, (u64, Option<u64>, String)> {
    let out = verify_log(data, std::slice::from_ref(key), &ProgressBar::hidden()).expect("verify");
    match out.failure {
        None => Ok(out.entries),
        Some(f) => Err((f.first_bad_seq, f.bad_before, f.why)),
    }
}

/// Runs the binary's `audit verify` and checks its exit code and named seq.
fn verify_cli(data: &Path, key: &VerifyingKey, first_bad: Option<u64>) {
    let o = run(&[
        "audit",
        "verify",
        "--quiet",
        "--data",
        data.to_str().expect("utf-8 path"),
        "--broker-key",
        &key_b64(key),
    ]);
    let t = text(&o);
    eprintln!("--- audit verify {}:\n{t}", data.display());
    match first_bad {
        None => {
            assert!(o.status.success(), "{t}");
            assert!(t.contains("verified") && t.contains("entries/s"), "{t}");
        }
        Some(seq) => {
            assert_eq!(o.status.code(), Some(1), "{t}");
            assert!(
                t.contains(&format!("first bad sequence number: {seq}")),
                "expected seq {seq}:\n{t}"
            );
        }
    }
}

fn changed_byte_is_named(data: &Path, key: &VerifyingKey) {
    let (_d, copy) = copy_log(data);
    let mut frames = read_frames(&copy);
    let k = middle(&frames);
    // One byte of entry k, its frame left as it was.
    let at = frames[k].bytes.len() / 2;
    frames[k].bytes[at] ^= 0x01;
    write_frames(&copy, &frames);
    let (seq, _, why) = verify(&copy, key).expect_err("a changed byte must not verify");
    assert_eq!(seq, k as u64, "{why}");
    verify_cli(&copy, key, Some(k as u64));

    // The same change by a forger who also fixes the frame's check: the entry no longer
    // decodes canonically, or (if it still does) its checkpoint's root no longer matches.
    let (_d2, copy2) = copy_log(data);
    let mut frames = read_frames(&copy2);
    let text = String::from_utf8(frames[k].bytes.clone()).expect("entries are UTF-8");
    // A hex digit of the message hash: still a canonical entry, only the tree can tell.
    let pos = text.find("\"sha256\":\"").map(|p| p + 10);
    let mut bytes = frames[k].bytes.clone();
    match pos {
        Some(p) => bytes[p] = if bytes[p] == b'0' { b'1' } else { b'0' },
        None => bytes[at] ^= 0x01,
    }
    frames[k] = Frame::honest(bytes);
    write_frames(&copy2, &frames);
    let (first, before, why) = verify(&copy2, key).expect_err("a re-framed change must fail");
    assert!(
        first <= k as u64,
        "first bad {first} after the change at {k}: {why}"
    );
    if let Some(end) = before {
        assert!(
            k < end as usize,
            "the change at {k} is not before {end}: {why}"
        );
    } else {
        assert_eq!(first, k as u64, "{why}");
    }
    verify_cli(&copy2, key, Some(first));
}

fn deleted_entry_is_named(data: &Path, key: &VerifyingKey) {
    let (_d, copy) = copy_log(data);
    let mut frames = read_frames(&copy);
    let k = middle(&frames);
    frames.remove(k);
    write_frames(&copy, &frames);
    let (seq, _, why) = verify(&copy, key).expect_err("a deleted entry must not verify");
    assert_eq!(seq, k as u64, "{why}");
    verify_cli(&copy, key, Some(k as u64));
}

fn swapped_entries_are_named(data: &Path, key: &VerifyingKey) {
    let (_d, copy) = copy_log(data);
    let mut frames = read_frames(&copy);
    let k = middle(&frames);
    frames.swap(k, k + 1);
    write_frames(&copy, &frames);
    let (seq, _, why) = verify(&copy, key).expect_err("swapped entries must not verify");
    assert_eq!(seq, k as u64, "{why}");
    verify_cli(&copy, key, Some(k as u64));
}

/// Truncates the log at its middle and grows it back with different entries through the
/// store (index rebuilt, every frame honest). Returns the rewritten copy.
fn truncate_and_regrow(
    data: &Path,
    paste_old_checkpoint: bool,
) -> (tempfile::TempDir, PathBuf, u64) {
    let (d, copy) = copy_log(data);
    let mut frames = read_frames(&copy);
    let old_len = frames.len();
    let last = frames.pop().expect("the final checkpoint entry");
    assert!(is_checkpoint(&last));
    let cut = middle(&frames);
    frames.truncate(cut);
    write_frames(&copy, &frames);
    let store = open_store(&copy);
    let fake: Vec<NewEntry> = (cut..old_len)
        .map(|i| {
            NewEntry::new(Event::Received(Received {
                kind: Kind::Referral,
                items: vec![],
            }))
            .envelope(EnvelopeId::new_v7())
            .participant(pid("xx.forger-example"))
            .message(format!("forged {i}").as_bytes())
        })
        .collect();
    store.append_blocking(fake).expect("regrow");
    if paste_old_checkpoint {
        // The forger cannot sign: it pastes the last checkpoint it had.
        let text = String::from_utf8(last.bytes).expect("UTF-8");
        let entry = referral_broker::store::Entry::decode(text.as_bytes()).expect("entry");
        store
            .append_blocking(vec![NewEntry::new(entry.event)])
            .expect("paste");
    }
    close_store(store);
    (d, copy, cut as u64)
}

fn regrown_log_is_exposed(
    data: &Path,
    key: &VerifyingKey,
    kept: &BrokerCheckpoint,
    kept_file: &Path,
) {
    // With the old checkpoint pasted back: its root no longer matches; the failure names
    // where the rewrite can start (the last checkpoint that still matches) and its end.
    let (_d, copy, cut) = truncate_and_regrow(data, true);
    let (first, before, why) = verify(&copy, key).expect_err("a regrown log must not verify");
    assert!(
        first <= cut,
        "first bad {first} after the cut at {cut}: {why}"
    );
    assert_eq!(before, Some(kept.size), "{why}");
    verify_cli(&copy, key, Some(first));

    // Without any old checkpoint in it, the regrown log is self-consistent; the checkpoint a
    // participant kept exposes it.
    let (_d2, copy2, _) = truncate_and_regrow(data, false);
    let out = check_consistency(&copy2, None, None, Some(kept)).expect("consistency");
    let why = out
        .rewritten
        .expect("the kept checkpoint must expose the rewrite");
    assert!(why.contains("rewritten"), "{why}");
    for dir in [&copy, &copy2] {
        let o = run(&[
            "audit",
            "consistency",
            "--data",
            dir.to_str().expect("utf-8"),
            "--checkpoint",
            kept_file.to_str().expect("utf-8"),
            "--broker-key",
            &key_b64(key),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("NOT CONSISTENT"), "{}", text(&o));
    }
    // The untouched log still extends it.
    let o = run(&[
        "audit",
        "consistency",
        "--data",
        data.to_str().expect("utf-8"),
        "--checkpoint",
        kept_file.to_str().expect("utf-8"),
        "--broker-key",
        &key_b64(key),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("consistent: the log still extends"),
        "{}",
        text(&o)
    );
}

/// `audit prove` then `audit check-bundle` with only the key; every changed byte fails.
fn bundle_checks_offline(data: &Path, key: &VerifyingKey, envelope: &EnvelopeId, at_least: usize) {
    let out = prove_envelope(data, envelope, std::slice::from_ref(key)).expect("prove");
    let bytes = out.bundle.to_bytes();
    let report = check_bundle(&bytes, key).expect("the bundle checks");
    assert!(report.entries.len() >= at_least, "{report:?}");
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(
            check_bundle(&b, key).is_err(),
            "byte {i} changed, still accepted"
        );
    }

    // The same through the binary, as a court would: the file and the key, nothing else.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bundle.json");
    let o = run(&[
        "audit",
        "prove",
        envelope.as_str(),
        "--data",
        data.to_str().expect("utf-8"),
        "--out",
        file.to_str().expect("utf-8"),
        "--broker-key",
        &key_b64(key),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[
        "audit",
        "check-bundle",
        file.to_str().expect("utf-8"),
        "--broker-key",
        &key_b64(key),
    ]);
    let t = text(&o);
    eprintln!("--- audit check-bundle:\n{t}");
    assert!(o.status.success(), "{t}");
    assert!(t.contains("VALID") && t.contains(envelope.as_str()), "{t}");
    assert!(
        t.contains("received referral") && t.contains("delivered"),
        "{t}"
    );
    let mut written = std::fs::read(&file).expect("bundle");
    let mid = written.len() / 2;
    written[mid] ^= 0x04;
    std::fs::write(&file, &written).expect("write");
    let o = run(&[
        "audit",
        "check-bundle",
        file.to_str().expect("utf-8"),
        "--broker-key",
        &key_b64(key),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("DOES NOT CHECK"), "{}", text(&o));
}

fn all_scenarios(data: &Path, key: &VerifyingKey, kept: &BrokerCheckpoint, envelope: &EnvelopeId) {
    verify(data, key).expect("the untouched log verifies");
    verify_cli(data, key, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let kept_file = dir.path().join("kept-checkpoint.txt");
    std::fs::write(&kept_file, &kept.note).expect("write the kept checkpoint");
    bundle_checks_offline(data, key, envelope, 3);
    changed_byte_is_named(data, key);
    deleted_entry_is_named(data, key);
    swapped_entries_are_named(data, key);
    regrown_log_is_exposed(data, key, kept, &kept_file);
}

/// Issue 5, on a log written through the store's API (no RabbitMQ).
#[test]
fn audit_tamper_tests_and_bundles_on_a_store_log() {
    let f = store_fixture();
    let key = f.signer.verifying_key();
    all_scenarios(&f.data, &key, &f.kept, &f.referrals[4]);
    // A checkpoint signed by another key is refused by verify.
    let other = Signer::generate().expect("key");
    let out =
        verify_log(&f.data, &[other.verifying_key()], &ProgressBar::hidden()).expect("verify");
    let fail = out
        .failure
        .expect("another key must not verify the checkpoints");
    assert!(fail.why.contains("checkpoint"), "{}", fail.why);
    // A checkpoint older than the log's end in a kept file, as the JSON message body.
    let body = serde_json::to_string(&f.kept.to_wire()).expect("json");
    let out = check_consistency(&f.data, None, None, Some(&f.kept)).expect("consistency");
    assert!(out.rewritten.is_none());
    assert!(body.contains("\"note\""));
}

/// Entries whose checkpoint was cut long before the checkpoint entry itself (beyond the
/// window of recent trees) are checked in a second pass.
#[test]
fn audit_verify_checks_late_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let signer = Signer::generate().expect("key");
    let broker = pid("net.broker-example");
    let store = open_store(&data);
    let head_at = |store: &Store| store.tree_head();
    let entry = |i: u64| {
        NewEntry::new(Event::Received(Received {
            kind: Kind::Referral,
            items: vec![],
        }))
        .envelope(EnvelopeId::new_v7())
        .message(format!("m {i}").as_bytes())
    };
    store
        .append_blocking((0..10).map(entry).collect())
        .expect("append");
    let early = head_at(&store);
    store
        .append_blocking((10..9000).map(entry).collect())
        .expect("append");
    let cp = BrokerCheckpoint::sign(
        &origin_for(&broker),
        early.size,
        early.root,
        Utc::now() - ChronoDuration::seconds(5),
        broker.as_str(),
        &signer,
    )
    .expect("sign");
    store
        .append_blocking(vec![NewEntry::new(Event::Checkpoint(CheckpointEvent {
            size: cp.size,
            root: Sha256Digest(cp.root),
            note: cp.note.clone(),
        }))])
        .expect("append");
    close_store(store);
    let out = verify_log(&data, &[signer.verifying_key()], &ProgressBar::hidden()).expect("verify");
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(out.covered, 10);
    assert_eq!(out.entries, 9001);
}

/// Issue 5, on a log written by the daemon during an end-to-end exchange.
#[tokio::test(flavor = "multi_thread")]
async fn audit_tamper_tests_and_bundles_on_a_daemon_log() {
    use super::network::{Network, item, random_url, referral};
    use std::time::Duration;

    let mut net = Network::new("audit_daemon_log").await;
    net.start_broker();
    let fr = net.peer("fr").await;
    let de = net.peer("de").await;
    let mut sent = Vec::new();
    for _ in 0..6 {
        let env = fr.envelope(referral(vec![item(&random_url(), "DE")]));
        sent.push(fr.send(&env).await);
    }
    for _ in 0..6 {
        de.recv(Duration::from_secs(20))
            .await
            .expect("the referral reaches de");
    }
    let status = net.stop_broker();
    assert!(status.success(), "broker exit: {status}");
    let key = net.broker_signer.verifying_key();
    let data = net.data_dir.clone();
    let broker_id = net.broker_id.clone();
    let signer = Signer::from_seed(
        // The harness keeps the broker's signer; sign with it through a copy of its key file.
        read_seed(&net),
    );
    assert_eq!(signer.verifying_key(), key);
    let kept = tokio::task::spawn_blocking(move || {
        let store = open_store(&data);
        let cp = append_checkpoint(&store, &broker_id, &signer);
        close_store(store);
        cp
    })
    .await
    .expect("checkpoint task");
    let data = net.data_dir.clone();
    let envelope = sent[2].clone();
    tokio::task::spawn_blocking(move || all_scenarios(&data, &key, &kept, &envelope))
        .await
        .expect("scenarios");
}

/// The broker's seed, from the key file the harness wrote for the daemon.
fn read_seed(net: &super::network::Network) -> [u8; 32] {
    use base64::Engine as _;
    let path = net
        .dir
        .path()
        .join("keys")
        .join(format!("{}.key", net.broker_id));
    let text = std::fs::read_to_string(&path).expect("the broker's key file");
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .expect("base64")
        .try_into()
        .expect("32 bytes")
}
