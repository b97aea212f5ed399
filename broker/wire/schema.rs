//! The JSON Schemas of `schemas/`, embedded in the binary and compiled once.
//!
//! Guarantees: nothing is fetched — every `$ref` resolves inside the embedded set (the
//! validators are built offline, from a registry holding exactly these documents); formats
//! (`date-time`, `ipv4`, `ipv6`) are asserted, as the contract requires; patterns run on the
//! linear-time `regex` engine, so hostile input cannot make them backtrack.

use std::sync::LazyLock;

use jsonschema::{PatternOptions, Registry, Validator};
use serde_json::Value;

use super::Kind;
use super::error::FieldError;

/// Every schema document: (path under `schemas/`, text).
pub const SOURCES: [(&str, &str); 7] = [
    (
        "envelope.schema.json",
        include_str!("../../schemas/envelope.schema.json"),
    ),
    (
        "referral/1.schema.json",
        include_str!("../../schemas/referral/1.schema.json"),
    ),
    (
        "receipt/1.schema.json",
        include_str!("../../schemas/receipt/1.schema.json"),
    ),
    (
        "status/1.schema.json",
        include_str!("../../schemas/status/1.schema.json"),
    ),
    (
        "retraction/1.schema.json",
        include_str!("../../schemas/retraction/1.schema.json"),
    ),
    (
        "notice/1.schema.json",
        include_str!("../../schemas/notice/1.schema.json"),
    ),
    (
        "checkpoint/1.schema.json",
        include_str!("../../schemas/checkpoint/1.schema.json"),
    ),
];

/// The base of every schema's `$id`.
pub const ID_BASE: &str = "https://schemas.referral-broker.example/";

/// Longest message kept from a validator error (patterns can be long).
const MAX_MESSAGE_CHARS: usize = 300;

struct Compiled {
    envelope: Validator,
    /// One per kind, version 1, in [`Kind::ALL`] order.
    v1: Vec<Validator>,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    // The embedded schemas are fixed at build time and compiled by this module's tests and
    // by tests/contract.rs, so a failure here is a build defect, not an input condition.
    compile().expect("the embedded schemas compile (checked by wire::schema tests)")
});

/// Compile every embedded schema (offline, formats asserted, linear-time patterns).
fn compile() -> Result<Compiled, String> {
    let mut docs = Vec::new();
    for (path, text) in SOURCES {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("{path}: {e}"))?;
        docs.push((format!("{ID_BASE}{path}"), doc));
    }
    let mut builder = Registry::new();
    for (id, doc) in &docs {
        builder = builder.add(id, doc).map_err(|e| format!("{id}: {e}"))?;
    }
    let registry = builder.prepare().map_err(|e| e.to_string())?;
    let build = |doc: &Value| {
        jsonschema::options()
            .offline()
            .with_registry(&registry)
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(doc)
            .map_err(|e| e.to_string())
    };
    let envelope = build(&docs[0].1)?;
    let mut v1 = Vec::new();
    for kind in Kind::ALL {
        let id = format!("{ID_BASE}{}/1.schema.json", kind.as_str());
        let doc = docs
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, d)| d)
            .ok_or_else(|| format!("no schema {id}"))?;
        v1.push(build(doc)?);
    }
    Ok(Compiled { envelope, v1 })
}

fn first_error(validator: &Validator, instance: &Value) -> Result<(), FieldError> {
    match validator.validate(instance) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Masked: the offending value is not echoed back (it may be long, and the pointer
            // already says which field it is).
            let message: String = e
                .masked()
                .to_string()
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect();
            Err(FieldError::new(e.instance_path().as_str(), message))
        }
    }
}

/// Check `instance` against the envelope schema (the frame, not the body).
pub fn validate_envelope(instance: &Value) -> Result<(), FieldError> {
    first_error(&COMPILED.envelope, instance)
}

/// Check `instance`, a whole envelope, against the schema of `kind` at version `v`.
pub fn validate_kind(kind: Kind, v: u64, instance: &Value) -> Result<(), FieldError> {
    match v {
        1 => first_error(&COMPILED.v1[kind as usize], instance),
        _ => Err(FieldError::new(
            "/v",
            format!(
                "version {v} of {} is not supported (known: 1)",
                kind.as_str()
            ),
        )),
    }
}

/// Check an envelope against the envelope schema, then against its kind's schema.
pub fn validate(instance: &Value) -> Result<(), FieldError> {
    validate_envelope(instance)?;
    // The envelope schema guarantees a known kind and an integer version.
    let kind = instance
        .get("kind")
        .and_then(Value::as_str)
        .and_then(|k| k.parse::<Kind>().ok());
    let v = instance.get("v").and_then(Value::as_u64);
    match (kind, v) {
        (Some(kind), Some(v)) => validate_kind(kind, v, instance),
        _ => Err(FieldError::new(
            "",
            "kind or v unreadable after the envelope schema passed",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_compile_offline() {
        let compiled = compile();
        assert!(compiled.is_ok(), "{:?}", compiled.err());
    }

    #[test]
    fn ids_match_paths() {
        for (path, text) in SOURCES {
            let doc: Value = serde_json::from_str(text).unwrap_or_default();
            assert_eq!(doc["$id"], format!("{ID_BASE}{path}"), "{path}");
            assert_eq!(
                doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{path}"
            );
        }
    }

    #[test]
    fn unknown_ref_is_not_fetched() {
        // Offline: a reference outside the embedded set fails at build time, it is not fetched.
        let schema =
            serde_json::json!({"$ref": "https://schemas.referral-broker.example/nope.json"});
        assert!(jsonschema::options().offline().build(&schema).is_err());
    }

    #[test]
    fn error_names_the_field() {
        let mut env: Value =
            serde_json::from_str(include_str!("../../schemas/receipt/1/valid/accepted.json"))
                .unwrap_or_default();
        assert_eq!(validate(&env), Ok(()));
        env["body"]["outcome"] = "maybe".into();
        assert_eq!(
            validate(&env).map_err(|e| e.pointer),
            Err("/body/outcome".to_owned())
        );
        env["v"] = 2.into();
        assert_eq!(validate(&env).map_err(|e| e.pointer), Err("/v".to_owned()));
    }
}
