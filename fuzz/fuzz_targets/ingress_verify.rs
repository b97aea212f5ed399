//! Ingress verification (`referral_broker::ingress::verify`) on arbitrary bytes and AMQP
//! properties. Never panics; a message it accepts is one that decodes and validates again.
//!
//! Three modes, chosen by the input's first byte:
//! 0. the properties exactly as the fuzzer made them (the checks before the signature: size,
//!    user_id, key id, signature format);
//! 1. the body signed with a registered participant's valid key (a key generated at start:
//!    no key is committed), other properties from the fuzzer — what only an authenticated
//!    message reaches: UTF-8, JSON depth and length limits, the schema, property checks;
//! 2. as 1, with `message_id`, `type` and the clock taken from the body itself (when it is
//!    JSON with `id`, `kind` and `created_at`), so that well-formed envelopes get through
//!    every check to acceptance.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use referral_broker::ingress::{self, AmqpMeta, Policy};
use referral_broker::registry::Registry;
use referral_broker::signing::Signer;

struct Fixture {
    registry: Registry,
    signer: Signer,
}

/// The schema examples' origin, so that they pass the origin check in mode 2.
const SENDER: &str = "fr.hotline-example";

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let signer = Signer::generate().expect("a key from the OS's randomness");
        let broker = Signer::generate().expect("a key from the OS's randomness");
        let key = |s: &Signer| {
            format!(
                "[[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2020-01-01T00:00:00Z\"\n",
                s.public_key_b64()
            )
        };
        let toml = format!(
            "broker = \"fz.broker\"\n\
             [[participant]]\nid = \"fz.broker\"\nname = \"Fuzz broker\"\nrole = \"operator\"\n{}\
             [[participant]]\nid = \"{SENDER}\"\nname = \"Fuzz hotline\"\nrole = \"hotline\"\ncountry = \"FR\"\n{}\
             [[participant]]\nid = \"nl.hotline\"\nname = \"Fuzz NL\"\nrole = \"hotline\"\ncountry = \"NL\"\n{}",
            key(&broker),
            key(&signer),
            key(&Signer::generate().expect("a key")),
        );
        let registry = Registry::from_toml(&toml, "fuzz registry").expect("the fuzz registry");
        Fixture { registry, signer }
    })
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    mode: u8,
    user_id: Option<&'a str>,
    message_id: Option<&'a str>,
    kind: Option<&'a str>,
    sig_b64: Option<&'a str>,
    key_id: Option<&'a str>,
    seen: bool,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let f = fixture();
    let key_id = f.signer.key_id().to_string();
    // Signing costs more than most checks: only in the modes that use it.
    let signature = if input.mode % 3 == 0 {
        String::new()
    } else {
        f.signer.sign_b64(input.body)
    };
    let parsed: Option<serde_json::Value> = serde_json::from_slice(input.body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let (body_id, body_kind, body_time) = (field("id"), field("kind"), field("created_at"));
    let mut now = chrono::Utc::now();
    let meta = match input.mode % 3 {
        0 => AmqpMeta {
            user_id: input.user_id,
            message_id: input.message_id,
            kind: input.kind,
            sig_b64: input.sig_b64,
            key_id: input.key_id,
        },
        1 => AmqpMeta {
            user_id: Some(SENDER),
            message_id: input.message_id,
            kind: input.kind,
            sig_b64: Some(&signature),
            key_id: Some(&key_id),
        },
        _ => {
            if let Some(t) = body_time
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                now = t.with_timezone(&chrono::Utc);
            }
            AmqpMeta {
                user_id: Some(SENDER),
                message_id: body_id.as_deref(),
                kind: body_kind.as_deref(),
                sig_b64: Some(&signature),
                key_id: Some(&key_id),
            }
        }
    };
    let outcome = ingress::verify(
        input.body,
        &meta,
        &f.registry,
        now,
        &|_| input.seen,
        &Policy::default(),
    );
    if let Ok(v) = outcome {
        // Accepted: it decodes on its own, and the properties said what the envelope says.
        let again = referral_broker::wire::decode(input.body).expect("an accepted body decodes");
        assert_eq!(again, v.envelope);
        assert_eq!(meta.message_id, Some(v.envelope.id.as_str()));
        assert_eq!(meta.kind, Some(v.envelope.kind.as_str()));
        assert_eq!(v.envelope.origin.as_str(), SENDER);
        assert!(!input.seen, "an envelope id already seen is a replay");
    }
});
