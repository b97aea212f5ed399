//! Unit tests of the ingress checks: one case per reason code that provokes exactly that
//! code, a valid message that passes, and the order of the checks when several fail.
//! Keys are generated at run time; envelopes are built with `crate::wire`.

use std::cell::Cell;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;
use crate::signing::Signer;
use crate::wire::{Body, Outcome, Receipt};

const NOW: &str = "2026-11-25T10:00:00Z";

fn now() -> DateTime<Utc> {
    wire::time::parse(NOW).unwrap_or_default()
}

fn pid(s: &str) -> ParticipantId {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn new_signer() -> Signer {
    Signer::generate().unwrap_or_else(|e| panic!("{e}"))
}

/// The network of the tests: the broker, `fr.hotline` with one key in each state, and
/// `de.hotline` with one valid key.
struct Net {
    registry: Registry,
    fr: Signer,
    fr_not_yet: Signer,
    fr_expired: Signer,
    fr_revoked: Signer,
    de: Signer,
    stranger: Signer,
}

fn net() -> Net {
    let broker = new_signer();
    let fr = new_signer();
    let fr_not_yet = new_signer();
    let fr_expired = new_signer();
    let fr_revoked = new_signer();
    let de = new_signer();
    let stranger = new_signer();
    let key = |s: &Signer, extra: &str| {
        format!(
            "[[participant.key]]\npublic_key = \"{}\"\n{extra}\n",
            s.public_key_b64()
        )
    };
    let text = format!(
        "broker = \"net.refbroker\"\n\
         [[participant]]\nid = \"net.refbroker\"\nname = \"Broker\"\nrole = \"operator\"\n{}\
         [[participant]]\nid = \"fr.hotline\"\nname = \"FR\"\nrole = \"hotline\"\ncountry = \"FR\"\n{}{}{}{}\
         [[participant]]\nid = \"de.hotline\"\nname = \"DE\"\nrole = \"hotline\"\ncountry = \"DE\"\n{}",
        key(&broker, "not_before = \"2026-01-01T00:00:00Z\""),
        key(
            &fr,
            "not_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2027-01-01T00:00:00Z\""
        ),
        key(&fr_not_yet, "not_before = \"2026-11-25T10:00:01Z\""),
        key(
            &fr_expired,
            "not_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2026-11-25T10:00:00Z\""
        ),
        key(
            &fr_revoked,
            "not_before = \"2026-01-01T00:00:00Z\"\nrevoked_at = \"2026-11-25T10:00:00Z\""
        ),
        key(&de, "not_before = \"2026-01-01T00:00:00Z\""),
    );
    let registry = Registry::from_toml(&text, "test").unwrap_or_else(|e| panic!("{e}\n{text}"));
    Net {
        registry,
        fr,
        fr_not_yet,
        fr_expired,
        fr_revoked,
        de,
        stranger,
    }
}

/// A small valid envelope from `origin`, created at [`NOW`].
fn envelope(origin: &str) -> Envelope {
    let body = Body::Receipt(Receipt {
        referral: EnvelopeId::new_v7(),
        outcome: Outcome::Accepted,
        reason: None,
        received_at: None,
    });
    let mut e = Envelope::new(pid(origin), body);
    e.created_at = now();
    e
}

/// One message as it arrives: bytes, properties, headers.
#[derive(Clone)]
struct Msg {
    body: Vec<u8>,
    user_id: Option<String>,
    message_id: Option<String>,
    kind: Option<String>,
    sig_b64: Option<String>,
    key_id: Option<String>,
}

impl Msg {
    /// `bytes` signed by `signer`, sent by `fr.hotline`, with properties naming `props`.
    fn signed(bytes: Vec<u8>, signer: &Signer, props: &Envelope) -> Msg {
        Msg {
            sig_b64: Some(signer.sign_b64(&bytes)),
            key_id: Some(signer.key_id().to_string()),
            body: bytes,
            user_id: Some("fr.hotline".to_owned()),
            message_id: Some(props.id.to_string()),
            kind: Some(props.kind.as_str().to_owned()),
        }
    }

    /// A valid message from `fr.hotline`.
    fn valid(net: &Net) -> (Msg, Envelope) {
        let e = envelope("fr.hotline");
        (Msg::signed(e.to_bytes(), &net.fr, &e), e)
    }

    fn meta(&self) -> AmqpMeta<'_> {
        AmqpMeta {
            user_id: self.user_id.as_deref(),
            message_id: self.message_id.as_deref(),
            kind: self.kind.as_deref(),
            sig_b64: self.sig_b64.as_deref(),
            key_id: self.key_id.as_deref(),
        }
    }

    fn check(&self, net: &Net) -> Result<Verified, Rejection> {
        self.check_seen(net, &|_| false)
    }

    fn check_seen(
        &self,
        net: &Net,
        seen: &dyn Fn(&EnvelopeId) -> bool,
    ) -> Result<Verified, Rejection> {
        verify(
            &self.body,
            &self.meta(),
            &net.registry,
            now(),
            seen,
            &Policy::default(),
        )
    }

    /// Expects exactly `code`; returns the rejection.
    fn rejected(&self, net: &Net, code: ReasonCode) -> Rejection {
        match self.check(net) {
            Ok(v) => panic!("expected {code}, the message passed: {:?}", v.envelope.id),
            Err(r) => {
                assert_eq!(r.code, code, "{r}");
                assert_no_secrets(net, self, &r);
                r
            }
        }
    }
}

/// No public key, signature or seed ever appears in a detail.
fn assert_no_secrets(net: &Net, msg: &Msg, r: &Rejection) {
    for s in [
        &net.fr,
        &net.fr_not_yet,
        &net.fr_expired,
        &net.fr_revoked,
        &net.de,
        &net.stranger,
    ] {
        assert!(!r.detail.contains(&s.public_key_b64()), "{r}");
    }
    if let Some(sig) = &msg.sig_b64
        && sig.len() > 8
    {
        assert!(!r.detail.contains(sig.as_str()), "{r}");
    }
}

/// The envelope as a JSON value, to break it in ways the types cannot express.
fn json_of(e: &Envelope) -> Value {
    serde_json::from_slice(&e.to_bytes()).unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn a_valid_message_passes() {
    let net = net();
    let (msg, e) = Msg::valid(&net);
    let v = msg.check(&net).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(v.envelope, e);
    assert_eq!(&v.key_id, net.fr.key_id());
    let expected: [u8; 32] = Sha256::digest(&msg.body).into();
    assert_eq!(v.body_sha256, expected);
}

#[test]
fn too_large() {
    let net = net();
    let (mut msg, e) = Msg::valid(&net);
    msg.body = vec![b' '; wire::limits::MAX_BODY_BYTES + 1];
    msg = Msg::signed(msg.body, &net.fr, &e);
    let r = msg.rejected(&net, ReasonCode::TooLarge);
    assert_eq!((r.sender, r.envelope_id), (None, None));
    // Exactly at the limit: not too large (it fails later, on the JSON).
    let at_limit = Msg::signed(vec![b' '; wire::limits::MAX_BODY_BYTES], &net.fr, &e);
    at_limit.rejected(&net, ReasonCode::InvalidJson);
}

#[test]
fn missing_user_id() {
    let net = net();
    let (mut msg, _) = Msg::valid(&net);
    msg.user_id = None;
    msg.rejected(&net, ReasonCode::MissingUserId);
    msg.user_id = Some(String::new());
    msg.rejected(&net, ReasonCode::MissingUserId);
}

#[test]
fn unknown_participant() {
    let net = net();
    let (mut msg, _) = Msg::valid(&net);
    msg.user_id = Some("nl.hotline".to_owned());
    let r = msg.rejected(&net, ReasonCode::UnknownParticipant);
    assert_eq!(r.sender, None);
    // Not even a participant id; echoed quoted, without control characters, cut short.
    msg.user_id = Some(format!("Guest\n{}", "x".repeat(500)));
    let r = msg.rejected(&net, ReasonCode::UnknownParticipant);
    assert!(!r.detail.contains('\n') && r.detail.len() < 200, "{r}");
}

#[test]
fn missing_signature() {
    let net = net();
    let (valid, _) = Msg::valid(&net);
    let mut msg = valid.clone();
    msg.sig_b64 = None;
    let r = msg.rejected(&net, ReasonCode::MissingSignature);
    assert_eq!(r.sender, Some(pid("fr.hotline")));
    assert!(r.detail.contains("x-sig"), "{r}");

    let mut msg = valid.clone();
    msg.key_id = None;
    let r = msg.rejected(&net, ReasonCode::MissingSignature);
    assert!(r.detail.contains("x-key-id"), "{r}");

    for bad_sig in [
        "",
        "not base64!",
        "AAAA",
        &valid.sig_b64.clone().unwrap_or_default()[1..],
    ] {
        let mut msg = valid.clone();
        msg.sig_b64 = Some(bad_sig.to_owned());
        msg.rejected(&net, ReasonCode::MissingSignature);
    }
    for bad_id in ["", "ABCDEF0123456789", "0123", "g123456789abcdef"] {
        let mut msg = valid.clone();
        msg.key_id = Some(bad_id.to_owned());
        msg.rejected(&net, ReasonCode::MissingSignature);
    }
}

#[test]
fn unknown_key() {
    let net = net();
    let e = envelope("fr.hotline");
    // A key nobody registered.
    Msg::signed(e.to_bytes(), &net.stranger, &e).rejected(&net, ReasonCode::UnknownKey);
    // Another participant's key: a key is only good for its owner.
    Msg::signed(e.to_bytes(), &net.de, &e).rejected(&net, ReasonCode::UnknownKey);
}

#[test]
fn key_not_yet_valid() {
    let net = net();
    let e = envelope("fr.hotline");
    Msg::signed(e.to_bytes(), &net.fr_not_yet, &e).rejected(&net, ReasonCode::KeyNotYetValid);
}

#[test]
fn key_expired() {
    let net = net();
    let e = envelope("fr.hotline");
    // not_after == now: the window is half-open, so already expired.
    Msg::signed(e.to_bytes(), &net.fr_expired, &e).rejected(&net, ReasonCode::KeyExpired);
}

#[test]
fn key_revoked() {
    let net = net();
    let e = envelope("fr.hotline");
    // revoked_at == now: revoked.
    Msg::signed(e.to_bytes(), &net.fr_revoked, &e).rejected(&net, ReasonCode::KeyRevoked);
}

#[test]
fn bad_signature() {
    let net = net();
    let (valid, _) = Msg::valid(&net);
    // The body changed after signing (one space appended: same JSON, other bytes).
    let mut msg = valid.clone();
    msg.body.push(b' ');
    let r = msg.rejected(&net, ReasonCode::BadSignature);
    // The body is never believed before the signature: no envelope id.
    assert_eq!(r.envelope_id, None);
    assert_eq!(r.sender, Some(pid("fr.hotline")));
    // Signed by another key but claiming fr's key id.
    let mut msg = valid.clone();
    msg.sig_b64 = Some(net.stranger.sign_b64(&valid.body));
    msg.rejected(&net, ReasonCode::BadSignature);
    // A valid signature over other bytes.
    let mut msg = valid.clone();
    msg.sig_b64 = Some(net.fr.sign_b64(&envelope("fr.hotline").to_bytes()));
    msg.rejected(&net, ReasonCode::BadSignature);
    // The malleated twin of a valid signature (S + L): refused by verify_strict.
    let sig = signing::decode_signature_b64(valid.sig_b64.as_deref().unwrap_or_default())
        .unwrap_or_else(|err| panic!("{err}"))
        .to_bytes();
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut twin = sig;
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        twin[32 + i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    let mut msg = valid.clone();
    msg.sig_b64 = Some(signing::encode_signature_b64(
        &signing::Signature::from_bytes(&twin),
    ));
    msg.rejected(&net, ReasonCode::BadSignature);
}

#[test]
fn invalid_utf8() {
    let net = net();
    let e = envelope("fr.hotline");
    let mut bytes = e.to_bytes();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    Msg::signed(bytes, &net.fr, &e).rejected(&net, ReasonCode::InvalidUtf8);
}

#[test]
fn too_deep() {
    let net = net();
    let e = envelope("fr.hotline");
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    Msg::signed(deep.into_bytes(), &net.fr, &e).rejected(&net, ReasonCode::TooDeep);
}

#[test]
fn invalid_json() {
    let net = net();
    let e = envelope("fr.hotline");
    let r =
        Msg::signed(b"{\"kind\":".to_vec(), &net.fr, &e).rejected(&net, ReasonCode::InvalidJson);
    assert_eq!(r.envelope_id, None);
}

#[test]
fn schema_violation() {
    let net = net();
    let e = envelope("fr.hotline");
    let mut value = json_of(&e);
    value["surprise"] = Value::Bool(true);
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let r = Msg::signed(bytes, &net.fr, &e).rejected(&net, ReasonCode::SchemaViolation);
    assert_eq!(r.envelope_id, None);
}

#[test]
fn property_mismatch() {
    let net = net();
    let (valid, e) = Msg::valid(&net);
    for kind in [None, Some("referral"), Some("Receipt")] {
        let mut msg = valid.clone();
        msg.kind = kind.map(str::to_owned);
        let r = msg.rejected(&net, ReasonCode::PropertyMismatch);
        // From here on the envelope is authenticated: its id is known.
        assert_eq!(r.envelope_id.as_ref(), Some(&e.id));
    }
    for id in [
        None,
        Some(EnvelopeId::new_v7().to_string()),
        Some(e.id.as_str().to_uppercase()),
    ] {
        let mut msg = valid.clone();
        msg.message_id = id;
        msg.rejected(&net, ReasonCode::PropertyMismatch);
    }
}

#[test]
fn origin_mismatch() {
    let net = net();
    // fr.hotline signs, with its own valid key, an envelope claiming to come from de.hotline.
    let e = envelope("de.hotline");
    let r = Msg::signed(e.to_bytes(), &net.fr, &e).rejected(&net, ReasonCode::OriginMismatch);
    assert_eq!(r.sender, Some(pid("fr.hotline")));
    assert_eq!(r.envelope_id, Some(e.id));
}

#[test]
fn replayed() {
    let net = net();
    let (msg, e) = Msg::valid(&net);
    let asked = Cell::new(0);
    let seen = |id: &EnvelopeId| {
        asked.set(asked.get() + 1);
        id == &e.id
    };
    let r = msg.check_seen(&net, &seen).map(|_| ()).unwrap_err();
    assert_eq!(r.code, ReasonCode::Replayed);
    assert_eq!(r.envelope_id, Some(e.id.clone()));
    assert_eq!(asked.get(), 1);
}

#[test]
fn clock_skew() {
    let net = net();
    let ahead = Policy::default().max_clock_skew;
    let behind = Policy::default().max_age;
    let second = chrono::Duration::seconds(1);
    for (offset, ok) in [
        (ahead, true),
        (-ahead, true),
        // A referral that waited an hour in `ingress` (broker down) is still good.
        (-chrono::Duration::hours(1), true),
        (-behind, true),
        (ahead + second, false),
        (-(behind + second), false),
        (chrono::Duration::days(365), false),
        (-chrono::Duration::days(365), false),
    ] {
        let mut e = envelope("fr.hotline");
        e.created_at = now() + offset;
        let msg = Msg::signed(e.to_bytes(), &net.fr, &e);
        if ok {
            assert!(msg.check(&net).is_ok(), "{offset}");
        } else {
            let r = msg.rejected(&net, ReasonCode::ClockSkew);
            assert_eq!(r.envelope_id, Some(e.id));
        }
    }
}

/// Every ingress code, in order, is provoked by some case above: this table is the index.
#[test]
fn every_ingress_code_is_covered_in_order() {
    let net = net();
    let (valid, e) = Msg::valid(&net);
    let with = |f: &dyn Fn(&mut Msg)| {
        let mut m = valid.clone();
        f(&mut m);
        m
    };
    let signed = |bytes: Vec<u8>| Msg::signed(bytes, &net.fr, &e);
    let mut skewed = e.clone();
    skewed.created_at = now() + chrono::Duration::hours(1);
    let foreign = envelope("de.hotline");
    let mut extra = json_of(&e);
    extra["x"] = Value::Null;
    let cases: Vec<(ReasonCode, Msg)> = vec![
        (ReasonCode::TooLarge, signed(vec![b'{'; 300_000])),
        (ReasonCode::MissingUserId, with(&|m| m.user_id = None)),
        (
            ReasonCode::UnknownParticipant,
            with(&|m| m.user_id = Some("xx.nobody".into())),
        ),
        (ReasonCode::MissingSignature, with(&|m| m.sig_b64 = None)),
        (
            ReasonCode::UnknownKey,
            Msg::signed(e.to_bytes(), &net.stranger, &e),
        ),
        (
            ReasonCode::KeyNotYetValid,
            Msg::signed(e.to_bytes(), &net.fr_not_yet, &e),
        ),
        (
            ReasonCode::KeyExpired,
            Msg::signed(e.to_bytes(), &net.fr_expired, &e),
        ),
        (
            ReasonCode::KeyRevoked,
            Msg::signed(e.to_bytes(), &net.fr_revoked, &e),
        ),
        (ReasonCode::BadSignature, with(&|m| m.body.push(b'\n'))),
        (ReasonCode::InvalidUtf8, signed(vec![b'"', 0xc3, b'"'])),
        (
            ReasonCode::TooDeep,
            signed(format!("{}1{}", "[".repeat(17), "]".repeat(17)).into_bytes()),
        ),
        (ReasonCode::InvalidJson, signed(b"{]".to_vec())),
        (
            ReasonCode::SchemaViolation,
            signed(serde_json::to_vec(&extra).unwrap_or_default()),
        ),
        (
            ReasonCode::PropertyMismatch,
            with(&|m| m.kind = Some("status".into())),
        ),
        (
            ReasonCode::OriginMismatch,
            Msg::signed(foreign.to_bytes(), &net.fr, &foreign),
        ),
        (ReasonCode::Replayed, valid.clone()),
        (
            ReasonCode::ClockSkew,
            Msg::signed(skewed.to_bytes(), &net.fr, &skewed),
        ),
    ];
    let codes: Vec<ReasonCode> = cases.iter().map(|(c, _)| *c).collect();
    let ingress: Vec<ReasonCode> = ReasonCode::ALL
        .into_iter()
        .take_while(|c| *c != ReasonCode::Unroutable)
        .collect();
    // Listed in ReasonCode's order, which is the order of the checks.
    assert_eq!(codes, ingress, "every ingress code has exactly one case");
    for (code, msg) in cases {
        let seen = |id: &EnvelopeId| code == ReasonCode::Replayed && id == &e.id;
        match msg.check_seen(&net, &seen) {
            Ok(_) => panic!("{code}: passed"),
            Err(r) => assert_eq!(r.code, code, "{r}"),
        }
    }
}

#[test]
fn order_oversized_with_bad_signature_is_too_large() {
    let net = net();
    let (mut msg, _) = Msg::valid(&net);
    msg.body = vec![0xff; wire::limits::MAX_BODY_BYTES + 1];
    msg.sig_b64 = Some("garbage".into());
    msg.user_id = None;
    msg.rejected(&net, ReasonCode::TooLarge);
}

#[test]
fn order_unknown_key_with_invalid_json_is_unknown_key() {
    let net = net();
    let e = envelope("fr.hotline");
    Msg::signed(b"{not json".to_vec(), &net.stranger, &e).rejected(&net, ReasonCode::UnknownKey);
}

#[test]
fn order_unknown_participant_before_missing_signature() {
    let net = net();
    let (mut msg, _) = Msg::valid(&net);
    msg.user_id = Some("xx.nobody".into());
    msg.sig_b64 = None;
    msg.rejected(&net, ReasonCode::UnknownParticipant);
}

#[test]
fn order_revoked_key_with_bad_signature_is_key_revoked() {
    let net = net();
    let e = envelope("fr.hotline");
    let mut msg = Msg::signed(e.to_bytes(), &net.fr_revoked, &e);
    msg.body.push(b' ');
    msg.rejected(&net, ReasonCode::KeyRevoked);
}

#[test]
fn order_bad_signature_before_anything_in_the_body() {
    let net = net();
    // Invalid UTF-8, bad JSON, a foreign origin: none of it is looked at when the signature fails.
    let e = envelope("de.hotline");
    for bytes in [vec![0xff, 0xfe], b"{".to_vec(), e.to_bytes()] {
        let mut msg = Msg::signed(bytes.clone(), &net.fr, &e);
        msg.sig_b64 = Some(net.fr.sign_b64(b"other bytes"));
        let r = msg.rejected(&net, ReasonCode::BadSignature);
        assert_eq!(r.envelope_id, None);
    }
}

#[test]
fn order_origin_before_replay_before_skew() {
    let net = net();
    let mut e = envelope("de.hotline");
    e.created_at = now() - chrono::Duration::hours(2);
    let msg = Msg::signed(e.to_bytes(), &net.fr, &e);
    let r = msg.check_seen(&net, &|_| true).map(|_| ()).unwrap_err();
    assert_eq!(r.code, ReasonCode::OriginMismatch);

    let mut e = envelope("fr.hotline");
    e.created_at = now() - chrono::Duration::hours(2);
    let msg = Msg::signed(e.to_bytes(), &net.fr, &e);
    let r = msg.check_seen(&net, &|_| true).map(|_| ()).unwrap_err();
    assert_eq!(r.code, ReasonCode::Replayed);
}

#[test]
fn seen_is_never_asked_about_unauthenticated_messages() {
    let net = net();
    let (valid, _) = Msg::valid(&net);
    let asked = Cell::new(false);
    let seen = |_: &EnvelopeId| {
        asked.set(true);
        false
    };
    let mut tampered = valid.clone();
    tampered.body.push(b' ');
    let mut wrong_type = valid.clone();
    wrong_type.kind = Some("notice".into());
    for msg in [tampered, wrong_type] {
        assert!(msg.check_seen(&net, &seen).is_err());
    }
    assert!(!asked.get());
}

#[test]
fn arbitrary_bytes_never_panic() {
    let net = net();
    let e = envelope("fr.hotline");
    for bytes in [
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        b"\"\\ud800\"".to_vec(),
        vec![0u8; 64],
        b"{\"kind\":\"receipt\",\"kind\":\"receipt\"}".to_vec(),
    ] {
        let r = Msg::signed(bytes.clone(), &net.fr, &e).check(&net);
        assert!(r.is_err(), "{bytes:?}");
    }
}
