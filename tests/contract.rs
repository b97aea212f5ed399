//! The message contract, checked from both sides: every example under `schemas/` goes
//! through the JSON Schemas (the `jsonschema` crate, built here from the files on disk) and
//! through the Rust types (`wire::decode`, and `wire::decode_without_schema` for the types
//! alone); each must agree with the folder the example sits in (`valid/` or `invalid/`).
//!
//! Also: every schema is a valid draft 2020-12 schema with the `$id` of its path and is
//! embedded in the binary; every kind has at least 3 valid and 6 invalid examples; the notice
//! schema's `code` enum is exactly `ReasonCode::ALL`; `schemas/README.md` explains every
//! reason code; the signature test vector's body is a valid envelope.
//!
//! Run with `cargo test --test contract`. Needs no RabbitMQ and no network.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jsonschema::{Registry, Validator};
use referral_broker::reason::ReasonCode;
use referral_broker::wire::{self, Kind};
use serde_json::Value;

const ID_BASE: &str = "https://schemas.referral-broker.example/";
const MIN_VALID: usize = 3;
const MIN_INVALID: usize = 6;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, recursively, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(schemas_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every `*.schema.json` under `schemas/`, by path relative to it.
fn schema_files() -> Vec<(String, Value)> {
    walk(&schemas_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".schema.json"))
        .map(|p| (rel(&p), read_json(&p)))
        .collect()
}

/// Validators for every schema, from the files on disk, references resolved among them
/// only (offline), formats asserted.
fn validators() -> Vec<(String, Validator)> {
    let files = schema_files();
    let mut builder = Registry::new();
    for (path, doc) in &files {
        builder = builder
            .add(format!("{ID_BASE}{path}"), doc)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let registry = builder
        .prepare()
        .unwrap_or_else(|e| panic!("registry: {e}"));
    files
        .iter()
        .map(|(path, doc)| {
            let v = jsonschema::options()
                .offline()
                .with_registry(&registry)
                .should_validate_formats(true)
                .build(doc)
                .unwrap_or_else(|e| panic!("{path} does not compile: {e}"));
            (path.clone(), v)
        })
        .collect()
}

/// An example's verdict (from its folder) and the schema that judges it:
/// `<kind>/<v>/{valid,invalid}/x.json` → `<kind>/<v>.schema.json`,
/// `envelope/{valid,invalid}/x.json` → `envelope.schema.json`.
fn example_of(path: &Path) -> Option<(bool, String)> {
    let r = rel(path);
    let parts: Vec<&str> = r.split('/').collect();
    if !r.ends_with(".json") || r.ends_with(".schema.json") {
        return None;
    }
    let verdict = |folder: &str| match folder {
        "valid" => Some(true),
        "invalid" => Some(false),
        _ => None,
    };
    match parts.as_slice() {
        ["envelope", folder, _] => Some((verdict(folder)?, "envelope.schema.json".to_owned())),
        [kind, v, folder, _] => Some((verdict(folder)?, format!("{kind}/{v}.schema.json"))),
        _ => None,
    }
}

fn examples() -> Vec<(PathBuf, bool, String)> {
    walk(&schemas_dir())
        .into_iter()
        .filter_map(|p| example_of(&p).map(|(ok, schema)| (p, ok, schema)))
        .collect()
}

#[test]
fn every_example_agrees_with_its_folder_for_schema_and_types() {
    let validators = validators();
    let mut wrong = Vec::new();
    let all = examples();
    assert!(!all.is_empty(), "no examples found under schemas/");
    for (path, expect_valid, schema) in &all {
        let name = rel(path);
        let Some((_, validator)) = validators.iter().find(|(p, _)| p == schema) else {
            wrong.push(format!("{name}: no schema {schema} beside it"));
            continue;
        };
        let bytes = read(path);
        let instance = read_json(path);
        if schema == ATTESTATION_SCHEMA {
            wrong.extend(attestation_disagreements(&name, &bytes, *expect_valid));
        }
        let by_schema = validator.validate(&instance);
        if by_schema.is_ok() != *expect_valid {
            let why = by_schema
                .err()
                .map(|e| format!(": {} at {}", e.masked(), e.instance_path()));
            wrong.push(format!(
                "{name}: JSON Schema says {}{}",
                verdict(!expect_valid),
                why.unwrap_or_default()
            ));
        }
        if schema == ATTESTATION_SCHEMA {
            continue; // A header value, not an envelope: checked above.
        }
        let by_decode = wire::decode(&bytes);
        if by_decode.is_ok() != *expect_valid {
            wrong.push(format!(
                "{name}: wire::decode says {} ({:?})",
                verdict(!expect_valid),
                by_decode.as_ref().err()
            ));
        }
        let by_types = wire::decode_without_schema(&bytes);
        if by_types.is_ok() != *expect_valid {
            wrong.push(format!(
                "{name}: wire::decode_without_schema (types alone) says {} ({:?})",
                verdict(!expect_valid),
                by_types.as_ref().err()
            ));
        }
        // Invalid examples are well-formed JSON that breaks the schema: nothing else.
        if let Err(e) = &by_decode
            && !expect_valid
            && e.reason() != ReasonCode::SchemaViolation
        {
            wrong.push(format!(
                "{name}: refused as {}, expected schema_violation",
                e.reason()
            ));
        }
        // A valid example round-trips through the types.
        if let Ok(envelope) = by_decode {
            let again = wire::decode(&envelope.to_bytes());
            if again.as_ref().ok() != Some(&envelope) {
                wrong.push(format!(
                    "{name}: decode(to_bytes(e)) != e ({:?})",
                    again.err()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreement(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The attestation (`x-attestation` header, not an envelope) has a schema of its own.
const ATTESTATION_SCHEMA: &str = "attestation/1.schema.json";

/// An attestation example through `Attestation::decode` (schema + types) and
/// `Attestation::decode_value` (types alone); a valid one round-trips through `to_bytes`.
fn attestation_disagreements(name: &str, bytes: &[u8], expect_valid: bool) -> Vec<String> {
    use referral_broker::wire::attestation::Attestation;
    let mut wrong = Vec::new();
    let by_decode = Attestation::decode(bytes);
    if by_decode.is_ok() != expect_valid {
        wrong.push(format!(
            "{name}: Attestation::decode says {} ({:?})",
            verdict(!expect_valid),
            by_decode.as_ref().err()
        ));
    }
    let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let by_types = Attestation::decode_value(value);
    if by_types.is_ok() != expect_valid {
        wrong.push(format!(
            "{name}: Attestation::decode_value (types alone) says {} ({:?})",
            verdict(!expect_valid),
            by_types.as_ref().err()
        ));
    }
    if let Ok(a) = by_decode {
        let again = a.to_bytes().map(|b| Attestation::decode(&b));
        if !matches!(&again, Ok(Ok(back)) if *back == a) {
            wrong.push(format!("{name}: decode(to_bytes(a)) != a ({again:?})"));
        }
    }
    wrong
}

fn verdict(valid: bool) -> &'static str {
    if valid { "valid" } else { "invalid" }
}

#[test]
fn every_schema_is_draft_2020_12_with_the_id_of_its_path_and_is_embedded() {
    let files = schema_files();
    let expected: BTreeSet<String> = std::iter::once("envelope.schema.json".to_owned())
        .chain(
            Kind::ALL
                .iter()
                .map(|k| format!("{}/1.schema.json", k.as_str())),
        )
        .chain(std::iter::once(ATTESTATION_SCHEMA.to_owned()))
        .collect();
    let found: BTreeSet<String> = files.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(found, expected, "schema files on disk");
    for (path, doc) in &files {
        assert_eq!(
            doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{path}"
        );
        assert_eq!(doc["$id"], format!("{ID_BASE}{path}"), "{path}");
        if let Err(e) = jsonschema::draft202012::meta::validate(doc) {
            panic!("{path} is not a valid draft 2020-12 schema: {e}");
        }
        let embedded = wire::schema::SOURCES
            .iter()
            .chain(&[(ATTESTATION_SCHEMA, wire::attestation::SCHEMA)])
            .find(|(p, _)| p == path);
        let on_disk = std::fs::read_to_string(schemas_dir().join(path)).unwrap_or_default();
        assert_eq!(
            embedded.map(|(_, text)| *text),
            Some(on_disk.as_str()),
            "{path} is not embedded as is"
        );
    }
}

#[test]
fn enough_examples_per_kind() {
    let all = examples();
    let dirs = std::iter::once("envelope".to_owned())
        .chain(Kind::ALL.iter().map(|k| format!("{}/1", k.as_str())))
        .chain(std::iter::once("attestation/1".to_owned()));
    for dir in dirs {
        let count = |valid: bool| {
            all.iter()
                .filter(|(p, ok, _)| *ok == valid && rel(p).starts_with(&format!("{dir}/")))
                .count()
        };
        assert!(
            count(true) >= MIN_VALID,
            "{dir}: {} valid examples, want >= {MIN_VALID}",
            count(true)
        );
        assert!(
            count(false) >= MIN_INVALID,
            "{dir}: {} invalid examples, want >= {MIN_INVALID}",
            count(false)
        );
    }
}

#[test]
fn notice_codes_are_exactly_the_reason_codes() {
    let notice = read_json(&schemas_dir().join("notice/1.schema.json"));
    let listed = notice
        .pointer("/$defs/body/properties/code/enum")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("notice schema has no code enum"));
    let listed: Vec<&str> = listed.iter().filter_map(Value::as_str).collect();
    let codes: Vec<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        listed.iter().collect::<BTreeSet<_>>(),
        codes.iter().collect::<BTreeSet<_>>(),
        "notice code enum vs ReasonCode::ALL"
    );
    assert_eq!(
        listed.len(),
        codes.len(),
        "repeated code in the notice enum"
    );
}

#[test]
fn readme_explains_every_reason_code() {
    let readme = std::fs::read_to_string(schemas_dir().join("README.md"))
        .unwrap_or_else(|e| panic!("schemas/README.md: {e}"));
    let missing: Vec<&str> = ReasonCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !readme.contains(&format!("`{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "schemas/README.md does not mention: {missing:?}"
    );
}

#[test]
fn signature_vector_body_is_a_valid_envelope() {
    let path = schemas_dir().join("test-vectors/signature.json");
    if !path.exists() {
        eprintln!("no {} yet; skipped", path.display());
        return;
    }
    let vector = read_json(&path);
    let body = vector["body"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no string field `body`", path.display()));
    if let Err(e) = wire::decode(body.as_bytes()) {
        panic!("the signature vector's body is not a valid envelope: {e}");
    }
}
