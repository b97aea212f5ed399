//! Schema examples checked by both the JSON Schemas and the Rust types (not yet written).
