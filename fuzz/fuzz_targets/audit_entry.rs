//! Audit log entries (`store::entry::Entry::decode`, what `audit verify`, bundles and the
//! store's replay read) on arbitrary bytes. Never panics; decoding is canonical: an entry
//! that decodes has exactly the input as its bytes (one entry, one encoding, one leaf hash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use referral_broker::store::entry::{Entry, leaf_hash};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Entry::decode(data) {
        assert_eq!(e.bytes(), data, "decoding is canonical");
        assert_eq!(e.leaf_hash(), &leaf_hash(data));
    }
});
