//! One call of a ledger-backed tool (memory, plan, milestone, decision) on behalf of an agent.
//!
//! The operation is the one `memory`/`plan`/`milestone` nodes run ([`crate::tools::attempt`]:
//! parse, fold the tool stream, decide purely), so a tool call and a node write the same
//! events. Where a node's tool events commit with the node's end, an agent's commit on their
//! own, with the call's idempotency key (`<node_run>:<turn>:<call>`) as the event's
//! `idempotency_key` and the append's request id: a call re-run after a crash finds its key in
//! the stream and returns the recorded output, applying nothing twice. A lost race on the tool
//! stream is read and decided again, [`MAX_TOOL_ATTEMPTS`] tries in all.

use runledger_contracts::agent_tool::{ToolCallContext, ToolCallError};
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::ids::{CausationId, CorrelationId, StreamId};
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion, StoreError};
use serde_json::Value;

use super::unavailable;
use crate::tools::cache::ToolCache;
use crate::tools::{self, MAX_TOOL_ATTEMPTS, ToolCall, ToolCause, ToolError, ToolKind};

/// Runs `operation` of `kind` with `arguments` for the agent call `ctx`; returns its output.
pub async fn call<S: EventStore>(
    store: &S,
    kind: ToolKind,
    operation: &str,
    arguments: Value,
    ctx: &ToolCallContext,
) -> Result<Value, ToolCallError> {
    let call = ToolCall {
        kind,
        operation: operation.to_owned(),
        args: arguments,
        args_error: None,
        allow_fallback: false,
        fallback_output: None,
        cause: ToolCause {
            run_id: ctx.run_id,
            node_id: ctx.node_id.clone(),
            node_run_id: ctx.node_run_id,
            idempotency_key: ctx.idempotency_key.clone(),
        },
    };
    let mut cache = ToolCache::new();
    let mut tries = 0;
    loop {
        tries += 1;
        let planned = tools::attempt(store, &mut cache, &call)
            .await
            .map_err(from_tool_error)?;
        let Some(append) = planned.append else {
            return Ok(planned.output);
        };
        let mut events = Vec::with_capacity(append.events.len());
        for event in &append.events {
            events.push(
                NewEvent::from_domain(event).map_err(|e| ToolCallError::Failed {
                    code: "invalid_output",
                    message: format!("the tool event cannot be recorded: {e}"),
                    source: Some(Box::new(e)),
                })?,
            );
        }
        let correlation = run_correlation(store, ctx).await?;
        let mut request = AppendRequest::new(append.request_id.clone(), correlation, events);
        request.causation_id = CausationId::new(ctx.node_run_id.to_string()).ok();
        let expected = match append.expected_version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        match store.append(&append.stream, expected, request).await {
            Ok(_) => return Ok(planned.output),
            Err(StoreError::Conflict { actual, .. }) if tries < MAX_TOOL_ATTEMPTS => {
                tracing::debug!(stream = %append.stream, actual, "tool stream moved on; deciding again");
            }
            Err(StoreError::Conflict {
                stream_id, actual, ..
            }) => {
                return Err(from_tool_error(ToolError::Conflict(format!(
                    "gave up after {tries} attempts: stream `{stream_id}` kept moving (now at version {actual})"
                ))));
            }
            Err(e @ StoreError::RequestMismatch { .. }) => {
                return Err(ToolCallError::Failed {
                    code: "conflict",
                    message: format!("the call's idempotency key was used for another write: {e}"),
                    source: Some(Box::new(e)),
                });
            }
            // Refused for good (the call's write can never be stored): not "unavailable",
            // which tells the model to try again later.
            Err(e) if e.is_permanent() => {
                return Err(ToolCallError::Failed {
                    code: crate::unstorable::LEDGER_REFUSED,
                    message: format!("the ledger refused the call's write for good: {e}"),
                    source: Some(Box::new(e)),
                });
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
}

/// The run's correlation id (that of its first event), so tool events written by an agent
/// correlate with the run like those written by tool nodes.
async fn run_correlation<S: EventStore>(
    store: &S,
    ctx: &ToolCallContext,
) -> Result<CorrelationId, ToolCallError> {
    let first = store
        .read_stream(&StreamId::for_run(ctx.run_id), 1, 1)
        .await
        .map_err(unavailable)?;
    first
        .into_iter()
        .next()
        .map(|e| e.correlation_id)
        .ok_or_else(|| super::not_found(format!("run {} does not exist", ctx.run_id)))
}

/// A tool's typed error as the model sees it, with a stable code.
pub fn from_tool_error(e: ToolError) -> ToolCallError {
    let code = match &e {
        ToolError::InvalidInput { .. } => {
            return ToolCallError::InvalidArguments {
                message: e.to_string(),
            };
        }
        ToolError::NotFound(_) => "not_found",
        ToolError::AlreadyExists(_) => "already_exists",
        ToolError::RevisionMismatch { .. } | ToolError::Conflict(_) => "conflict",
        ToolError::InvalidOperation(_) => "invalid_operation",
        ToolError::Unavailable(_) => "unavailable",
        ToolError::Corrupt(_) | ToolError::StateCorrupt { .. } => "state_corrupt",
    };
    ToolCallError::Failed {
        code,
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}
