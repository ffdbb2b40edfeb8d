//! The JSON Schemas published under `contracts/schemas/`, generated from the Rust types.
//!
//! Other tools (the Studio UI, scripts, auditors) validate against these files, so they must
//! never drift from the code: a test regenerates them and compares. After changing a type, run
//! `RUNLEDGER_BLESS=1 cargo test -p runledger-contracts schema` and commit the result.

use serde_json::Value;

use crate::error::ErrorEnvelope;
use crate::events::EventType;
use crate::flowchart::FlowchartDoc;

/// Every published schema: its path under `contracts/schemas/` and its content.
pub fn all() -> Vec<(String, Value)> {
    let mut out = vec![
        (
            "flowchart.schema.json".to_owned(),
            FlowchartDoc::json_schema().to_value(),
        ),
        (
            "error-envelope.schema.json".to_owned(),
            schemars::schema_for!(ErrorEnvelope).to_value(),
        ),
    ];
    for kind in EventType::ALL {
        let mut schema = kind.payload_schema().to_value();
        if let Value::Object(map) = &mut schema {
            map.insert(
                "x-event-type".into(),
                Value::String(kind.as_str().to_owned()),
            );
            map.insert(
                "x-schema-version".into(),
                Value::from(kind.schema_version()),
            );
        }
        out.push((
            format!(
                "events/{}.v{}.schema.json",
                kind.as_str(),
                kind.schema_version()
            ),
            schema,
        ));
    }
    out
}

/// The bytes a schema file holds: pretty JSON and a final newline.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
    }

    #[test]
    fn committed_schemas_match_the_code() {
        let bless = std::env::var_os("RUNLEDGER_BLESS").is_some();
        let mut expected = BTreeSet::new();
        for (name, schema) in all() {
            let path = dir().join(&name);
            let text = render(&schema);
            expected.insert(name.clone());
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!("{name} is missing; run RUNLEDGER_BLESS=1 cargo test -p runledger-contracts schema")
            });
            assert!(
                committed == text,
                "{name} drifted from the code; run RUNLEDGER_BLESS=1 cargo test -p runledger-contracts schema"
            );
        }
        // No stale files from removed types.
        let mut found = BTreeSet::new();
        for sub in ["", "events"] {
            for entry in std::fs::read_dir(dir().join(sub)).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    let name = entry.file_name().into_string().unwrap();
                    found.insert(if sub.is_empty() {
                        name
                    } else {
                        format!("{sub}/{name}")
                    });
                }
            }
        }
        if !bless {
            assert_eq!(
                found, expected,
                "contracts/schemas/ holds files the code does not generate"
            );
        }
    }

    #[test]
    fn the_event_catalog_doc_has_a_section_per_event_type() {
        let doc = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/events.md"),
        )
        .unwrap();
        for kind in EventType::ALL {
            let heading = format!("### {} (v{})", kind.as_str(), kind.schema_version());
            assert!(
                doc.lines().any(|l| l.trim_end() == heading),
                "docs/events.md lacks `{heading}`"
            );
        }
    }

    #[test]
    fn every_event_schema_is_closed_and_names_its_version() {
        for (name, schema) in all().into_iter().filter(|(n, _)| n.starts_with("events/")) {
            assert_eq!(schema["additionalProperties"], Value::Bool(false), "{name}");
            assert!(schema["x-schema-version"].as_u64().unwrap() >= 1, "{name}");
        }
    }
}
