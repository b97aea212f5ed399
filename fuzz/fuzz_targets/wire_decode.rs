//! `wire::decode` (JSON with depth and length limits, then the schema and field rules) on
//! arbitrary bytes. Never panics; what decodes is re-encoded by `to_bytes` into bytes that
//! decode to the same envelope (the broker and the participants re-read what they write).
#![no_main]

use libfuzzer_sys::fuzz_target;
use referral_broker::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_without_schema(data);
    if let Ok(envelope) = wire::decode(data) {
        let bytes = envelope.to_bytes();
        let again = wire::decode(&bytes).expect("what decoded re-encodes into something decodable");
        assert_eq!(
            again, envelope,
            "decode ∘ to_bytes is the identity on decoded envelopes"
        );
    }
    // The attestation the broker adds to every delivery is parsed by participants too.
    let _ = wire::attestation::Attestation::decode(data);
});
