//! Rows of the run_detail tables, as stored. They travel to and from PostgreSQL as JSON
//! (`json_populate_recordset` in, `to_json` out), so each struct mirrors its table's columns.

use std::collections::BTreeMap;

use runledger_contracts::events::{
    ConditionEvaluation, ConsumedToken, Control, ErrorInfo, TimeoutPhase, Warning,
};
use runledger_contracts::ids::{ArtifactId, NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `run_detail_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunRow {
    pub run_id: RunId,
    pub stream_id: String,
    pub status: String,
    pub flowchart_name: String,
    pub flowchart_version: Option<u32>,
    pub definition_hash: String,
    /// Not loaded back for updates (it never changes after RunStarted).
    #[serde(default)]
    pub inputs: Value,
    pub actor: String,
    pub parent_run_id: Option<RunId>,
    pub parent_node_id: Option<String>,
    pub parent_node_run_id: Option<NodeRunId>,
    pub deadline: Option<Timestamp>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub node_runs: u32,
    pub status_counts: BTreeMap<String, u64>,
    pub warnings: Vec<RunWarning>,
    pub last_version: u64,
    pub updated_at: Timestamp,
    /// The source of a fork (`RunForked`).
    #[serde(default)]
    pub forked_from: Option<ForkedFrom>,
    /// Forks of this run (`RunForkedTo`), oldest first.
    #[serde(default)]
    pub forks: Vec<ForkLink>,
}

/// Where a fork came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkedFrom {
    pub run_id: RunId,
    /// The source's stream version the fork was planned from.
    pub stream_version: u64,
    /// Hex of the source's event hash at that version.
    pub head_hash: String,
    pub from_node: String,
}

/// One fork of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkLink {
    pub run_id: RunId,
    pub from_node: String,
    /// The source's stream version the fork was planned from.
    pub stream_version: u64,
}

/// A warning of one node run, collected on its run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunWarning {
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub code: String,
    pub message: String,
}

/// `run_detail_node_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeRunRow {
    pub node_run_id: NodeRunId,
    pub run_id: RunId,
    pub ordinal: u32,
    pub node_id: String,
    pub node_type: String,
    pub attempt: u32,
    pub execution_index: u32,
    pub retry_of: Option<NodeRunId>,
    pub input_context_hash: String,
    pub consumed_tokens: Vec<ConsumedToken>,
    pub status: String,
    pub executor_class: Option<String>,
    pub executor: Option<String>,
    pub scheduled_at: Timestamp,
    pub dispatched_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub timeout: Option<TimeoutInfo>,
    pub warnings: Vec<Warning>,
    pub fallback_used: bool,
    pub routing: Option<Routing>,
    pub artifact_ids: Vec<ArtifactId>,
    pub tool_calls: u32,
    pub child_run_id: Option<RunId>,
    pub retry: Option<RetryInfo>,
    pub skip: Option<Control>,
    pub cancel: Option<CancelInfo>,
    pub invalidated_at_version: Option<u64>,
    pub ignored_results: u32,
    pub last_version: u64,
}

/// Which wait expired when a node run timed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutInfo {
    pub phase: TimeoutPhase,
    pub timeout_ms: u64,
}

/// The routing decision of a decision node run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Every connector that fired, in connector order.
    pub matched_connectors: Vec<String>,
    pub route_key: Option<String>,
    pub route_key_matched: bool,
    pub no_match: bool,
    /// Set when nothing matched and the fallback connector fired.
    pub fallback_connector: Option<String>,
    pub evaluations: Vec<ConditionEvaluation>,
}

/// A retry decided after this node run ended (by the retry policy, or an operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryInfo {
    pub next_attempt: u32,
    pub retry_at: Timestamp,
    pub backoff_ms: u64,
    pub control: Option<Control>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelInfo {
    pub reason: String,
    pub forced: bool,
}

/// `run_detail_timeline`: one run or node transition, or one operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub run_id: RunId,
    pub stream_version: u64,
    pub recorded_at: Timestamp,
    pub event_type: String,
    /// `run` (run transitions), `node` (node run transitions), `operator` (actions with an actor).
    pub category: String,
    pub node_id: Option<String>,
    pub node_run_id: Option<NodeRunId>,
    pub attempt: Option<u32>,
    pub actor: Option<String>,
    pub reason: Option<String>,
    /// One line for people, e.g. `provider_unavailable: 503`.
    pub detail: String,
    pub request_id: String,
    pub correlation_id: String,
}

/// `run_detail_tool_calls`: one tool or model provider call of a node run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRow {
    pub run_id: RunId,
    pub stream_version: u64,
    pub node_run_id: NodeRunId,
    pub recorded_at: Timestamp,
    pub tool: String,
    pub operation: String,
    /// `ok`, `error` or `conflict`.
    pub outcome: String,
    pub duration_ms: u64,
    pub attempts: u32,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub error: Option<ErrorInfo>,
}
