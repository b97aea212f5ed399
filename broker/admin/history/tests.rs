//! The fold over entries: windows, backlog ages, latency, takedown figures.

use std::collections::HashMap;

use chrono::TimeZone;

use super::*;
use crate::store::{
    Delivered, Duplicate, DuplicateItem, NewEntry, NoticeSent, Received, Rejected, Seq,
    StatusEvent, UrlKey,
};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

fn p(id: &str) -> ParticipantId {
    id.parse().expect("participant id")
}

#[derive(Default)]
struct FakeFacts {
    items: HashMap<(EnvelopeId, u16), ItemClock>,
    status_at: HashMap<Sha256Digest, DateTime<Utc>>,
    countries: HashMap<ParticipantId, String>,
}

impl Facts for FakeFacts {
    fn item_clock(&self, referral: &EnvelopeId, item: u16) -> Option<ItemClock> {
        self.items.get(&(referral.clone(), item)).cloned()
    }
    fn status_at(&self, body: &Sha256Digest) -> Option<DateTime<Utc>> {
        self.status_at.get(body).copied()
    }
    fn country_of(&self, participant: &ParticipantId) -> Option<String> {
        self.countries.get(participant).cloned()
    }
}

struct Log {
    seq: u64,
    history: History,
    facts: FakeFacts,
    now: DateTime<Utc>,
}

impl Log {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            seq: 0,
            history: History::new(),
            facts: FakeFacts::default(),
            now,
        }
    }

    fn apply(&mut self, at: DateTime<Utc>, new: NewEntry) -> Vec<Observed> {
        let e = Entry::new(Seq(self.seq), at, new).expect("entry");
        self.seq += 1;
        self.history.apply(&e, &self.facts, self.now)
    }

    fn received(&mut self, at: DateTime<Utc>, id: &EnvelopeId, from: &str) -> Vec<Observed> {
        self.apply(
            at,
            NewEntry::new(Event::Received(Received {
                kind: Kind::Referral,
                items: Vec::new(),
            }))
            .envelope(id.clone())
            .participant(p(from)),
        )
    }

    fn delivered(&mut self, at: DateTime<Utc>, id: &EnvelopeId, to: &str) -> Vec<Observed> {
        self.apply(
            at,
            NewEntry::new(Event::Delivered(Delivered {
                items: vec![0],
                attestation_sha256: None,
            }))
            .envelope(id.clone())
            .destination(p(to)),
        )
    }
}

#[test]
fn counts_fall_into_the_last_hour_and_day() {
    let now = t(100_000);
    let mut log = Log::new(now);
    let a = EnvelopeId::new_v7();
    let b = EnvelopeId::new_v7();
    let old = EnvelopeId::new_v7();
    log.received(now - Duration::minutes(5), &a, "fr.hotline");
    log.received(now - Duration::hours(3), &b, "fr.hotline");
    log.received(now - Duration::days(2), &old, "fr.hotline");
    log.delivered(now - Duration::minutes(4), &a, "nl.hotline");
    log.apply(
        now - Duration::minutes(1),
        NewEntry::new(Event::Rejected(Rejected {
            code: ReasonCode::BadSignature,
            quarantined: true,
        }))
        .participant(p("fr.hotline")),
    );
    let (hour, day) = log.history.counts(&p("fr.hotline"), now);
    assert_eq!((hour.received, day.received), (1, 2));
    assert_eq!((hour.rejected, day.rejected), (1, 1));
    let (hour, day) = log.history.counts(&p("nl.hotline"), now);
    assert_eq!((hour.delivered, day.delivered), (1, 1));
    assert_eq!(log.history.entries(), 5);

    // An hour later the first referral has left the hour, not the day.
    let later = now + Duration::minutes(61);
    let (hour, day) = log.history.counts(&p("fr.hotline"), later);
    assert_eq!((hour.received, day.received), (0, 2));
    log.history.prune(later + Duration::days(1), 365);
    let (_, day) = log
        .history
        .counts(&p("fr.hotline"), later + Duration::days(1));
    assert_eq!(day, Counts::default());
}

#[test]
fn delivery_latency_comes_from_the_received_entry() {
    let now = t(0);
    let mut log = Log::new(now);
    let a = EnvelopeId::new_v7();
    log.received(now, &a, "fr.hotline");
    let seen = log.delivered(now + Duration::milliseconds(250), &a, "nl.hotline");
    assert_eq!(
        seen,
        vec![Observed::Delivered {
            destination: p("nl.hotline"),
            kind: "referral",
            latency: Some(0.25),
        }]
    );
    // A delivery whose `received` is not known (before the history) has no latency.
    let seen = log.delivered(now, &EnvelopeId::new_v7(), "nl.hotline");
    assert!(matches!(
        seen.as_slice(),
        [Observed::Delivered {
            kind: "message",
            latency: None,
            ..
        }]
    ));
}

#[test]
fn oldest_unread_is_the_depth_th_most_recent_delivery() {
    let now = t(10_000);
    let mut log = Log::new(now);
    let ids: Vec<EnvelopeId> = (0..5).map(|_| EnvelopeId::new_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        log.delivered(t(i as i64 * 100), id, "nl.hotline");
    }
    let nl = p("nl.hotline");
    assert_eq!(log.history.oldest_unread(&nl, 0, now), None);
    let o = log.history.oldest_unread(&nl, 2, now).expect("oldest");
    assert_eq!(o.delivered_at, t(300));
    assert_eq!(o.envelope.as_deref(), Some(ids[3].as_str()));
    assert_eq!(o.age_secs, 9_700);
    assert!(!o.at_least);
    let o = log.history.oldest_unread(&nl, 9, now).expect("oldest");
    assert_eq!((o.delivered_at, o.at_least), (t(0), true));
    assert_eq!(log.history.oldest_unread(&p("de.hotline"), 3, now), None);

    // A notice is a delivery to the inbox too; out-of-order appends are kept in time order.
    log.apply(
        t(350),
        NewEntry::new(Event::NoticeSent(NoticeSent {
            notice: EnvelopeId::new_v7(),
            code: ReasonCode::Duplicate,
            first_referral: None,
        }))
        .destination(nl.clone()),
    );
    let o = log.history.oldest_unread(&nl, 1, now).expect("oldest");
    assert_eq!(o.delivered_at, t(400));
    let o = log.history.oldest_unread(&nl, 2, now).expect("oldest");
    assert_eq!((o.delivered_at, o.kind.as_str()), (t(350), "notice"));

    // Trimming keeps what can still be unread.
    log.history.trim_inbox(&nl, 1);
    let o = log.history.oldest_unread(&nl, 1, now).expect("oldest");
    assert_eq!(o.delivered_at, t(400));
}

#[test]
fn rejections_and_duplicates_are_observed() {
    let now = t(0);
    let mut log = Log::new(now);
    let seen = log.apply(
        now,
        NewEntry::new(Event::Rejected(Rejected {
            code: ReasonCode::UnknownKey,
            quarantined: true,
        })),
    );
    assert_eq!(
        seen,
        vec![Observed::Rejected {
            participant: None,
            code: ReasonCode::UnknownKey
        }]
    );
    let first = EnvelopeId::new_v7();
    let seen = log.apply(
        now,
        NewEntry::new(Event::Duplicate(Duplicate {
            items: vec![
                DuplicateItem {
                    item: 0,
                    url_key: UrlKey([1; 32]),
                    first_referral: first.clone(),
                },
                DuplicateItem {
                    item: 2,
                    url_key: UrlKey([2; 32]),
                    first_referral: first,
                },
            ],
        }))
        .participant(p("fr.hotline"))
        .destination(p("nl.hotline")),
    );
    assert_eq!(
        seen,
        vec![Observed::Duplicates {
            participant: p("fr.hotline"),
            items: 2
        }]
    );
    let r = log.history.rejections();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].code, "unknown_key");
    for _ in 0..MAX_REJECTIONS + 5 {
        log.apply(
            now,
            NewEntry::new(Event::Rejected(Rejected {
                code: ReasonCode::Replayed,
                quarantined: true,
            })),
        );
    }
    let r = log.history.rejections();
    assert_eq!(r.len(), MAX_REJECTIONS);
    assert!(r[0].seq > r[1].seq, "newest first");
}

#[test]
fn time_to_removal_per_destination_country() {
    let now = t(30 * 86_400);
    let mut log = Log::new(now);
    log.facts.countries.insert(p("nl.hotline"), "NL".into());
    log.facts.countries.insert(p("de.hotline"), "DE".into());
    let hours = |h: i64| Duration::hours(h);
    let start = t(0);
    // NL: 10 h, 20 h, 100 h; DE: 50 h; an LEA without country: hosting country (BE), 5 h.
    let cases = [
        ("nl.hotline", 10, "NL"),
        ("nl.hotline", 20, "NL"),
        ("nl.hotline", 100, "NL"),
        ("de.hotline", 50, "DE"),
        ("int.lea", 5, "BE"),
    ];
    for (i, (who, h, hosting)) in cases.iter().enumerate() {
        let referral = EnvelopeId::new_v7();
        log.facts.items.insert(
            (referral.clone(), 0),
            ItemClock {
                public_report_received_at: start,
                hosting_country: (*hosting).into(),
            },
        );
        let body = Sha256Digest([i as u8; 32]);
        log.facts.status_at.insert(body, start + hours(*h));
        let mut status = NewEntry::new(Event::Status(StatusEvent {
            referral: referral.clone(),
            item: 0,
            state: State::Removed,
            url_key: None,
        }))
        .participant(p(who));
        status.sha256 = Some(body);
        // Recorded later than it happened: the status's own `at` counts, not the entry time.
        let seen = log.apply(start + hours(*h + 1), status.clone());
        let country = log
            .facts
            .countries
            .get(&p(who))
            .cloned()
            .unwrap_or_else(|| (*hosting).to_owned());
        assert_eq!(
            seen,
            vec![Observed::Removed {
                country,
                secs: (*h as u64) * 3600
            }]
        );
        // A second `removed` for the same item does not count again.
        assert!(log.apply(start + hours(*h + 2), status).is_empty());
    }
    // A removal whose bodies are gone is unknown.
    let mut lost = NewEntry::new(Event::Status(StatusEvent {
        referral: EnvelopeId::new_v7(),
        item: 3,
        state: State::Removed,
        url_key: None,
    }))
    .participant(p("nl.hotline"));
    lost.sha256 = Some(Sha256Digest([99; 32]));
    assert!(log.apply(now, lost).is_empty());

    let td = log.history.takedown(now, 365);
    assert_eq!(td.unknown, 1);
    let by: BTreeMap<&str, &TakedownFigures> = td
        .countries
        .iter()
        .map(|f| (f.country.as_str(), f))
        .collect();
    assert_eq!(by.keys().copied().collect::<Vec<_>>(), ["BE", "DE", "NL"]);
    let nl = by["NL"];
    assert_eq!(
        (nl.removed, nl.median_secs, nl.p90_secs),
        (3, 20 * 3600, 100 * 3600)
    );
    assert!((nl.within_3_days - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(by["DE"].within_3_days, 1.0);
    let all = td.all.expect("all");
    assert_eq!((all.removed, all.median_secs), (5, 20 * 3600));

    // Outside the window: not counted.
    assert!(
        log.history
            .takedown(now + Duration::days(400), 365)
            .all
            .is_none()
    );
}

#[test]
fn nearest_rank_percentiles() {
    assert_eq!(nearest_rank(&[], 0.5), None);
    assert_eq!(nearest_rank(&[7], 0.9), Some(7));
    assert_eq!(nearest_rank(&[1, 2], 0.5), Some(1));
    let v: Vec<u64> = (1..=10).collect();
    assert_eq!(nearest_rank(&v, 0.5), Some(5));
    assert_eq!(nearest_rank(&v, 0.9), Some(9));
    assert_eq!(nearest_rank(&v, 1.0), Some(10));
}

#[test]
fn a_checkpoint_is_a_delivery_to_every_inbox() {
    let now = t(1000);
    let mut log = Log::new(now);
    log.history = History::new().broadcasting_to(vec![p("nl.hotline"), p("de.hotline")]);
    let r = EnvelopeId::new_v7();
    log.delivered(t(100), &r, "de.hotline");
    log.apply(
        t(200),
        NewEntry::new(Event::Checkpoint(crate::store::CheckpointEvent {
            size: 5,
            root: Sha256Digest([7; 32]),
            note: "note".into(),
        }))
        .participant(p("net.broker")),
    );
    let de = p("de.hotline");
    let o = log.history.oldest_unread(&de, 1, now).expect("oldest");
    assert_eq!(
        (o.delivered_at, o.kind.as_str(), o.envelope),
        (t(200), "checkpoint", None)
    );
    let o = log.history.oldest_unread(&de, 2, now).expect("oldest");
    assert_eq!(o.envelope.as_deref(), Some(r.as_str()));
    let o = log
        .history
        .oldest_unread(&p("nl.hotline"), 1, now)
        .expect("oldest");
    assert_eq!(o.kind, "checkpoint");
    // Not a notice or a delivery in the counts.
    assert_eq!(log.history.counts(&de, now).0.delivered, 1);
    assert_eq!(log.history.counts(&de, now).0.notices, 0);
}
