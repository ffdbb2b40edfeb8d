//! Deterministic tools: the memory, plan and milestone stores that `memory`, `plan` and
//! `milestone` nodes call, the decisions agents record ([`decisions`], called only through the
//! agent tools), and the outcome record of `decision` nodes.
//!
//! Tool state is event-sourced in streams of its own (`memory-<scope>`, `plan-<plan_id>`,
//! `milestone-<milestone_id>`). A tool node run is executed by the run's driver, not by an
//! executor: it folds the streams it needs ([`cache`]), decides the operation purely
//! (`<tool>::decide(state, operation) -> events | output`), and its tool events are appended
//! together with the node's completion in one transaction (`EventStore::append_many`), with the
//! tool stream expected at the version the state was read at. How the driver does that is in
//! `driver.rs`; the rules are in docs/tools.md.
//!
//! Every call goes through [`call`]: arguments resolved from the input context and parsed into
//! the operation's typed arguments (the operation's schema), an idempotency key per node run and
//! operation, bounded retries, and a trace of every attempt on the `ToolCalled` event.

pub mod cache;
pub mod decision;
pub mod decisions;
pub mod memory;
pub mod milestone;
pub mod plan;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    DomainEvent, ErrorInfo, EventType, ToolAttempt, ToolCalled, ToolOutcome, Warning,
};
use runledger_contracts::flowchart::{Node, NodeType};
use runledger_contracts::ids::{NodeRunId, RequestId, RunId, StreamId};
use runledger_ledger::EventStore;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::decide::{NodeOutcome, NodeResult};
use crate::executor::NodeWork;
use cache::ToolCache;

/// Tries of one tool call: a conflict on the tool stream, or a store that cannot be read,
/// re-reads the state and decides again, at most this many times in all.
pub const MAX_TOOL_ATTEMPTS: u32 = 3;
/// Longest scope, plan id or milestone id (they name streams).
pub const MAX_ID_LEN: usize = 100;
/// Most entries a `list` or `search` returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Entries a `list` or `search` returns when the call does not say.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest output of one call, as canonical JSON: it is recorded three times in the node
/// run's append (`ToolCalled`, `NodeSucceeded`, `ArtifactPersisted`).
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// The tools whose state lives in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolKind {
    Memory,
    Plan,
    Milestone,
    /// Decisions an agent records (`decision-<decision_id>`); no node type calls it.
    Decision,
}

impl ToolKind {
    pub const ALL: [ToolKind; 4] = [
        ToolKind::Memory,
        ToolKind::Plan,
        ToolKind::Milestone,
        ToolKind::Decision,
    ];

    /// The tool that nodes of this type call; `None` for nodes that call none.
    pub fn of(node_type: NodeType) -> Option<ToolKind> {
        match node_type {
            NodeType::Memory => Some(ToolKind::Memory),
            NodeType::Plan => Some(ToolKind::Plan),
            NodeType::Milestone => Some(ToolKind::Milestone),
            _ => None,
        }
    }

    /// `ToolCalled.tool`.
    pub fn name(self) -> &'static str {
        match self {
            ToolKind::Memory => "memory",
            ToolKind::Plan => "plan",
            ToolKind::Milestone => "milestone",
            ToolKind::Decision => "decision",
        }
    }

    /// The prefix of this tool's streams.
    pub fn stream_prefix(self) -> &'static str {
        match self {
            ToolKind::Memory => "memory-",
            ToolKind::Plan => "plan-",
            ToolKind::Milestone => "milestone-",
            ToolKind::Decision => "decision-",
        }
    }

    /// The stream of one scope, plan or milestone.
    pub fn stream(self, id: &str) -> Result<StreamId, ToolError> {
        StreamId::new(format!("{}{id}", self.stream_prefix())).map_err(|e| {
            ToolError::InvalidInput {
                field: "args".into(),
                message: e.to_string(),
            }
        })
    }
}

/// Whether the engine runs nodes of this type itself, as tool calls.
pub fn runs_in_engine(node_type: NodeType) -> bool {
    ToolKind::of(node_type).is_some()
}

/// A tool call that did not do what it was asked. Each has a stable code; the node fails with
/// it (or, with `allow_fallback`, succeeds with it as a warning).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the operation's schema; `field` names the argument.
    #[error("{field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{what} is at revision {actual}, not the expected {expected}")]
    RevisionMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// The operation does not apply to the state (e.g. a reorder that is not a permutation).
    #[error("{0}")]
    InvalidOperation(String),
    /// Another writer kept changing the tool stream; every attempt lost the race.
    #[error("{0}")]
    Conflict(String),
    /// The ledger could not be read.
    #[error("{0}")]
    Unavailable(String),
    /// A tool stream holds an event that does not fit its state.
    #[error("{0}")]
    Corrupt(String),
    /// The event at `at` (`<stream>#<version>`) does not fold into the state before it.
    #[error("{at}: {source}")]
    StateCorrupt {
        at: String,
        #[source]
        source: StateError,
    },
}

/// Why an event of a tool stream does not fit the state folded from the events before it:
/// the stream was written by something other than the tool's decider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The event creates `what`, which exists already.
    #[error("{event}: {what} exists")]
    Exists { event: EventType, what: String },
    /// The event changes `what`, which does not exist.
    #[error("{event}: {what} does not exist")]
    Missing { event: EventType, what: String },
    /// The event belongs to another tool.
    #[error("{event} is not a {tool} event")]
    Foreign {
        event: EventType,
        tool: &'static str,
    },
    /// The event contradicts the state in another way.
    #[error("{event}: {reason}")]
    Inconsistent { event: EventType, reason: String },
}

impl ToolError {
    pub fn code(&self) -> &'static str {
        match self {
            ToolError::InvalidInput { .. } => "tool_invalid_input",
            ToolError::NotFound(_) => "tool_not_found",
            ToolError::AlreadyExists(_) => "tool_already_exists",
            ToolError::RevisionMismatch { .. } => "tool_revision_mismatch",
            ToolError::InvalidOperation(_) => "tool_invalid_operation",
            ToolError::Conflict(_) => "tool_conflict",
            ToolError::Unavailable(_) => "tool_unavailable",
            ToolError::Corrupt(_) | ToolError::StateCorrupt { .. } => "tool_state_corrupt",
        }
    }

    /// Whether running the node again may succeed (its retry policy decides).
    pub fn retryable(&self) -> bool {
        matches!(self, ToolError::Conflict(_) | ToolError::Unavailable(_))
    }

    pub fn to_error_info(&self) -> ErrorInfo {
        let details = match self {
            ToolError::InvalidInput { field, .. } => Some(json!({ "field": field })),
            ToolError::RevisionMismatch {
                expected, actual, ..
            } => Some(json!({ "expected": expected, "actual": actual })),
            _ => None,
        };
        ErrorInfo {
            code: self.code().to_owned(),
            message: self.to_string(),
            retryable: self.retryable(),
            details,
        }
    }
}

/// Who causes a tool event: recorded on every event, so tool state links back to the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCause {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    /// `<node_run_id>:<tool>:<operation>`: also the request id of the tool stream append.
    pub idempotency_key: String,
}

/// What an operation decided: a result read from the state, or events that change it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    Read(Value),
    Write(Vec<DomainEvent>),
}

/// Which of the tool's streams an operation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One stream; writes go there.
    Stream(StreamId),
    /// Every stream of the tool (`list` of plans and milestones); reads only.
    All,
}

/// One tool: its typed operations, its per-stream state and the pure decider over it.
pub trait Tool {
    const KIND: ToolKind;
    /// An operation with its typed arguments.
    type Op;
    /// State folded from one of the tool's streams.
    type State: Default + Clone + Send + Sync + 'static;

    /// Reads `operation` and its arguments; an argument that does not fit is `InvalidInput`
    /// naming it.
    fn parse(operation: &str, args: Value) -> Result<Self::Op, ToolError>;
    fn target(op: &Self::Op) -> Result<Target, ToolError>;
    /// Applies one event of the tool's stream to its state.
    fn evolve(state: &mut Self::State, event: &DomainEvent) -> Result<(), StateError>;
    /// What the state looks like to a caller after `event` (the output of the write that
    /// recorded it, also when that write is found again by its idempotency key).
    fn output_after(state: &Self::State, event: &DomainEvent) -> Value;
    /// The operation against the state of its target: one stream's state, or all of them.
    fn decide(
        op: &Self::Op,
        states: &[&Self::State],
        cause: &ToolCause,
    ) -> Result<Decided, ToolError>;
}

/// The idempotency key a tool event carries.
pub fn event_idempotency_key(event: &DomainEvent) -> Option<&str> {
    Some(match event {
        DomainEvent::MemoryEntryCreated(e) => &e.idempotency_key,
        DomainEvent::MemoryEntryUpdated(e) => &e.idempotency_key,
        DomainEvent::MemoryEntryDeleted(e) => &e.idempotency_key,
        DomainEvent::PlanCreated(e) => &e.idempotency_key,
        DomainEvent::PlanUpdated(e) => &e.idempotency_key,
        DomainEvent::PlanDeleted(e) => &e.idempotency_key,
        DomainEvent::PlanStagesReordered(e) => &e.idempotency_key,
        DomainEvent::PlanStageStatusSet(e) => &e.idempotency_key,
        DomainEvent::MilestoneCreated(e) => &e.idempotency_key,
        DomainEvent::MilestoneUpdated(e) => &e.idempotency_key,
        DomainEvent::MilestoneDeleted(e) => &e.idempotency_key,
        DomainEvent::MilestoneStatusSet(e) => &e.idempotency_key,
        DomainEvent::MilestoneEvidenceAttached(e) => &e.idempotency_key,
        DomainEvent::DecisionCreated(e) => &e.idempotency_key,
        DomainEvent::DecisionOptionsScored(e) => &e.idempotency_key,
        DomainEvent::DecisionOutcomeRecorded(e) => &e.idempotency_key,
        _ => return None,
    })
}

// ---- arguments -------------------------------------------------------------------------------

/// The node's operation and arguments, with `{{ path }}` templates filled from the input
/// context. A string that is one template and nothing else becomes the value at that path (any
/// JSON; a missing path is an error naming the argument); templates inside longer strings are
/// rendered as text, as in prompts (a missing path renders as nothing).
pub fn resolve_args(args: &Map<String, Value>, context: &Value) -> Result<Value, ToolError> {
    let mut out = Map::with_capacity(args.len());
    for (key, value) in args {
        out.insert(
            key.clone(),
            resolve_value(value, context, &format!("args.{key}"))?,
        );
    }
    Ok(Value::Object(out))
}

fn resolve_value(value: &Value, context: &Value, field: &str) -> Result<Value, ToolError> {
    match value {
        Value::String(text) => {
            let trimmed = text.trim();
            if let Some(inner) = trimmed
                .strip_prefix("{{")
                .and_then(|t| t.strip_suffix("}}"))
                && !inner.contains("{{")
                && !inner.contains("}}")
            {
                let path =
                    runledger_contracts::condition::parse_path(inner.trim()).map_err(|e| {
                        ToolError::InvalidInput {
                            field: field.to_owned(),
                            message: format!("`{text}` is not a path template: {e}"),
                        }
                    })?;
                return path
                    .resolve(context)
                    .cloned()
                    .ok_or_else(|| ToolError::InvalidInput {
                        field: field.to_owned(),
                        message: format!(
                            "`{text}`: `{}` is not in the node's input context",
                            inner.trim()
                        ),
                    });
            }
            if text.contains("{{") {
                return Ok(Value::String(crate::provider::render_prompt(text, context)));
            }
            Ok(value.clone())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| resolve_value(v, context, &format!("{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(
                    k.clone(),
                    resolve_value(v, context, &format!("{field}.{k}"))?,
                );
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// Reads arguments into an operation's typed arguments. The argument structs reject unknown
/// keys, so this is the operation's schema; an error names the argument by its path.
pub fn parse_args<T: DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "." {
            "args".to_owned()
        } else {
            format!("args.{path}")
        };
        ToolError::InvalidInput {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

/// Checks an id that names a stream: 1 to 100 of `A-Z a-z 0-9 - _ . :`.
pub fn check_id(field: &str, id: &str) -> Result<(), ToolError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ToolError::InvalidInput {
            field: format!("args.{field}"),
            message: format!("`{id}` must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 - _ . :"),
        })
    }
}

/// Checks a free-text field that must not be blank.
pub fn check_text(field: &str, text: &str) -> Result<(), ToolError> {
    if text.trim().is_empty() {
        return Err(ToolError::InvalidInput {
            field: format!("args.{field}"),
            message: "must not be blank".into(),
        });
    }
    Ok(())
}

/// A `limit` argument, or the default.
pub fn list_limit(limit: Option<usize>) -> Result<usize, ToolError> {
    match limit {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ToolError::InvalidInput {
            field: "args.limit".into(),
            message: format!("{n} is out of range: 1 to {MAX_LIST_LIMIT}"),
        }),
    }
}

// ---- one call --------------------------------------------------------------------------------

/// A tool node's call, as configured, with its arguments resolved.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub kind: ToolKind,
    pub operation: String,
    /// The arguments after templates were filled (or as written, when that failed).
    pub args: Value,
    /// Set when the arguments could not be resolved; the call fails with it, untried.
    pub args_error: Option<ToolError>,
    pub allow_fallback: bool,
    pub fallback_output: Option<Value>,
    pub cause: ToolCause,
}

impl ToolCall {
    /// The call a tool node run makes; `None` for nodes that make none.
    pub fn of(work: &NodeWork) -> Option<ToolCall> {
        let node: &Node = work.node()?;
        let kind = ToolKind::of(node.node_type)?;
        let (operation, args, allow_fallback, fallback_output) = match kind {
            ToolKind::Memory => node.memory.as_ref().map(|c| {
                (
                    op_name(&c.operation),
                    &c.args,
                    c.allow_fallback,
                    c.fallback_output.clone(),
                )
            }),
            ToolKind::Plan => node.plan.as_ref().map(|c| {
                (
                    op_name(&c.operation),
                    &c.args,
                    c.allow_fallback,
                    c.fallback_output.clone(),
                )
            }),
            ToolKind::Milestone => node.milestone.as_ref().map(|c| {
                (
                    op_name(&c.operation),
                    &c.args,
                    c.allow_fallback,
                    c.fallback_output.clone(),
                )
            }),
            ToolKind::Decision => None,
        }?;
        let (args, args_error) = match resolve_args(args, &work.input_context) {
            Ok(resolved) => (resolved, None),
            Err(e) => (Value::Object(args.clone()), Some(e)),
        };
        let idempotency_key = format!("{}:{}:{operation}", work.node_run_id, kind.name());
        Some(ToolCall {
            kind,
            operation,
            args,
            args_error,
            allow_fallback,
            fallback_output,
            cause: ToolCause {
                run_id: work.run_id,
                node_id: node.id.clone(),
                node_run_id: work.node_run_id,
                idempotency_key,
            },
        })
    }

    /// `ToolCalled.input_hash`: blake3 of the canonical `{ operation, args }`.
    pub fn input_hash(&self) -> Digest {
        let input = json!({ "operation": self.operation, "args": self.args });
        Digest::of(&canonical::to_canonical_vec(&input).unwrap_or_default())
    }

    /// The request id of the tool stream append: the idempotency key.
    pub fn request_id(&self) -> Result<RequestId, ToolError> {
        RequestId::new(self.cause.idempotency_key.clone()).map_err(|e| ToolError::InvalidInput {
            field: "operation".into(),
            message: e.to_string(),
        })
    }
}

fn op_name(op: &impl serde::Serialize) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Tool events to append with the node's completion, to the tool stream at the version its
/// state was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolAppend {
    pub node_run_id: NodeRunId,
    pub stream: StreamId,
    /// The stream's version when the state was read (0: the stream did not exist).
    pub expected_version: u64,
    pub request_id: RequestId,
    pub events: Vec<DomainEvent>,
}

/// An operation applied to the state as read: its output, and the events to append (none for
/// reads, and none when the node run's operation is already in the stream).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub output: Value,
    pub append: Option<ToolAppend>,
}

/// Runs one attempt of the call against the ledger's current tool state: reads (through the
/// cache) the streams the operation needs and decides it. Writes nothing.
pub async fn attempt<S: EventStore>(
    store: &S,
    cache: &mut ToolCache,
    call: &ToolCall,
) -> Result<Planned, ToolError> {
    if let Some(e) = &call.args_error {
        return Err(e.clone());
    }
    let planned = match call.kind {
        ToolKind::Memory => attempt_with::<memory::Memory, S>(store, cache, call).await,
        ToolKind::Plan => attempt_with::<plan::Plans, S>(store, cache, call).await,
        ToolKind::Milestone => attempt_with::<milestone::Milestones, S>(store, cache, call).await,
        ToolKind::Decision => attempt_with::<decisions::Decisions, S>(store, cache, call).await,
    }?;
    let size = canonical::to_canonical_vec(&planned.output)
        .map_err(|e| ToolError::Corrupt(e.to_string()))?
        .len();
    if size > MAX_OUTPUT_BYTES {
        return Err(ToolError::InvalidOperation(format!(
            "the output would be {size} bytes of JSON, more than {MAX_OUTPUT_BYTES}; ask for less (`limit`, `prefix`)"
        )));
    }
    Ok(planned)
}

async fn attempt_with<T: Tool, S: EventStore>(
    store: &S,
    cache: &mut ToolCache,
    call: &ToolCall,
) -> Result<Planned, ToolError> {
    let op = T::parse(&call.operation, call.args.clone())?;
    match T::target(&op)? {
        Target::All => {
            let streams = cache.refresh_all::<T, S>(store).await?;
            let states: Vec<&T::State> = streams
                .iter()
                .filter_map(|s| cache.state::<T>(s).map(|(_, st)| st))
                .collect();
            match T::decide(&op, &states, &call.cause)? {
                Decided::Read(output) => Ok(Planned {
                    output,
                    append: None,
                }),
                Decided::Write(_) => Err(ToolError::InvalidOperation(format!(
                    "`{}` reads every {} and cannot write",
                    call.operation,
                    T::KIND.name()
                ))),
            }
        }
        Target::Stream(stream) => {
            cache.refresh::<T, S>(store, &stream).await?;
            let (version, state) = cache
                .state::<T>(&stream)
                .map(|(v, s)| (v, s.clone()))
                .unwrap_or_default();
            // The node run's operation is in the stream already (a re-execution): its output
            // stands, and nothing is applied twice.
            if let Some(at) = cache.applied_at(&stream, &call.cause.idempotency_key) {
                let output = cache::output_at::<T, S>(store, &stream, at).await?;
                return Ok(Planned {
                    output,
                    append: None,
                });
            }
            match T::decide(&op, &[&state], &call.cause)? {
                Decided::Read(output) => Ok(Planned {
                    output,
                    append: None,
                }),
                Decided::Write(events) => {
                    let mut after = state;
                    let mut output = Value::Null;
                    for event in &events {
                        T::evolve(&mut after, event).map_err(|source| ToolError::StateCorrupt {
                            at: stream.to_string(),
                            source,
                        })?;
                        output = T::output_after(&after, event);
                    }
                    let append = ToolAppend {
                        node_run_id: call.cause.node_run_id,
                        stream,
                        expected_version: version,
                        request_id: call.request_id()?,
                        events,
                    };
                    Ok(Planned {
                        output,
                        append: Some(append),
                    })
                }
            }
        }
    }
}

/// The node run's result once the call is over: its `ToolCalled` with every attempt, and the
/// node's outcome. A failed call fails the node with the tool's error code, unless the node
/// allows a fallback: then it succeeds with the fallback output, the error as a warning and
/// `fallback_used` (status `success_with_warning`).
pub fn finish(
    work: &NodeWork,
    call: &ToolCall,
    attempts: Vec<ToolAttempt>,
    result: Result<Value, ToolError>,
) -> NodeResult {
    let duration_ms = attempts
        .iter()
        .map(|a| a.duration_ms)
        .fold(0u64, u64::saturating_add);
    let (outcome_kind, output, error) = match &result {
        Ok(output) => (ToolOutcome::Ok, Some(output.clone()), None),
        Err(e @ ToolError::Conflict(_)) => (ToolOutcome::Conflict, None, Some(e.to_error_info())),
        Err(e) => (ToolOutcome::Error, None, Some(e.to_error_info())),
    };
    let tool_call = ToolCalled {
        run_id: work.run_id,
        node_id: call.cause.node_id.clone(),
        node_run_id: work.node_run_id,
        tool: call.kind.name().to_owned(),
        operation: call.operation.clone(),
        idempotency_key: call.cause.idempotency_key.clone(),
        input_hash: call.input_hash(),
        outcome: outcome_kind,
        attempts,
        duration_ms,
        provider: None,
        output,
        error,
        agent: None,
    };
    let outcome = match result {
        Ok(output) => NodeOutcome::Succeeded {
            output,
            warnings: Vec::new(),
            fallback_used: false,
            agent: None,
        },
        Err(e) if call.allow_fallback => {
            let info = e.to_error_info();
            let output = call
                .fallback_output
                .clone()
                .unwrap_or_else(|| json!({ "fallback": true, "error": { "code": info.code, "message": info.message } }));
            let warning = Warning {
                code: info.code,
                message: format!(
                    "{} {} failed; fallback used: {}",
                    call.kind.name(),
                    call.operation,
                    info.message
                ),
            };
            NodeOutcome::Succeeded {
                output,
                warnings: vec![warning],
                fallback_used: true,
                agent: None,
            }
        }
        Err(e) => NodeOutcome::Failed(e.to_error_info()),
    };
    NodeResult {
        node_run_id: work.node_run_id,
        attempt: work.attempt,
        outcome,
        tool_calls: vec![tool_call],
    }
}

#[cfg(test)]
mod tests;
