//! Identifiers. Each is a newtype so a run id can never be passed where a node-run id belongs.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (UUIDv7) id.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError::NotUuid {
                    kind: $prefix,
                    value: truncate(s),
                })
            }
        }
    };
}

uuid_id!(
    /// One run of a flowchart.
    RunId, "run id"
);
uuid_id!(
    /// One execution attempt of one node within a run.
    NodeRunId, "node run id"
);
uuid_id!(
    /// One event in the ledger.
    EventId, "event id"
);
uuid_id!(
    /// One artifact produced by a node run.
    ArtifactId, "artifact id"
);

/// A stream of the ledger: the unit of ordering, optimistic concurrency and hash chaining.
/// Run streams are `run-<uuid>`; other aggregates use their own prefix.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Longest accepted stream id, in bytes.
    pub const MAX_LEN: usize = 200;

    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if ok {
            Ok(Self(value))
        } else {
            Err(IdError::BadStreamId {
                value: truncate(&value),
            })
        }
    }

    /// The stream that holds one run.
    pub fn for_run(run: RunId) -> Self {
        Self(format!("run-{run}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(id: StreamId) -> String {
        id.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in bytes.
            pub const MAX_LEN: usize = 128;

            /// Accepts 1 to 128 visible ASCII characters, which is what HTTP headers carry.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                if !value.is_empty()
                    && value.len() <= Self::MAX_LEN
                    && value.bytes().all(|b| b.is_ascii_graphic())
                {
                    Ok(Self(value))
                } else {
                    Err(IdError::BadToken { kind: $kind, value: truncate(&value) })
                }
            }

            /// A fresh random value (UUIDv7 text), for callers that did not supply one.
            pub fn generate() -> Self {
                Self(Uuid::now_v7().to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(
    /// Identifies one request to the ledger. Appending the same request twice writes once.
    RequestId, "request id"
);
token_id!(
    /// Ties together every event caused by one user action, across streams and services.
    CorrelationId, "correlation id"
);
token_id!(
    /// The request or event that caused an event.
    CausationId, "causation id"
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{value}` is not a valid {kind}: expected a UUID")]
    NotUuid { kind: &'static str, value: String },
    #[error(
        "`{value}` is not a valid stream id: expected 1 to 200 characters of A-Z a-z 0-9 - _ . :"
    )]
    BadStreamId { value: String },
    #[error("`{value}` is not a valid {kind}: expected 1 to 128 visible ASCII characters")]
    BadToken { kind: &'static str, value: String },
}

/// Keeps error messages one line long even for hostile input.
fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_checked() {
        assert!(StreamId::new("run-0190f3a2-7c1e-7000-8000-000000000000").is_ok());
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("has space").is_err());
        assert!(StreamId::new("x".repeat(201)).is_err());
        let err = serde_json::from_str::<StreamId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("not a valid stream id"), "{err}");
    }

    #[test]
    fn tokens_are_checked() {
        assert!(RequestId::new("req-1").is_ok());
        assert!(RequestId::new("").is_err());
        assert!(RequestId::new("a b").is_err());
        assert!(CorrelationId::new("x".repeat(129)).is_err());
        assert_eq!(RequestId::generate().as_str().len(), 36);
    }

    #[test]
    fn uuid_ids_parse_and_name_their_kind() {
        let err = "nope".parse::<RunId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`nope` is not a valid run id: expected a UUID"
        );
        let id = RunId::new_v7();
        assert_eq!(id.to_string().parse::<RunId>().unwrap(), id);
        assert!(StreamId::for_run(id).as_str().starts_with("run-"));
    }
}
