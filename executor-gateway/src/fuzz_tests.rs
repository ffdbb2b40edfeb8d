//! Property-based fuzzing of executor report decoding: what comes off NATS is whatever a
//! process on the network published. Short by default; `RUNLEDGER_FUZZ_CASES=N` for a long run
//! (docs/reliability.md).

use proptest::prelude::*;
use runledger_contracts::events::{ErrorInfo, Warning};
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_orchestrator::decide::{NodeOutcome, NodeResult};
use runledger_orchestrator::executor::Report;
use serde_json::{Value, json};

use crate::messages::{ReportMessage, WIRE_VERSION};

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

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,12}",
        Just("\u{0}".to_owned()),
        Just("é🦉\u{202e}".to_owned()),
        ".{0,24}"
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn ids() -> impl Strategy<Value = (RunId, NodeRunId)> {
    (any::<u128>(), any::<u128>()).prop_map(|(a, b)| {
        (
            format!("{a:032x}").parse().expect("32 hex digits"),
            format!("{b:032x}").parse().expect("32 hex digits"),
        )
    })
}

fn outcome() -> impl Strategy<Value = NodeOutcome> {
    prop_oneof![
        (
            value(),
            prop::collection::vec((text(), text()), 0..2),
            any::<bool>()
        )
            .prop_map(|(output, warnings, fallback_used)| {
                NodeOutcome::Succeeded {
                    output,
                    warnings: warnings
                        .into_iter()
                        .map(|(code, message)| Warning { code, message })
                        .collect(),
                    fallback_used,
                    agent: None,
                }
            }),
        (text(), text(), any::<bool>(), prop::option::of(value())).prop_map(
            |(code, message, retryable, details)| {
                NodeOutcome::Failed(ErrorInfo {
                    code,
                    message,
                    retryable,
                    details,
                })
            }
        ),
    ]
}

fn report_message() -> impl Strategy<Value = ReportMessage> {
    let report = (
        ids(),
        any::<u32>(),
        text(),
        text(),
        prop::option::of(any::<u64>()),
        outcome(),
        0..4u8,
    )
        .prop_map(
            |((_, node_run_id), attempt, a, b, sequence, outcome, kind)| {
                let result = NodeResult {
                    node_run_id,
                    attempt,
                    outcome,
                    tool_calls: Vec::new(),
                };
                match kind {
                    0 => Report::Dispatched {
                        node_run_id,
                        attempt,
                        executor_class: a,
                        message_id: b,
                        stream_sequence: sequence,
                    },
                    1 => Report::Started {
                        node_run_id,
                        attempt,
                        executor: a,
                    },
                    2 => Report::Finished(result),
                    _ => Report::Ran {
                        executor: a,
                        result,
                    },
                }
            },
        );
    (ids(), report).prop_map(|((run_id, _), report)| ReportMessage {
        wire_version: WIRE_VERSION,
        run_id,
        report,
    })
}

/// A byte-level change: flip, drop or insert one byte.
fn corrupt(bytes: &mut Vec<u8>, at: usize, byte: u8, kind: u8) {
    if bytes.is_empty() {
        bytes.push(byte);
        return;
    }
    let at = at % bytes.len();
    match kind % 3 {
        0 => bytes[at] ^= byte.max(1),
        1 => {
            bytes.remove(at);
        }
        _ => bytes.insert(at, byte),
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Every report an executor can send decodes to exactly what it sent: the same bytes
    /// when encoded again (what the engine records is what the executor said).
    #[test]
    fn reports_survive_the_wire(message in report_message()) {
        let bytes = serde_json::to_vec(&message).unwrap();
        let decoded: ReportMessage = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(String::from_utf8(serde_json::to_vec(&decoded).unwrap()).unwrap(), String::from_utf8(bytes).unwrap());
    }

    /// Corrupted reports are refused or decode to a report that encodes back to itself; the
    /// decoder never panics.
    #[test]
    fn corrupted_reports_are_refused_or_stable(
        message in report_message(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = serde_json::to_vec(&message).unwrap();
        for (at, byte, kind) in edits {
            corrupt(&mut bytes, at, byte, kind);
        }
        if let Ok(decoded) = serde_json::from_slice::<ReportMessage>(&bytes) {
            let again = serde_json::to_vec(&decoded).unwrap();
            prop_assert_eq!(serde_json::from_slice::<ReportMessage>(&again).unwrap(), decoded);
        }
    }

    /// Any JSON at all is refused or decodes; never a panic.
    #[test]
    fn arbitrary_json_never_panics_the_decoder(value in value()) {
        let _ = serde_json::from_value::<ReportMessage>(value);
    }
}

/// Found by `reports_survive_the_wire`: an error with `details: Some(null)` was sent as
/// `"details": null` and decoded as `None`.
#[test]
fn an_error_with_null_details_survives_the_wire() {
    let (run_id, node_run_id) = (
        "00000000-0000-0000-0000-000000000001".parse().unwrap(),
        "00000000-0000-0000-0000-000000000002".parse().unwrap(),
    );
    let error = ErrorInfo {
        code: "boom".into(),
        message: "\u{0}".into(),
        retryable: true,
        details: Some(Value::Null),
    };
    let result = NodeResult {
        node_run_id,
        attempt: 1,
        outcome: NodeOutcome::Failed(error),
        tool_calls: Vec::new(),
    };
    let message = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id,
        report: Report::Finished(result),
    };
    let bytes = serde_json::to_vec(&message).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains("details"),
        "Some(null) is written as absent"
    );
    let decoded: ReportMessage = serde_json::from_slice(&bytes).unwrap();
    let Report::Finished(NodeResult {
        outcome: NodeOutcome::Failed(decoded),
        ..
    }) = decoded.report
    else {
        panic!("{decoded:?}")
    };
    assert_eq!(decoded.details, None);
}

/// serde reads a struct from an array by position: a report whose parts were sent as arrays
/// was decoded as if they were objects. Every object of a valid report, replaced by the array
/// of its values, is refused as undecodable.
#[test]
fn a_report_with_arrays_for_objects_is_undecodable() {
    fn objects(value: &Value, at: &mut Vec<String>, path: String) {
        match value {
            Value::Object(map) => {
                at.push(path.clone());
                for (k, v) in map {
                    objects(v, at, format!("{path}/{k}"));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    objects(v, at, format!("{path}/{i}"));
                }
            }
            _ => {}
        }
    }
    let result = NodeResult {
        node_run_id: NodeRunId::new_v7(),
        attempt: 1,
        outcome: NodeOutcome::Failed(ErrorInfo {
            code: "boom".into(),
            message: "no".into(),
            retryable: false,
            details: None,
        }),
        tool_calls: Vec::new(),
    };
    let message = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: RunId::new_v7(),
        report: Report::Finished(result),
    };
    let valid = serde_json::to_value(&message).unwrap();
    assert!(crate::intake::decode_report(&serde_json::to_vec(&valid).unwrap()).is_ok());
    let mut paths = Vec::new();
    objects(&valid, &mut paths, String::new());
    assert!(paths.len() >= 3, "{paths:?}");
    for path in paths {
        let mut mutated = valid.clone();
        let at = mutated.pointer_mut(&path).unwrap();
        *at = Value::Array(at.as_object().unwrap().values().cloned().collect());
        let refused = crate::intake::decode_report(&serde_json::to_vec(&mutated).unwrap());
        assert!(
            matches!(refused, Err((crate::metrics::DropReason::Undecodable, _))),
            "{path} as an array: {refused:?}"
        );
    }
}
