//! Unit tests of [`verify_delivery`]: one genuine delivery of each shape, then one refusal per
//! problem, built by changing one thing.

use super::*;
use crate::route::RouteReason;
use crate::signing::Signer;
use crate::wire::attestation::{AttestedItem, KnownHash, SignedAttestation};
use crate::wire::{Kind, Notice};

const MINIMAL: &str = include_str!("../../../schemas/referral/1/valid/minimal.json");
const REMOVED: &str = include_str!("../../../schemas/status/1/valid/removed.json");

struct World {
    registry: Registry,
    fr: Signer,
    broker: Signer,
    nl: ParticipantId,
}

fn pid(s: &str) -> ParticipantId {
    s.parse().expect("test id")
}

fn world() -> World {
    let fr = Signer::from_seed([1; 32]);
    let nl = Signer::from_seed([2; 32]);
    let broker = Signer::from_seed([3; 32]);
    let revoked_at = "revoked_at = \"2026-11-25T12:00:00Z\"\n";
    let toml = format!(
        "broker = \"net.broker\"\n\
         [[participant]]\nid = \"net.broker\"\nname = \"Broker\"\nrole = \"operator\"\n\
         [[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2026-01-01T00:00:00Z\"\n\
         [[participant]]\nid = \"fr.hotline-example\"\nname = \"FR\"\nrole = \"hotline\"\ncountry = \"FR\"\n\
         [[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2026-01-01T00:00:00Z\"\n{revoked_at}\
         [[participant]]\nid = \"nl.hotline-example\"\nname = \"NL\"\nrole = \"hotline\"\ncountry = \"NL\"\n\
         [[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2026-01-01T00:00:00Z\"\n",
        broker.public_key_b64(),
        fr.public_key_b64(),
        nl.public_key_b64(),
    );
    World {
        registry: Registry::from_toml(&toml, "test").expect("registry"),
        fr,
        broker,
        nl: pid("nl.hotline-example"),
    }
}

fn now() -> DateTime<Utc> {
    "2026-11-25T10:00:05Z".parse().expect("time")
}

/// A delivery as the broker forwards it: bytes, origin's signature, attestation.
struct Delivery {
    body: Vec<u8>,
    kind: String,
    id: String,
    sig: String,
    key_id: String,
    att: Option<SignedAttestation>,
    origin_header: Option<String>,
}

impl Delivery {
    fn meta(&self) -> DeliveryMeta<'_> {
        DeliveryMeta {
            message_id: Some(&self.id),
            kind: Some(&self.kind),
            sig_b64: Some(&self.sig),
            key_id: Some(&self.key_id),
            attestation: self.att.as_ref().map(|a| a.bytes.as_slice()),
            attestation_sig_b64: self.att.as_ref().map(|a| a.sig_b64.as_str()),
            attestation_key_id: self.att.as_ref().map(|a| a.key_id.as_str()),
            origin: self.origin_header.as_deref(),
        }
    }
}

fn attestation_for(envelope: &Envelope, body: &[u8], to: &ParticipantId) -> Attestation {
    Attestation {
        v: 1,
        envelope: envelope.id.clone(),
        kind: envelope.kind,
        origin: envelope.origin.clone(),
        destination: to.clone(),
        body_sha256: attestation::sha256_hex(body),
        referral: about(&envelope.body).cloned(),
        items: if envelope.kind == Kind::Referral {
            vec![AttestedItem {
                index: 0,
                reasons: vec![RouteReason::Country],
            }]
        } else {
            vec![]
        },
        duplicates: vec![],
        known_hashes: vec![],
        known_hashes_truncated: false,
        audit_seq: 7,
        attested_at: "2026-11-25T10:00:01Z".parse().expect("time"),
    }
}

fn forwarded(w: &World, text: &str, edit: impl FnOnce(&mut Attestation)) -> Delivery {
    let body = text.as_bytes().to_vec();
    let envelope = wire::decode(&body).expect("example decodes");
    let mut att = attestation_for(&envelope, &body, &w.nl);
    edit(&mut att);
    Delivery {
        sig: w.fr.sign_b64(&body),
        key_id: w.fr.key_id().to_string(),
        kind: envelope.kind.to_string(),
        id: envelope.id.to_string(),
        att: Some(att.sign(&w.broker).expect("valid attestation")),
        origin_header: Some(envelope.origin.to_string()),
        body,
    }
}

fn check(w: &World, d: &Delivery) -> Result<Genuine, Refusal> {
    verify_delivery(&d.body, &d.meta(), &w.registry, &w.nl, now())
}

fn refused(w: &World, d: &Delivery) -> Problem {
    match check(w, d) {
        Ok(g) => panic!("accepted: {g:?}"),
        Err(r) => {
            println!("{r}");
            r.problem
        }
    }
}

#[test]
fn genuine_referral_with_attestation() {
    let w = world();
    let d = forwarded(&w, MINIMAL, |a| {
        a.known_hashes = vec![KnownHash {
            item: 0,
            hash: 0,
            first_referral: "01M7QGTY807TT8Z3F0X5SY3M1P".parse().expect("id"),
        }]
    });
    let g = check(&w, &d).expect("genuine");
    assert_eq!(g.envelope.kind, Kind::Referral);
    assert_eq!(&g.key_id, w.fr.key_id());
    assert_eq!(g.attestation.expect("attested").audit_seq, 7);
}

#[test]
fn genuine_status_about_its_referral() {
    let w = world();
    let mut text = REMOVED.replace("nl.hotline-example", "fr.hotline-example");
    text.push('\n');
    let d = forwarded(&w, &text, |_| {});
    check(&w, &d).expect("genuine");
}

#[test]
fn broker_notice_needs_no_attestation() {
    let w = world();
    let envelope = Envelope::new(
        pid("net.broker"),
        Body::Notice(Notice::new(crate::reason::ReasonCode::Duplicate)),
    );
    let body = envelope.to_bytes();
    let d = Delivery {
        sig: w.broker.sign_b64(&body),
        key_id: w.broker.key_id().to_string(),
        kind: "notice".into(),
        id: envelope.id.to_string(),
        att: None,
        origin_header: None,
        body,
    };
    // The notice was created now; the keys are valid now.
    let g = verify_delivery(&d.body, &d.meta(), &w.registry, &w.nl, Utc::now()).expect("genuine");
    assert!(g.attestation.is_none());
}

#[test]
fn tampered_body_is_a_bad_signature() {
    let w = world();
    let mut d = forwarded(&w, MINIMAL, |_| {});
    d.body = String::from_utf8(d.body)
        .expect("utf8")
        .replace("192.0.2.10", "192.0.2.11")
        .into_bytes();
    assert_eq!(refused(&w, &d), Problem::BadSignature);
}

#[test]
fn signature_by_another_participant_is_an_origin_mismatch() {
    let w = world();
    let mut d = forwarded(&w, MINIMAL, |_| {});
    let nl_key = Signer::from_seed([2; 32]);
    d.sig = nl_key.sign_b64(&d.body);
    d.key_id = nl_key.key_id().to_string();
    assert_eq!(refused(&w, &d), Problem::OriginMismatch);
}

#[test]
fn wrong_or_missing_signature_headers() {
    let w = world();
    let mut d = forwarded(&w, MINIMAL, |_| {});
    d.sig = w.fr.sign_b64(b"something else");
    assert_eq!(refused(&w, &d), Problem::BadSignature);
    d.sig = "not base64".into();
    assert_eq!(refused(&w, &d), Problem::MissingSignature);
    let stranger = Signer::from_seed([9; 32]);
    d.sig = stranger.sign_b64(&d.body);
    d.key_id = stranger.key_id().to_string();
    assert_eq!(refused(&w, &d), Problem::UnknownKey);
}

#[test]
fn attestation_required_and_checked() {
    let w = world();
    let mut d = forwarded(&w, MINIMAL, |_| {});
    d.att = None;
    assert_eq!(refused(&w, &d), Problem::MissingAttestation);

    let d = forwarded(&w, MINIMAL, |a| a.destination = pid("de.hotline-example"));
    assert_eq!(refused(&w, &d), Problem::AttestationMismatch);

    let d = forwarded(&w, MINIMAL, |a| a.items[0].index = 3);
    assert_eq!(refused(&w, &d), Problem::AttestationMismatch);

    let d = forwarded(&w, MINIMAL, |a| {
        a.body_sha256 = attestation::sha256_hex(b"x")
    });
    assert_eq!(refused(&w, &d), Problem::AttestationMismatch);

    // Signed by the origin instead of the broker.
    let mut d = forwarded(&w, MINIMAL, |_| {});
    let envelope = wire::decode(&d.body).expect("decodes");
    d.att = Some(
        attestation_for(&envelope, &d.body, &w.nl)
            .sign(&w.fr)
            .expect("valid"),
    );
    assert_eq!(refused(&w, &d), Problem::BadAttestation);
}

#[test]
fn properties_must_agree() {
    let w = world();
    let mut d = forwarded(&w, MINIMAL, |_| {});
    d.kind = "status".into();
    assert_eq!(refused(&w, &d), Problem::PropertyMismatch);
    let mut d = forwarded(&w, MINIMAL, |_| {});
    d.origin_header = Some("de.hotline-example".into());
    assert_eq!(refused(&w, &d), Problem::PropertyMismatch);
}

#[test]
fn origin_key_revoked_before_the_broker_attested() {
    let w = world();
    // fr's key is revoked at 12:00; attested at 10:00:01 → fine; attested at 12:30 → refused.
    let d = forwarded(&w, MINIMAL, |a| {
        a.attested_at = "2026-11-25T12:30:00Z".parse().expect("time")
    });
    assert_eq!(refused(&w, &d), Problem::KeyNotValid);
}

#[test]
fn undecodable_but_signed() {
    let w = world();
    let mut d = forwarded(&w, MINIMAL, |_| {});
    d.body = b"{\"kind\":\"referral\"}".to_vec();
    d.sig = w.fr.sign_b64(&d.body);
    assert_eq!(refused(&w, &d), Problem::Undecodable);
}
