//! `workflow_pause|resume|cancel` and `node_retry|skip|rewind`: operator controls of the calling
//! node's own run (`ctx.run_id`; no tool reaches another run).
//!
//! Each is applied by [`apply_control`], the path of `runledger runs control|node`: the
//! decider's control rules, the same `RunPaused`, `NodeRetryScheduled`, ... events, with
//! `node:<node_id>` as the actor, idempotent by the request id `tool:<idempotency key>` (a
//! call re-run after a crash finds its events and writes nothing). Then the run's owner is
//! woken, as the CLI does, so its driver reads the control now.

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::events::Control;
use runledger_contracts::ids::RequestId;
use runledger_ledger::EventStore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{any, id, object, spec, string};
use super::{RunWaker, invalid, parse, unavailable, unknown_tool};
use crate::decide::{ControlAction, DecideError};
use crate::engine::{EngineError, apply_control};

pub struct WorkflowDomain<S> {
    store: Arc<S>,
    waker: Arc<dyn RunWaker>,
}

impl<S> WorkflowDomain<S> {
    pub fn new(store: Arc<S>, waker: Arc<dyn RunWaker>) -> Self {
        Self { store, waker }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelArgs {
    reason: String,
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeArgs {
    node_id: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipArgs {
    node_id: String,
    output: Value,
    reason: String,
}

fn reason() -> Value {
    string("Why: recorded on the control event.")
}

fn node_id() -> Value {
    id("A node of this run's flowchart.")
}

/// The control a call asks for, and its reason.
fn action_of(name: &str, arguments: Value) -> Result<(ControlAction, String), ToolCallError> {
    Ok(match name {
        "workflow_pause" => {
            let a: RunArgs = parse(arguments)?;
            (ControlAction::Pause, a.reason)
        }
        "workflow_resume" => {
            let a: RunArgs = parse(arguments)?;
            (ControlAction::Resume, a.reason)
        }
        "workflow_cancel" => {
            let a: CancelArgs = parse(arguments)?;
            (ControlAction::Cancel { force: a.force }, a.reason)
        }
        "node_retry" => {
            let a: NodeArgs = parse(arguments)?;
            (ControlAction::RetryNode { node: a.node_id }, a.reason)
        }
        "node_skip" => {
            let a: SkipArgs = parse(arguments)?;
            (
                ControlAction::SkipNode {
                    node: a.node_id,
                    output: a.output,
                },
                a.reason,
            )
        }
        "node_rewind" => {
            let a: NodeArgs = parse(arguments)?;
            (ControlAction::RewindNode { node: a.node_id }, a.reason)
        }
        other => return Err(unknown_tool("workflow", other)),
    })
}

/// An engine refusal as the model sees it: the decider's own code (`run_not_paused`,
/// `node_not_failed`, ... as `runledger runs` reports them), `not_found` for an unknown node.
fn refusal(e: EngineError) -> ToolCallError {
    match e {
        EngineError::Decide(DecideError::NotApplicable { code, message }) => {
            ToolCallError::Failed {
                code: if code == "unknown_node" {
                    "not_found"
                } else {
                    code
                },
                message,
                source: None,
            }
        }
        EngineError::Decide(e @ DecideError::InvalidInput { .. }) => invalid(e.to_string()),
        EngineError::RunNotFound(run) => super::not_found(format!("run {run} does not exist")),
        EngineError::Store(e) => unavailable(e),
        e @ EngineError::Contended(_) => ToolCallError::Failed {
            code: "conflict",
            message: e.to_string(),
            source: Some(Box::new(e)),
        },
        e => ToolCallError::Failed {
            code: "engine_error",
            message: e.to_string(),
            source: Some(Box::new(e)),
        },
    }
}

impl<S: EventStore + 'static> ToolDomain for WorkflowDomain<S> {
    fn domain(&self) -> &str {
        "workflow"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        let run_only = object(json!({ "reason": reason() }), &["reason"]);
        let node = object(
            json!({ "node_id": node_id(), "reason": reason() }),
            &["node_id", "reason"],
        );
        vec![
            spec(
                "workflow_pause",
                "Pause this run: nothing new is scheduled; running node runs finish.",
                run_only.clone(),
                true,
            ),
            spec(
                "workflow_resume",
                "Resume this run after a pause.",
                run_only,
                true,
            ),
            spec(
                "workflow_cancel",
                "Cancel this run; with force, running node runs (this one included) are canceled too.",
                object(
                    json!({ "reason": reason(), "force": { "type": "boolean", "description": "Cancel running node runs too (default false)." } }),
                    &["reason"],
                ),
                true,
            ),
            spec(
                "node_retry",
                "Run a failed or timed-out node of this run again with its recorded inputs.",
                node.clone(),
                true,
            ),
            spec(
                "node_skip",
                "End a node's current or failed node run of this run with the given output; downstream continues.",
                object(
                    json!({ "node_id": node_id(), "output": any("The output the node is given."), "reason": reason() }),
                    &["node_id", "output", "reason"],
                ),
                true,
            ),
            spec(
                "node_rewind",
                "Run a node of this run again, and everything downstream of it.",
                node,
                true,
            ),
        ]
    }

    fn call<'a>(
        &'a self,
        ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(async move {
            let (action, reason) = action_of(name, arguments)?;
            if reason.trim().is_empty() {
                return Err(invalid("reason: must not be blank"));
            }
            let control = Control {
                actor: format!("node:{}", ctx.node_id),
                reason,
            };
            let request_id = RequestId::new(format!("tool:{}", ctx.idempotency_key))
                .map_err(|e| invalid(format!("idempotency key: {e}")))?;
            let verb = action.name();
            let outcome = apply_control(&*self.store, ctx.run_id, action, control, request_id)
                .await
                .map_err(refusal)?;
            if !outcome.deduplicated {
                self.waker.wake(ctx.run_id).await;
            }
            let events: Vec<&str> = outcome
                .events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect();
            Ok(json!({
                "run_id": ctx.run_id,
                "control": verb,
                "deduplicated": outcome.deduplicated,
                "events": events,
            }))
        })
    }
}
