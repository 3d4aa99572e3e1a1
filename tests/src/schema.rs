//! The JSON Schema of flows, events and flow-log lines
//! (`schema/flows.schema.json`), checked against what netwatch really
//! writes.

use std::path::PathBuf;

use serde_json::Value;

/// What a JSON value is meant to be: one of the schema's entry points.
#[derive(Clone, Copy, Debug)]
pub enum Record {
    /// An element of `flows -o json`.
    Flow,
    /// A line of `observe -o jsonl`.
    Event,
    /// A line of the agent's `--flow-log`.
    FlowLogLine,
}

impl Record {
    fn definition(self) -> &'static str {
        match self {
            Record::Flow => "#/$defs/flow",
            Record::Event => "#/$defs/event",
            Record::FlowLogLine => "#/$defs/flowLogLine",
        }
    }
}

/// The schema file in the repository.
pub fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("schema")
        .join("flows.schema.json")
}

/// Every way `value` breaks the schema of a `record` (empty: valid).
pub fn violations(record: Record, value: &Value) -> Vec<String> {
    let text =
        std::fs::read_to_string(schema_path()).expect("schema/flows.schema.json is readable");
    let mut schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    // The file's root only holds definitions: point it at the one wanted,
    // a reference inside the same document (no resolver needed).
    schema["$ref"] = Value::String(record.definition().to_owned());
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles");
    validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Panics, naming every violation, unless `value` is a valid `record`.
pub fn assert_valid(record: Record, value: &Value) {
    let errors = violations(record, value);
    assert!(
        errors.is_empty(),
        "not a valid {record:?} per {}:\n{}\n{value:#}",
        schema_path().display(),
        errors.join("\n")
    );
}
