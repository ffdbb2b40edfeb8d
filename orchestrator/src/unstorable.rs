//! What the engine does with an executor's report the ledger could not store.
//!
//! A report's content comes from outside (a model's answer, a tool's result, an error message
//! quoting either) and may hold U+0000, integers beyond I-JSON or more bytes than an event may
//! carry. Appending it would fail the same way on every try, so the decider checks it first
//! with [`storable`](runledger_contracts::storable), the check the ledger itself applies:
//!
//! - an output the ledger cannot store fails the node run with `invalid_output` (not
//!   retryable: the same answer would be refused again), naming the JSON path;
//! - an error report is kept, with U+0000 replaced by U+FFFD, out-of-range integers written as
//!   strings, and a message or details that stay too large dropped: its code and retry policy
//!   still apply;
//! - a tool call whose output cannot be stored is recorded without it, as a failed call with
//!   `invalid_output`; its other fields are cleaned like an error report, and an agent call's
//!   arguments the ledger cannot store are left out (the loop refuses such a call with
//!   `invalid_arguments` before applying it).

use runledger_contracts::canonical::MAX_SAFE_INTEGER;
use runledger_contracts::events::{ErrorInfo, ToolCalled, ToolOutcome};
use runledger_contracts::storable::{self, MAX_PAYLOAD_BYTES, UnstorableError};
use runledger_ledger::StoreError;
use serde_json::{Map, Value};

use crate::decide::{Command, NodeOutcome, NodeResult};

/// The most canonical bytes a node's output may take: it is recorded in `NodeSucceeded` and
/// again in its artifact, each an event of at most [`MAX_PAYLOAD_BYTES`]; the rest of those
/// events needs the room left.
pub const MAX_OUTPUT_BYTES: usize = MAX_PAYLOAD_BYTES - (64 << 10);

/// The error code of a node run whose output the ledger cannot store.
pub const INVALID_OUTPUT: &str = "invalid_output";

/// Longest error message kept when an error report is too large to store as it is.
const MAX_MESSAGE_CHARS: usize = 16 << 10;

/// Checks that the ledger can store `output` as a node's output.
///
/// # Errors
///
/// Why not, as [`UnstorableError`].
pub fn check_output(output: &Value) -> Result<(), UnstorableError> {
    storable::check_storable(output)?;
    let size = runledger_contracts::canonical::to_canonical_vec(output)?.len();
    if size > MAX_OUTPUT_BYTES {
        return Err(UnstorableError::TooLarge {
            size,
            max: MAX_OUTPUT_BYTES,
        });
    }
    Ok(())
}

/// The failure of a node run whose output the ledger cannot store.
pub fn invalid_output(what: &str, e: &UnstorableError) -> ErrorInfo {
    ErrorInfo {
        code: INVALID_OUTPUT.into(),
        message: format!("{what} cannot be stored in the ledger: {e}"),
        retryable: false,
        details: None,
    }
}

/// `error`, made storable: unchanged when it already is.
pub fn storable_error(error: ErrorInfo) -> ErrorInfo {
    if is_storable(&error) {
        return error;
    }
    let mut error = ErrorInfo {
        code: clean_text(&error.code),
        message: clean_text(&error.message),
        retryable: error.retryable,
        details: error.details.map(clean_value),
    };
    if !is_storable(&error) {
        error.details = None;
        error.message = error.message.chars().take(MAX_MESSAGE_CHARS).collect();
    }
    error
}

/// `call`, made storable: unchanged when it already is.
pub fn storable_tool_call(mut call: ToolCalled) -> ToolCalled {
    if is_storable(&call) {
        return call;
    }
    if let Some(e) = call
        .output
        .as_ref()
        .and_then(|output| check_output(output).err())
    {
        call.output = None;
        call.outcome = ToolOutcome::Error;
        call.error = Some(invalid_output("the call's output", &e));
    }
    call.error = call.error.map(storable_error);
    for attempt in &mut call.attempts {
        attempt.error = attempt.error.take().map(storable_error);
    }
    for text in [
        &mut call.node_id,
        &mut call.tool,
        &mut call.operation,
        &mut call.idempotency_key,
    ] {
        *text = clean_text(text);
    }
    if let Some(agent) = &mut call.agent
        && agent
            .arguments
            .as_ref()
            .is_some_and(|arguments| check_output(arguments).is_err())
    {
        agent.arguments = None;
    }
    call
}

/// The commands of a step whose append the ledger refused for good (`refusal`), with every
/// executor result turned into an `invalid_output` failure that carries no content from the
/// executor (no output, no tool calls). `None` when no command records a result: then there is
/// nothing the engine can drop to make the step storable.
pub fn refuse_results(commands: &[Command], refusal: &StoreError) -> Option<Vec<Command>> {
    if !commands
        .iter()
        .any(|c| matches!(c, Command::RecordResult(_)))
    {
        return None;
    }
    let error = ErrorInfo {
        code: INVALID_OUTPUT.into(),
        message: format!(
            "the ledger refused the executor's report: {}",
            clean_text(&refusal.to_string())
        )
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect(),
        retryable: false,
        details: None,
    };
    let refused = commands
        .iter()
        .map(|command| match command {
            Command::RecordResult(result) => Command::RecordResult(NodeResult {
                node_run_id: result.node_run_id,
                attempt: result.attempt,
                outcome: NodeOutcome::Failed(error.clone()),
                tool_calls: Vec::new(),
            }),
            other => other.clone(),
        })
        .collect();
    Some(refused)
}

/// The error code of a run failed because the ledger refused one of its steps for good.
pub const LEDGER_REFUSED: &str = "ledger_refused";

/// The failure of a run whose step the ledger refused for good (`refusal`): the refusal's
/// message (cleaned, cut to a size any event holds) and its store code in `details`.
pub fn ledger_refused(refusal: &StoreError) -> ErrorInfo {
    ErrorInfo {
        code: LEDGER_REFUSED.into(),
        message: format!(
            "the ledger refused a step of the run for good: {}",
            clean_text(&refusal.to_string())
        )
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect(),
        retryable: false,
        details: Some(serde_json::json!({ "store_code": refusal.code() })),
    }
}

fn is_storable<T: serde::Serialize>(value: &T) -> bool {
    serde_json::to_value(value).is_ok_and(|v| storable::storable_bytes(&v).is_ok())
}

fn clean_text(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// U+0000 replaced in strings and names; integers beyond I-JSON written as strings.
fn clean_value(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(clean_text(&s)),
        Value::Number(n)
            if n.as_u64()
                .or_else(|| n.as_i64().map(i64::unsigned_abs))
                .is_some_and(|m| m > MAX_SAFE_INTEGER) =>
        {
            Value::String(n.to_string())
        }
        Value::Number(n)
            if n.is_f64()
                && runledger_contracts::canonical::check_ijson(&Value::Number(n.clone()))
                    .is_err() =>
        {
            Value::String(n.to_string())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(clean_value).collect()),
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (clean_text(&k), clean_value(v)))
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_error_report_keeps_its_code_and_retry_policy() {
        let error = ErrorInfo {
            code: "provider_unavailable".into(),
            message: "bad\0byte".into(),
            retryable: true,
            details: Some(json!({"n\0": 9_007_199_254_740_993u64, "ok": [1, "x\0"]})),
        };
        let clean = storable_error(error);
        assert_eq!(clean.code, "provider_unavailable");
        assert!(clean.retryable);
        assert_eq!(clean.message, "bad\u{FFFD}byte");
        assert_eq!(
            clean.details,
            Some(json!({"n\u{FFFD}": "9007199254740993", "ok": [1, "x\u{FFFD}"]}))
        );
    }

    #[test]
    fn an_output_too_large_for_its_events_is_refused() {
        assert!(check_output(&json!("x".repeat(MAX_OUTPUT_BYTES - 2))).is_ok());
        let err = check_output(&json!("x".repeat(MAX_OUTPUT_BYTES))).unwrap_err();
        assert!(matches!(err, UnstorableError::TooLarge { .. }), "{err}");
    }
}
