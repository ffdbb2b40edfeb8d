//! One tool call of the agent loop: allowlist, argument validation, reuse of a call the ledger
//! already records, the domain's call, and its `ToolCalled` event.
//!
//! Nothing here fails the node: a call the model should not have made, arguments that do not
//! fit the schema, or a [`ToolCallError`] all become an error result the model reads
//! (`{"error": {"code", "message"}}`) and an event with `outcome: error`.

use std::time::Instant;

use runledger_contracts::agent_tool::{ToolCallContext, ToolCallError};
use runledger_contracts::events::{AgentCall, ErrorInfo, ToolAttempt, ToolCalled, ToolOutcome};
use runledger_contracts::time::Timestamp;
use serde_json::{Value, json};

use super::registry::{Allowed, ToolRegistry};
use crate::executor::{NodeWork, hash_of};
use crate::provider::{MAX_REPORTED_VIOLATIONS, ToolCallRequest, ToolResultTurn};
use crate::unstorable;

/// What a call gave: the result the model reads and the event, unless the ledger already has
/// it (a reused call is not recorded twice).
pub(super) struct CallOutcome {
    pub result: ToolResultTurn,
    pub event: Option<ToolCalled>,
}

/// `<node_run>:<turn>:<call>`.
pub fn idempotency_key(work: &NodeWork, turn: u32, call_index: u32) -> String {
    format!("{}:{turn}:{call_index}", work.node_run_id)
}

pub(super) struct CallSite<'a> {
    pub work: &'a NodeWork,
    pub registry: &'a ToolRegistry,
    pub allowed: &'a Allowed,
    pub context: ToolCallContext,
}

impl CallSite<'_> {
    pub async fn call(&self, request: &ToolCallRequest) -> CallOutcome {
        let started_at = Timestamp::now();
        let clock = Instant::now();
        let name = request.name.as_str();
        let key = self.context.idempotency_key.clone();
        let input_hash = hash_of(&request.arguments);
        let side_effects = self.registry.spec(name).is_some_and(|s| s.side_effects);
        if let Some(recorded) = self.work.recorded_call(&key) {
            let same = recorded.tool == name && recorded.input_hash == input_hash;
            match (same, side_effects) {
                (true, _) if recorded.output.is_some() || recorded.error.is_some() => {
                    return self.reused(request, recorded);
                }
                (true, true) => {
                    // The engine reads blob results back into the work it hands out
                    // (`tool_results::restore`); one it could not (past its budget, or an
                    // unreadable blob) is answered with where the result is.
                    let blob = recorded.agent.as_ref().and_then(|a| a.result_blob.clone());
                    let mut record = recorded.clone();
                    record.output = Some(json!({ "reused": true, "result_blob": blob }));
                    return self.reused(request, &record);
                }
                (false, true) => {
                    let e = failure(
                        "idempotency_conflict",
                        format!(
                            "the ledger records another call under `{key}` ({}); this one is not applied",
                            recorded.tool
                        ),
                    );
                    return self.finish(request, started_at, clock, side_effects, Err(e));
                }
                // A read-only call is simply made again; the ledger keeps its first record.
                _ => {}
            }
        }
        let outcome = self.serve(request).await;
        self.finish(request, started_at, clock, side_effects, outcome)
    }

    async fn serve(&self, request: &ToolCallRequest) -> Result<Value, ErrorInfo> {
        let name = request.name.as_str();
        if !self.allowed.is_offered(name) {
            return Err(if self.allowed.is_unavailable(name) {
                failure(
                    "tool_unavailable",
                    format!(
                        "`{name}` is allowed but this process serves no such tool (see docs/agents.md: where tools run)"
                    ),
                )
            } else {
                failure(
                    "tool_not_allowed",
                    format!("`{name}` is not in this node's tools"),
                )
            });
        }
        let (Some(domain), Some(validator)) =
            (self.registry.domain_of(name), self.registry.validator(name))
        else {
            return Err(failure(
                "tool_unavailable",
                format!("`{name}` is not served here"),
            ));
        };
        // What the ledger cannot record (U+0000, integers beyond I-JSON, too many bytes) is
        // never applied: the call could not be recorded, and its event would be refused.
        if let Err(e) = unstorable::check_output(&request.arguments) {
            return Err(failure(
                "invalid_arguments",
                format!("the arguments of `{name}` cannot be recorded in the ledger: {e}"),
            ));
        }
        let violations: Vec<Value> = validator
            .iter_errors(&request.arguments)
            .take(MAX_REPORTED_VIOLATIONS)
            .map(|e| json!({ "path": e.instance_path().to_string(), "message": e.to_string() }))
            .collect();
        if !violations.is_empty() {
            let mut e = failure(
                "invalid_arguments",
                format!("the arguments of `{name}` do not satisfy its schema"),
            );
            e.details = Some(json!({ "violations": violations }));
            return Err(e);
        }
        domain
            .call(&self.context, name, request.arguments.clone())
            .await
            .map_err(|e| call_error(&e))
    }

    fn reused(&self, request: &ToolCallRequest, recorded: &ToolCalled) -> CallOutcome {
        let result = match (&recorded.output, &recorded.error) {
            (_, Some(e)) => error_result(request, e),
            (output, None) => ToolResultTurn {
                call_id: request.id.clone(),
                name: request.name.clone(),
                content: output.clone().unwrap_or(Value::Null),
                is_error: false,
            },
        };
        CallOutcome {
            result,
            event: None,
        }
    }

    fn finish(
        &self,
        request: &ToolCallRequest,
        started_at: Timestamp,
        clock: Instant,
        side_effects: bool,
        outcome: Result<Value, ErrorInfo>,
    ) -> CallOutcome {
        let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (result, output, error) = match outcome {
            Ok(value) => (
                ToolResultTurn {
                    call_id: request.id.clone(),
                    name: request.name.clone(),
                    content: value.clone(),
                    is_error: false,
                },
                Some(value),
                None,
            ),
            Err(e) => (error_result(request, &e), None, Some(e)),
        };
        let event = ToolCalled {
            run_id: self.work.run_id,
            node_id: self.context.node_id.clone(),
            node_run_id: self.work.node_run_id,
            tool: request.name.clone(),
            operation: "call".into(),
            idempotency_key: self.context.idempotency_key.clone(),
            input_hash: hash_of(&request.arguments),
            outcome: if error.is_some() {
                ToolOutcome::Error
            } else {
                ToolOutcome::Ok
            },
            attempts: vec![ToolAttempt {
                attempt: 1,
                started_at,
                duration_ms,
                error: error.clone(),
            }],
            duration_ms,
            provider: None,
            output,
            error,
            agent: Some(AgentCall {
                turn: self.context.turn,
                call_index: Some(self.context.call_index),
                // Arguments the ledger cannot store were refused above; recorded without.
                arguments: unstorable::check_output(&request.arguments)
                    .is_ok()
                    .then(|| request.arguments.clone()),
                side_effects,
                result_blob: None,
            }),
        };
        CallOutcome {
            result,
            event: Some(event),
        }
    }
}

fn error_result(request: &ToolCallRequest, e: &ErrorInfo) -> ToolResultTurn {
    let mut error = json!({ "code": e.code, "message": e.message });
    if let Some(details) = &e.details {
        error["details"] = details.clone();
    }
    ToolResultTurn {
        call_id: request.id.clone(),
        name: request.name.clone(),
        content: json!({ "error": error }),
        is_error: true,
    }
}

fn failure(code: &str, message: String) -> ErrorInfo {
    ErrorInfo {
        code: code.to_owned(),
        message,
        retryable: false,
        details: None,
    }
}

/// A domain's error as recorded: its code, message and whether it is transient (the source
/// chain is logged, not recorded: it may hold paths or output the model need not see twice).
fn call_error(e: &ToolCallError) -> ErrorInfo {
    if let Some(source) = std::error::Error::source(e) {
        tracing::debug!(code = e.code(), error = %e, source = %source, "tool call failed");
    }
    let mut info = failure(e.code(), e.to_string());
    info.retryable = e.retryable();
    info
}
