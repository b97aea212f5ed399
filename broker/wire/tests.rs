//! Unit tests of the wire module as a whole: round trips, the stages of `decode`, each bound
//! at its limit and one past it, through both `decode` (schema + types) and
//! `decode_without_schema` (types alone).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::reason::ReasonCode;

fn t(s: &str) -> DateTime<Utc> {
    time::parse(s).unwrap_or_default()
}

fn pid(s: &str) -> ParticipantId {
    s.parse()
        .unwrap_or_else(|_| panic!("bad test participant id {s}"))
}

fn item(url: &str) -> Item {
    Item {
        url: url.to_owned(),
        site_type: SiteType::ImageHost,
        third_party_hosted: false,
        media_type: MediaType::Image,
        hashes: vec![Hash {
            algorithm: HashAlgorithm::Sha256,
            value: "9402d527a074579b88e84a63376d35e8457e4b0d0a7e8a9b0c1d2e3f40516273".to_owned(),
        }],
        classification: Classification {
            legal_status: LegalStatus::Baseline,
            assessing_jurisdiction: "FR".parse().unwrap_or_else(|_| unreachable!()),
            category: Category::Csam,
            victim_age_group: AgeGroup::Prepubescent,
            victim_gender: Gender::Female,
            ai_generated: Some(AiGenerated::Suspected),
            computer_generated: None,
            self_generated: Some(false),
            live_streaming: None,
        },
        hosting: Hosting {
            ip: IpAddr::from([192, 0, 2, 10]),
            country: "NL".parse().unwrap_or_else(|_| unreachable!()),
            asn: Some(64500),
            provider: Some("Example Hosting".to_owned()),
            cdn: None,
        },
        first_seen: Some(t("2026-11-24T22:01:00.5Z")),
        assessed_at: t("2026-11-25T09:40:12Z"),
    }
}

fn referral(items: usize) -> Referral {
    Referral {
        reference: "FR-2026-000001".to_owned(),
        public_report_received_at: t("2026-11-25T08:12:03Z"),
        priority: Priority::Urgent,
        escalation_reason: Some("Newly produced series.".to_owned()),
        to: Some(pid("nl.hotline-example")),
        notes: Some("line one\nline two".to_owned()),
        items: (0..items)
            .map(|i| item(&format!("https://images.example/{i}.jpg")))
            .collect(),
    }
}

fn env(body: Body) -> Envelope {
    Envelope::new(pid("fr.hotline-example"), body)
}

/// Decode with and without the schema; both must give the same verdict.
fn both(bytes: &[u8]) -> Result<Envelope, WireError> {
    let full = decode(bytes);
    let typed = decode_without_schema(bytes);
    assert_eq!(
        full.is_ok(),
        typed.is_ok(),
        "schema and types disagree: {:?} vs {:?}",
        full.as_ref().err(),
        typed.as_ref().err()
    );
    full
}

fn accepted(e: &Envelope) -> bool {
    both(&e.to_bytes()).is_ok()
}

fn referral_id() -> EnvelopeId {
    EnvelopeId::new_v7()
}

fn all_kinds() -> Vec<Envelope> {
    vec![
        env(Body::Referral(referral(3))),
        env(Body::Receipt(Receipt {
            referral: referral_id(),
            outcome: Outcome::Rejected,
            reason: Some("Out of scope.".to_owned()),
            received_at: Some(t("2026-11-25T10:00:00.123456Z")),
        })),
        env(Body::Status(Status {
            referral: referral_id(),
            item: 499,
            state: State::ForwardedToLea,
            at: t("2026-11-25T10:00:00Z"),
            reason: None,
            lea_case_number: Some("NL-POL-1".to_owned()),
            note: Some("ok".to_owned()),
        })),
        env(Body::Retraction(Retraction {
            referral: referral_id(),
            reason: "Sent in error.".to_owned(),
        })),
        env(Body::Notice(Notice {
            about: Some(referral_id()),
            first_referral: Some(referral_id()),
            items: Some(vec![0, 7]),
            detail: Some("destination nl.hotline-example".to_owned()),
            ..Notice::new(ReasonCode::Duplicate)
        })),
        env(Body::Checkpoint(Checkpoint {
            log: "broker.example/audit".to_owned(),
            size: 42,
            root: [7; 32],
            time: t("2026-11-25T10:00:00Z"),
            note: "broker.example/audit\n42\nBwcH\n\n\u{2014} broker.example AAAA\n".to_owned(),
        })),
    ]
}

#[test]
fn every_kind_round_trips() {
    for e in all_kinds() {
        assert_eq!(e.validate(), Ok(()), "{}", e.kind);
        let bytes = e.to_bytes();
        assert_eq!(
            both(&bytes).as_ref(),
            Ok(&e),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        // Compact: no whitespace outside strings.
        assert!(!bytes.starts_with(b"{ ") && !bytes.contains(&b'\n'));
    }
}

#[test]
fn new_envelope_fields() {
    let e = env(Body::Retraction(Retraction {
        referral: referral_id(),
        reason: "x".to_owned(),
    }));
    assert_eq!(e.kind, Kind::Retraction);
    assert_eq!(e.v, 1);
    assert_eq!(e.id.as_str().len(), 36);
    assert!((Utc::now() - e.created_at).num_seconds().abs() < 60);
    let v: Value = serde_json::from_slice(&e.to_bytes()).unwrap_or_default();
    assert_eq!(v["kind"], "retraction");
    assert_eq!(v["origin"], "fr.hotline-example");
}

#[test]
fn kind_strings() {
    for k in Kind::ALL {
        assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        assert_eq!(
            serde_json::to_value(k).unwrap_or_default(),
            json!(k.as_str())
        );
    }
}

#[test]
fn stages_give_their_reason_codes() {
    let good = all_kinds()[1].to_bytes();
    let mut bad_utf8 = good.clone();
    bad_utf8.insert(10, 0xff);
    assert_eq!(
        decode(&bad_utf8).map_err(|e| e.reason()),
        Err(ReasonCode::InvalidUtf8)
    );

    // The envelope is level 1: 16 more brackets make 17 levels.
    let deep = format!(
        r#"{{"kind":"notice","body":{}1{}}}"#,
        "[".repeat(16),
        "]".repeat(16)
    );
    assert_eq!(
        decode(deep.as_bytes()).map_err(|e| e.reason()),
        Err(ReasonCode::TooDeep)
    );
    let ok_depth = format!(
        r#"{{"kind":"notice","body":{}1{}}}"#,
        "[".repeat(15),
        "]".repeat(15)
    );
    assert_eq!(
        decode(ok_depth.as_bytes()).map_err(|e| e.reason()),
        Err(ReasonCode::SchemaViolation)
    );

    assert_eq!(
        decode(&good[..good.len() - 1]).map_err(|e| e.reason()),
        Err(ReasonCode::InvalidJson)
    );
    let dup = String::from_utf8_lossy(&good).replacen(r#""v":1,"#, r#""v":1,"v":1,"#, 1);
    assert_eq!(
        decode(dup.as_bytes()).map_err(|e| e.reason()),
        Err(ReasonCode::InvalidJson)
    );

    let wrong = String::from_utf8_lossy(&good).replacen(
        r#""outcome":"rejected""#,
        r#""outcome":"maybe""#,
        1,
    );
    let err = decode(wrong.as_bytes());
    assert_eq!(
        err.as_ref().map_err(|e| e.reason()).err(),
        Some(ReasonCode::SchemaViolation)
    );
    assert_eq!(
        err.as_ref().err().and_then(|e| e.pointer()),
        Some("/body/outcome")
    );
    assert!(
        err.err()
            .is_some_and(|e| e.detail().contains("/body/outcome"))
    );
}

#[test]
fn not_an_object_and_garbage_do_not_panic() {
    for bad in [
        &b""[..],
        b"null",
        b"[]",
        b"\"x\"",
        b"{}",
        b"1e999",
        b"{\"kind\":\"referral\"}",
    ] {
        assert!(both(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    // Several MiB (the ingress would refuse it first): refused, not a panic.
    let huge = format!(r#"{{"kind":"notice","v":1,"x":"{}"}}"#, "a".repeat(8 << 20));
    assert_eq!(
        decode(huge.as_bytes()).map_err(|e| e.reason()),
        Err(ReasonCode::SchemaViolation)
    );
}

/// Mutate the JSON of a valid envelope; `expect_ok` says whether both paths must accept it.
fn mutated(e: &Envelope, f: impl FnOnce(&mut Value), expect_ok: bool) {
    let mut v: Value = serde_json::from_slice(&e.to_bytes()).unwrap_or_default();
    f(&mut v);
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    let got = both(&bytes);
    assert_eq!(got.is_ok(), expect_ok, "{:?}", got.err());
}

#[test]
fn nulls_unknown_fields_and_fractional_integers_are_refused() {
    let r = env(Body::Referral(referral(1)));
    mutated(&r, |v| v["body"]["notes"] = Value::Null, false);
    mutated(
        &r,
        |v| v["body"]["items"][0]["first_seen"] = Value::Null,
        false,
    );
    mutated(
        &r,
        |v| v["body"]["items"][0]["hosting"]["asn"] = Value::Null,
        false,
    );
    mutated(&r, |v| v["body"]["items"][0]["extra"] = json!(1), false);
    mutated(&r, |v| v["extra"] = json!(1), false);
    // Integers written with a fraction: the schema cannot tell 1.0 from 1, the types can.
    let bytes = String::from_utf8_lossy(&r.to_bytes()).replacen(r#""v":1,"#, r#""v":1.0,"#, 1);
    assert_eq!(
        decode(bytes.as_bytes()).map_err(|e| e.reason()),
        Err(ReasonCode::SchemaViolation)
    );
}

#[test]
fn items_bound() {
    assert!(accepted(&env(Body::Referral(referral(limits::MAX_ITEMS)))));
    assert!(!accepted(&env(Body::Referral(referral(
        limits::MAX_ITEMS + 1
    )))));
    assert!(!accepted(&env(Body::Referral(referral(0)))));
}

#[test]
fn url_bound_and_shape() {
    let prefix = "https://long.example/";
    let at = |n: usize| {
        let mut r = referral(1);
        r.items[0].url = format!("{prefix}{}", "a".repeat(n - prefix.len()));
        env(Body::Referral(r))
    };
    assert!(accepted(&at(limits::MAX_URL_BYTES)));
    assert!(!accepted(&at(limits::MAX_URL_BYTES + 1)));
    for (url, ok) in [
        ("https://[2001:db8::1]:8443/a?b#c", true),
        ("https://images.example:65536/", false),
        ("https://images.example/é", false),
        ("javascript:alert(1)", false),
        // Admitted by the schema's pattern, refused by the WHATWG parser (code-only rule 6).
        ("https://a.123/", false),
    ] {
        let mut r = referral(1);
        r.items[0].url = url.to_owned();
        assert_eq!(accepted(&env(Body::Referral(r))), ok, "{url}");
    }
}

#[test]
fn text_bounds_count_characters() {
    let with_notes = |s: String| {
        let mut r = referral(1);
        r.notes = Some(s);
        env(Body::Referral(r))
    };
    assert!(accepted(&with_notes("é".repeat(limits::MAX_NOTES_CHARS))));
    assert!(!accepted(&with_notes(
        "é".repeat(limits::MAX_NOTES_CHARS + 1)
    )));
    assert!(!accepted(&with_notes(String::new())));
    assert!(!accepted(&with_notes("bell\u{7}".to_owned())));
    let with_reference = |s: String| {
        let mut r = referral(1);
        r.reference = s;
        env(Body::Referral(r))
    };
    assert!(accepted(&with_reference(
        "r".repeat(limits::MAX_CASE_ID_CHARS)
    )));
    assert!(!accepted(&with_reference(
        "r".repeat(limits::MAX_CASE_ID_CHARS + 1)
    )));
    let with_message = |s: String| {
        env(Body::Notice(Notice {
            message: s,
            ..Notice::new(ReasonCode::Replayed)
        }))
    };
    assert!(accepted(&with_message(
        "m".repeat(limits::MAX_MESSAGE_CHARS)
    )));
    assert!(!accepted(&with_message(
        "m".repeat(limits::MAX_MESSAGE_CHARS + 1)
    )));
}

#[test]
fn hash_bounds() {
    let with_hashes = |hashes: Vec<Hash>| {
        let mut r = referral(1);
        r.items[0].hashes = hashes;
        env(Body::Referral(r))
    };
    let sha = |i: usize| Hash {
        algorithm: HashAlgorithm::Sha256,
        value: format!("{i:064x}"),
    };
    assert!(accepted(&with_hashes(vec![])));
    assert!(accepted(&with_hashes(
        (0..limits::MAX_HASHES).map(sha).collect()
    )));
    assert!(!accepted(&with_hashes(
        (0..=limits::MAX_HASHES).map(sha).collect()
    )));
    assert!(!accepted(&with_hashes(vec![sha(1), sha(1)])));
    let one = |algorithm, value: String| with_hashes(vec![Hash { algorithm, value }]);
    use HashAlgorithm::*;
    for (alg, value, ok) in [
        (Sha1, "a".repeat(40), true),
        (Sha1, "a".repeat(41), false),
        (Md5, "0".repeat(32), true),
        (Md5, "A".repeat(32), false),
        (Pdq, "f".repeat(64), true),
        (Pdq, "g".repeat(64), false),
        (Photodna, "A".repeat(192), true),
        (Photodna, "A".repeat(188) + "AA==", false),
        (Photodna, "A".repeat(196), false),
        (TmkPdqf, "A".repeat(limits::MAX_TMK_PDQF_CHARS), true),
        (TmkPdqf, "A".repeat(limits::MAX_TMK_PDQF_CHARS + 4), false),
        (TmkPdqf, "AQ==".to_owned(), true),
        (TmkPdqf, "AR==".to_owned(), false),
        (TmkPdqf, "AQ".to_owned(), false),
    ] {
        assert_eq!(
            accepted(&one(alg, value.clone())),
            ok,
            "{} {value}",
            alg.as_str()
        );
    }
}

#[test]
fn conditional_fields() {
    let mut r = referral(1);
    r.escalation_reason = None;
    assert!(!accepted(&env(Body::Referral(r.clone()))));
    r.priority = Priority::Normal;
    assert!(accepted(&env(Body::Referral(r.clone()))));
    r.escalation_reason = Some("x".to_owned());
    assert!(!accepted(&env(Body::Referral(r))));

    let receipt = |outcome, reason: Option<&str>| {
        env(Body::Receipt(Receipt {
            referral: referral_id(),
            outcome,
            reason: reason.map(str::to_owned),
            received_at: None,
        }))
    };
    assert!(accepted(&receipt(Outcome::Accepted, None)));
    assert!(accepted(&receipt(Outcome::Accepted, Some("partly"))));
    assert!(!accepted(&receipt(Outcome::Rejected, None)));

    let status = |state, item, reason: Option<&str>, lea: Option<&str>| {
        env(Body::Status(Status {
            referral: referral_id(),
            item,
            state,
            at: t("2026-11-25T10:00:00Z"),
            reason: reason.map(str::to_owned),
            lea_case_number: lea.map(str::to_owned),
            note: None,
        }))
    };
    assert!(accepted(&status(State::Removed, 0, None, None)));
    assert!(!accepted(&status(State::Removed, 500, None, None)));
    assert!(!accepted(&status(State::Disputed, 0, None, None)));
    assert!(accepted(&status(State::Disputed, 0, Some("adult"), None)));
    assert!(!accepted(&status(State::ForwardedToLea, 0, None, None)));
    assert!(!accepted(&status(State::Removed, 0, None, Some("X-1"))));

    let notice = |code, first: bool, items: Option<Vec<u16>>| {
        env(Body::Notice(Notice {
            first_referral: first.then(referral_id),
            items,
            ..Notice::new(code)
        }))
    };
    assert!(!accepted(&notice(ReasonCode::Unroutable, true, None)));
    assert!(accepted(&notice(
        ReasonCode::Duplicate,
        true,
        Some(vec![499])
    )));
    assert!(!accepted(&notice(
        ReasonCode::Duplicate,
        false,
        Some(vec![500])
    )));
    assert!(!accepted(&notice(
        ReasonCode::Duplicate,
        false,
        Some(vec![])
    )));
    assert!(!accepted(&notice(
        ReasonCode::Duplicate,
        false,
        Some(vec![1, 1])
    )));
    assert!(accepted(&notice(
        ReasonCode::Duplicate,
        false,
        Some((0..500).collect())
    )));
}

#[test]
fn every_reason_code_makes_a_valid_notice() {
    for code in ReasonCode::ALL {
        assert!(accepted(&env(Body::Notice(Notice::new(code)))), "{code}");
    }
}

#[test]
fn checkpoint_bounds() {
    let cp = |size: u64, note: &str| {
        env(Body::Checkpoint(Checkpoint {
            log: "broker.example/audit".to_owned(),
            size,
            root: [0; 32],
            time: t("2026-11-25T10:00:00Z"),
            note: note.to_owned(),
        }))
    };
    let note = "o\n1\nr\n\n\u{2014} k sig\n";
    assert!(accepted(&cp(limits::MAX_TREE_SIZE, note)));
    assert!(!accepted(&cp(limits::MAX_TREE_SIZE + 1, note)));
    assert!(!accepted(&cp(1, "o\n1\nr\n")));
    let long = format!(
        "{}\n\n\u{2014} k s\n",
        "x".repeat(limits::MAX_SIGNED_NOTE_CHARS - 8)
    );
    assert_eq!(long.chars().count(), limits::MAX_SIGNED_NOTE_CHARS);
    assert!(accepted(&cp(1, &long)));
    assert!(!accepted(&cp(1, &format!("x{long}"))));
}

#[test]
fn ids_and_times_built_in_code_are_checked() {
    let mut e = all_kinds().remove(3);
    e.kind = Kind::Notice;
    assert!(e.validate().is_err());
    let mut e = all_kinds().remove(3);
    e.v = 2;
    assert!(e.validate().is_err() && both(&e.to_bytes()).is_err());
    let mut e = all_kinds().remove(3);
    e.created_at = t("9999-12-31T23:59:59Z") + chrono::TimeDelta::days(1);
    assert!(e.validate().is_err() && both(&e.to_bytes()).is_err());
    // A UUIDv7 bit pattern without the RFC 9562 variant is no EnvelopeId, and no valid body.
    let e = all_kinds().remove(3);
    let id = e.id.as_str().to_owned();
    let bad = format!("{}c{}", &id[..19], &id[20..]);
    assert!(bad.parse::<crate::ids::EnvelopeId>().is_err());
    let bytes = String::from_utf8(e.to_bytes())
        .unwrap_or_default()
        .replace(&id, &bad);
    assert!(both(bytes.as_bytes()).is_err());
}
