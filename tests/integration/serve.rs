//! The routing daemon end to end (issue 4, "Done when"), against the private node, with
//! `referral-broker serve` as a child process ([`super::network`]):
//! - every routing rule (country, explicit `to`, fallback, urgent copy, multi-country split,
//!   no self-delivery, unroutable notice), the destination verifying the origin's signature
//!   on the bytes it received and the broker's attestation;
//! - every ingress reason code provoked over the wire by a crafted message: its notice, its
//!   quarantine entry, and a valid message right after still flows;
//! - receipts, `removed` and `disputed` reach the origin; a retraction reaches every
//!   destination; a participant that is not a destination cannot report;
//! - URL deduplication per destination and hash sightings in the attestation;
//! - SIGKILL in the middle of a batch and restart: nothing lost, duplicates marked;
//! - SIGTERM: finishes what it took, exits 0; a bad configuration exits 78;
//! - flood control: one participant's flood does not hold up another's messages.
//!
//! Each test has its own vhost and broker; they run in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use referral_broker::audit::checkpoint::{BrokerCheckpoint, origin_for};
use referral_broker::ids::{EnvelopeId, ParticipantId};
use referral_broker::route::RouteReason;
use referral_broker::signing::Signer;
use referral_broker::store::{Event, LogReader, Seq};
use referral_broker::wire::{Body, Envelope, Outcome, Receipt, Retraction, State, Status};
use serde_json::Value;

use super::network::{
    self, Network, Options, Peer, Received, WAIT, item, item_with_hash, random_hash, random_url,
    referral, referral_with, wire_properties,
};

/// Reads exactly `n` messages (panics if fewer arrive), then checks that nothing more comes
/// for `quiet`. Returns them by envelope id.
async fn exactly(peer: &Peer, n: usize, quiet: Duration) -> BTreeMap<String, Vec<Received>> {
    let mut got: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for i in 0..n {
        let m = peer.recv(WAIT).await.unwrap_or_else(|| {
            panic!(
                "{}: {i} of {n} messages arrived: {:?}",
                peer.name,
                got.values()
                    .flatten()
                    .map(Received::summary)
                    .collect::<Vec<_>>()
            )
        });
        got.entry(m.message_id()).or_default().push(m);
    }
    if let Some(extra) = peer.recv(quiet).await {
        panic!(
            "{}: unexpected extra message {}",
            peer.name,
            extra.summary()
        );
    }
    got
}

fn status(referral: &EnvelopeId, item: u16, state: State, reason: Option<&str>) -> Body {
    Body::Status(Status {
        referral: referral.clone(),
        item,
        state,
        at: chrono::Utc::now(),
        reason: reason.map(str::to_owned),
        lea_case_number: None,
        note: None,
    })
}

fn receipt(referral: &EnvelopeId) -> Body {
    Body::Receipt(Receipt {
        referral: referral.clone(),
        outcome: Outcome::Accepted,
        reason: None,
        received_at: Some(chrono::Utc::now()),
    })
}

fn reasons(r: &[RouteReason]) -> Vec<&'static str> {
    r.iter().map(|r| r.as_str()).collect()
}

/// Each routing rule (country, explicit `to`, fallback, urgent copy, copy rule on
/// classification, multi-country split, no self-delivery, unroutable), checked at the
/// destination: the origin's signature on the bytes
/// received, the attestation (items, reasons, addressed to it), nothing to anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_rules_end_to_end() {
    // A copy rule on classification: every item with an infant or toddler victim also to the
    // police (as hotline networks copy baseline material to Interpol).
    let options = Options {
        routing: "[[routing.copy]]\nvictim_age_group = \"infant_toddler\"\nto = \"{lea}\"\n".into(),
        ..Options::default()
    };
    let mut net = Network::with("serve-routing", options).await;
    net.start_broker();
    let (fr, nl, de, lea) = (
        net.peer("fr").await,
        net.peer("nl").await,
        net.peer("de").await,
        net.peer("lea").await,
    );

    // Country: an item hosted in NL goes to the NL hotline.
    let by_country = fr
        .send(&fr.envelope(referral(vec![item(&random_url(), "NL")])))
        .await;
    // Explicit `to` wins over the country.
    let explicit = fr
        .send(&fr.envelope(referral_with(
            vec![item(&random_url(), "NL")],
            false,
            Some(&de.id),
        )))
        .await;
    // Fallback: no hotline covers US; the fallback (de) gets it.
    let fallback = fr
        .send(&fr.envelope(referral(vec![item(&random_url(), "US")])))
        .await;
    // Urgent: the NL hotline and the NL police.
    let urgent = fr
        .send(&fr.envelope(referral_with(vec![item(&random_url(), "NL")], true, None)))
        .await;
    // Multi-country split: NL, DE, NL → nl gets items 0 and 2, de item 1, both the whole referral.
    let split = fr
        .send(&fr.envelope(referral(vec![
            item(&random_url(), "NL"),
            item(&random_url(), "DE"),
            item(&random_url(), "NL"),
        ])))
        .await;
    // No self-delivery: nl refers an NL item (only itself covers NL) and a DE one.
    let own = nl
        .send(&nl.envelope(referral(vec![
            item(&random_url(), "NL"),
            item(&random_url(), "DE"),
        ])))
        .await;
    // Unroutable: `to` names the broker (an operator, not a receiver): nobody gets it.
    let broker = net.broker_id.clone();
    let unroutable = fr
        .send(&fr.envelope(referral_with(
            vec![item(&random_url(), "NL")],
            false,
            Some(&broker),
        )))
        .await;

    // Copy rule: a DE item with an infant victim goes to de (country) and the police.
    let mut infant = item(&random_url(), "DE");
    infant["classification"]["victim_age_group"] = "infant_toddler".into();
    let copied = fr.send(&fr.envelope(referral(vec![infant]))).await;

    let quiet = Duration::from_millis(1500);
    let at_nl = exactly(&nl, 3 + 1, quiet).await; // by_country, urgent, split + unroutable notice
    let at_de = exactly(&de, 5, quiet).await; // explicit, fallback, split, own, copied
    let at_lea = exactly(&lea, 2, quiet).await; // urgent, copied
    let at_fr = exactly(&fr, 1, quiet).await; // unroutable notice

    let check =
        |got: &BTreeMap<String, Vec<Received>>, id: &EnvelopeId, items: &[(u16, &[&str])]| {
            let m = got
                .get(id.as_str())
                .unwrap_or_else(|| panic!("{id} missing"))
                .first()
                .expect("one");
            assert_eq!(m.kind(), "referral");
            let a = m.attestation();
            let seen: Vec<(u16, Vec<&str>)> = a
                .items
                .iter()
                .map(|i| (i.index, reasons(&i.reasons)))
                .collect();
            let want: Vec<(u16, Vec<&str>)> = items.iter().map(|(i, r)| (*i, r.to_vec())).collect();
            assert_eq!(seen, want, "attested items of {id}");
            assert!(a.duplicates.is_empty());
            assert!(a.audit_seq > 0);
            m.body.clone()
        };
    check(&at_nl, &by_country, &[(0, &["country"])]);
    check(&at_de, &explicit, &[(0, &["explicit"])]);
    check(&at_de, &fallback, &[(0, &["fallback"])]);
    check(&at_nl, &urgent, &[(0, &["country"])]);
    check(&at_lea, &urgent, &[(0, &["urgent_lea"])]);
    check(&at_de, &copied, &[(0, &["country"])]);
    check(&at_lea, &copied, &[(0, &["copy_rule"])]);
    let nl_copy = check(&at_nl, &split, &[(0, &["country"]), (2, &["country"])]);
    let de_copy = check(&at_de, &split, &[(1, &["country"])]);
    assert_eq!(
        nl_copy, de_copy,
        "the referral is forwarded whole, byte for byte, to each"
    );
    check(&at_de, &own, &[(1, &["country"])]);
    assert!(
        !at_nl.contains_key(own.as_str()),
        "the origin never receives its own referral"
    );

    // The unroutable notices: nl about item 0 of its own referral, fr about the broker `to`.
    let notice_of = |got: &BTreeMap<String, Vec<Received>>| {
        got.values()
            .flatten()
            .find(|m| m.kind() == "notice")
            .expect("a notice")
            .notice()
    };
    let n = notice_of(&at_nl);
    assert_eq!(
        (n.code.as_str(), n.about.as_ref(), n.items.as_deref()),
        ("unroutable", Some(&own), Some(&[0u16][..]))
    );
    let n = notice_of(&at_fr);
    assert_eq!(
        (n.code.as_str(), n.about.as_ref()),
        ("unroutable", Some(&unroutable))
    );

    assert!(net.stop_broker().success());
}

/// Each ingress reason code, provoked over the wire: the sender gets a broker-signed notice
/// with the code, the raw bytes land in quarantine with the reason, and a valid referral
/// sent right after still flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingress_rejection_is_noticed_quarantined_and_the_next_message_flows() {
    let mut net = Network::new("serve-rejections").await;
    net.start_broker();
    let (fr, nl) = (net.peer("fr").await, net.peer("nl").await);
    let quarantine = net.quarantine().await;
    let fresh = || fr.envelope(referral(vec![item(&random_url(), "NL")]));
    let (expired, revoked) = (
        Signer::from_seed(net.member("fr").expired_seed),
        Signer::from_seed(net.member("fr").revoked_seed),
    );
    let stranger = Signer::generate().expect("key");

    struct Case {
        code: &'static str,
        bytes: Vec<u8>,
        props: BasicProperties,
        about: Option<EnvelopeId>,
    }
    let props_for = |bytes: &[u8], e: &Envelope, signer: &Signer| {
        wire_properties(
            fr.id.as_str(),
            e.kind.as_str(),
            e.id.as_str(),
            &signer.sign_b64(bytes),
            signer.key_id().as_str(),
        )
    };
    let mut cases = Vec::new();
    {
        let e = fresh();
        let bytes = e.to_bytes();
        let mut tampered = bytes.clone();
        tampered.push(b' ');
        let props = props_for(&tampered, &e, &fr.signer); // signature over other bytes
        cases.push(Case {
            code: "bad_signature",
            bytes,
            props,
            about: None,
        });
    }
    {
        let e = fresh();
        let bytes = e.to_bytes();
        let props = props_for(&bytes, &e, &stranger);
        cases.push(Case {
            code: "unknown_key",
            bytes,
            props,
            about: None,
        });
    }
    {
        let e = fresh();
        let bytes = e.to_bytes();
        let props = props_for(&bytes, &e, &revoked);
        cases.push(Case {
            code: "key_revoked",
            bytes,
            props,
            about: None,
        });
    }
    {
        let e = fresh();
        let bytes = e.to_bytes();
        let props = props_for(&bytes, &e, &expired);
        cases.push(Case {
            code: "key_expired",
            bytes,
            props,
            about: None,
        });
    }
    {
        // Signed by fr, but claims to come from nl.
        let e = Envelope::new(nl.id.clone(), referral(vec![item(&random_url(), "DE")]));
        let bytes = e.to_bytes();
        let props = props_for(&bytes, &e, &fr.signer);
        cases.push(Case {
            code: "origin_mismatch",
            bytes,
            props,
            about: Some(e.id.clone()),
        });
    }
    {
        // Sent once (it flows), then the same bytes again.
        let e = fresh();
        fr.send(&e).await;
        let got = nl.expect().await;
        assert_eq!(got.message_id(), e.id.as_str());
        let bytes = e.to_bytes();
        let props = props_for(&bytes, &e, &fr.signer);
        cases.push(Case {
            code: "replayed",
            bytes,
            props,
            about: Some(e.id.clone()),
        });
    }
    {
        let e = fresh();
        let bytes = format!("{{\"pad\":\"{}\"}}", "x".repeat(300 * 1024)).into_bytes();
        let props = props_for(&bytes, &e, &fr.signer);
        cases.push(Case {
            code: "too_large",
            bytes,
            props,
            about: None,
        });
    }
    {
        let e = fresh();
        let bytes = format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20)).into_bytes();
        let props = props_for(&bytes, &e, &fr.signer);
        cases.push(Case {
            code: "too_deep",
            bytes,
            props,
            about: None,
        });
    }
    {
        let e = fresh();
        let bytes = b"{\"kind\":\"referral\",\"x\":\"\xff\xfe\"}".to_vec();
        let props = props_for(&bytes, &e, &fr.signer);
        cases.push(Case {
            code: "invalid_utf8",
            bytes,
            props,
            about: None,
        });
    }
    {
        let e = fresh();
        let mut v: Value = serde_json::from_slice(&e.to_bytes()).expect("json");
        v["body"].as_object_mut().expect("body").remove("reference");
        let bytes = serde_json::to_vec(&v).expect("json");
        let props = props_for(&bytes, &e, &fr.signer);
        cases.push(Case {
            code: "schema_violation",
            bytes,
            props,
            about: None,
        });
    }
    {
        // Ahead of the broker's clock: the tight bound (behind, a week is allowed).
        let e = network::shifted(fresh(), chrono::Duration::hours(1));
        let bytes = e.to_bytes();
        let props = props_for(&bytes, &e, &fr.signer);
        cases.push(Case {
            code: "clock_skew",
            bytes,
            props,
            about: Some(e.id.clone()),
        });
    }
    {
        let e = fresh();
        let bytes = e.to_bytes();
        let props = props_for(&bytes, &e, &fr.signer).with_type("status".into());
        cases.push(Case {
            code: "property_mismatch",
            bytes,
            props,
            about: Some(e.id.clone()),
        });
    }
    {
        let e = fresh();
        let bytes = e.to_bytes();
        let props = BasicProperties::default()
            .with_user_id(fr.id.as_str().into())
            .with_type("referral".into())
            .with_message_id(e.id.as_str().into());
        cases.push(Case {
            code: "missing_signature",
            bytes,
            props,
            about: None,
        });
    }

    let started = Instant::now();
    let n = cases.len();
    for case in cases {
        fr.publish_raw(&case.bytes, case.props)
            .await
            .expect("published");
        let (notice, others) = fr.expect_notice(case.code, case.about.as_ref()).await;
        assert!(
            others.is_empty(),
            "{}: unexpected {:?}",
            case.code,
            others.iter().map(Received::summary).collect::<Vec<_>>()
        );
        assert!(notice.detail.is_some(), "{}: a detail", case.code);
        let q = quarantine.expect(case.code).await;
        assert_eq!(
            q.body, case.bytes,
            "{}: quarantine keeps the raw bytes",
            case.code
        );
        assert_eq!(
            q.header("x-sender").as_deref(),
            Some(fr.id.as_str()),
            "{}",
            case.code
        );
        // A valid message right after still flows.
        let ok = fr.send(&fresh()).await;
        let got = nl.expect().await;
        assert_eq!(
            got.message_id(),
            ok.as_str(),
            "{}: the next valid referral",
            case.code
        );
        got.attestation();
    }
    println!(
        "{n} rejection cases, each followed by a delivery, in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Without user_id the sender is unknown: quarantined, nobody to notify.
    let e = fresh();
    let bytes = e.to_bytes();
    let props = props_for(&bytes, &e, &fr.signer);
    let mut props = props;
    props = BasicProperties::default()
        .with_type("referral".into())
        .with_message_id(e.id.as_str().into())
        .with_headers(props.headers().clone().unwrap_or_default());
    fr.publish_raw(&bytes, props).await.expect("published");
    let q = quarantine.expect("missing_user_id").await;
    assert_eq!(q.header("x-sender"), None);
    assert!(
        fr.recv(Duration::from_secs(1)).await.is_none(),
        "no notice without a sender"
    );

    assert!(net.stop_broker().success());
}

/// Receipts and statuses go back to the origin; a retraction reaches every destination;
/// only a destination reports, only the origin retracts, an unknown referral is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_statuses_and_retractions() {
    let mut net = Network::new("serve-followups").await;
    net.start_broker();
    let (fr, nl, de, lea) = (
        net.peer("fr").await,
        net.peer("nl").await,
        net.peer("de").await,
        net.peer("lea").await,
    );
    let r = fr
        .send(&fr.envelope(referral(vec![
            item(&random_url(), "NL"),
            item(&random_url(), "DE"),
        ])))
        .await;
    assert_eq!(nl.expect().await.message_id(), r.as_str());
    assert_eq!(de.expect().await.message_id(), r.as_str());

    // A receipt, `removed` and `disputed` reach the origin, verified end to end.
    let receipt_id = nl.send(&nl.envelope(receipt(&r))).await;
    let removed = nl
        .send(&nl.envelope(status(&r, 0, State::Removed, None)))
        .await;
    let disputed = de
        .send(&de.envelope(status(
            &r,
            1,
            State::Disputed,
            Some("Not illegal under DE law (synthetic)."),
        )))
        .await;
    let at_fr = exactly(&fr, 3, Duration::from_millis(1000)).await;
    for (id, from, kind) in [
        (&receipt_id, &nl.id, "receipt"),
        (&removed, &nl.id, "status"),
        (&disputed, &de.id, "status"),
    ] {
        let m = &at_fr[id.as_str()][0];
        assert_eq!(m.kind(), kind);
        let a = m.attestation();
        assert_eq!((&a.origin, a.referral.as_ref()), (from, Some(&r)));
        match (kind, m.envelope().body) {
            ("receipt", Body::Receipt(b)) => assert_eq!(b.outcome, Outcome::Accepted),
            ("status", Body::Status(s)) => {
                assert!(matches!(s.state, State::Removed | State::Disputed))
            }
            (k, b) => panic!("{k}: {b:?}"),
        }
    }

    // Not a destination of r: the LEA. A destination, but of another item: nl about item 1.
    lea.send(&lea.envelope(status(&r, 0, State::TakedownRequested, None)))
        .await;
    lea.expect_notice("not_authorized", None).await;
    nl.send(&nl.envelope(status(&r, 1, State::TakedownRequested, None)))
        .await;
    nl.expect_notice("not_authorized", None).await;
    // Only the origin retracts.
    nl.send(&nl.envelope(Body::Retraction(Retraction {
        referral: r.clone(),
        reason: "Sent in error (synthetic).".into(),
    })))
    .await;
    nl.expect_notice("not_authorized", None).await;
    // An unknown referral.
    let unknown = EnvelopeId::new_v7();
    de.send(&de.envelope(receipt(&unknown))).await;
    de.expect_notice("unknown_referral", None).await;
    assert!(
        fr.recv(Duration::from_millis(500)).await.is_none(),
        "nothing refused reached the origin"
    );

    // The origin's retraction reaches every destination the referral reached.
    let retraction = fr
        .send(&fr.envelope(Body::Retraction(Retraction {
            referral: r.clone(),
            reason: "Sent in error (synthetic).".into(),
        })))
        .await;
    for peer in [&nl, &de] {
        let m = peer.expect().await;
        assert_eq!(
            (m.kind().as_str(), m.message_id()),
            ("retraction", retraction.to_string())
        );
        assert_eq!(m.attestation().referral.as_ref(), Some(&r));
    }
    assert!(lea.recv(Duration::from_millis(500)).await.is_none());
    assert!(net.stop_broker().success());
}

/// URL deduplication per destination, closed by `removed`; hash sightings marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_urls_are_suppressed_until_removed() {
    let mut net = Network::new("serve-dedup").await;
    net.start_broker();
    let (fr, nl, de) = (
        net.peer("fr").await,
        net.peer("nl").await,
        net.peer("de").await,
    );
    let url = random_url();
    let hash = random_hash();
    let r1 = fr
        .send(&fr.envelope(referral(vec![item_with_hash(&url, "NL", &hash)])))
        .await;
    assert_eq!(nl.expect().await.message_id(), r1.as_str());

    // de reports the same URL (spelled differently: same normal form) and a new one.
    let same = url.replace("https://images.example/", "https://IMAGES.Example:443/");
    let r2 = de
        .send(&de.envelope(referral(vec![
            item_with_hash(&same, "NL", &hash),
            item(&random_url(), "NL"),
        ])))
        .await;
    let m = nl.expect().await;
    assert_eq!(m.message_id(), r2.as_str());
    let a = m.attestation();
    assert_eq!(a.items.iter().map(|i| i.index).collect::<Vec<_>>(), vec![1]);
    assert_eq!(a.duplicates.len(), 1);
    assert_eq!(
        (a.duplicates[0].index, &a.duplicates[0].first_referral),
        (0, &r1)
    );
    assert_eq!(a.known_hashes.len(), 1, "the hash was seen with r1");
    assert_eq!(&a.known_hashes[0].first_referral, &r1);
    let (n, _) = de.expect_notice("duplicate", Some(&r2)).await;
    assert_eq!(
        (n.first_referral.as_ref(), n.items.as_deref()),
        (Some(&r1), Some(&[0u16][..]))
    );

    // Only duplicates: nl gets nothing, de a notice.
    let r3 = de
        .send(&de.envelope(referral(vec![item(&url, "NL")])))
        .await;
    de.expect_notice("duplicate", Some(&r3)).await;
    assert!(
        nl.recv(Duration::from_millis(1000)).await.is_none(),
        "a pure duplicate is not forwarded"
    );

    // nl removes it: the URL is closed, a new report is delivered again.
    nl.send(&nl.envelope(status(&r1, 0, State::Removed, None)))
        .await;
    assert_eq!(fr.expect().await.kind(), "status");
    let r4 = de
        .send(&de.envelope(referral(vec![item(&url, "NL")])))
        .await;
    let m = nl.expect().await;
    assert_eq!(m.message_id(), r4.as_str());
    assert!(m.attestation().duplicates.is_empty());
    assert!(net.stop_broker().success());
}

/// SIGKILL in the middle of a batch, then restart on the same data: every referral reaches
/// each of its destinations; a second copy, if any, has the same envelope id and is marked.
/// The daemon's log afterwards passes `audit verify` and holds exactly one `received` entry
/// per referral and exactly one `delivered` entry per (referral, destination) (issue 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_restart_loses_nothing() {
    let mut net = Network::new("serve-sigkill").await;
    net.start_broker();
    let (fr, nl, de) = (
        net.peer("fr").await,
        net.peer("nl").await,
        net.peer("de").await,
    );
    const N: usize = 600;
    // The referrals, built first; published by a task, 50 confirms in flight, while the
    // broker works and is killed.
    let envelopes: Vec<Envelope> = (0..N)
        .map(|_| {
            fr.envelope(referral(vec![
                item(&random_url(), "NL"),
                item(&random_url(), "DE"),
            ]))
        })
        .collect();
    let sent: BTreeSet<String> = envelopes.iter().map(|e| e.id.to_string()).collect();
    let fr = std::sync::Arc::new(fr);
    let started = Instant::now();
    let publisher = {
        let fr = fr.clone();
        tokio::spawn(async move {
            for chunk in envelopes.chunks(50) {
                futures_util::future::join_all(chunk.iter().map(|e| fr.send(e))).await;
            }
            started.elapsed()
        })
    };
    // Kill once a third has reached nl: the window is full of half-done referrals.
    let mut at_nl: Vec<Received> = Vec::new();
    while at_nl.len() < N / 3 {
        at_nl.push(nl.expect().await);
    }
    let before_kill = started.elapsed();
    net.kill_broker();
    let killed_at = at_nl.len();
    net.start_broker();
    let published = publisher.await.expect("the publishing task");
    let at_nl = collect_all(&nl, at_nl, &sent).await;
    let at_de = collect_all(&de, Vec::new(), &sent).await;
    let total = started.elapsed();
    for (name, got) in [("nl", &at_nl), ("de", &at_de)] {
        let mut count: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
        for m in got {
            count.entry(m.message_id()).or_default().push(m);
        }
        assert_eq!(
            count.keys().cloned().collect::<BTreeSet<_>>(),
            sent,
            "{name}: every referral"
        );
        let dups: Vec<_> = count.values().filter(|v| v.len() > 1).collect();
        for copies in &dups {
            // The second copy comes from the restarted broker, marked as a repeat.
            assert!(
                copies.iter().skip(1).all(|m| m.redelivered
                    || m.header("x-redelivered").as_deref() == Some("Boolean(true)")),
                "{name}: an unmarked second copy of {}",
                copies[0].message_id()
            );
            for m in copies.iter() {
                m.attestation();
            }
        }
        println!(
            "{name}: {} deliveries of {N} referrals ({} duplicated, marked as repeats)",
            got.len(),
            dups.len()
        );
    }
    assert!(net.stop_broker().success());
    let (received, delivered) = log_once_each(&net, &sent, &[&nl.id, &de.id]);
    let log = net.broker_log().unwrap_or_default();
    let resumed = log
        .lines()
        .filter(|l| l.contains(" stopped "))
        .find_map(|l| {
            l.split("resumed=")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    println!(
        "{killed_at} referrals reached nl in {:.1} s before SIGKILL ({:.0} deliveries/s to nl and de); \
         {N} referrals × 2 destinations published in {:.1} s, all delivered in {:.1} s, restart \
         included; the restarted broker resumed {resumed} half-done envelopes; the log verifies \
         and holds {received} `received` and {delivered} `delivered` entries, one each",
        before_kill.as_secs_f64(),
        (2 * killed_at) as f64 / before_kill.as_secs_f64(),
        published.as_secs_f64(),
        total.as_secs_f64(),
    );
}

/// The daemon's log (broker stopped): `audit verify` passes (the binary, with the broker's
/// key), every envelope of `sent` has exactly one `received` entry and exactly one
/// `delivered` entry for each of `dests`, and no envelope has more than one of either.
/// Returns the numbers of `received` and `delivered` entries.
fn log_once_each(
    net: &Network,
    sent: &BTreeSet<String>,
    dests: &[&ParticipantId],
) -> (usize, usize) {
    let out = std::process::Command::new(Network::binary())
        .args(["audit", "verify", "--quiet", "--data"])
        .arg(&net.data_dir)
        .arg("--broker-key")
        .arg(net.broker_signer.public_key_b64())
        .output()
        .expect("audit verify");
    assert!(
        out.status.success(),
        "audit verify after SIGKILL and restart: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut received: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut delivered: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let reader = LogReader::open(&net.data_dir).expect("the broker's log");
    for le in reader.iter_from(Seq(0)).expect("reading the log") {
        let e = le.expect("a whole frame").decode().expect("an entry");
        let Some(id) = e.envelope.as_ref().map(|i| i.to_string()) else {
            continue;
        };
        match &e.event {
            Event::Received(_) => received.entry(id).or_default().push(e.seq.0),
            Event::Delivered(_) => {
                let dest = e
                    .destination
                    .as_ref()
                    .expect("delivered names its destination");
                delivered
                    .entry((id, dest.to_string()))
                    .or_default()
                    .push(e.seq.0);
            }
            _ => {}
        }
    }
    let twice: Vec<_> = received.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "`received` more than once (seqs): {twice:?}"
    );
    let twice: Vec<_> = delivered.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "`delivered` more than once (seqs): {twice:?}"
    );
    for id in sent {
        assert!(received.contains_key(id), "no `received` entry for {id}");
        for dest in dests {
            assert!(
                delivered.contains_key(&(id.clone(), dest.to_string())),
                "no `delivered` entry for {id} at {dest}"
            );
        }
    }
    (received.len(), delivered.len())
}

/// Reads `peer`'s inbox until every id of `sent` arrived (panics after [`WAIT`] of silence),
/// then a moment more for second copies.
async fn collect_all(
    peer: &Peer,
    mut got: Vec<Received>,
    sent: &BTreeSet<String>,
) -> Vec<Received> {
    loop {
        let unique: BTreeSet<String> = got.iter().map(Received::message_id).collect();
        if unique.len() == sent.len() {
            break;
        }
        match peer.recv(WAIT).await {
            Some(m) => got.push(m),
            None => panic!(
                "{}: {} of {} referrals arrived; missing {:?}",
                peer.name,
                unique.len(),
                sent.len(),
                sent.difference(&unique).take(5).collect::<Vec<_>>()
            ),
        }
    }
    while let Some(m) = peer.recv(Duration::from_millis(1500)).await {
        got.push(m);
    }
    got
}

/// SIGTERM: no new message is taken, what was taken is finished, exit 0; after a restart the
/// rest flows, each referral exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let mut net = Network::new("serve-sigterm").await;
    net.start_broker();
    let (fr, nl) = (net.peer("fr").await, net.peer("nl").await);
    const N: usize = 200;
    let mut sent = BTreeSet::new();
    for _ in 0..N {
        sent.insert(
            fr.send(&fr.envelope(referral(vec![item(&random_url(), "NL")])))
                .await
                .to_string(),
        );
    }
    let first = nl.expect().await;
    let status = net.stop_broker();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        net.broker_log().unwrap_or_default()
    );
    let log = net.broker_log().unwrap_or_default();
    assert!(log.contains("stopped"), "{log}");
    net.start_broker();
    let mut got = vec![first];
    let seen = |got: &Vec<Received>| {
        got.iter()
            .map(Received::message_id)
            .collect::<BTreeSet<_>>()
    };
    while seen(&got).len() < N {
        got.push(nl.recv(WAIT).await.expect("the rest after the restart"));
    }
    while let Some(m) = nl.recv(Duration::from_millis(1000)).await {
        got.push(m);
    }
    assert_eq!(seen(&got), sent);
    assert_eq!(got.len(), N, "a graceful stop delivers nothing twice");
    assert!(net.stop_broker().success());
}

/// A bad configuration exits with 78 before connecting, saying which field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_78() {
    let net = Network::new("serve-badconfig").await;
    let text = std::fs::read_to_string(&net.config_file).expect("config");
    let bad = net.dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("window = 64", "window = 0")).expect("write");
    let out = std::process::Command::new(Network::binary())
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline.window"), "{stderr}");
    // And a good one passes --check.
    let out = std::process::Command::new(Network::binary())
        .args(["serve", "--check", "--config"])
        .arg(&net.config_file)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One participant floods (bad signatures, far above its rate); another's referrals still
/// flow at once; the flooder gets a `rate_limited` notice and, in the end, a notice for every
/// one of its messages (nothing dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_participant_does_not_delay_the_others() {
    let options = Options {
        extra: "[flood]\nrate_per_sec = 40.0\nburst = 10\nmax_in_flight = 8\nmax_held = 16\nnotice_every_secs = 3600\n".into(),
        window: Some(32),
        ..Options::default()
    };
    let mut net = Network::with("serve-flood", options).await;
    net.start_broker();
    let (fr, nl, de) = (
        net.peer("fr").await,
        net.peer("nl").await,
        net.peer("de").await,
    );
    const FLOOD: usize = 200;
    let stranger = Signer::generate().expect("key");
    let flood_started = Instant::now();
    for _ in 0..FLOOD {
        let e = fr.envelope(referral(vec![item(&random_url(), "DE")]));
        let bytes = e.to_bytes();
        fr.send_bytes(&bytes, "referral", e.id.as_str(), &stranger)
            .await
            .expect("published");
    }
    let flood_published = flood_started.elapsed();
    // While the flood is being worked off (≥ 200 / 40 = 5 s), nl's referrals go through.
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let id = nl
            .send(&nl.envelope(referral(vec![item(&random_url(), "DE")])))
            .await;
        let m = de.expect().await;
        assert_eq!(m.message_id(), id.as_str());
        latencies.push(t.elapsed());
    }
    let worst = latencies.iter().max().copied().unwrap_or_default();
    // fr: one rate_limited notice, and eventually an unknown_key notice for each message.
    let mut unknown_key = 0;
    let mut rate_limited = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unknown_key < FLOOD && Instant::now() < deadline {
        let Some(m) = fr.recv(WAIT).await else { break };
        match m.notice().code.as_str() {
            "unknown_key" => unknown_key += 1,
            "rate_limited" => rate_limited += 1,
            other => panic!("unexpected notice {other}"),
        }
    }
    let flood_done = flood_started.elapsed();
    println!(
        "flood of {FLOOD} bad messages published in {:.1} s, worked off in {:.1} s; meanwhile 10 \
         good referrals from another participant, worst latency {:?}",
        flood_published.as_secs_f64(),
        flood_done.as_secs_f64(),
        worst
    );
    assert_eq!(
        unknown_key, FLOOD,
        "every flooding message was handled, none lost"
    );
    assert_eq!(rate_limited, 1, "one rate_limited notice");
    assert!(
        worst < Duration::from_secs(2),
        "a good referral waited {worst:?} behind another participant's flood"
    );
    assert!(
        flood_done >= Duration::from_secs(3),
        "the flood was rate limited ({flood_done:?})"
    );
    assert!(net.stop_broker().success());
}

/// Checkpoints: cut every N entries (here 20) and at shutdown, recorded in the log, sent to
/// every participant signed by the broker; the daemon's log then passes `audit verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_cut_sent_to_everyone_and_verify() {
    let options = Options {
        extra: "[store]\ncheckpoint_every_entries = 20\n".into(),
        ..Options::default()
    };
    let mut net = Network::with("serve-checkpoints", options).await;
    net.start_broker();
    let (fr, nl, lea) = (
        net.peer("fr").await,
        net.peer("nl").await,
        net.peer("lea").await,
    );
    for _ in 0..10 {
        fr.send(&fr.envelope(referral(vec![item(&random_url(), "NL")])))
            .await;
    }
    for _ in 0..10 {
        assert_eq!(nl.expect().await.kind(), "referral");
    }
    // 10 × (received, routed, delivered) = 30 entries: at least one checkpoint is due.
    let key = net.broker_signer.verifying_key();
    let broker = net.broker_id.clone();
    let origin = origin_for(&broker);
    let check = |m: &Received| {
        assert_eq!(m.kind(), "checkpoint");
        let e = m.verify_origin();
        assert_eq!(e.origin, broker);
        let Body::Checkpoint(body) = e.body else {
            panic!("not a checkpoint body")
        };
        let cp = BrokerCheckpoint::verify_wire(&body, &key).expect("a broker-signed checkpoint");
        assert_eq!(cp.origin, origin);
        assert_eq!(cp.key_name, broker.as_str());
        cp
    };
    let first = check(&lea.recv_any(WAIT).await.expect("a checkpoint at the LEA"));
    assert!(first.size >= 20, "covers what was due: {}", first.size);
    // Everyone gets it (fr's and nl's are set aside by recv).
    assert!(fr.recv(Duration::from_millis(500)).await.is_none());
    assert!(
        !fr.checkpoints().is_empty(),
        "the origin got a checkpoint too"
    );

    // SIGTERM: a last checkpoint covering everything, then the log verifies with it.
    assert!(net.stop_broker().success());
    let mut last = first.clone();
    while let Some(m) = lea.recv_any(Duration::from_millis(1000)).await {
        last = check(&m);
    }
    assert!(
        last.size >= 30,
        "the final checkpoint covers every entry: {}",
        last.size
    );
    let out = std::process::Command::new(Network::binary())
        .args(["audit", "verify", "--quiet", "--data"])
        .arg(&net.data_dir)
        .arg("--broker-key")
        .arg(net.broker_signer.public_key_b64())
        .output()
        .expect("audit verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
}
