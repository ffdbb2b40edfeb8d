//! The event catalog: every fact the ledger records, as typed, versioned payloads.
//!
//! Each event type has a current `schema_version`. A stored event is decoded with
//! [`DomainEvent::decode`], which first upcasts older versions to the current one, so code only
//! ever sees current shapes. Changing a payload means: add a new version, keep the old struct's
//! JSON shape reachable through an upcaster in [`upcast`], bump the version in the catalog table
//! below, and regenerate `contracts/schemas/`. Never edit a shape that has been recorded.
//!
//! Payload structs reject unknown fields: a ledger written by a newer runledger fails loudly in
//! an older one instead of silently dropping facts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::flowchart::NodeType;
use crate::ids::{ArtifactId, CorrelationId, NodeRunId, RequestId, RunId};
use crate::model::ModelSpec;
use crate::rag::{CollectionSpec, IndexMode};
use crate::time::Timestamp;

/// Who did an operator action, and why. Recorded on every control event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub actor: String,
    pub reason: String,
}

/// A failure, with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "details_absent")]
    pub details: Option<Value>,
}

/// `Some(null)` is written as absent: JSON reads `"details": null` back as `None`, so writing
/// it would make a report or event decode to something other than what was sent.
fn details_absent(details: &Option<Value>) -> bool {
    matches!(details, None | Some(Value::Null))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Warning {
    pub code: String,
    pub message: String,
}

/// The flowchart version a run executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowchartRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// blake3 of the canonical JSON of `definition`.
    pub definition_hash: Digest,
}

/// The node run of a parent run that started this run as a sub-flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentRun {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
}

/// A solid-connector completion consumed by a scheduling (fan-in bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumedToken {
    pub connector_id: String,
    pub from_node_run_id: NodeRunId,
}

/// How a node run ended; every node run ends in exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeRunStatus {
    Succeeded,
    /// Succeeded, but a required tool failed and the node's fallback was used.
    SuccessWithWarning,
    Failed,
    TimedOut,
    Skipped,
    Canceled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPhase {
    /// No executor took the work in time.
    Dispatch,
    /// An executor took the work but sent no result in time.
    Execution,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditionOutcome {
    Matched,
    NotMatched,
    /// The condition could not be evaluated (missing path, type mismatch); it does not match.
    Error,
}

/// One decision condition as evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionEvaluation {
    pub connector_id: String,
    pub condition: String,
    pub outcome: ConditionOutcome,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    Ok,
    Error,
    Conflict,
}

/// One try of a tool or provider call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolAttempt {
    pub attempt: u32,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// What a model provider call cost. Never holds credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderCall {
    pub provider: String,
    pub model: String,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

/// Content kept in the blob table, referenced by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    pub hash: Digest,
    pub media_type: String,
    pub size: u64,
}

// ---- Run events -------------------------------------------------------------------------

/// A run began. Holds the whole definition so a run's stream replays on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStarted {
    pub run_id: RunId,
    pub flowchart: FlowchartRef,
    pub definition: Value,
    pub inputs: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
    /// `limits.max_runtime_s` turned into a durable deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCompleted {
    pub run_id: RunId,
    pub node_runs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFailed {
    pub run_id: RunId,
    pub error: ErrorInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_run_id: Option<NodeRunId>,
}

/// Nothing new is dispatched until `RunResumed`; running nodes finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPaused {
    pub run_id: RunId,
    pub control: Control,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunResumed {
    pub run_id: RunId,
    pub control: Control,
}

/// Graceful (`force: false`: running nodes finish) or forced (running nodes are canceled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCancelRequested {
    pub run_id: RunId,
    pub control: Control,
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCanceled {
    pub run_id: RunId,
    pub forced: bool,
}

/// An engine instance took over driving the run: it holds the run's lease at `epoch`, and
/// everything the run records after this event until the next one was decided by that instance.
/// Written when an instance picks up a run it did not start (a run left by `runledger run`, one
/// whose previous owner died or drained), so an audit shows who drove what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTakenOver {
    pub run_id: RunId,
    /// The instance that drives the run from here on (`--instance-id`, default `<host>-<pid>-<random>`).
    pub instance_id: String,
    /// The lease's fencing epoch: grows by one each time the run changes hands.
    pub epoch: u64,
    /// The instance that held the lease before, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_instance_id: Option<String>,
}

/// Where a fork was taken from: the source run as its stream stood when the fork read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkSource {
    pub run_id: RunId,
    /// The source stream's version the fork was planned from (its head then).
    pub stream_version: u64,
    /// The hash of the source's event at `stream_version`: the fork names exactly which history
    /// it kept, and an export of the source proves it.
    pub head_hash: Digest,
}

/// A node run of the source whose result a fork keeps (it is not downstream of the fork node's
/// latest run). Its ids are the source's: the fork refers to the source's results, it does not
/// copy them into node runs of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeptNodeRun {
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub node_type: NodeType,
    pub attempt: u32,
    pub execution_index: u32,
    pub status: NodeRunStatus,
    /// The solid-connector completions it consumed (fan-in bookkeeping), as recorded.
    pub consumed_tokens: Vec<ConsumedToken>,
    /// The node run it was the next attempt of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<NodeRunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Connectors a decision fired, in connector order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed: Option<Vec<String>>,
    /// The source's artifact of this node run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_id: Option<ArtifactId>,
}

/// A run began as a fork of another: the first event of the new run's stream, in place of
/// `RunStarted`. It holds everything the fork starts from (definition, inputs, the kept results
/// of the source in the order they ended, the tokens the fork node's re-run consumes), so the
/// fork's stream replays on its own without the source. The fork node and everything downstream
/// of it run again; with `output`, the fork node's new node run is skipped with that output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunForked {
    pub run_id: RunId,
    pub source: ForkSource,
    pub from_node: String,
    /// The operator's output for `from_node` (as `skip` takes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    pub flowchart: FlowchartRef,
    pub definition: Value,
    pub inputs: Value,
    /// `limits.max_runtime_s` from the fork's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub control: Control,
    /// The source's node runs whose results the fork keeps, in the order they ended.
    pub kept: Vec<KeptNodeRun>,
    /// The tokens the re-run of `from_node` consumes: those of its latest node run in the source.
    pub rerun_consumed: Vec<ConsumedToken>,
}

impl RunForked {
    /// The `RunStarted` this fork stands for: the same flowchart, inputs and deadline, started
    /// by the operator who forked. A fork has no parent run.
    pub fn as_started(&self) -> RunStarted {
        RunStarted {
            run_id: self.run_id,
            flowchart: self.flowchart.clone(),
            definition: self.definition.clone(),
            inputs: self.inputs.clone(),
            parent: None,
            deadline: self.deadline,
            actor: self.control.actor.clone(),
        }
    }
}

/// The counterpart of `RunForked` on the source run's stream: the link back to a fork. It is an
/// annotation, not a decision: it changes nothing about the source's state (a finished source
/// stays finished), and replay feeds it to the state without comparing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunForkedTo {
    pub run_id: RunId,
    pub fork_run_id: RunId,
    pub from_node: String,
    /// The source version the fork was planned from (this event comes right after it).
    pub stream_version: u64,
    pub control: Control,
}

/// This run's node started a child run (the child's `RunStarted.parent` links back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildRunStarted {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub child_run_id: RunId,
}

// ---- Node events ------------------------------------------------------------------------

/// A node run was created: its fan-in was satisfied (or it was retried or rewound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeScheduled {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub node_type: NodeType,
    /// 1 for the first try; a retry is a new node run with the next attempt number.
    pub attempt: u32,
    /// How many times this node was scheduled before in this run (loops, rewinds).
    pub execution_index: u32,
    /// blake3 of the canonical JSON of the node's input context.
    pub input_context_hash: Digest,
    pub consumed_tokens: Vec<ConsumedToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<NodeRunId>,
}

/// The node run was handed to an executor queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDispatched {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub executor_class: String,
    /// The dispatch message's de-duplication id (`run:node_run:attempt`).
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_deadline: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeStarted {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub executor: String,
    /// When the execution timeout fires; durable, so a restart keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSucceeded {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub output: Value,
    /// Non-empty when the node run ends as `success_with_warning`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    #[serde(default)]
    pub fallback_used: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeFailed {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeTimedOut {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub phase: TimeoutPhase,
    pub timeout_ms: u64,
}

/// The retry policy (or an operator, with `control`) decided to run the node again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRetryScheduled {
    pub run_id: RunId,
    pub node_id: String,
    /// The node run being retried (it has already ended).
    pub node_run_id: NodeRunId,
    pub next_attempt: u32,
    /// Durable backoff timer.
    pub retry_at: Timestamp,
    pub backoff_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Control>,
}

/// An operator ended the node run with an output of their own; downstream continues with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSkipped {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub output: Value,
    pub control: Control,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeCanceled {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub reason: String,
    pub forced: bool,
}

/// An operator asked to re-run `node_id` and everything downstream of it. The listed node runs'
/// results stop counting; upstream results are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRewound {
    pub run_id: RunId,
    pub node_id: String,
    pub control: Control,
    pub invalidated_node_run_ids: Vec<NodeRunId>,
}

/// A result arrived for a node run that no longer accepts one (superseded attempt, canceled run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeResultIgnored {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub reason: String,
}

/// The whole routing decision of one decision node run: conditions in order, then the
/// upstream `route_key`, then the fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingDecided {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub evaluations: Vec<ConditionEvaluation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_key: Option<String>,
    /// The route key named one of the node's connectors.
    pub route_key_matched: bool,
    /// Every connector that fires (fan-out), in connector order.
    pub matched_connectors: Vec<String>,
    pub no_match: bool,
    /// Set when nothing matched and the fallback connector fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_connector: Option<String>,
}

/// One call of a tool or a model provider made by a node run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCalled {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    /// `provider` for model calls, else the tool family (`memory`, `plan`, ...).
    pub tool: String,
    pub operation: String,
    pub idempotency_key: String,
    pub input_hash: Digest,
    pub outcome: ToolOutcome,
    pub attempts: Vec<ToolAttempt>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Set on the calls of an agent loop (v2): which model turn asked for the call and where it
    /// stood among the turn's parallel calls, the arguments as the model gave them, and where a
    /// result too large to sit in the event went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentCall>,
}

/// The agent-loop part of a [`ToolCalled`] (schema version 2). A call reused on a re-run (its
/// key already recorded) is not recorded again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentCall {
    /// 1-based model turn.
    pub turn: u32,
    /// 0-based index of the call within its turn; absent on the model call of the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_index: Option<u32>,
    /// The arguments object the model sent (tool calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// The tool changes something outside the ledger; the call is not applied again once
    /// recorded as done.
    #[serde(default)]
    pub side_effects: bool,
    /// The result, when it was too large for `output`, in the blob table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_blob: Option<BlobRef>,
}

/// The one artifact that ends every node run, failed ones included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactPersisted {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub node_type: NodeType,
    pub artifact_id: ArtifactId,
    /// Node-type specific, e.g. `task_output`, `routing`, `failure`.
    pub artifact_type: String,
    /// Version of the contract `payload` follows for this artifact type.
    pub contract_version: u32,
    pub status: NodeRunStatus,
    pub payload: Value,
    /// Large content kept in the blob table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<BlobRef>,
    /// blake3 of the canonical JSON of `payload`.
    pub content_hash: Digest,
    pub idempotency_key: String,
    pub request_id: RequestId,
    pub correlation_id: CorrelationId,
}

// ---- API: flowchart registry and idempotent starts -----------------------------------------

/// A new immutable version of a stored flowchart (stream `flowchart-<name>`, one event per
/// version, so the stream version is the flowchart version). Runs started by name and version
/// execute exactly this definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowchartVersionCreated {
    pub name: String,
    /// 1 for the first version, then +1.
    pub version: u32,
    /// The validated flowchart document, as `RunStarted.definition` records it.
    pub definition: Value,
    /// blake3 of the canonical JSON of `definition` (equals `RunStarted.flowchart.definition_hash`).
    pub definition_hash: Digest,
    pub actor: String,
}

/// An `Idempotency-Key` of the HTTP API now names a run start (stream
/// `idempotency-<key_hash>`). A repeated start with the same key and the same request returns
/// `run_id`; the same key with another request is refused. The key itself is not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyKeyRecorded {
    /// What the key was used for: `run_start`.
    pub scope: String,
    /// blake3 of the key.
    pub key_hash: Digest,
    /// blake3 of the canonical JSON of the request body.
    pub request_hash: Digest,
    pub run_id: RunId,
}

// ---- Model registry (one stream per model, `model-<name>`) ----------------------------------

/// A model was registered (or registered again after `ModelDeleted`). The spec holds the name
/// of the environment variable with the API key, never the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelCreated {
    pub model: ModelSpec,
    pub actor: String,
}

/// A model's spec was replaced as a whole (its name and provider stay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelUpdated {
    pub model: ModelSpec,
    pub actor: String,
}

/// A model was removed from the registry; nodes that name it fail with `unknown_model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelDeleted {
    pub name: String,
    pub actor: String,
}

// ---- RAG collections and index runs (one stream per collection, `rag-<name>`) ------------
//
// The stream version of a `RagIndexCompleted` is the collection's *index version*: query hits
// cite it, so an answer traces to the exact index (and manifest) its text came from.

/// A collection was registered (or registered again after `RagCollectionDeleted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagCollectionCreated {
    pub collection: CollectionSpec,
    pub actor: String,
}

/// A collection was removed; its index runs stay in the stream as history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagCollectionDeleted {
    pub name: String,
    pub actor: String,
}

/// An index run began. A run that never reaches `RagIndexCompleted`/`RagIndexFailed` was
/// interrupted: the next run starts over from the last completed manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagIndexStarted {
    pub collection: String,
    /// UUID v7 of this index run.
    pub index_run_id: String,
    pub mode: IndexMode,
    /// Index version (stream version of the `RagIndexCompleted`) a delta compares against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
    pub actor: String,
    /// The node run that asked for it, when a `rag` node did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_run_id: Option<NodeRunId>,
}

/// Files an index run looked at, by what happened to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexFileCounts {
    /// Files the sources hold now (after include/exclude).
    pub scanned: u64,
    /// Files whose bytes were read and hashed (a delta reads only files whose size or
    /// modification time moved).
    pub read: u64,
    pub added: u64,
    pub changed: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Of `scanned`, files not in the search index (binary, not UTF-8 text, too large,
    /// unreadable). `scanned = added + changed + unchanged`.
    pub skipped: u64,
}

/// An index run finished; the manifest of file digests is a blob (`manifest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagIndexCompleted {
    pub collection: String,
    pub index_run_id: String,
    pub mode: IndexMode,
    pub files: IndexFileCounts,
    /// Chunks written and removed by this run, and held by the index after it.
    pub chunks_added: u64,
    pub chunks_deleted: u64,
    pub chunks_total: u64,
    /// Bytes of the files read (new and changed files only for a delta).
    pub bytes_read: u64,
    /// blake3 of the manifest blob: canonical JSON `{"files": {"<source>/<path>": {digest, bytes, chunks}}}`.
    pub manifest: Digest,
    pub duration_ms: u64,
    /// The commit each `git` source was indexed at, by source name (none for directories).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub commits: std::collections::BTreeMap<String, String>,
}

/// An index run stopped on an error; the previous index version stays current.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagIndexFailed {
    pub collection: String,
    pub index_run_id: String,
    pub error: ErrorInfo,
}

// ---- Tools: memory, plans, milestones (event-sourced tool state) ---------------------------
//
// Each tool keeps its state in streams of its own: `memory-<scope>`, `plan-<plan_id>`,
// `milestone-<milestone_id>`. Every event names the node run that caused it and carries the
// call's idempotency key (`<node_run_id>:<tool>:<operation>`), which is also the request id of
// the append that wrote it, so an operation is applied once per node run.

/// A memory entry was written for the first time (or again after `MemoryEntryDeleted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryEntryCreated {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub scope: String,
    pub key: String,
    pub value: Value,
    /// 1 on creation, +1 per update of the entry.
    pub revision: u64,
}

/// A memory entry's value was replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryEntryUpdated {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub scope: String,
    pub key: String,
    pub value: Value,
    /// The entry's revision after the update.
    pub revision: u64,
}

/// A memory entry was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryEntryDeleted {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub scope: String,
    pub key: String,
    /// The revision the entry had when it was deleted.
    pub revision: u64,
}

/// Where a plan stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Pending,
    InProgress,
    Done,
    Blocked,
    Skipped,
}

/// One stage of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanStage {
    pub id: String,
    pub title: String,
    pub status: StageStatus,
}

/// A plan was created (or created again after `PlanDeleted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanCreated {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub plan_id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub stages: Vec<PlanStage>,
}

/// Some of a plan's fields were replaced; fields left out are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanUpdated {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub plan_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The whole new list of stages, when it was replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<PlanStage>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanDeleted {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub plan_id: String,
}

/// A plan's stages were put in a new order (`order` lists every stage id once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanStagesReordered {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub plan_id: String,
    pub order: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanStageStatusSet {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub plan_id: String,
    pub stage_id: String,
    pub status: StageStatus,
    pub previous: StageStatus,
}

/// Where a milestone stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MilestoneStatus {
    Pending,
    InProgress,
    Achieved,
    Missed,
    Canceled,
}

/// Something that shows progress toward a milestone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneEvidence {
    pub summary: String,
    /// Where the evidence is: a URL, an artifact or node run id, a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// A milestone was created (status `pending`), or created again after `MilestoneDeleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneCreated {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub milestone_id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free text, e.g. a date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// The plan the milestone belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
}

/// Some of a milestone's fields were replaced; fields left out are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneUpdated {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub milestone_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneDeleted {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub milestone_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneStatusSet {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub milestone_id: String,
    pub status: MilestoneStatus,
    pub previous: MilestoneStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneEvidenceAttached {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub milestone_id: String,
    pub evidence: MilestoneEvidence,
}

// ---- Decisions recorded by agents (stream `decision-<decision_id>`) -------------------------
//
// An agent's `decision_*` tools keep a decision's question, options, scores and outcome in a
// stream of its own, like memory and plans: every event names the node run that caused it and
// carries the call's idempotency key, the request id of the append that wrote it.

/// One option of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionOption {
    /// Unique within the decision: 1 to 100 of `A-Z a-z 0-9 - _ . :`.
    pub id: String,
    pub description: String,
}

/// The score one option received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionScore {
    pub option_id: String,
    /// A finite number; higher is better.
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
}

/// A decision was opened: its question and the options it chooses between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionCreated {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub decision_id: String,
    pub question: String,
    /// At least one, ids unique.
    pub options: Vec<DecisionOption>,
    /// What the options are weighed by (free text, in order of importance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<String>,
    /// Facts the decision is made on, as the agent gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

/// Options of a decision were scored; a later score of an option replaces an earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionOptionsScored {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub decision_id: String,
    /// At least one, each naming an option of the decision once.
    pub scores: Vec<OptionScore>,
}

/// A decision was made: the option chosen and why. Recorded once per decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionOutcomeRecorded {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    pub idempotency_key: String,
    pub decision_id: String,
    pub chosen_option_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
}

/// Generates the catalog enum, its type names and current versions from one table.
macro_rules! catalog {
    ($($name:ident = $version:literal),+ $(,)?) => {
        /// Every event the ledger knows, in its current version.
        #[derive(Debug, Clone, PartialEq)]
        pub enum DomainEvent {
            $($name($name),)+
        }

        /// The names of event types, as stored and exported (`event_type`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($name,)+
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$name,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$name => stringify!($name),)+
                }
            }

            /// The version new events of this type are written with.
            pub fn schema_version(self) -> u32 {
                match self {
                    $(EventType::$name => $version,)+
                }
            }

            pub fn parse(name: &str) -> Option<EventType> {
                match name {
                    $(stringify!($name) => Some(EventType::$name),)+
                    _ => None,
                }
            }

            /// JSON Schema of the current payload.
            pub fn payload_schema(self) -> schemars::Schema {
                match self {
                    $(EventType::$name => schemars::schema_for!($name),)+
                }
            }
        }

        impl DomainEvent {
            pub fn event_type(&self) -> EventType {
                match self {
                    $(DomainEvent::$name(_) => EventType::$name,)+
                }
            }

            pub fn schema_version(&self) -> u32 {
                self.event_type().schema_version()
            }

            /// The payload as stored.
            pub fn to_payload(&self) -> Result<Value, serde_json::Error> {
                match self {
                    $(DomainEvent::$name(p) => serde_json::to_value(p),)+
                }
            }

            /// Reads a stored event, upcasting older schema versions first.
            pub fn decode(event_type: &str, schema_version: u32, payload: Value) -> Result<Self, DecodeError> {
                let kind = EventType::parse(event_type)
                    .ok_or_else(|| DecodeError::UnknownType { event_type: event_type.to_owned() })?;
                let payload = upcast(kind, schema_version, payload)?;
                match kind {
                    $(EventType::$name => serde_json::from_value(payload)
                        .map(DomainEvent::$name)
                        .map_err(|e| DecodeError::Payload {
                            event_type: kind.as_str(),
                            schema_version: kind.schema_version(),
                            message: e.to_string(),
                        }),)+
                }
            }

            /// [`DomainEvent::decode`] from the payload's JSON text: a payload already at the
            /// current schema version is read straight into its struct (no intermediate
            /// `Value`, which is most of the cost of reading a long export); an older one is
            /// parsed and upcast as `decode` does.
            pub fn decode_str(event_type: &str, schema_version: u32, payload: &str) -> Result<Self, DecodeError> {
                let kind = EventType::parse(event_type)
                    .ok_or_else(|| DecodeError::UnknownType { event_type: event_type.to_owned() })?;
                let invalid = |e: serde_json::Error| DecodeError::Payload {
                    event_type: kind.as_str(),
                    schema_version: kind.schema_version(),
                    message: e.to_string(),
                };
                if schema_version != kind.schema_version() {
                    let value: Value = serde_json::from_str(payload).map_err(invalid)?;
                    return Self::decode(event_type, schema_version, value);
                }
                match kind {
                    $(EventType::$name => serde_json::from_str(payload)
                        .map(DomainEvent::$name)
                        .map_err(invalid),)+
                }
            }
        }

        $(impl From<$name> for DomainEvent {
            fn from(p: $name) -> Self {
                DomainEvent::$name(p)
            }
        })+
    };
}

catalog! {
    RunStarted = 1,
    RunCompleted = 1,
    RunFailed = 1,
    RunPaused = 1,
    RunResumed = 1,
    RunCancelRequested = 1,
    RunCanceled = 1,
    RunTakenOver = 1,
    RunForked = 1,
    RunForkedTo = 1,
    ChildRunStarted = 1,
    NodeScheduled = 1,
    NodeDispatched = 1,
    NodeStarted = 1,
    NodeSucceeded = 1,
    NodeFailed = 1,
    NodeTimedOut = 1,
    NodeRetryScheduled = 1,
    NodeSkipped = 1,
    NodeCanceled = 1,
    NodeRewound = 1,
    NodeResultIgnored = 1,
    RoutingDecided = 1,
    ToolCalled = 2,
    ArtifactPersisted = 1,
    FlowchartVersionCreated = 1,
    IdempotencyKeyRecorded = 1,
    ModelCreated = 1,
    ModelUpdated = 1,
    ModelDeleted = 1,
    RagCollectionCreated = 1,
    RagCollectionDeleted = 1,
    RagIndexStarted = 1,
    RagIndexCompleted = 1,
    RagIndexFailed = 1,
    MemoryEntryCreated = 1,
    MemoryEntryUpdated = 1,
    MemoryEntryDeleted = 1,
    PlanCreated = 1,
    PlanUpdated = 1,
    PlanDeleted = 1,
    PlanStagesReordered = 1,
    PlanStageStatusSet = 1,
    MilestoneCreated = 1,
    MilestoneUpdated = 1,
    MilestoneDeleted = 1,
    MilestoneStatusSet = 1,
    MilestoneEvidenceAttached = 1,
    DecisionCreated = 1,
    DecisionOptionsScored = 1,
    DecisionOutcomeRecorded = 1,
}

impl DomainEvent {
    /// The blobs the event names (a large tool result, an artifact's content): recorded as the
    /// event's `blob_refs`, so the ledger checks they are stored and an export carries them.
    pub fn blob_refs(&self) -> Vec<Digest> {
        let named = match self {
            DomainEvent::ToolCalled(call) => {
                call.agent.as_ref().and_then(|a| a.result_blob.as_ref())
            }
            DomainEvent::ArtifactPersisted(artifact) => artifact.content.as_ref(),
            _ => None,
        };
        named.map(|blob| blob.hash).into_iter().collect()
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of an upcaster chain: rewrites the JSON of `event_type` at `from` into version
/// `from + 1`.
pub struct Upcaster {
    pub event_type: EventType,
    pub from: u32,
    pub step: fn(Value) -> Result<Value, UpcastError>,
}

/// Why an upcaster step cannot rewrite a stored payload: the payload is not what its version
/// recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpcastError(pub String);

impl From<&str> for UpcastError {
    fn from(reason: &str) -> Self {
        Self(reason.to_owned())
    }
}

impl From<String> for UpcastError {
    fn from(reason: String) -> Self {
        Self(reason)
    }
}

/// The upcasters of the catalog. When a type moves to version N+1, add its N -> N+1 step here
/// and bump the catalog table; recorded ledgers keep decoding through [`upcast`].
///
/// `ToolCalled` v2 added the optional `agent` object (turn, call index, arguments, result
/// blob) of agent-loop calls; every v1 payload is a v2 payload without it, which the step checks.
pub const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: EventType::ToolCalled,
    from: 1,
    step: tool_called_v1_to_v2,
}];

fn tool_called_v1_to_v2(payload: Value) -> Result<Value, UpcastError> {
    match &payload {
        Value::Object(map) if !map.contains_key("agent") => Ok(payload),
        Value::Object(_) => Err("a v1 ToolCalled has no `agent` key".into()),
        _ => Err("a ToolCalled payload is an object".into()),
    }
}

/// Brings a stored payload from `from_version` up to the current version of `kind`, one step
/// of [`UPCASTERS`] at a time.
pub fn upcast(kind: EventType, from_version: u32, payload: Value) -> Result<Value, DecodeError> {
    upcast_with(
        UPCASTERS,
        kind,
        kind.schema_version(),
        from_version,
        payload,
    )
}

/// [`upcast`] over a given chain up to version `current` (the catalog's, or a test's).
pub fn upcast_with(
    upcasters: &[Upcaster],
    kind: EventType,
    current: u32,
    from_version: u32,
    mut payload: Value,
) -> Result<Value, DecodeError> {
    let mut version = from_version;
    while version < current {
        let Some(upcaster) = upcasters
            .iter()
            .find(|u| u.event_type == kind && u.from == version)
        else {
            break;
        };
        payload = (upcaster.step)(payload).map_err(|e| DecodeError::Payload {
            event_type: kind.as_str(),
            schema_version: version,
            message: e.0,
        })?;
        version += 1;
    }
    if version == current {
        return Ok(payload);
    }
    Err(DecodeError::UnknownVersion {
        event_type: kind.as_str(),
        schema_version: from_version,
        current,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{event_type}`")]
    UnknownType { event_type: String },
    #[error(
        "{event_type} has no schema version {schema_version} (current is {current}); was this ledger written by a newer runledger?"
    )]
    UnknownVersion {
        event_type: &'static str,
        schema_version: u32,
        current: u32,
    },
    #[error("{event_type} v{schema_version} payload does not match its schema: {message}")]
    Payload {
        event_type: &'static str,
        schema_version: u32,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduled() -> DomainEvent {
        NodeScheduled {
            run_id: RunId::new_v7(),
            node_id: "draft".into(),
            node_run_id: NodeRunId::new_v7(),
            node_type: NodeType::Task,
            attempt: 1,
            execution_index: 0,
            input_context_hash: Digest::of(b"{}"),
            consumed_tokens: vec![],
            retry_of: None,
        }
        .into()
    }

    #[test]
    fn names_match_the_user_facing_catalog() {
        // FLOWCHART-FORMAT.md fixes these names; scripts depend on them.
        for name in [
            "RunStarted",
            "RunCompleted",
            "RunFailed",
            "RunPaused",
            "RunResumed",
            "RunCancelRequested",
            "RunCanceled",
            "NodeScheduled",
            "NodeDispatched",
            "NodeStarted",
            "NodeSucceeded",
            "NodeFailed",
            "NodeTimedOut",
            "NodeRetryScheduled",
            "NodeSkipped",
            "NodeCanceled",
            "NodeRewound",
            "RoutingDecided",
            "ToolCalled",
            "ArtifactPersisted",
        ] {
            let kind = EventType::parse(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn decode_round_trips_current_version() {
        let event = scheduled();
        let payload = event.to_payload().unwrap();
        let back = DomainEvent::decode("NodeScheduled", 1, payload).unwrap();
        assert_eq!(back, event);
    }

    /// The chain walks every step from the recorded version to the current one. No catalog
    /// type has an older version yet, so the chain is a synthetic one for `NodeScheduled`, as if
    /// it were at version 3: v1 had `attempt` as a string, v2 had no `retry_of` key at all.
    #[test]
    fn upcasters_chain_from_an_older_version_to_the_current_one() {
        fn v1_to_v2(mut p: Value) -> Result<Value, UpcastError> {
            let attempt = p["attempt"].as_str().ok_or("attempt is not a string")?;
            let n: u64 = attempt.parse().map_err(|e| format!("attempt: {e}"))?;
            p["attempt"] = Value::from(n);
            Ok(p)
        }
        fn v2_to_v3(mut p: Value) -> Result<Value, UpcastError> {
            p["marker"] = Value::from("v3");
            Ok(p)
        }
        let chain = [
            Upcaster {
                event_type: EventType::NodeScheduled,
                from: 1,
                step: v1_to_v2,
            },
            Upcaster {
                event_type: EventType::NodeScheduled,
                from: 2,
                step: v2_to_v3,
            },
        ];
        // At the catalog's version (1) the chain has nothing to do.
        let current = scheduled().to_payload().unwrap();
        let kind = EventType::NodeScheduled;
        assert_eq!(
            upcast_with(&chain, kind, 1, 1, current.clone()).unwrap(),
            current
        );
        // As if NodeScheduled were at v3: a shape recorded as v1 goes through both steps, one
        // recorded as v2 through the second only.
        let mut v1 = current.clone();
        v1["attempt"] = Value::from("1");
        let up = upcast_with(&chain, kind, 3, 1, v1).unwrap();
        assert_eq!(up["attempt"], Value::from(1));
        assert_eq!(up["marker"], Value::from("v3"));
        let up = upcast_with(&chain, kind, 3, 2, current.clone()).unwrap();
        assert_eq!(up["attempt"], current["attempt"]);
        assert_eq!(up["marker"], Value::from("v3"));
        // A step that cannot read its input names the type and the version it was at.
        let mut broken = current;
        broken["attempt"] = Value::from("one");
        let err = upcast_with(&chain, kind, 3, 1, broken).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Payload {
                    schema_version: 1,
                    ..
                }
            ),
            "{err}"
        );
        // A version with no step to the current one fails loudly instead of guessing.
        let err = upcast_with(&chain, kind, 3, 0, Value::Null).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::UnknownVersion {
                    schema_version: 0,
                    current: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_catalog_upcasters_step_from_an_older_version_of_a_type_they_name() {
        for u in UPCASTERS {
            assert!(
                u.from >= 1 && u.from < u.event_type.schema_version(),
                "{}",
                u.event_type
            );
        }
    }

    #[test]
    fn decode_rejects_unknown_type_version_and_fields() {
        let payload = scheduled().to_payload().unwrap();
        assert!(matches!(
            DomainEvent::decode("NodeExploded", 1, payload.clone()),
            Err(DecodeError::UnknownType { .. })
        ));
        let err = DomainEvent::decode("NodeScheduled", 7, payload.clone()).unwrap_err();
        assert!(err.to_string().contains("no schema version 7"), "{err}");
        let mut extra = payload;
        extra["surprise"] = Value::Bool(true);
        let err = DomainEvent::decode("NodeScheduled", 1, extra).unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
    }
}
