//! Validation problems: a stable machine-readable code, the path of the offending field and a
//! human message.
//!
//! `code` and `path` are a user-facing contract (`runledger validate --json` prints them and
//! scripts match on them), so codes are never renamed; new ones may be added.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One problem found in a flowchart document.
///
/// `path` names the offending field the way a user would write it: `nodes[2].retry.max_attempts`,
/// `connectors[0].from`, `limits.max_node_executions`, or `""` for the document root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ValidationError {
    pub code: ValidationCode,
    pub path: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: ValidationCode, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "[{}] {}", self.code, self.message)
        } else {
            write!(f, "[{}] {}: {}", self.code, self.path, self.message)
        }
    }
}

impl std::error::Error for ValidationError {}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Stable identifier of a kind of problem; serialized as its snake_case name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ValidationCode {
            $($(#[$doc])* $variant,)*
        }

        impl ValidationCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ValidationCode] = &[$(ValidationCode::$variant,)*];

            /// The stable snake_case name (the same string serde writes).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ValidationCode::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    /// The text is not well-formed YAML/JSON (message carries line and column).
    Syntax => "syntax",
    /// A key the format does not define.
    UnknownKey => "unknown_key",
    /// The same key appears twice in one mapping.
    DuplicateKey => "duplicate_key",
    /// A value of the wrong type or outside its range.
    InvalidValue => "invalid_value",
    /// A required key is absent.
    MissingKey => "missing_key",
    /// A known key that this node type does not accept.
    KeyNotAllowed => "key_not_allowed",
    /// Not exactly one start node.
    StartCount => "start_count",
    /// Two nodes (or two connectors) share an id.
    DuplicateId => "duplicate_id",
    /// An id does not match `[A-Za-z_][A-Za-z0-9_-]*`.
    InvalidId => "invalid_id",
    /// A connector names a node that does not exist.
    UnknownNode => "unknown_node",
    /// A connector leaves an end node.
    EndHasOutgoing => "end_has_outgoing",
    /// A solid connector enters the start node.
    StartHasIncoming => "start_has_incoming",
    /// A node cannot be reached from start over solid connectors.
    Unreachable => "unreachable",
    /// A decision node has no solid outgoing connector.
    DecisionWithoutOutgoing => "decision_without_outgoing",
    /// A condition names a connector that is not an outgoing connector of its decision.
    ConditionUnknownConnector => "condition_unknown_connector",
    /// A condition names a dotted connector (dotted connectors never trigger).
    ConditionOnDottedConnector => "condition_on_dotted_connector",
    /// `no_match: { policy: fallback }` without a connector.
    FallbackMissing => "fallback_missing",
    /// The fallback connector is not a solid outgoing connector of the decision.
    FallbackInvalid => "fallback_invalid",
    /// `fan_in: { custom: N }` with N outside 1..=solid incoming connectors.
    FanInOutOfRange => "fan_in_out_of_range",
    /// A condition expression does not parse.
    ConditionSyntax => "condition_syntax",
    /// A condition path starts with something other than the input-context roots.
    ConditionUnknownRoot => "condition_unknown_root",
    /// A condition reads `upstream.<id>` / `context.<id>` where `<id>` is not a solid / dotted
    /// parent of the decision, so the path can never resolve.
    ConditionUnknownParent => "condition_unknown_parent",
    /// Solid connectors form a cycle but `limits.max_node_executions` is not set.
    CycleWithoutLimit => "cycle_without_limit",
    /// A task with `model: scripted` has no (or an empty) `scripted` list.
    ScriptedMissing => "scripted_missing",
    /// A `tools:` entry names no tool of the catalog, or is a glob that matches none.
    UnknownTool => "unknown_tool",
}

impl fmt::Display for ValidationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds user-facing paths (`nodes[2].retry`, `nodes[0]["odd key"]`).
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key.chars().enumerate().all(|(i, c)| {
            c == '_' || c.is_ascii_alphabetic() || (i > 0 && (c.is_ascii_digit() || c == '-'))
        });
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => {
            let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("\"{key}\""));
            format!("{parent}[{quoted}]")
        }
    }
}

pub(crate) fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in ValidationCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
            let back: ValidationCode = serde_json::from_value(json).unwrap();
            assert_eq!(back, *code);
        }
        assert_eq!(ValidationCode::ALL.len(), 25);
    }

    #[test]
    fn paths_quote_unusual_keys() {
        assert_eq!(join_key("", "name"), "name");
        assert_eq!(join_key("nodes[2]", "retry"), "nodes[2].retry");
        assert_eq!(join_key("nodes[0]", "odd key"), "nodes[0][\"odd key\"]");
        assert_eq!(join_index("connectors", 3), "connectors[3]");
    }

    #[test]
    fn display_includes_code_and_path() {
        let e = ValidationError::new(ValidationCode::UnknownKey, "nodes[1].colour", "unknown key");
        assert_eq!(e.to_string(), "[unknown_key] nodes[1].colour: unknown key");
    }
}
