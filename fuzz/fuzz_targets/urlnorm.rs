//! URL normalisation (`urlnorm::normalise`, the dedup key's input) on arbitrary text. Never
//! panics, and is idempotent: a normalised URL normalises to itself (same dedup key), or the
//! dedup of a re-reported URL would depend on who reported it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use referral_broker::urlnorm;

fuzz_target!(|text: &str| {
    if let Ok(n) = urlnorm::normalise(text) {
        let again = urlnorm::normalise(n.as_str()).unwrap_or_else(|e| {
            panic!(
                "{:?} normalised to {:?}, which fails: {e}",
                text,
                n.as_str()
            )
        });
        assert_eq!(again.as_str(), n.as_str(), "idempotent for {text:?}");
        assert_eq!(again.dedup_key(), n.dedup_key());
        let _ = n.host();
    }
});
