//! Evidence bundles (`audit::bundle::check_bundle`): arbitrary bytes as a bundle file, and a
//! structured bundle — entries, sequence numbers and proofs from the fuzzer, a checkpoint
//! signed by a key made at start, written in the canonical form — so that the fuzzer gets
//! past the signature and the canonical-bytes check to entry decoding and proof
//! verification. Never panics; a bundle that checks has every entry inside its checkpoint.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use referral_broker::audit::bundle::{
    BUNDLE_FORMAT, BUNDLE_VERSION, Bundle, BundleEntry, check_bundle,
};
use referral_broker::audit::checkpoint::BrokerCheckpoint;
use referral_broker::ids::EnvelopeId;
use referral_broker::signing::{Signer, key_id_of};

fn signer() -> &'static Signer {
    static S: OnceLock<Signer> = OnceLock::new();
    S.get_or_init(|| Signer::generate().expect("a key"))
}

#[derive(Debug, Arbitrary)]
struct Structured {
    size: u64,
    root: [u8; 32],
    entries: Vec<(u64, Vec<u8>, Vec<[u8; 32]>)>,
}

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    Raw(&'a [u8]),
    Structured(Structured),
}

fuzz_target!(|input: Input<'_>| {
    let s = signer();
    let key = s.verifying_key();
    let bytes = match input {
        Input::Raw(b) => b.to_vec(),
        Input::Structured(st) => {
            let Ok(cp) = BrokerCheckpoint::sign(
                "fz.broker/audit",
                st.size,
                st.root,
                chrono::Utc::now(),
                "fz.broker",
                s,
            ) else {
                return;
            };
            Bundle {
                format: BUNDLE_FORMAT.into(),
                version: BUNDLE_VERSION,
                envelope: EnvelopeId::new_v7(),
                broker_key_id: key_id_of(&key),
                key_name: cp.key_name.clone(),
                checkpoint: cp.note.clone(),
                entries: st
                    .entries
                    .into_iter()
                    .take(64)
                    .map(|(seq, entry, proof)| BundleEntry { seq, entry, proof })
                    .collect(),
            }
            .to_bytes()
        }
    };
    if let Ok(report) = check_bundle(&bytes, &key) {
        for e in &report.entries {
            assert!(e.seq.get() < report.checkpoint.size);
        }
    }
});
