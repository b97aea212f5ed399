//! Tests of the store as a whole: open, append, reopen, torn tails, replay and rebuild,
//! concurrent URL reservations, write failures, purge.

use chrono::{Duration, Utc};

use super::*;
use crate::wire::{HashAlgorithm, Kind, State};

fn pid(s: &str) -> ParticipantId {
    s.parse().unwrap()
}

fn small() -> StoreConfig {
    StoreConfig {
        cache_capacity: 8 << 20,
        ..StoreConfig::default()
    }
}

/// Opens the store; retries for up to 5 s while sled's file lock is still held by a store
/// that was just closed (sled releases it from a background thread, a moment later).
fn open(dir: &Path) -> (Store, OpenReport) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, small(), &mut |_, _| {}) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

fn key(n: u8) -> UrlKey {
    UrlKey([n; 32])
}

fn item(n: u8) -> ItemFacts {
    ItemFacts {
        url_key: key(n),
        hashes: vec![HashRef {
            algorithm: HashAlgorithm::Sha256,
            value: hex::encode([n; 32]),
        }],
    }
}

fn received(id: &EnvelopeId, origin: &str, items: Vec<ItemFacts>) -> NewEntry {
    NewEntry::new(Event::Received(Received {
        kind: Kind::Referral,
        items,
    }))
    .envelope(id.clone())
    .participant(pid(origin))
    .message(id.as_str().as_bytes())
}

fn routed(id: &EnvelopeId, origin: &str, dest: &str, items: Vec<u16>) -> NewEntry {
    NewEntry::new(Event::Routed(Routed {
        items,
        reason: "country".into(),
    }))
    .envelope(id.clone())
    .participant(pid(origin))
    .destination(pid(dest))
}

fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    crate::audit::merkle::root_of(leaves)
}

fn simple(n: usize) -> Vec<NewEntry> {
    (0..n)
        .map(|i| {
            NewEntry::new(Event::ParticipantChange(ParticipantChange {
                participant: pid("fr.pointdecontact"),
                change: format!("changed {i}"),
            }))
        })
        .collect()
}

#[test]
fn appends_survive_reopen_and_the_tree_head_is_the_rfc_root() {
    let dir = tempfile::tempdir().unwrap();
    let (s, r) = open(dir.path());
    assert_eq!(r.entries, 0);
    let a = s.append_blocking(simple(3)).unwrap();
    let b = s.append_blocking(simple(2)).unwrap();
    assert_eq!(
        a.iter().chain(&b).map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let head = s.tree_head();
    drop(s);
    let (s, r) = open(dir.path());
    assert_eq!((r.entries, r.replayed, r.truncated_bytes), (5, 0, 0));
    assert_eq!(s.tree_head(), head);
    let leaves = s.reader().leaf_hashes(u64::MAX).unwrap();
    assert_eq!(leaves.len(), 5);
    assert_eq!(head.root, mth(&leaves));
    let c = s.append_blocking(simple(1)).unwrap();
    assert_eq!(c[0].seq, Seq(5));
    let all: Vec<_> = s
        .reader()
        .iter_from(Seq(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (i, le) in all.iter().enumerate() {
        assert!(le.check_ok);
        assert_eq!(le.decode().unwrap().seq.0, i as u64);
    }
    assert_eq!(all[0].decode().unwrap(), a[0]);
}

#[test]
fn a_torn_tail_is_truncated_and_earlier_entries_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let written = s.append_blocking(simple(4)).unwrap();
    drop(s);
    let seg = segment::path(&dir.path().join("log"), 0);
    let good = std::fs::metadata(&seg).unwrap().len();
    // Half a frame, as a crash in the middle of a batch write leaves it.
    let e = Entry::new(Seq(4), Utc::now(), simple(1).remove(0)).unwrap();
    let mut frame = Vec::new();
    segment::encode(e.bytes(), e.leaf_hash(), &mut frame);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &frame[..frame.len() / 2]).unwrap();
    drop(f);
    let (s, r) = open(dir.path());
    assert_eq!(r.entries, 4);
    assert_eq!(r.truncated_bytes, (frame.len() / 2) as u64);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good);
    let back: Vec<Entry> = s
        .reader()
        .iter_from(Seq(0))
        .unwrap()
        .map(|le| le.unwrap().decode().unwrap())
        .collect();
    assert_eq!(back, written);
    assert_eq!(s.append_blocking(simple(1)).unwrap()[0].seq, Seq(4));

    // A whole frame whose bytes changed (torn inside the page) is cut too.
    drop(s);
    let mut bad = frame.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x20;
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &bad).unwrap();
    drop(f);
    let (_s, r) = open(dir.path());
    assert_eq!((r.entries, r.truncated_bytes), (5, bad.len() as u64));
}

#[test]
fn damage_in_an_earlier_segment_is_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        segment_bytes: 1024,
        ..small()
    };
    let (s, _) = Store::open(dir.path(), cfg.clone(), &mut |_, _| {}).unwrap();
    for _ in 0..20 {
        s.append_blocking(simple(3)).unwrap();
    }
    drop(s);
    let segs = segment::list(&dir.path().join("log")).unwrap();
    assert!(segs.len() > 3, "{segs:?}");
    // The reader walks every segment in order.
    let r = LogReader::open(dir.path()).unwrap();
    assert_eq!(r.size().unwrap(), 60);
    let from: Vec<u64> = r
        .iter_from(Seq(37))
        .unwrap()
        .map(|e| e.unwrap().seq.0)
        .collect();
    assert_eq!(from, (37..60).collect::<Vec<_>>());
    // Cut the middle of segment 1: the reader reports it, it is not the tail.
    let p = &segs[1].1;
    let len = std::fs::metadata(p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let err = r.iter_from(Seq(0)).unwrap().find_map(Result::err).unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    // Remove a whole segment: a gap.
    std::fs::remove_file(&segs[2].1).unwrap();
    let err = r.iter_from(Seq(0)).unwrap().find_map(Result::err);
    assert!(err.is_some());
}

/// Appends a scenario with every index-relevant event; returns the envelope ids.
fn scenario(s: &Store) -> Vec<EnvelopeId> {
    let (a, b, c) = (
        EnvelopeId::new_v7(),
        EnvelopeId::new_v7(),
        EnvelopeId::new_v7(),
    );
    let now = Utc::now();
    let de = pid("de.eco");
    // A from fr: items 1, 2 → de. B from it: item 2 (dup) and 3 → de.
    s.append_blocking(vec![received(
        &a,
        "fr.pointdecontact",
        vec![item(1), item(2)],
    )])
    .unwrap();
    assert_eq!(
        s.url_check_and_open(&de, &key(1), &a, now).unwrap(),
        UrlCheck::Opened
    );
    assert_eq!(
        s.url_check_and_open(&de, &key(2), &a, now).unwrap(),
        UrlCheck::Opened
    );
    s.append_blocking(vec![routed(&a, "fr.pointdecontact", "de.eco", vec![0, 1])])
        .unwrap();
    s.append_blocking(vec![
        NewEntry::new(Event::Delivered(Delivered {
            items: vec![0, 1],
            attestation_sha256: None,
        }))
        .envelope(a.clone())
        .destination(de.clone()),
    ])
    .unwrap();
    s.append_blocking(vec![received(&b, "it.stop-it", vec![item(2), item(3)])])
        .unwrap();
    let UrlCheck::Duplicate { first_referral, .. } =
        s.url_check_and_open(&de, &key(2), &b, now).unwrap()
    else {
        panic!("key 2 is open by a")
    };
    assert_eq!(first_referral, a);
    assert_eq!(
        s.url_check_and_open(&de, &key(3), &b, now).unwrap(),
        UrlCheck::Opened
    );
    s.append_blocking(vec![
        routed(&b, "it.stop-it", "de.eco", vec![1]),
        NewEntry::new(Event::Duplicate(Duplicate {
            items: vec![DuplicateItem {
                item: 0,
                url_key: key(2),
                first_referral: a.clone(),
            }],
        }))
        .envelope(b.clone())
        .destination(de.clone()),
        NewEntry::new(Event::NoticeSent(NoticeSent {
            notice: EnvelopeId::new_v7(),
            code: crate::reason::ReasonCode::Duplicate,
            first_referral: Some(a.clone()),
        }))
        .envelope(b.clone())
        .destination(pid("it.stop-it")),
    ])
    .unwrap();
    // de removes A's item 0 (key 1): closed.
    s.append_blocking(vec![
        NewEntry::new(Event::Status(StatusEvent {
            referral: a.clone(),
            item: 0,
            state: State::Removed,
            url_key: None,
        }))
        .envelope(EnvelopeId::new_v7())
        .participant(de.clone()),
    ])
    .unwrap();
    // C, rejected, quarantined; and a checkpoint.
    s.append_blocking(vec![
        NewEntry::new(Event::Rejected(Rejected {
            code: crate::reason::ReasonCode::BadSignature,
            quarantined: true,
        }))
        .envelope(c.clone())
        .participant(pid("fr.pointdecontact"))
        .message(b"raw"),
    ])
    .unwrap();
    let head = s.tree_head();
    s.append_blocking(vec![NewEntry::new(Event::Checkpoint(CheckpointEvent {
        size: head.size,
        root: Sha256Digest(head.root),
        note: "log.example\n".into(),
    }))])
    .unwrap();
    vec![a, b, c]
}

/// Everything the indexes answer about the scenario.
fn answers(s: &Store, ids: &[EnvelopeId]) -> String {
    let de = pid("de.eco");
    let mut out = String::new();
    for id in ids {
        out += &format!(
            "{:?}\n{:?}\n",
            s.envelope(id).unwrap(),
            s.referral(id).unwrap()
        );
        let seqs: Vec<u64> = s.entries_of(id).unwrap().iter().map(|e| e.seq.0).collect();
        out += &format!("{seqs:?}\n");
    }
    for n in 1..=4 {
        // Reservation times differ from entry times by a little; the rest must agree.
        let u = s
            .url_key(&de, &key(n))
            .unwrap()
            .map(|r| (r.open, r.first_referral, r.count));
        out += &format!("{u:?}\n");
        let h = s
            .hash_sighting(&item(n).hashes[0])
            .unwrap()
            .map(|h| (h.first_referral, h.count));
        out += &format!("{h:?}\n");
    }
    out += &format!(
        "{:?}\n{:?}\n",
        s.checkpoints().unwrap(),
        s.quarantine(10).unwrap()
    );
    out
}

#[test]
fn indexes_follow_the_entries_and_a_rebuild_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let ids = scenario(&s);
    let before = answers(&s, &ids);
    let de = pid("de.eco");
    let k1 = s.url_key(&de, &key(1)).unwrap().unwrap();
    assert!(!k1.open, "removed closes the key");
    let k2 = s.url_key(&de, &key(2)).unwrap().unwrap();
    assert!(k2.open && k2.first_referral == ids[0] && k2.count == 2);
    let rec = s.envelope(&ids[1]).unwrap().unwrap();
    assert_eq!(rec.destinations[&de].routed.as_ref().unwrap().0, vec![1]);
    assert_eq!(
        rec.destinations[&de].duplicates.as_ref().unwrap().0,
        vec![0]
    );
    assert_eq!(rec.notices.len(), 1);
    assert_eq!(
        s.envelope(&ids[2]).unwrap().unwrap().rejected.unwrap().0,
        crate::reason::ReasonCode::BadSignature
    );
    assert_eq!(s.quarantine(10).unwrap().len(), 1);
    assert!(s.latest_checkpoint().unwrap().is_some());
    // The status entry about A is among A's entries.
    assert!(
        s.entries_of(&ids[0])
            .unwrap()
            .iter()
            .any(|e| matches!(e.event, Event::Status(_)))
    );
    // After `removed`, the same URL opens again for a new referral.
    let d = EnvelopeId::new_v7();
    assert_eq!(
        s.url_check_and_open(&de, &key(1), &d, Utc::now()).unwrap(),
        UrlCheck::Opened
    );
    // … but that reservation is not in the log: undo it by not logging it and rebuilding.
    drop(s);

    let mut calls = 0;
    let r = rebuild_index(dir.path(), small(), &mut |_, _| calls += 1).unwrap();
    assert!(calls > 0);
    assert_eq!(r.replayed, r.entries);
    let (s, r) = open(dir.path());
    assert_eq!(r.replayed, 0);
    assert_eq!(answers(&s, &ids), before);
    assert_eq!(
        s.url_check_and_open(&de, &key(2), &d, Utc::now()).unwrap(),
        UrlCheck::Duplicate {
            first_referral: ids[0].clone(),
            count: 2,
            first_seen: s.url_key(&de, &key(2)).unwrap().unwrap().first_seen,
        }
    );
}

#[test]
fn open_url_keys_come_back_on_open_and_reservations_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (s, r) = open(dir.path());
    assert_eq!(r.url_load.keys, 0);
    let ids = scenario(&s);
    let before = answers(&s, &ids);
    let de = pid("de.eco");
    // Open: key 2 (a) and key 3 (b); key 1 was closed by `removed`.
    assert_eq!(s.url_index().open_keys, 2);
    // A reservation that is never logged.
    let d = EnvelopeId::new_v7();
    assert_eq!(
        s.url_check_and_open(&de, &key(4), &d, Utc::now()).unwrap(),
        UrlCheck::Opened
    );
    assert!(s.url_key(&de, &key(4)).unwrap().unwrap().open);
    assert_eq!(s.url_index().open_keys, 3);
    assert!(s.url_index().approx_bytes >= 3 * 58);
    drop(s);

    let (s, r) = open(dir.path());
    assert_eq!((r.replayed, r.url_load.keys), (0, 2));
    assert_eq!(answers(&s, &ids), before);
    assert_eq!(s.url_key(&de, &key(4)).unwrap(), None, "reservation lost");
    let e = EnvelopeId::new_v7();
    for (k, first) in [(2, Some(&ids[0])), (3, Some(&ids[1])), (1, None), (4, None)] {
        let got = s.url_check_and_open(&de, &key(k), &e, Utc::now()).unwrap();
        match first {
            Some(f) => assert!(
                matches!(&got, UrlCheck::Duplicate { first_referral, .. } if first_referral == f),
                "key {k}: {got:?}"
            ),
            None => assert_eq!(got, UrlCheck::Opened, "key {k}"),
        }
    }
    // The holder asking again (a redelivery) is answered `Opened`.
    assert_eq!(
        s.url_check_and_open(&de, &key(2), &ids[0], Utc::now())
            .unwrap(),
        UrlCheck::Opened
    );
}

/// An index written when the open URL keys were kept in sled (under `u`, with a closed one
/// there too, as a still earlier version kept them): they move to memory and a snapshot on
/// open, `u` is emptied, and the answers stay the same.
#[test]
fn an_index_with_the_url_keys_in_sled_moves_them_to_memory_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let ids = scenario(&s);
    let before = answers(&s, &ids);
    let de = pid("de.eco");
    let open_keys: Vec<(UrlKey, UrlKeyRecord)> = [key(2), key(3)]
        .into_iter()
        .map(|k| (k, s.url_key(&de, &k).unwrap().unwrap()))
        .collect();
    let table = url_table(&s);
    let sightings: Vec<(HashRef, HashSighting)> = (1..=4)
        .filter_map(|n| {
            let h = item(n).hashes[0].clone();
            let sighting = s.hash_sighting(&h).unwrap()?;
            Some((h, sighting))
        })
        .collect();
    drop(s);
    std::fs::remove_file(dir.path().join("index").join(urlsnap::FILE)).unwrap();
    let tail = |k: &UrlKey| [de.as_str().as_bytes(), &[0], &k.0].concat();
    // The old binary record: 1 | open | count | first ms | last ms (BE) | referral.
    let old_record = |r: &UrlKeyRecord| {
        [
            &[1u8, u8::from(r.open)][..],
            &r.count.to_be_bytes(),
            &r.first_seen.timestamp_millis().to_be_bytes(),
            &r.last_seen.timestamp_millis().to_be_bytes(),
            r.first_referral.as_str().as_bytes(),
        ]
        .concat()
    };
    {
        let db = sled::open(dir.path().join("index")).unwrap();
        for (k, r) in &open_keys {
            db.insert([&b"u"[..], &tail(k)].concat(), old_record(r))
                .unwrap();
        }
        let (closed_key, closed) = db
            .scan_prefix([&b"x"[..], &tail(&key(1))].concat())
            .next()
            .unwrap()
            .unwrap();
        db.remove(closed_key).unwrap();
        db.insert([&b"u"[..], &tail(&key(1))].concat(), closed)
            .unwrap();
        let mut meta: serde_json::Value =
            serde_json::from_slice(&db.get(b"m").unwrap().unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("urls_in_memory");
        db.insert(b"m", serde_json::to_vec(&meta).unwrap()).unwrap();
        db.flush().unwrap();
    }
    // That index kept the hash sightings in sled too.
    make_hash_sightings_legacy(dir.path(), &sightings);
    let (s, r) = open(dir.path());
    assert_eq!((r.replayed, r.url_load.keys), (0, 2));
    assert_eq!(answers(&s, &ids), before);
    assert_eq!(url_table(&s), table);
    assert!(!s.url_key(&de, &key(1)).unwrap().unwrap().open);
    let snap = urlsnap::read(&dir.path().join("index")).unwrap().unwrap();
    assert_eq!((snap.from(), snap.urls.len()), (r.entries, 2));
    drop(s);
    {
        let db = sled::open(dir.path().join("index")).unwrap();
        assert_eq!(db.scan_prefix(b"u").count(), 0);
    }
    let (s, _) = open(dir.path());
    assert_eq!(answers(&s, &ids), before);
}

/// The logged part of the URL table, as sorted text (comparable across salts).
fn url_table(s: &Store) -> Vec<String> {
    s.current().unwrap().index.logged_urls()
}

fn removed(referral: &EnvelopeId, item: u16, dest: &str) -> NewEntry {
    NewEntry::new(Event::Status(StatusEvent {
        referral: referral.clone(),
        item,
        state: State::Removed,
        url_key: None,
    }))
    .envelope(EnvelopeId::new_v7())
    .participant(pid(dest))
}

fn duplicate(
    id: &EnvelopeId,
    origin: &str,
    dest: &str,
    items: &[(u16, u8, &EnvelopeId)],
) -> NewEntry {
    NewEntry::new(Event::Duplicate(Duplicate {
        items: items
            .iter()
            .map(|&(item, k, first)| DuplicateItem {
                item,
                url_key: key(k),
                first_referral: first.clone(),
            })
            .collect(),
    }))
    .envelope(id.clone())
    .participant(pid(origin))
    .destination(pid(dest))
}

/// The state of URL keys 1..=8 at de.eco.
fn url_answers(s: &Store) -> Vec<Option<UrlKeyRecord>> {
    (1..=8)
        .map(|n| s.url_key(&pid("de.eco"), &key(n)).unwrap())
        .collect()
}

#[test]
fn the_url_table_comes_back_from_its_snapshot_and_a_damaged_one_is_replayed_instead() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let ids = scenario(&s);
    let before = (answers(&s, &ids), url_answers(&s), url_table(&s));
    let size = s.tree_head().size;
    drop(s);
    let snap_path = dir.path().join("index").join(urlsnap::FILE);
    // Written on close, covering the whole log.
    let snap = urlsnap::read(&dir.path().join("index")).unwrap().unwrap();
    assert_eq!((snap.from(), snap.urls.len()), (size, 2));
    let (s, r) = open(dir.path());
    assert_eq!(r.url_load.keys, 2);
    assert_eq!((answers(&s, &ids), url_answers(&s), url_table(&s)), before);
    drop(s);
    // Damaged: every URL effect is replayed from the log, to the same table.
    let mut bytes = std::fs::read(&snap_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&snap_path, &bytes).unwrap();
    let (s, r) = open(dir.path());
    assert_eq!(r.url_load.keys, 2);
    assert_eq!((answers(&s, &ids), url_answers(&s), url_table(&s)), before);
    drop(s);
    // The close wrote a good one again; and without any, the same.
    assert!(urlsnap::read(&dir.path().join("index")).is_ok());
    std::fs::remove_file(&snap_path).unwrap();
    let (s, r) = open(dir.path());
    assert_eq!(r.url_load.keys, 2);
    assert_eq!((answers(&s, &ids), url_answers(&s), url_table(&s)), before);
}

/// Issue 5: the open URL keys are not written to sled; after a crash the table is the last
/// snapshot plus the URL effects of the entries after it, each applied once.
#[test]
fn a_crash_after_a_snapshot_gives_the_same_url_decisions_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.faults()
        .url_snapshot_every
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let ids = scenario(&s);
    let (a, de, now) = (&ids[0], pid("de.eco"), Utc::now());
    let snap_seq = urlsnap::read(&dir.path().join("index"))
        .unwrap()
        .unwrap()
        .from();
    assert!(snap_seq > 0);
    // From here on only the log and sled know (as if killed before the next snapshot).
    s.faults()
        .no_url_snapshots
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // E: key 2 again (a duplicate of A: counted, 3 reports) and key 5 (opened).
    let e = EnvelopeId::new_v7();
    s.append_blocking(vec![received(&e, "it.stop-it", vec![item(2), item(5)])])
        .unwrap();
    assert!(matches!(
        s.url_check_and_open(&de, &key(2), &e, now).unwrap(),
        UrlCheck::Duplicate { .. }
    ));
    assert_eq!(
        s.url_check_and_open(&de, &key(5), &e, now).unwrap(),
        UrlCheck::Opened
    );
    s.append_blocking(vec![
        routed(&e, "it.stop-it", "de.eco", vec![1]),
        duplicate(&e, "it.stop-it", "de.eco", &[(0, 2, a)]),
    ])
    .unwrap();
    // Key 6: F opens it; Q is told it is F's; F's copy is removed before Q's duplicate
    // entry is logged (counted against F's closed record); then G reports it again (a new
    // referral) and G's copy is removed too. Replaying Q's duplicate must see the key as
    // F's close left it, not as G's close (later) did.
    let (f, q, g) = (
        EnvelopeId::new_v7(),
        EnvelopeId::new_v7(),
        EnvelopeId::new_v7(),
    );
    for id in [&f, &q, &g] {
        s.append_blocking(vec![received(id, "fr.pointdecontact", vec![item(6)])])
            .unwrap();
    }
    assert_eq!(
        s.url_check_and_open(&de, &key(6), &f, now).unwrap(),
        UrlCheck::Opened
    );
    s.append_blocking(vec![routed(&f, "fr.pointdecontact", "de.eco", vec![0])])
        .unwrap();
    assert!(matches!(
        s.url_check_and_open(&de, &key(6), &q, now).unwrap(),
        UrlCheck::Duplicate { first_referral, .. } if first_referral == f
    ));
    s.append_blocking(vec![removed(&f, 0, "de.eco")]).unwrap();
    s.append_blocking(vec![duplicate(
        &q,
        "fr.pointdecontact",
        "de.eco",
        &[(0, 6, &f)],
    )])
    .unwrap();
    assert_eq!(
        s.url_check_and_open(&de, &key(6), &g, now).unwrap(),
        UrlCheck::Opened
    );
    s.append_blocking(vec![routed(&g, "fr.pointdecontact", "de.eco", vec![0])])
        .unwrap();
    s.append_blocking(vec![removed(&g, 0, "de.eco")]).unwrap();
    // A reservation that is never logged.
    s.url_check_and_open(&de, &key(7), &q, now).unwrap();

    let k2 = s.url_key(&de, &key(2)).unwrap().unwrap();
    assert_eq!((k2.open, &k2.first_referral, k2.count), (true, a, 3));
    let k6 = s.url_key(&de, &key(6)).unwrap().unwrap();
    assert_eq!((k6.open, &k6.first_referral), (false, &g));
    let mut ids = ids.clone();
    ids.extend([e, f, q, g.clone()]);
    let before = (answers(&s, &ids), url_table(&s));
    let mut urls_before = url_answers(&s);
    urls_before[6] = None; // key 7: the reservation, lost
    let size = s.tree_head().size;
    drop(s);
    assert_eq!(
        urlsnap::read(&dir.path().join("index"))
            .unwrap()
            .unwrap()
            .from(),
        snap_seq,
        "no snapshot on the way down"
    );
    assert!(snap_seq < size);

    for round in 0..2 {
        let (s, r) = open(dir.path());
        assert_eq!(r.replayed, 0, "sled was flushed with each batch");
        assert_eq!((answers(&s, &ids), url_table(&s)), before, "round {round}");
        assert_eq!(url_answers(&s), urls_before, "round {round}");
        // Decisions: 2, 3, 5 are duplicates of their holders; 1, 6, 7 open again.
        let n = EnvelopeId::new_v7();
        for (k, first) in [
            (2, Some(a)),
            (5, Some(&ids[3])),
            (6, None),
            (1, None),
            (7, None),
        ] {
            let got = s.url_check_and_open(&de, &key(k), &n, Utc::now()).unwrap();
            match first {
                Some(f) => assert!(
                    matches!(&got, UrlCheck::Duplicate { first_referral, .. } if first_referral == f),
                    "key {k}: {got:?}"
                ),
                None => assert_eq!(got, UrlCheck::Opened, "key {k}"),
            }
        }
        // Crash again: the same window is replayed, nothing counted twice.
        s.faults()
            .no_url_snapshots
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // A clean close snapshots the whole log; the next open replays nothing.
    let (s, _) = open(dir.path());
    drop(s);
    let snap = urlsnap::read(&dir.path().join("index")).unwrap().unwrap();
    assert_eq!(snap.from(), size);
    let (s, _) = open(dir.path());
    assert_eq!((answers(&s, &ids), url_table(&s)), before);
}

#[test]
fn a_reservation_is_never_in_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.faults()
        .url_snapshot_every
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let ids = scenario(&s);
    let de = pid("de.eco");
    let d = EnvelopeId::new_v7();
    // Reserved (key 4), then a batch with URL effects (key 5, opened by E): a snapshot.
    assert_eq!(
        s.url_check_and_open(&de, &key(4), &d, Utc::now()).unwrap(),
        UrlCheck::Opened
    );
    let e = EnvelopeId::new_v7();
    s.append_blocking(vec![received(&e, "it.stop-it", vec![item(5)])])
        .unwrap();
    s.url_check_and_open(&de, &key(5), &e, Utc::now()).unwrap();
    s.append_blocking(vec![routed(&e, "it.stop-it", "de.eco", vec![0])])
        .unwrap();
    let size = s.tree_head().size;
    let snap = urlsnap::read(&dir.path().join("index")).unwrap().unwrap();
    assert_eq!(snap.from(), size);
    assert_eq!(s.url_index().open_keys, 4, "2, 3, 5 and the reservation");
    assert_eq!(snap.urls.len(), 3);
    let slot = |n: u8| {
        snap.salt
            .slot(&[de.as_str().as_bytes(), &[0], &key(n).0].concat())
    };
    assert_eq!(snap.urls.get(&slot(4)).unwrap(), None);
    for (n, holder) in [(2, &ids[0]), (3, &ids[1]), (5, &e)] {
        assert_eq!(
            &snap.urls.get(&slot(n)).unwrap().unwrap().first_referral,
            holder
        );
    }
    // Nor on close.
    drop(s);
    let snap = urlsnap::read(&dir.path().join("index")).unwrap().unwrap();
    assert_eq!(snap.urls.len(), 3);
    assert_eq!(snap.urls.get(&slot(4)).unwrap(), None);
}

#[test]
fn a_deleted_index_is_replayed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let ids = scenario(&s);
    let before = answers(&s, &ids);
    let head = s.tree_head();
    drop(s);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let (s, r) = open(dir.path());
    assert_eq!(r.replayed, r.entries);
    assert_eq!(s.tree_head(), head);
    assert_eq!(answers(&s, &ids), before);
}

#[test]
fn concurrent_check_and_open_lets_exactly_one_through() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let de = pid("de.eco");
    for round in 0..20u8 {
        let opened: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let (s, de) = (&s, &de);
                    sc.spawn(move || {
                        let id = EnvelopeId::new_v7();
                        matches!(
                            s.url_check_and_open(de, &key(round), &id, Utc::now())
                                .unwrap(),
                            UrlCheck::Opened
                        ) as usize
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(opened, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_get_distinct_consecutive_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..10 {
                seqs.extend(s.append(simple(2)).await.unwrap().iter().map(|e| e.seq.0));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        // Each call's two entries are consecutive.
        assert!(seqs.chunks(2).all(|c| c[1] == c[0] + 1));
        all.extend(seqs);
    }
    all.sort();
    assert_eq!(all, (0..1280).collect::<Vec<_>>());
    s.close().await.unwrap();
    assert!(matches!(s.append(simple(1)).await, Err(StoreError::Closed)));
}

#[test]
fn a_failed_write_leaves_nothing_and_the_next_batch_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.append_blocking(simple(2)).unwrap();
    let head = s.tree_head();
    s.faults()
        .fail_write
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = s.append_blocking(simple(3)).unwrap_err();
    assert!(matches!(err, StoreError::WriteFailed(_)), "{err}");
    assert_eq!(s.tree_head(), head);
    assert_eq!(s.append_blocking(simple(1)).unwrap()[0].seq, Seq(2));
    drop(s);
    let (_s, r) = open(dir.path());
    assert_eq!((r.entries, r.truncated_bytes), (3, 0));
}

#[test]
fn a_failed_fsync_poisons_the_store_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.append_blocking(simple(2)).unwrap();
    s.faults()
        .fail_sync
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        s.append_blocking(simple(1)),
        Err(StoreError::WriteFailed(_))
    ));
    assert!(matches!(
        s.append_blocking(simple(1)),
        Err(StoreError::Poisoned(_))
    ));
    drop(s);
    let (s, r) = open(dir.path());
    assert_eq!(r.entries, 2);
    assert_eq!(s.append_blocking(simple(1)).unwrap()[0].seq, Seq(2));
}

#[test]
fn purge_drops_bodies_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let old = Utc::now() - Duration::days(40);
    let d_old = s.put_body(b"{\"old\":1}", old).unwrap();
    let d_new = s.put_body(b"{\"new\":1}", Utc::now()).unwrap();
    let id = EnvelopeId::new_v7();
    s.append_blocking(vec![received(&id, "fr.pointdecontact", vec![item(1)])])
        .unwrap();
    let leaves_before = s.reader().leaf_hashes(u64::MAX).unwrap();
    let r = s.purge_bodies(Utc::now() - Duration::days(30)).unwrap();
    assert_eq!((r.bodies, r.entry), (1, Seq(1)));
    assert_eq!(s.body(&d_old).unwrap(), None);
    assert_eq!(s.body(&d_new).unwrap().unwrap(), b"{\"new\":1}");
    // Every earlier leaf is unchanged; every frame checks and decodes; root = MTH.
    let leaves = s.reader().leaf_hashes(u64::MAX).unwrap();
    assert_eq!(&leaves[..leaves_before.len()], &leaves_before[..]);
    for le in s.reader().iter_from(Seq(0)).unwrap() {
        let le = le.unwrap();
        assert!(le.check_ok);
        le.decode().unwrap();
    }
    assert_eq!(s.tree_head().root, mth(&leaves));
    // Bodies survive an index rebuild (they are not derived from the log).
    drop(s);
    rebuild_index(dir.path(), small(), &mut |_, _| {}).unwrap();
    let (s, _) = open(dir.path());
    assert!(s.body(&d_new).unwrap().is_some());
}

#[test]
fn checkpoints_fall_due_by_count_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        checkpoint_every_entries: 5,
        checkpoint_every_secs: 60,
        ..small()
    };
    let (s, _) = Store::open(dir.path(), cfg, &mut |_, _| {}).unwrap();
    let now = Utc::now();
    assert_eq!(s.checkpoint_due(now), None, "empty log");
    s.append_blocking(simple(1)).unwrap();
    let head = s.checkpoint_due(now).expect("first checkpoint");
    s.append_blocking(vec![NewEntry::new(Event::Checkpoint(CheckpointEvent {
        size: head.size,
        root: Sha256Digest(head.root),
        note: String::new(),
    }))])
    .unwrap();
    assert_eq!(s.checkpoint_due(Utc::now()), None);
    assert_eq!(
        s.checkpoint_due(Utc::now() + Duration::seconds(120)),
        None,
        "nothing new"
    );
    s.append_blocking(simple(1)).unwrap();
    assert!(
        s.checkpoint_due(Utc::now() + Duration::seconds(120))
            .is_some()
    );
    s.append_blocking(simple(4)).unwrap();
    assert!(s.checkpoint_due(Utc::now()).is_some());
}

#[test]
fn a_second_open_of_the_same_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, _) = open(dir.path());
    let err = Store::open(dir.path(), small(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, StoreError::Index { .. }), "{err}");
}

/// A snapshot copied over several batches holds each shard as of a different seq; after a
/// crash each key's URL effects are replayed from its own shard's seq: counts come back
/// exact, none applied twice or missed.
#[test]
fn a_snapshot_copied_over_several_batches_replays_each_shard_from_its_own_seq() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.faults().url_snapshot_every.store(1, SeqCst);
    s.faults().url_copy_budget.store(40, SeqCst);
    let keys: Vec<UrlKey> = (0..600u16)
        .map(|n| UrlKey(<sha2::Sha256 as sha2::Digest>::digest(n.to_le_bytes()).into()))
        .collect();
    let firsts: Vec<EnvelopeId> = keys.iter().map(|_| EnvelopeId::new_v7()).collect();
    // One batch per 100 keys opened, then one per round of a duplicate of every key.
    for c in 0..6 {
        let mut batch = Vec::new();
        for i in c * 100..(c + 1) * 100 {
            let facts = ItemFacts {
                url_key: keys[i],
                hashes: Vec::new(),
            };
            batch.push(received(&firsts[i], "fr.pointdecontact", vec![facts]));
            batch.push(routed(&firsts[i], "fr.pointdecontact", "de.eco", vec![0]));
        }
        s.append_blocking(batch).unwrap();
    }
    let dup_round = |s: &Store| {
        let q = EnvelopeId::new_v7();
        let items = keys
            .iter()
            .zip(&firsts)
            .enumerate()
            .map(|(i, (k, first))| DuplicateItem {
                item: i as u16,
                url_key: *k,
                first_referral: first.clone(),
            })
            .collect();
        let e = NewEntry::new(Event::Duplicate(Duplicate { items }))
            .envelope(q)
            .participant(pid("it.stop-it"))
            .destination(pid("de.eco"));
        s.append_blocking(vec![e]).unwrap();
    };
    for _ in 0..12 {
        dup_round(&s);
    }
    let snap = urlsnap::read(&dir.path().join("index")).unwrap().unwrap();
    let (lo, hi) = (snap.from(), snap.seqs.iter().copied().max().unwrap());
    assert!(
        lo < hi,
        "the shards were copied at different seqs: {lo}..{hi}"
    );
    // Killed: what follows the last snapshot is in the log only.
    s.faults().no_url_snapshots.store(true, SeqCst);
    dup_round(&s);
    let table = url_table(&s);
    let size = s.tree_head().size;
    drop(s);
    assert!(
        urlsnap::read(&dir.path().join("index"))
            .unwrap()
            .unwrap()
            .from()
            < size
    );
    let (s, r) = open(dir.path());
    assert_eq!(r.url_load.keys, 600);
    assert_eq!(url_table(&s), table);
    for (k, first) in keys.iter().zip(&firsts) {
        let rec = s.url_key(&pid("de.eco"), k).unwrap().unwrap();
        assert_eq!(
            (rec.open, &rec.first_referral, rec.count),
            (true, first, 14)
        );
    }
}

/// Set in the child process of [`a_sigkill_leaves_the_url_table_a_rebuild_would_give`].
const URL_CRASH_CHILD: &str = "REFBROKER_URL_CRASH_CHILD_DIR";

fn crash_key(n: u64) -> UrlKey {
    UrlKey(<sha2::Sha256 as sha2::Digest>::digest(n.to_le_bytes()).into())
}

fn crash_dest(n: u64) -> ParticipantId {
    pid(if n.is_multiple_of(2) {
        "de.eco"
    } else {
        "nl.ehk"
    })
}

/// The child: four threads of referrals (5 new keys and 5 earlier ones each, checked, then
/// logged; every 7th also has one of its keys removed), snapshots every 500 URL effects,
/// copied 40 keys per batch; prints what it logged until it is killed.
#[test]
fn url_crash_child() {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    let Ok(dir) = std::env::var(URL_CRASH_CHILD) else {
        return;
    };
    let (s, _) = open(Path::new(&dir));
    s.faults().url_snapshot_every.store(500, SeqCst);
    s.faults().url_copy_budget.store(40, SeqCst);
    let next = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let (s, next) = (&s, &next);
            sc.spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for r in 0u64.. {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let first = next.fetch_add(5, SeqCst);
                    let mut keys: Vec<u64> = (first..first + 5).collect();
                    keys.extend((0..5).map(|i| rng.rotate_left(i * 12) % (first + 1)));
                    let id = EnvelopeId::new_v7();
                    let items = keys
                        .iter()
                        .map(|&n| ItemFacts {
                            url_key: crash_key(n),
                            hashes: Vec::new(),
                        })
                        .collect();
                    let mut entries = vec![received(&id, "fr.pointdecontact", items)];
                    for dest in [pid("de.eco"), pid("nl.ehk")] {
                        let (mut opened, mut dups) = (Vec::new(), Vec::new());
                        for (i, &n) in keys.iter().enumerate() {
                            if crash_dest(n) != dest || keys[..i].contains(&n) {
                                continue;
                            }
                            match s
                                .url_check_and_open(&dest, &crash_key(n), &id, Utc::now())
                                .unwrap()
                            {
                                UrlCheck::Opened => opened.push(i as u16),
                                UrlCheck::Duplicate { first_referral, .. } => {
                                    dups.push(DuplicateItem {
                                        item: i as u16,
                                        url_key: crash_key(n),
                                        first_referral,
                                    })
                                }
                            }
                        }
                        if !opened.is_empty() {
                            entries.push(routed(&id, "fr.pointdecontact", dest.as_str(), opened));
                        }
                        if !dups.is_empty() {
                            entries.push(
                                NewEntry::new(Event::Duplicate(Duplicate { items: dups }))
                                    .envelope(id.clone())
                                    .participant(pid("fr.pointdecontact"))
                                    .destination(dest),
                            );
                        }
                    }
                    s.append_blocking(entries).unwrap();
                    if r % 7 == 3 {
                        let dest = crash_dest(keys[0]);
                        s.append_blocking(vec![removed(&id, 0, dest.as_str())])
                            .unwrap();
                    }
                    println!("logged {} {}", r, first + 5);
                }
            });
        }
    });
}

/// Issue 5: killed at any moment (between snapshots, while one is copied or written), the
/// store reopens to the URL table that replaying the whole log gives, key for key.
#[test]
fn a_sigkill_leaves_the_url_table_a_rebuild_would_give() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "store::tests::url_crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(URL_CRASH_CHILD, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut logged, mut keys) = (0, 0u64);
    while logged < 2500 {
        let line = lines.next().expect("the child stopped early").unwrap();
        if let Some(rest) = line.strip_prefix("logged ") {
            logged += 1;
            let n = rest.split(' ').nth(1).unwrap().parse::<u64>().unwrap();
            keys = keys.max(n);
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    // Keys handed out after the last line read may be in the log too.
    let keys = keys + 4 * 5 * 50;
    let state = |s: &Store| -> Vec<Option<UrlKeyRecord>> {
        (0..keys)
            .map(|n| s.url_key(&crash_dest(n), &crash_key(n)).unwrap())
            .collect()
    };

    let index = dir.path().join("index");
    let snap = urlsnap::read(&index)
        .unwrap()
        .expect("the child wrote snapshots");
    let (s, r) = open(dir.path());
    assert!(r.url_load.keys > 5000, "{r:?}");
    assert!(
        snap.from() < r.entries,
        "the log goes on after the snapshot"
    );
    let (table, after_crash) = (url_table(&s), state(&s));
    assert!(
        after_crash
            .iter()
            .any(|r| r.as_ref().is_some_and(|r| !r.open))
    );
    assert!(
        after_crash
            .iter()
            .any(|r| r.as_ref().is_some_and(|r| r.count > 1))
    );
    s.faults()
        .no_url_snapshots
        .store(true, std::sync::atomic::Ordering::SeqCst);
    drop(s);

    std::fs::remove_dir_all(&index).unwrap();
    let (s, r) = open(dir.path());
    assert_eq!(r.replayed, r.entries, "rebuilt from the log alone");
    assert_eq!(url_table(&s), table);
    let rebuilt = state(&s);
    for (n, (a, b)) in after_crash.iter().zip(&rebuilt).enumerate() {
        assert_eq!(a, b, "key {n}");
    }
}

/// An index written when hash sightings were kept in sled: `h` records (alternately in
/// the binary layout of the last such version and in JSON, as the first ones wrote them),
/// no `hashes_in_memory` in the meta record and no URL snapshot (it would hold them).
fn make_hash_sightings_legacy(dir: &Path, sightings: &[(HashRef, HashSighting)]) {
    let _ = std::fs::remove_file(dir.join("index").join(urlsnap::FILE));
    let db = sled::open(dir.join("index")).unwrap();
    for (i, (h, s)) in sightings.iter().enumerate() {
        let k = [
            b"h",
            h.algorithm.as_str().as_bytes(),
            &[0],
            h.value.as_bytes(),
        ]
        .concat();
        let v = match i % 2 {
            0 => index::legacy_sighting_bytes(s),
            _ => serde_json::to_vec(s).unwrap(),
        };
        db.insert(k, v).unwrap();
    }
    let mut meta: serde_json::Value =
        serde_json::from_slice(&db.get(b"m").unwrap().unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("hashes_in_memory");
    db.insert(b"m", serde_json::to_vec(&meta).unwrap()).unwrap();
    db.flush().unwrap();
}

/// Hash sightings live in the URL table: the same answers after a close (from the
/// snapshot), after a crash (replayed from the log), and from an older index whose `h`
/// records move into the table on open (then `h` is empty).
#[test]
fn hash_sightings_survive_a_close_a_crash_and_the_move_out_of_sled() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let (a, b, c) = (
        EnvelopeId::new_v7(),
        EnvelopeId::new_v7(),
        EnvelopeId::new_v7(),
    );
    // A brings hashes 1 and 2; B brings 2 again and 3, in one batch with a second copy of A's
    // `received` (a redelivery): neither changes who came first.
    s.append_blocking(vec![received(
        &a,
        "fr.pointdecontact",
        vec![item(1), item(2)],
    )])
    .unwrap();
    s.append_blocking(vec![
        received(&b, "it.stop-it", vec![item(2), item(3)]),
        received(&a, "fr.pointdecontact", vec![item(1), item(2)]),
    ])
    .unwrap();
    let answers = |s: &Store, expect: &[(u8, Option<&EnvelopeId>, u64)]| {
        for &(n, first, count) in expect {
            let h = &item(n).hashes[0];
            assert_eq!(
                s.hash_first_referral(h).unwrap().as_ref(),
                first,
                "hash {n}"
            );
            let sighting = s.hash_sighting(h).unwrap();
            assert_eq!(
                sighting.as_ref().map(|s| (&s.first_referral, s.count)),
                first.map(|f| (f, count)),
                "hash {n}"
            );
        }
    };
    let three = [
        (1, Some(&a), 2),
        (2, Some(&a), 3),
        (3, Some(&b), 1),
        (4, None, 0),
    ];
    answers(&s, &three);
    assert_eq!(s.url_index().hash_sightings, 3);
    drop(s);
    let (s, r) = open(dir.path());
    assert_eq!(r.replayed, 0);
    answers(&s, &three);
    // C brings hash 4; then a crash: no snapshot has it, the log does.
    s.faults()
        .no_url_snapshots
        .store(true, std::sync::atomic::Ordering::SeqCst);
    s.append_blocking(vec![received(&c, "it.stop-it", vec![item(4)])])
        .unwrap();
    let four = [
        (1, Some(&a), 2),
        (2, Some(&a), 3),
        (3, Some(&b), 1),
        (4, Some(&c), 1),
    ];
    answers(&s, &four);
    let sightings: Vec<(HashRef, HashSighting)> = (1..=4)
        .map(|n| {
            let h = item(n).hashes[0].clone();
            let sighting = s.hash_sighting(&h).unwrap().unwrap();
            (h, sighting)
        })
        .collect();
    drop(s);
    let (s, _) = open(dir.path());
    answers(&s, &four);
    assert_eq!(s.url_index().hash_sightings, 4);
    drop(s);
    // An older index: the sightings in sled, none in a snapshot (there is none).
    make_hash_sightings_legacy(dir.path(), &sightings);
    let (s, _) = open(dir.path());
    answers(&s, &four);
    let snap = urlsnap::read(&dir.path().join("index")).unwrap().unwrap();
    assert_eq!(snap.urls.sightings(), 4);
    drop(s);
    {
        let db = sled::open(dir.path().join("index")).unwrap();
        assert_eq!(db.scan_prefix(b"h").count(), 0);
    }
    let (s, _) = open(dir.path());
    answers(&s, &four);
    let d = EnvelopeId::new_v7();
    s.append_blocking(vec![received(&d, "it.stop-it", vec![item(4), item(5)])])
        .unwrap();
    answers(&s, &[(4, Some(&c), 2), (5, Some(&d), 1)]);
}
