//! The broker's configuration (`broker.toml`): the TOML as written (`ConfigFile`), then every
//! check of `ServeConfig::build` against a scratch directory holding a valid registry and
//! signing key (made at start; no key is committed). Never panics.
//!
//! Only inputs whose paths are relative and stay inside the scratch directory reach
//! `build` (it reads the files a configuration names: a fuzzed `/dev/zero` would be a test
//! of the machine, not of the parser).
#![no_main]

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use referral_broker::serve::config::{ConfigFile, ServeConfig};
use referral_broker::signing::Signer;

struct Fixture {
    dir: PathBuf,
    _keep: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("a scratch directory");
        let dir = tmp.path().to_owned();
        let signer = Signer::generate().expect("a key");
        let broker = "fz.broker".parse().expect("an id");
        // Written as `fz.broker.key` (and `.pub`) in the scratch directory.
        signer
            .write_key_files(&dir, &broker)
            .expect("writing the key files");
        let registry = format!(
            "broker = \"fz.broker\"\n\
             [[participant]]\nid = \"fz.broker\"\nname = \"B\"\nrole = \"operator\"\n\
             [[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2020-01-01T00:00:00Z\"\n\
             [[participant]]\nid = \"fr.hotline\"\nname = \"FR\"\nrole = \"hotline\"\ncountry = \"FR\"\n\
             [[participant]]\nid = \"nl.police\"\nname = \"NL\"\nrole = \"lea\"\ncountry = \"NL\"\n",
            signer.public_key_b64()
        );
        std::fs::write(dir.join("registry.toml"), registry).expect("registry");
        for f in ["ca.pem", "broker.pem", "broker-cert.key"] {
            std::fs::write(dir.join(f), "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
                .expect("pem");
        }
        Fixture { dir, _keep: tmp }
    })
}

fn inside(p: &Path) -> bool {
    p.is_relative()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fuzz_target!(|text: &str| {
    let Ok(parsed) = toml::from_str::<ConfigFile>(text) else {
        return;
    };
    let mut paths = vec![
        parsed.registry.clone(),
        parsed.signing_key.clone(),
        parsed.data_dir.clone(),
        parsed.amqp.ca.clone(),
        parsed.amqp.cert.clone(),
        parsed.amqp.key.clone(),
    ];
    if let Some(tls) = &parsed.admin.tls {
        paths.push(tls.cert.clone());
        paths.push(tls.key.clone());
        paths.extend(tls.client_ca.clone());
    }
    if !paths.iter().all(|p| inside(p)) {
        return;
    }
    let f = fixture();
    let _ = ServeConfig::build(parsed, &f.dir, Path::new("broker.toml"));
});
