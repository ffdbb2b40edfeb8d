//! Property-based fuzzing of request bodies through the extractor every handler uses: whatever
//! a client sends is a value or a 4xx envelope with a stable code, never a panic or a 5xx.
//! Short by default; `RUNLEDGER_FUZZ_CASES=N` for a long run (docs/reliability.md).

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::control::{CancelBody, ControlBody, SkipBody};
use crate::error::ApiError;
use crate::extract::parse;
use crate::flowcharts::{CreateFlowchartBody, ValidateBody};
use crate::models::{CreateModelBody, UpdateModelBody};
use crate::runs::StartRunBody;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("RUNLEDGER_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Field names the bodies take, and some they do not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("flowchart"),
        Just("version"),
        Just("definition"),
        Just("inputs"),
        Just("actor"),
        Just("reason"),
        Just("force"),
        Just("output"),
        Just("spec"),
        Just("expected_version"),
        Just("name"),
        Just("provider"),
        Just("model_id"),
        Just("settings"),
        Just("extra"),
        Just(""),
        Just("\u{0}"),
    ]
    .prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        Just(json!(4_294_967_296_u64)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        prop_oneof![
            "[a-z_]{0,10}",
            Just("\u{0}".to_owned()),
            Just("name: x\nnodes: []".to_owned()),
            ".{0,20}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 20, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The extractor's answer for `bytes` as body type `T`: a body, or a 4xx with one of the
/// extractor's codes.
fn check<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, TestCaseError> {
    match parse::<T>(bytes) {
        Ok(body) => Ok(Some(body)),
        Err(ApiError {
            status,
            code,
            message,
            ..
        }) => {
            prop_assert!(status.is_client_error(), "{status} {code}: {message}");
            prop_assert!(
                ["malformed_json", "unknown_field", "invalid_body"].contains(&code.as_str()),
                "{code}: {message}"
            );
            prop_assert!(!message.is_empty());
            Ok(None)
        }
    }
}

/// A body that parses serializes to a value that parses again to the same serialization.
fn check_stable<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some(body) = check::<T>(bytes)? {
        let again = serde_json::to_vec(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let reparsed = check::<T>(&again)?
            .ok_or_else(|| TestCaseError::fail("a body we accepted does not parse again"))?;
        prop_assert_eq!(
            serde_json::to_value(&reparsed).unwrap(),
            serde_json::to_value(&body).unwrap()
        );
    }
    Ok(())
}

fn every_body(bytes: &[u8]) -> Result<(), TestCaseError> {
    check_stable::<StartRunBody>(bytes)?;
    check_stable::<ControlBody>(bytes)?;
    check_stable::<CancelBody>(bytes)?;
    check_stable::<SkipBody>(bytes)?;
    check_stable::<ValidateBody>(bytes)?;
    check_stable::<CreateFlowchartBody>(bytes)?;
    check::<CreateModelBody>(bytes)?;
    check::<UpdateModelBody>(bytes)?;
    Ok(())
}

proptest! {
    #![proptest_config(cases(128))]

    /// JSON documents made of the bodies' own field names and edge values.
    #[test]
    fn json_bodies_are_a_body_or_a_4xx(value in value()) {
        every_body(&serde_json::to_vec(&value).unwrap())?;
    }

    /// Bytes that are not JSON, or JSON cut or spliced anywhere.
    #[test]
    fn broken_bytes_are_a_4xx(value in value(), cut in any::<usize>(), junk in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = serde_json::to_vec(&value).unwrap();
        let at = cut % (bytes.len() + 1);
        bytes.truncate(at);
        bytes.extend_from_slice(&junk);
        every_body(&bytes)?;
    }
}
