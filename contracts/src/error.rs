//! The API error envelope: `{ok: false, error: {code, message, details, request_id}, correlation_id}`.
//!
//! Every error the HTTP API returns has this shape, so clients handle failures in one place.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The literal `false`. Makes an envelope with `ok: true` unrepresentable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct False;

impl Serialize for False {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(false)
    }
}

impl<'de> Deserialize<'de> for False {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match bool::deserialize(d)? {
            false => Ok(False),
            true => Err(serde::de::Error::custom(
                "an error envelope has `ok: false`",
            )),
        }
    }
}

impl JsonSchema for False {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "False".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "boolean", "const": false })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorEnvelope {
    pub ok: False,
    pub error: ErrorBody,
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable, snake_case; clients branch on it.
    pub code: String,
    /// One line for humans.
    pub message: String,
    /// Structured context (for validation errors: the list of problems).
    pub details: Value,
    pub request_id: Option<String>,
}

impl ErrorEnvelope {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ok: False,
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
                details: Value::Null,
                request_id: None,
            },
            correlation_id: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.error.details = details;
        self
    }

    pub fn with_ids(mut self, request_id: Option<String>, correlation_id: Option<String>) -> Self {
        self.error.request_id = request_id;
        self.correlation_id = correlation_id;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let e = ErrorEnvelope::new("conflict", "stream moved")
            .with_details(serde_json::json!({"actual_version": 4}))
            .with_ids(Some("r1".into()), Some("c1".into()));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "ok": false,
                "error": {"code": "conflict", "message": "stream moved",
                          "details": {"actual_version": 4}, "request_id": "r1"},
                "correlation_id": "c1"
            })
        );
        assert_eq!(serde_json::from_value::<ErrorEnvelope>(v).unwrap(), e);
    }

    #[test]
    fn ok_true_is_rejected() {
        let v = serde_json::json!({"ok": true, "error": {"code": "x", "message": "y",
            "details": null, "request_id": null}, "correlation_id": null});
        assert!(serde_json::from_value::<ErrorEnvelope>(v).is_err());
    }
}
