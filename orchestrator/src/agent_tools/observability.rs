//! `run_get`, `node_run_get`, `logs_get`, `tool_calls_get`, `artifact_get`,
//! `failure_trace_get`: read-only views of a run, rebuilt from its ledger stream.
//!
//! Run-scoped by default: without `run_id` a tool reads the calling node's own run. Reading
//! another run needs both its `run_id` and an explicit `limit` (at most [`MAX_READ_LIMIT`]);
//! without the limit the call is refused with `cross_run_refused`, so a model cannot wander
//! through the ledger by accident. Nothing here writes.

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::ids::{NodeRunId, RunId, StreamId};
use runledger_ledger::EventStore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{count, id, limit, object, spec, string, uuid};
use super::{invalid, not_found, parse, unavailable, unknown_tool};
use crate::engine::{EngineError, LoadedRun, load_run, status_counts};
use crate::state::{NodeRun, Phase, RunState};

/// Most items one read returns.
pub const MAX_READ_LIMIT: usize = 1000;
/// Items a read returns when the call does not say.
pub const DEFAULT_READ_LIMIT: usize = 100;
/// Events read per page of a run stream.
const PAGE: usize = 1000;

pub struct ObservabilityDomain<S> {
    store: Arc<S>,
}

impl<S> ObservabilityDomain<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }
}

/// The arguments every observability tool shares: which run, how many items.
struct Scope<'a> {
    run_id: Option<&'a str>,
    limit: Option<usize>,
}

macro_rules! scope_of {
    ($args:expr) => {
        Scope {
            run_id: $args.run_id.as_deref(),
            limit: $args.limit,
        }
    };
}

/// One page of a run's events (`logs_get`, `tool_calls_get`).
struct EventPage {
    run_id: RunId,
    /// The first `limit` matching events, in stream order.
    shown: Vec<RecordedEvent>,
    /// How many events matched in all.
    total: usize,
    /// The stream version to pass as `after_version` for the next page, when more matched.
    next_after_version: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRunArgs {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    node_run_id: Option<String>,
    #[serde(default)]
    node_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsArgs {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after_version: u64,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    node_run_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCallsArgs {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    node_run_id: Option<String>,
    #[serde(default)]
    tool: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactArgs {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    node_run_id: Option<String>,
    #[serde(default)]
    artifact_id: Option<String>,
}

/// The run a call reads and how many items it may return.
fn resolve_scope(
    ctx: &ToolCallContext,
    scope: &Scope<'_>,
) -> Result<(RunId, usize), ToolCallError> {
    let limit = match scope.limit {
        None => DEFAULT_READ_LIMIT,
        Some(n) if (1..=MAX_READ_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(invalid(format!(
                "limit: {n} is out of range 1 to {MAX_READ_LIMIT}"
            )));
        }
    };
    let run_id = match scope.run_id {
        None => return Ok((ctx.run_id, limit)),
        Some(text) => text
            .parse::<RunId>()
            .map_err(|e| invalid(format!("run_id: {e}")))?,
    };
    if run_id != ctx.run_id && scope.limit.is_none() {
        return Err(ToolCallError::Refused {
            code: "cross_run_refused",
            message: format!(
                "run {run_id} is not this node's run: reading another run needs an explicit `limit` (1 to {MAX_READ_LIMIT})"
            ),
        });
    }
    Ok((run_id, limit))
}

fn parse_node_run_id(text: &str) -> Result<NodeRunId, ToolCallError> {
    text.parse::<NodeRunId>()
        .map_err(|e| invalid(format!("node_run_id: {e}")))
}

async fn state_of<S: EventStore>(store: &S, run_id: RunId) -> Result<RunState, ToolCallError> {
    loaded_of(store, run_id).await.map(|l| l.state)
}

async fn loaded_of<S: EventStore>(store: &S, run_id: RunId) -> Result<LoadedRun, ToolCallError> {
    load_run(store, run_id).await.map_err(|e| match e {
        EngineError::RunNotFound(run) => not_found(format!("run {run} does not exist")),
        EngineError::Store(e) => unavailable(e),
        e => ToolCallError::Failed {
            code: "run_corrupt",
            message: e.to_string(),
            source: Some(Box::new(e)),
        },
    })
}

/// Every event of the run's stream after `after` (its version), page by page.
async fn events_of<S: EventStore>(
    store: &S,
    run_id: RunId,
    after: u64,
) -> Result<Vec<RecordedEvent>, ToolCallError> {
    let stream = StreamId::for_run(run_id);
    let mut events = Vec::new();
    let mut from = after + 1;
    loop {
        let page = store
            .read_stream(&stream, from, PAGE)
            .await
            .map_err(unavailable)?;
        let done = page.len() < PAGE;
        from = page.last().map_or(from, |e| e.stream_version + 1);
        events.extend(page);
        if done {
            break;
        }
    }
    if events.is_empty() && after == 0 {
        return Err(not_found(format!("run {run_id} does not exist")));
    }
    Ok(events)
}

fn payload_str<'a>(event: &'a RecordedEvent, key: &str) -> Option<&'a str> {
    event.payload.get(key).and_then(Value::as_str)
}

fn log_line(event: &RecordedEvent) -> Value {
    json!({
        "version": event.stream_version,
        "event_type": event.event_type,
        "recorded_at": event.recorded_at.to_string(),
        "request_id": event.request_id.as_str(),
        "payload": event.payload,
    })
}

fn phase_name(nr: &NodeRun) -> Value {
    match nr.phase {
        Phase::Scheduled => json!("scheduled"),
        Phase::Running => json!("running"),
        Phase::Ended(status) => serde_json::to_value(status).unwrap_or(Value::Null),
    }
}

fn node_run_json(state: &RunState, nr: &NodeRun) -> Value {
    json!({
        "node_run_id": nr.id,
        "node_id": state.node_id(nr.node),
        "node_type": nr.node_type,
        "attempt": nr.attempt,
        "execution_index": nr.execution_index,
        "status": phase_name(nr),
        "output": nr.output,
        "error": nr.error,
        "warnings": nr.warnings,
        "artifact_id": nr.artifact,
        "retry_of": nr.retry_of.and_then(|i| state.node_runs.get(i)).map(|r| r.id),
        "child_run_id": nr.child_run,
        "invalidated": nr.invalidated,
    })
}

fn run_json(state: &RunState, version: u64, limit: usize) -> Value {
    let counts = status_counts(state);
    let node_runs: Vec<Value> = state
        .node_runs
        .iter()
        .take(limit)
        .map(|nr| {
            json!({
                "node_run_id": nr.id,
                "node_id": state.node_id(nr.node),
                "attempt": nr.attempt,
                "status": phase_name(nr),
            })
        })
        .collect();
    json!({
        "run_id": state.run_id,
        "flowchart": state.flowchart_ref,
        "status": state.status.as_str(),
        "version": version,
        "inputs": state.inputs,
        "output": state.output,
        "failure": state.failure,
        "parent": state.parent,
        "node_run_count": state.node_runs.len(),
        "status_counts": counts,
        "node_runs": node_runs,
        "truncated": state.node_runs.len() > limit,
    })
}

impl<S: EventStore> ObservabilityDomain<S> {
    async fn run_get(
        &self,
        ctx: &ToolCallContext,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let args: RunArgs = parse(arguments)?;
        let (run_id, limit) = resolve_scope(ctx, &scope_of!(args))?;
        let loaded = loaded_of(&*self.store, run_id).await?;
        Ok(run_json(&loaded.state, loaded.version, limit))
    }

    async fn node_run_get(
        &self,
        ctx: &ToolCallContext,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let args: NodeRunArgs = parse(arguments)?;
        let (run_id, limit) = resolve_scope(ctx, &scope_of!(args))?;
        let state = state_of(&*self.store, run_id).await?;
        match (&args.node_run_id, &args.node_id) {
            (Some(id), None) => {
                let id = parse_node_run_id(id)?;
                let nr = state
                    .node_run_index(&id)
                    .and_then(|i| state.node_runs.get(i))
                    .ok_or_else(|| not_found(format!("run {run_id} has no node run {id}")))?;
                Ok(node_run_json(&state, nr))
            }
            (None, Some(node)) => {
                let index = state
                    .flowchart
                    .node_index(node)
                    .ok_or_else(|| not_found(format!("the flowchart has no node `{node}`")))?;
                let runs: Vec<&NodeRun> = state
                    .node_runs
                    .iter()
                    .filter(|nr| nr.node == index)
                    .collect();
                let shown: Vec<Value> = runs
                    .iter()
                    .rev()
                    .take(limit)
                    .map(|nr| node_run_json(&state, nr))
                    .collect();
                Ok(json!({ "node_id": node, "node_runs": shown, "total": runs.len() }))
            }
            _ => Err(invalid("give exactly one of node_run_id and node_id")),
        }
    }

    /// The scope and paging steps `logs_get` and `tool_calls_get` share: the run the call
    /// reads and its limit, the run's events after `after` (of one node run when `node_run_id`
    /// is given), then the first `limit` of those `keep` accepts.
    async fn event_page(
        &self,
        ctx: &ToolCallContext,
        scope: Scope<'_>,
        node_run_id: Option<&str>,
        after: u64,
        keep: impl Fn(&RecordedEvent) -> bool,
    ) -> Result<EventPage, ToolCallError> {
        let (run_id, limit) = resolve_scope(ctx, &scope)?;
        let node_run = node_run_id.map(parse_node_run_id).transpose()?;
        let node_run = node_run.map(|id| id.to_string());
        let events = events_of(&*self.store, run_id, after).await?;
        let matching: Vec<RecordedEvent> = events
            .into_iter()
            .filter(|e| {
                node_run
                    .as_deref()
                    .is_none_or(|id| payload_str(e, "node_run_id") == Some(id))
            })
            .filter(|e| keep(e))
            .collect();
        let total = matching.len();
        let next_after_version = matching
            .get(limit.saturating_sub(1))
            .filter(|_| total > limit)
            .map(|e| e.stream_version);
        let mut shown = matching;
        shown.truncate(limit);
        Ok(EventPage {
            run_id,
            shown,
            total,
            next_after_version,
        })
    }

    async fn logs_get(
        &self,
        ctx: &ToolCallContext,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let args: LogsArgs = parse(arguments)?;
        let page = self
            .event_page(
                ctx,
                scope_of!(args),
                args.node_run_id.as_deref(),
                args.after_version,
                |e| args.event_types.is_empty() || args.event_types.contains(&e.event_type),
            )
            .await?;
        let lines: Vec<Value> = page.shown.iter().map(log_line).collect();
        Ok(json!({
            "run_id": page.run_id,
            "events": lines,
            "next_after_version": page.next_after_version,
        }))
    }

    async fn tool_calls_get(
        &self,
        ctx: &ToolCallContext,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let args: ToolCallsArgs = parse(arguments)?;
        let page = self
            .event_page(ctx, scope_of!(args), args.node_run_id.as_deref(), 0, |e| {
                e.event_type == "ToolCalled"
                    && args
                        .tool
                        .as_deref()
                        .is_none_or(|t| payload_str(e, "tool") == Some(t))
            })
            .await?;
        let shown: Vec<Value> = page
            .shown
            .iter()
            .map(|e| json!({ "version": e.stream_version, "call": e.payload }))
            .collect();
        Ok(json!({ "run_id": page.run_id, "tool_calls": shown, "total": page.total }))
    }

    async fn artifact_get(
        &self,
        ctx: &ToolCallContext,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let args: ArtifactArgs = parse(arguments)?;
        let (run_id, _) = resolve_scope(ctx, &scope_of!(args))?;
        let (key, wanted) = match (&args.node_run_id, &args.artifact_id) {
            (Some(id), None) => ("node_run_id", parse_node_run_id(id)?.to_string()),
            (None, Some(id)) => ("artifact_id", id.clone()),
            _ => return Err(invalid("give exactly one of node_run_id and artifact_id")),
        };
        let events = events_of(&*self.store, run_id, 0).await?;
        let artifact = events
            .iter()
            .find(|e| e.event_type == "ArtifactPersisted" && payload_str(e, key) == Some(&wanted))
            .ok_or_else(|| {
                not_found(format!("run {run_id} has no artifact with {key} {wanted}"))
            })?;
        Ok(json!({ "version": artifact.stream_version, "artifact": artifact.payload }))
    }

    async fn failure_trace_get(
        &self,
        ctx: &ToolCallContext,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let args: RunArgs = parse(arguments)?;
        let (run_id, limit) = resolve_scope(ctx, &scope_of!(args))?;
        let state = state_of(&*self.store, run_id).await?;
        let events = events_of(&*self.store, run_id, 0).await?;
        let failed: Vec<&NodeRun> = state
            .node_runs
            .iter()
            .filter(|nr| nr.error.is_some())
            .collect();
        let trace: Vec<Value> = failed
            .iter()
            .take(limit)
            .map(|nr| {
                let id = nr.id.to_string();
                let tool_errors: Vec<Value> = events
                    .iter()
                    .filter(|e| {
                        e.event_type == "ToolCalled"
                            && payload_str(e, "node_run_id") == Some(id.as_str())
                            && e.payload.get("error").is_some_and(|v| !v.is_null())
                    })
                    .map(|e| {
                        json!({
                            "tool": e.payload.get("tool"),
                            "operation": e.payload.get("operation"),
                            "error": e.payload.get("error"),
                        })
                    })
                    .collect();
                let mut entry = node_run_json(&state, nr);
                if let Value::Object(map) = &mut entry {
                    map.remove("output");
                    map.insert("tool_errors".into(), Value::Array(tool_errors));
                }
                entry
            })
            .collect();
        let controls: Vec<Value> = events
            .iter()
            .filter(|e| {
                matches!(
                    e.event_type.as_str(),
                    "NodeRetryScheduled"
                        | "NodeSkipped"
                        | "NodeRewound"
                        | "RunCancelRequested"
                        | "RunFailed"
                )
            })
            .take(limit)
            .map(log_line)
            .collect();
        Ok(json!({
            "run_id": run_id,
            "status": state.status.as_str(),
            "failure": state.failure,
            "failed_node_runs": trace,
            "total": failed.len(),
            "related_events": controls,
        }))
    }
}

fn scope_props() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "run_id": uuid("Another run to read (default: this node's run); needs `limit`."),
        "limit": limit(MAX_READ_LIMIT, "Most items returned (default 100); required with another run's run_id."),
    }) else {
        return serde_json::Map::new();
    };
    map
}

fn with_scope(extra: Value) -> Value {
    let mut props = scope_props();
    if let Value::Object(more) = extra {
        props.extend(more);
    }
    object(Value::Object(props), &[])
}

impl<S: EventStore + 'static> ToolDomain for ObservabilityDomain<S> {
    fn domain(&self) -> &str {
        "observability"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        vec![
            spec(
                "run_get",
                "A run's status, flowchart, inputs, output or failure, and its node runs.",
                with_scope(json!({})),
                false,
            ),
            spec(
                "node_run_get",
                "One node run by node_run_id, or the node runs of a node (newest first) by node_id.",
                with_scope(json!({
                    "node_run_id": uuid("The node run."),
                    "node_id": id("A node of the run's flowchart."),
                })),
                false,
            ),
            spec(
                "logs_get",
                "The run's ledger events in order, optionally only some types or one node run's.",
                with_scope(json!({
                    "after_version": count("Only events after this stream version (paging)."),
                    "event_types": { "type": "array", "items": { "type": "string" }, "description": "Only these event types (e.g. NodeFailed)." },
                    "node_run_id": uuid("Only events of this node run."),
                })),
                false,
            ),
            spec(
                "tool_calls_get",
                "The run's ToolCalled events (model turns and tool calls), optionally of one node run or tool.",
                with_scope(json!({
                    "node_run_id": uuid("Only calls of this node run."),
                    "tool": string("Only calls of this tool (`provider`, `memory`, ...)."),
                })),
                false,
            ),
            spec(
                "artifact_get",
                "The artifact that ended a node run, by node_run_id or artifact_id.",
                with_scope(json!({
                    "node_run_id": uuid("The node run."),
                    "artifact_id": uuid("The artifact."),
                })),
                false,
            ),
            spec(
                "failure_trace_get",
                "Why a run or its nodes failed: each failed node run with its error and tool errors, and the retries, skips and rewinds that followed.",
                with_scope(json!({})),
                false,
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
            match name {
                "run_get" => self.run_get(ctx, arguments).await,
                "node_run_get" => self.node_run_get(ctx, arguments).await,
                "logs_get" => self.logs_get(ctx, arguments).await,
                "tool_calls_get" => self.tool_calls_get(ctx, arguments).await,
                "artifact_get" => self.artifact_get(ctx, arguments).await,
                "failure_trace_get" => self.failure_trace_get(ctx, arguments).await,
                other => Err(unknown_tool("observability", other)),
            }
        })
    }
}
