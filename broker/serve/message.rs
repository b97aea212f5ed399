//! The AMQP shape of what the daemon reads and writes: which sender to believe for an
//! ingress message, the properties and headers of a forwarded message, of a notice, of a
//! quarantined message and of a held copy. No I/O: values in, lapin property values out.
//!
//! Guarantees:
//! - The sender of an ingress message is its `user_id` (RabbitMQ refuses a `user_id` that is
//!   not the connection's user). The one exception is a *held copy* (see [`super::flood`]):
//!   a message the broker itself put back on `ingress`, recognised by `user_id` = the
//!   broker's id, whose original sender is in [`HEADER_HELD_FOR`]. Only the broker can
//!   publish with its own `user_id`, so no participant can speak for another this way.
//! - A forwarded message carries the origin's body, `x-sig` and `x-key-id` unchanged and the
//!   origin's `type`, `message_id`, `timestamp`, `content_type`; `user_id` becomes the
//!   broker's (RabbitMQ would refuse the origin's) and [`HEADER_ORIGIN`] names the origin.
//! - Header values are read as text only when they are UTF-8 long strings or short strings;
//!   anything else counts as absent, so the ingress checks refuse it as missing.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::ids::ParticipantId;
use crate::ingress::AmqpMeta;
use crate::reason::ReasonCode;
use crate::signing::{HEADER_KEY_ID, HEADER_SIG};
use crate::wire::attestation::{
    HEADER_ATTESTATION, HEADER_ATTESTATION_KEY_ID, HEADER_ATTESTATION_SIG, HEADER_ORIGIN,
    SignedAttestation,
};

/// On a held copy: the participant whose message it is (empty: the original had no
/// `user_id`).
pub const HEADER_HELD_FOR: &str = "x-held-for";
/// On a forwarded message: `true` when the broker sends it again after a crash or a failed
/// attempt (the destination may already hold a copy with the same envelope id: drop it).
/// RabbitMQ's own `redelivered` flag cannot say this, the copy being a new publish.
pub const HEADER_REDELIVERED: &str = "x-redelivered";
/// On a quarantined message: the reason code.
pub const HEADER_REASON: &str = "x-reason";
/// On a quarantined message: what exactly was wrong.
pub const HEADER_DETAIL: &str = "x-detail";
/// On a quarantined message: the authenticated sender, when known.
pub const HEADER_SENDER: &str = "x-sender";
/// On a quarantined message: the envelope id, when known (authenticated).
pub const HEADER_ENVELOPE: &str = "x-envelope";
/// On a quarantined message: the original properties (`type`, `message_id`, `user_id`,
/// `timestamp`, `content_type`, `redelivered`) and headers, as a table.
pub const HEADER_ORIGINAL: &str = "x-original";

/// `application/json`.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A header's value as text: a UTF-8 long string or a short string.
pub fn header_str<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A short string for a property; `None` if the text is longer than AMQP allows (255 bytes).
pub fn short(text: &str) -> Option<ShortString> {
    ShortString::try_new(text).ok()
}

/// Who sent an ingress message, as far as the transport can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The `user_id` to believe (of the original, for a held copy). `None`: absent.
    pub user_id: Option<String>,
    /// This delivery is a held copy made by the broker.
    pub held_copy: bool,
}

impl Sender {
    /// Reads the sender of a delivery with these properties; `broker` is the broker's id.
    pub fn of(props: &BasicProperties, broker: &ParticipantId) -> Sender {
        let user_id = props.user_id().as_ref().map(|u| u.as_str().to_owned());
        if user_id.as_deref() == Some(broker.as_str())
            && let Some(held_for) = header_str(props, HEADER_HELD_FOR)
        {
            return Sender {
                user_id: (!held_for.is_empty()).then(|| held_for.to_owned()),
                held_copy: true,
            };
        }
        Sender {
            user_id,
            held_copy: false,
        }
    }

    /// The key of flood control: the user id, or `""` for messages without one.
    pub fn flood_key(&self) -> &str {
        self.user_id.as_deref().unwrap_or("")
    }
}

/// The ingress checks' view of a delivery.
pub fn meta<'a>(props: &'a BasicProperties, sender: &'a Sender) -> AmqpMeta<'a> {
    AmqpMeta {
        user_id: sender.user_id.as_deref(),
        message_id: props.message_id().as_ref().map(|s| s.as_str()),
        kind: props.kind().as_ref().map(|s| s.as_str()),
        sig_b64: header_str(props, HEADER_SIG),
        key_id: header_str(props, HEADER_KEY_ID),
    }
}

fn long(text: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// Properties of a message the broker forwards to a destination (see the module
/// documentation), with the signed attestation; `again`: an earlier attempt may have
/// delivered it already ([`HEADER_REDELIVERED`]).
pub fn forward_properties(
    original: &BasicProperties,
    origin: &ParticipantId,
    broker: &ParticipantId,
    attestation: &SignedAttestation,
    again: bool,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    for name in [HEADER_SIG, HEADER_KEY_ID] {
        if let Some(value) = header_str(original, name) {
            headers.insert(name.into(), long(value));
        }
    }
    headers.insert(HEADER_ORIGIN.into(), long(origin.as_str()));
    headers.insert(HEADER_ATTESTATION.into(), long(attestation.bytes.clone()));
    headers.insert(
        HEADER_ATTESTATION_SIG.into(),
        long(attestation.sig_b64.as_str()),
    );
    headers.insert(
        HEADER_ATTESTATION_KEY_ID.into(),
        long(attestation.key_id.as_str()),
    );
    if again {
        headers.insert(HEADER_REDELIVERED.into(), AMQPValue::Boolean(true));
    }
    let mut props = BasicProperties::default()
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_delivery_mode(2)
        .with_user_id(broker.as_str().into())
        .with_headers(headers);
    if let Some(kind) = original.kind() {
        props = props.with_type(kind.clone());
    }
    if let Some(id) = original.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(ts) = original.timestamp() {
        props = props.with_timestamp(*ts);
    }
    props
}

/// Properties of a broker-signed envelope (a notice): everything the design's Wire section
/// asks of a participant's message, with the broker as sender.
pub fn own_properties(
    kind: &str,
    envelope_id: &str,
    broker: &ParticipantId,
    sig_b64: &str,
    key_id: &str,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(HEADER_SIG.into(), long(sig_b64));
    headers.insert(HEADER_KEY_ID.into(), long(key_id));
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_delivery_mode(2)
        .with_type(kind.into())
        .with_message_id(envelope_id.into())
        .with_user_id(broker.as_str().into())
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
        .with_headers(headers)
}

/// What the quarantine keeps beside the raw bytes.
#[derive(Debug, Clone)]
pub struct QuarantineFacts<'a> {
    pub code: ReasonCode,
    pub detail: &'a str,
    pub sender: Option<&'a str>,
    pub envelope: Option<&'a str>,
    pub redelivered: bool,
}

/// Properties of a message put in quarantine: the reason and the original properties in
/// headers (the original `user_id` cannot be kept as a property: RabbitMQ allows only the
/// broker's own).
pub fn quarantine_properties(
    original: &BasicProperties,
    facts: &QuarantineFacts<'_>,
    broker: &ParticipantId,
) -> BasicProperties {
    let mut table = FieldTable::default();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            table.insert(name.into(), long(v));
        }
    };
    put("type", original.kind().as_ref().map(|s| s.to_string()));
    put(
        "message_id",
        original.message_id().as_ref().map(|s| s.to_string()),
    );
    put(
        "user_id",
        original.user_id().as_ref().map(|s| s.to_string()),
    );
    put(
        "content_type",
        original.content_type().as_ref().map(|s| s.to_string()),
    );
    put("timestamp", original.timestamp().map(|t| t.to_string()));
    table.insert("redelivered".into(), AMQPValue::Boolean(facts.redelivered));
    if let Some(h) = original.headers() {
        table.insert("headers".into(), AMQPValue::FieldTable(h.clone()));
    }
    let mut headers = FieldTable::default();
    headers.insert(HEADER_REASON.into(), long(facts.code.as_str()));
    headers.insert(HEADER_DETAIL.into(), long(facts.detail));
    if let Some(s) = facts.sender {
        headers.insert(HEADER_SENDER.into(), long(s));
    }
    if let Some(e) = facts.envelope {
        headers.insert(HEADER_ENVELOPE.into(), long(e));
    }
    headers.insert(HEADER_ORIGINAL.into(), AMQPValue::FieldTable(table));
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_user_id(broker.as_str().into())
        .with_type("quarantine".into())
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
        .with_headers(headers);
    if let Some(id) = original.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(ct) = original.content_type() {
        props = props.with_content_type(ct.clone());
    }
    props
}

/// Properties of a held copy: the original's, with the broker's `user_id` and the original
/// sender in [`HEADER_HELD_FOR`] (an original that is itself a held copy keeps its sender).
pub fn held_copy_properties(
    original: &BasicProperties,
    sender: &Sender,
    broker: &ParticipantId,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    headers.insert(
        HEADER_HELD_FOR.into(),
        long(sender.user_id.clone().unwrap_or_default()),
    );
    original
        .clone()
        .with_user_id(broker.as_str().into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> ParticipantId {
        "net.broker".parse().expect("id")
    }

    fn original() -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(HEADER_SIG.into(), long("c2ln"));
        headers.insert(
            HEADER_KEY_ID.into(),
            AMQPValue::ShortString("0011223344556677".into()),
        );
        headers.insert("x-other".into(), AMQPValue::LongInt(3));
        BasicProperties::default()
            .with_user_id("fr.hotline".into())
            .with_type("referral".into())
            .with_message_id("019ab9a4-8c00-7000-8000-000000000001".into())
            .with_timestamp(1_700_000_000)
            .with_headers(headers)
    }

    #[test]
    fn sender_is_user_id_unless_a_held_copy_from_the_broker() {
        let p = original();
        let s = Sender::of(&p, &broker());
        assert_eq!(s.user_id.as_deref(), Some("fr.hotline"));
        assert!(!s.held_copy);
        let copy = held_copy_properties(&p, &s, &broker());
        let s2 = Sender::of(&copy, &broker());
        assert_eq!(
            s2,
            Sender {
                user_id: Some("fr.hotline".into()),
                held_copy: true
            }
        );
        // A participant cannot use the header: its user_id is its own.
        let mut forged = p.headers().clone().unwrap_or_default();
        forged.insert(HEADER_HELD_FOR.into(), long("de.hotline"));
        let forged = p.clone().with_headers(forged);
        assert_eq!(
            Sender::of(&forged, &broker()).user_id.as_deref(),
            Some("fr.hotline")
        );
        // A held copy of a message without user_id stays without one.
        let anon = Sender {
            user_id: None,
            held_copy: false,
        };
        let copy = held_copy_properties(&BasicProperties::default(), &anon, &broker());
        assert_eq!(
            Sender::of(&copy, &broker()),
            Sender {
                user_id: None,
                held_copy: true
            }
        );
    }

    #[test]
    fn meta_reads_both_string_kinds_and_ignores_others() {
        let p = original();
        let s = Sender::of(&p, &broker());
        let m = meta(&p, &s);
        assert_eq!(m.sig_b64, Some("c2ln"));
        assert_eq!(m.key_id, Some("0011223344556677"));
        assert_eq!(m.kind, Some("referral"));
        assert_eq!(header_str(&p, "x-other"), None);
    }

    #[test]
    fn forward_keeps_the_origin_signature_and_sets_the_broker_user() {
        let p = original();
        let att = SignedAttestation {
            bytes: b"{}".to_vec(),
            sig_b64: "sig".into(),
            key_id: "0011223344556677".parse().expect("key id"),
        };
        let f = forward_properties(
            &p,
            &"fr.hotline".parse().expect("id"),
            &broker(),
            &att,
            false,
        );
        assert_eq!(f.user_id().as_ref().map(|s| s.as_str()), Some("net.broker"));
        assert_eq!(header_str(&f, HEADER_SIG), Some("c2ln"));
        assert_eq!(header_str(&f, HEADER_KEY_ID), Some("0011223344556677"));
        assert_eq!(header_str(&f, HEADER_ORIGIN), Some("fr.hotline"));
        assert_eq!(header_str(&f, HEADER_ATTESTATION), Some("{}"));
        assert_eq!(f.message_id(), p.message_id());
        assert_eq!(f.kind(), p.kind());
        assert_eq!(f.timestamp(), p.timestamp());
        assert_eq!(header_str(&f, "x-other"), None);
    }
}
