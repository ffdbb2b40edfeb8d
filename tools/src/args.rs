//! Reading a call's arguments and building the answers every domain shares: typed argument
//! structs (the schema the loop validates is the tool's contract; serde checks it again here,
//! so a domain never acts on arguments it does not understand), JSON Schema helpers, and the
//! common `ToolCallError`s.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use runledger_contracts::agent_tool::{ToolCallError, ToolSpec};

/// The arguments as `T`, or `InvalidArguments` naming what is wrong.
pub fn parse<T: DeserializeOwned>(arguments: Value) -> Result<T, ToolCallError> {
    let arguments = if arguments.is_null() {
        json!({})
    } else {
        arguments
    };
    serde_json::from_value(arguments).map_err(|e| ToolCallError::InvalidArguments {
        message: e.to_string(),
    })
}

/// `InvalidArguments` with a message naming the argument.
pub fn invalid(field: &str, message: impl std::fmt::Display) -> ToolCallError {
    ToolCallError::InvalidArguments {
        message: format!("{field}: {message}"),
    }
}

/// Refused by confinement or policy.
pub fn refused(code: &'static str, message: impl Into<String>) -> ToolCallError {
    ToolCallError::Refused {
        code,
        message: message.into(),
    }
}

/// The tool ran and failed, without an underlying error.
pub fn failed(code: &'static str, message: impl Into<String>) -> ToolCallError {
    ToolCallError::Failed {
        code,
        message: message.into(),
        source: None,
    }
}

/// The tool ran and failed because of `source`.
pub fn failed_with(
    code: &'static str,
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ToolCallError {
    ToolCallError::Failed {
        code,
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

/// A file-system error of the workspace as a failed call: `not_found`, `already_exists`,
/// `permission_denied`, or `io_error`.
pub fn io_failed(what: &str, e: std::io::Error) -> ToolCallError {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => "not_found",
        std::io::ErrorKind::AlreadyExists => "already_exists",
        std::io::ErrorKind::PermissionDenied => "permission_denied",
        std::io::ErrorKind::DirectoryNotEmpty => "directory_not_empty",
        std::io::ErrorKind::IsADirectory => "is_a_directory",
        std::io::ErrorKind::NotADirectory => "not_a_directory",
        _ => "io_error",
    };
    let message = format!("{what}: {e}");
    failed_with(code, message, e)
}

/// A tool's spec.
pub fn spec(name: &str, description: &str, parameters: Value, side_effects: bool) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        parameters,
        side_effects,
    }
}

/// The schema of an arguments object: `properties`, the `required` ones, nothing else.
pub fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// A non-empty string argument.
pub fn string(description: &str) -> Value {
    json!({ "type": "string", "minLength": 1, "description": description })
}

/// A boolean argument.
pub fn boolean(description: &str) -> Value {
    json!({ "type": "boolean", "description": description })
}

/// An integer argument in `min..=max`.
pub fn integer(description: &str, min: u64, max: u64) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max, "description": description })
}

/// A list of non-empty strings.
pub fn strings(description: &str) -> Value {
    json!({ "type": "array", "items": { "type": "string", "minLength": 1 }, "description": description })
}

/// Refuses a value the tool would pass to a program as an argument when it could be read as
/// an option (`-...`), or holds a NUL or a newline.
pub fn plain_word(field: &str, value: &str) -> Result<(), ToolCallError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.starts_with('-') {
        return Err(invalid(field, "must not start with `-`"));
    }
    if value.contains(['\0', '\n', '\r']) {
        return Err(invalid(field, "must not contain NUL or line breaks"));
    }
    Ok(())
}
