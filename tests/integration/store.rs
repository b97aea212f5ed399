//! The store through its commands and across a real crash (no RabbitMQ needed):
//! - a process appending from many threads is SIGKILLed; on reopen every acknowledged entry
//!   is there, the log checks frame by frame, and the index caught up by replay;
//! - `audit rebuild-index` after deleting `index/` gives the same dedup decisions;
//! - `audit purge` drops old bodies and the log still verifies.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{Duration, Utc};
use referral_broker::ids::{EnvelopeId, ParticipantId};
use referral_broker::store::{
    Duplicate, DuplicateItem, Event, HashRef, ItemFacts, LogReader, NewEntry, Received, Routed,
    Seq, StatusEvent, Store, StoreConfig, UrlCheck, UrlKey,
};
use referral_broker::wire::{HashAlgorithm, Kind, State};

fn pid(s: &str) -> ParticipantId {
    s.parse().unwrap()
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreConfig::default(), &mut |_, _| {})
        .unwrap()
        .0
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_referral-broker"))
}

const CHILD_ENV: &str = "REFBROKER_STORE_CRASH_CHILD";

/// Not a test of its own: the child process of `sigkill_loses_no_acknowledged_entry`, which
/// appends from 16 threads and prints each acknowledged seq. Returns at once otherwise.
#[test]
fn store_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = open(Path::new(&dir));
    std::thread::scope(|s| {
        for t in 0..16 {
            let store = store.clone();
            s.spawn(move || {
                for i in 0u64.. {
                    let e = NewEntry::new(Event::Routed(Routed {
                        items: vec![0],
                        reason: format!("thread {t} append {i}"),
                    }))
                    .envelope(EnvelopeId::new_v7())
                    .destination(pid("de.eco"));
                    let done = store.append_blocking(vec![e]).unwrap();
                    println!("acked {}", done[0].seq);
                }
            });
        }
    });
}

#[test]
fn sigkill_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "store::store_crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 3000 {
        let line = lines.next().expect("the child stopped early").unwrap();
        if let Some(seq) = line.strip_prefix("acked ") {
            acked.push(seq.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();

    let (store, report) = Store::open(dir.path(), StoreConfig::default(), &mut |_, _| {}).unwrap();
    let max = *acked.iter().max().unwrap();
    assert!(report.entries > max, "{report:?}, highest acked {max}");
    let reader = LogReader::open(dir.path()).unwrap();
    let mut n = 0;
    for le in reader.iter_from(Seq(0)).unwrap() {
        let le = le.unwrap();
        assert!(le.check_ok, "entry {}", le.seq);
        assert_eq!(le.decode().unwrap().seq, le.seq);
        n += 1;
    }
    assert_eq!(n, report.entries);
    assert_eq!(store.tree_head().size, report.entries);
    // Appends continue after the last durable entry.
    let next = store.append_blocking(vec![NewEntry::new(Event::Routed(Routed {
        items: vec![],
        reason: "after the crash".into(),
    }))]);
    assert_eq!(next.unwrap()[0].seq, Seq(report.entries));
}

fn key(n: u8) -> UrlKey {
    UrlKey([n; 32])
}

fn referral(s: &Store, id: &EnvelopeId, origin: &str, dest: &ParticipantId, keys: &[u8]) {
    let items = keys
        .iter()
        .map(|&k| ItemFacts {
            url_key: key(k),
            hashes: vec![HashRef {
                algorithm: HashAlgorithm::Md5,
                value: hex::encode([k; 16]),
            }],
        })
        .collect();
    s.append_blocking(vec![
        NewEntry::new(Event::Received(Received {
            kind: Kind::Referral,
            items,
        }))
        .envelope(id.clone())
        .participant(pid(origin)),
    ])
    .unwrap();
    let mut routed = Vec::new();
    let mut dups = Vec::new();
    for (i, &k) in keys.iter().enumerate() {
        match s.url_check_and_open(dest, &key(k), id, Utc::now()).unwrap() {
            UrlCheck::Opened => routed.push(i as u16),
            UrlCheck::Duplicate { first_referral, .. } => dups.push(DuplicateItem {
                item: i as u16,
                url_key: key(k),
                first_referral,
            }),
        }
    }
    let mut entries = vec![
        NewEntry::new(Event::Routed(Routed {
            items: routed,
            reason: "country".into(),
        }))
        .envelope(id.clone())
        .participant(pid(origin))
        .destination(dest.clone()),
    ];
    if !dups.is_empty() {
        entries.push(
            NewEntry::new(Event::Duplicate(Duplicate { items: dups }))
                .envelope(id.clone())
                .participant(pid(origin))
                .destination(dest.clone()),
        );
    }
    s.append_blocking(entries).unwrap();
}

#[test]
fn rebuild_index_command_restores_the_same_dedup_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let de = pid("de.eco");
    let (a, b) = (EnvelopeId::new_v7(), EnvelopeId::new_v7());
    let decisions = |s: &Store| {
        let keys: Vec<_> = (1..=4)
            .map(|k| {
                s.url_key(&de, &key(k))
                    .unwrap()
                    .map(|r| (r.open, r.first_referral, r.count))
            })
            .collect();
        format!(
            "{keys:?}\n{:?}\n{:?}\n{:?}",
            s.envelope(&a).unwrap(),
            s.envelope(&b).unwrap(),
            s.referral(&b).unwrap()
        )
    };
    let before = {
        let s = open(dir.path());
        referral(&s, &a, "fr.pointdecontact", &de, &[1, 2]);
        referral(&s, &b, "it.stop-it", &de, &[2, 3]);
        s.append_blocking(vec![
            NewEntry::new(Event::Status(StatusEvent {
                referral: a.clone(),
                item: 0,
                state: State::Removed,
                url_key: Some(key(1)),
            }))
            .participant(de.clone()),
        ])
        .unwrap();
        decisions(&s)
    };
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let out = bin()
        .args(["audit", "rebuild-index", "--quiet", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("from 6 entries"));
    let s = open(dir.path());
    assert_eq!(decisions(&s), before);
    // The decisions a new referral gets: key 2 open by a (duplicate), key 1 removed (opens).
    let c = EnvelopeId::new_v7();
    assert!(matches!(
        s.url_check_and_open(&de, &key(2), &c, Utc::now()).unwrap(),
        UrlCheck::Duplicate { first_referral, count: 2, .. } if first_referral == a
    ));
    assert_eq!(
        s.url_check_and_open(&de, &key(1), &c, Utc::now()).unwrap(),
        UrlCheck::Opened
    );
}

#[test]
fn purge_command_drops_old_bodies_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = {
        let s = open(dir.path());
        let old = s
            .put_body(b"{\"n\":1}", Utc::now() - Duration::days(90))
            .unwrap();
        let new = s.put_body(b"{\"n\":2}", Utc::now()).unwrap();
        referral(
            &s,
            &EnvelopeId::new_v7(),
            "fr.pointdecontact",
            &pid("de.eco"),
            &[7],
        );
        (old, new)
    };
    let out = bin()
        .args(["audit", "purge", "--older-than", "30", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped 1 message bodies"));
    {
        let s = open(dir.path());
        assert_eq!(s.body(&old).unwrap(), None);
        assert!(s.body(&new).unwrap().is_some());
        let last = s.entries_of(&EnvelopeId::new_v7()).unwrap();
        assert!(last.is_empty());
        assert_eq!(s.tree_head().size, 3, "received, routed, purge");
    }
    let out = bin()
        .args(["audit", "verify", "--no-signatures", "--quiet", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify after purge: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
