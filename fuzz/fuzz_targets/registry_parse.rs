//! The participant registry parser (`Registry::from_toml`) on arbitrary text. Never panics;
//! a registry it accepts has its broker among its participants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use referral_broker::registry::Registry;

fuzz_target!(|text: &str| {
    if let Ok(r) = Registry::from_toml(text, "fuzz") {
        let broker = r.broker().id.clone();
        assert!(r.get(&broker).is_some());
        for p in r.participants() {
            for k in &p.keys {
                let _ = k.state_at(chrono::Utc::now());
            }
        }
    }
});
