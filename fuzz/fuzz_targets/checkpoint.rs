//! Checkpoints (C2SP signed notes, `broker/audit/checkpoint.rs`) on arbitrary text: opening a
//! note (signature first), parsing checkpoint text, verifier keys, and — when the first
//! byte's low bit is set, with the text signed by a key made at start (no key is committed) —
//! the whole `BrokerCheckpoint::verify`, so that the fuzzer reaches the parser behind the
//! signature. Never panics; a verified checkpoint signs and verifies again to the same values.
//!
//! Input: one flags byte, then the text (UTF-8).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use referral_broker::audit::checkpoint::{
    self, BrokerCheckpoint, open_note, parse_checkpoint_text, parse_verifier_key,
};
use referral_broker::signing::Signer;

fn signer() -> &'static Signer {
    static S: OnceLock<Signer> = OnceLock::new();
    S.get_or_init(|| Signer::generate().expect("a key"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let s = signer();
    let key = s.verifying_key();
    let _ = parse_verifier_key(text);
    let _ = parse_checkpoint_text(text);
    let _ = open_note(text, &key);
    let _ = BrokerCheckpoint::verify(text, &key, None);
    if flags & 1 == 1
        && let Ok(note) = checkpoint::sign_note(text, "fz.broker", s)
    {
        let opened = open_note(&note, &key).expect("a note just signed opens");
        assert_eq!(opened.text, text);
        if let Ok(cp) = BrokerCheckpoint::verify(&note, &key, None) {
            let again =
                BrokerCheckpoint::sign(&cp.origin, cp.size, cp.root, cp.time, &cp.key_name, s)
                    .expect("a verified checkpoint signs again");
            let back = BrokerCheckpoint::verify(&again.note, &key, Some(&cp.origin))
                .expect("and verifies");
            assert_eq!(
                (back.size, back.root, back.time),
                (cp.size, cp.root, cp.time)
            );
            BrokerCheckpoint::verify_wire(&cp.to_wire(), &key).expect("its wire form verifies");
        }
    }
});
