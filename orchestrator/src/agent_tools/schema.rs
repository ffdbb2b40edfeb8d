//! Small builders for the tools' JSON Schemas, so each domain states its arguments in a few
//! lines and every schema refuses unknown keys (`additionalProperties: false`).

use runledger_contracts::agent_tool::ToolSpec;
use serde_json::{Map, Value, json};

/// An object schema with these properties, the listed ones required, nothing else allowed.
pub fn object(properties: Value, required: &[&str]) -> Value {
    let properties = match properties {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// A string with a description.
pub fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

/// An id that names a stream: 1 to 100 of `A-Z a-z 0-9 - _ . :`.
pub fn id(description: &str) -> Value {
    json!({
        "type": "string",
        "description": description,
        "pattern": "^[A-Za-z0-9._:-]{1,100}$",
    })
}

/// One of these strings.
pub fn one_of(values: &[&str], description: &str) -> Value {
    json!({ "type": "string", "enum": values, "description": description })
}

/// A positive integer at most `max`.
pub fn limit(max: usize, description: &str) -> Value {
    json!({ "type": "integer", "minimum": 1, "maximum": max, "description": description })
}

/// A non-negative integer.
pub fn count(description: &str) -> Value {
    json!({ "type": "integer", "minimum": 0, "description": description })
}

/// Any JSON value.
pub fn any(description: &str) -> Value {
    json!({ "description": description })
}

/// A UUID (run and node run ids).
pub fn uuid(description: &str) -> Value {
    json!({ "type": "string", "format": "uuid", "description": description })
}

pub fn spec(name: &str, description: &str, parameters: Value, side_effects: bool) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        parameters,
        side_effects,
    }
}
