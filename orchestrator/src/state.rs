//! Run state and `evolve`: the only way run state changes is by applying a recorded event.
//!
//! The state keeps exactly what the decider needs to take the next step in O(1) per node run:
//! pending fan-in tokens per connector, the active node runs, the durable timers, and for each
//! node its latest result. Nothing here re-scans the run's history.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    self, ConsumedToken, DomainEvent, ErrorInfo, FlowchartRef, NodeRunStatus, ParentRun,
};
use runledger_contracts::flowchart::{self, Flowchart, FlowchartDoc, NodeType};
use runledger_contracts::ids::{ArtifactId, NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use serde_json::{Map, Value, json};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    /// Nothing new is scheduled; running node runs finish.
    Paused,
    /// Cancel was requested; with `force: false` running node runs still finish.
    Canceling {
        force: bool,
    },
    Completed,
    /// Terminal unless an operator reopens it with a node retry, skip or rewind.
    Failed,
    Canceled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Canceling { .. } => "canceling",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
        }
    }

    /// Completed, failed or canceled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Canceled
        )
    }
}

/// Where one node run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Scheduled,
    /// Handed to an executor (`NodeStarted`), with its execution deadline.
    Running,
    Ended(NodeRunStatus),
}

/// A solid parent's completion waiting to be consumed by the connector's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Order of creation within the run; fan-in consumes the earliest first.
    pub seq: u64,
    pub connector: usize,
    /// Index of the producing node run.
    pub from: usize,
}

/// One execution attempt of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRun {
    pub id: NodeRunId,
    pub node: usize,
    pub node_type: NodeType,
    pub attempt: u32,
    pub execution_index: u32,
    /// How many node runs of the same node came before this one (loops, retries, rewinds).
    /// The scripted provider answers with its response number `ordinal`.
    pub ordinal: u32,
    pub phase: Phase,
    pub input_context_hash: Digest,
    /// The tokens this node run consumed, earliest first.
    pub consumed: Vec<Token>,
    /// Latest result of each dotted parent when the node run was scheduled (node-run indices).
    pub dotted: Vec<usize>,
    pub retry_of: Option<usize>,
    /// The dispatch deadline while a remote node run waits for an executor, then the
    /// execution deadline once it runs.
    pub deadline: Option<Timestamp>,
    pub executor: Option<String>,
    /// Its work was published to a remote executor queue (`NodeDispatched`).
    pub dispatched: bool,
    /// A result that came after its end was recorded (`NodeResultIgnored`); more copies are not.
    pub late_result_recorded: bool,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    /// Why a success is `success_with_warning` (kept for operators: `runledger runs show`).
    pub warnings: Vec<runledger_contracts::events::Warning>,
    /// Connectors a decision fired.
    pub routed: Option<Vec<usize>>,
    pub artifact: Option<ArtifactId>,
    /// Its result stopped counting (an operator rewound it or something upstream of it).
    pub invalidated: bool,
    pub child_run: Option<RunId>,
    /// Order in which node runs ended (0 while active): a fork keeps results in this order,
    /// which is the order their tokens were delivered.
    pub ended_seq: u64,
    /// The agent-loop calls recorded for it (`ToolCalled` with `agent`), so that an attempt
    /// run again after a crash does not apply a recorded call twice.
    pub agent_calls: Vec<runledger_contracts::events::ToolCalled>,
}

impl NodeRun {
    pub fn is_active(&self) -> bool {
        !matches!(self.phase, Phase::Ended(_))
    }

    pub fn status(&self) -> Option<NodeRunStatus> {
        match self.phase {
            Phase::Ended(status) => Some(status),
            _ => None,
        }
    }

    /// Its output counts for downstream nodes.
    fn delivered(&self) -> bool {
        !self.invalidated
            && matches!(
                self.phase,
                Phase::Ended(
                    NodeRunStatus::Succeeded
                        | NodeRunStatus::SuccessWithWarning
                        | NodeRunStatus::Skipped
                )
            )
    }
}

/// A durable timer: every deadline lives in an event, so a restarted engine re-arms it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    RunDeadline,
    /// Execution deadline of the node run at this index.
    NodeDeadline(usize),
    /// Backoff of a retry of the (ended) node run at this index.
    Retry(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub at: Timestamp,
    pub kind: TimerKind,
}

/// A re-run an operator asked for (`NodeRewound`), waiting for the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Rerun {
    pub node: usize,
    pub consumed: Vec<Token>,
}

/// Per-node bookkeeping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeTrack {
    /// Pending tokens per solid incoming connector (same order as `solid_incoming`).
    pub pending: Vec<VecDeque<Token>>,
    /// Schedulings that were not retries.
    pub executions: u32,
    /// All node runs of this node.
    pub runs: Vec<usize>,
    /// Latest node run whose output counts (for `context.<id>`).
    pub latest_delivered: Option<usize>,
    /// A retry of the node is waiting for its backoff timer (index of the ended node run).
    pub retry_pending: Option<usize>,
}

/// Everything known about one run, rebuilt from its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub run_id: RunId,
    pub flowchart: Arc<Flowchart>,
    pub flowchart_ref: FlowchartRef,
    pub inputs: Value,
    pub parent: Option<ParentRun>,
    pub deadline: Option<Timestamp>,
    pub status: RunStatus,
    pub node_runs: Vec<NodeRun>,
    pub nodes: Vec<NodeTrack>,
    /// Node runs not yet ended, by index.
    pub active: BTreeSet<usize>,
    pub timers: BTreeSet<Timer>,
    /// Nodes with at least one pending token (whose fan-in may be satisfied).
    pub candidates: BTreeSet<usize>,
    pub reruns: VecDeque<Rerun>,
    pub output: Option<Value>,
    pub failure: Option<ErrorInfo>,
    index: HashMap<NodeRunId, usize>,
    token_seq: u64,
    end_seq: u64,
    /// Set on a run that began as a fork (`RunForked`).
    pub forked_from: Option<events::ForkSource>,
    /// On a fork: its first `kept` node runs are the source's results it kept.
    pub kept: usize,
    /// Forks of this run (`RunForkedTo`): the fork's run id and its fork node.
    pub forks: Vec<(RunId, String)>,
    /// The executor (`NodeStarted.executor`) of the first node run with a successful workspace,
    /// git or command call: the run's workspace lives there, so later workspace nodes of the
    /// run must run there too.
    pub workspace_holder: Option<String>,
}

/// An event that does not fit the state it is applied to: the stream is not one this engine
/// wrote, or it was corrupted. Replay stops here rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} does not apply: {message}")]
pub struct StateError {
    pub event: &'static str,
    pub message: String,
}

/// A successful call of a workspace, git or command tool: the run's workspace exists where it
/// ran.
fn made_workspace(call: &events::ToolCalled) -> bool {
    call.outcome == events::ToolOutcome::Ok
        && runledger_contracts::tool_catalog::uses_run_workspace(&call.tool)
}

fn inconsistent(event: &'static str, message: impl Into<String>) -> StateError {
    StateError {
        event,
        message: message.into(),
    }
}

impl RunState {
    /// The state right after `RunStarted`. The definition is validated again: the stream must
    /// replay on its own, without the file it came from.
    pub fn from_started(started: &events::RunStarted) -> Result<Self, StateError> {
        let doc: FlowchartDoc = serde_json::from_value(started.definition.clone())
            .map_err(|e| inconsistent("RunStarted", format!("definition does not parse: {e}")))?;
        let flowchart = flowchart::validate(doc).map_err(|errors| {
            let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
            inconsistent("RunStarted", format!("definition is not valid: {first}"))
        })?;
        Ok(Self::new(started, Arc::new(flowchart)))
    }

    /// Like [`RunState::from_started`] with an already validated flowchart (the decider's path).
    pub fn new(started: &events::RunStarted, flowchart: Arc<Flowchart>) -> Self {
        let nodes = (0..flowchart.nodes().len())
            .map(|i| NodeTrack {
                pending: vec![VecDeque::new(); flowchart.solid_incoming(i).len()],
                ..NodeTrack::default()
            })
            .collect();
        let mut timers = BTreeSet::new();
        if let Some(at) = started.deadline {
            timers.insert(Timer {
                at,
                kind: TimerKind::RunDeadline,
            });
        }
        Self {
            run_id: started.run_id,
            flowchart,
            flowchart_ref: started.flowchart.clone(),
            inputs: started.inputs.clone(),
            parent: started.parent.clone(),
            deadline: started.deadline,
            status: RunStatus::Running,
            node_runs: Vec::new(),
            nodes,
            active: BTreeSet::new(),
            timers,
            candidates: BTreeSet::new(),
            reruns: VecDeque::new(),
            output: None,
            failure: None,
            index: HashMap::new(),
            token_seq: 0,
            workspace_holder: None,
            end_seq: 0,
            forked_from: None,
            kept: 0,
            forks: Vec::new(),
        }
    }

    /// The state right after `RunForked`: a run of the same definition whose kept node runs are
    /// the source's results, replayed in the order they ended (so tokens are delivered and
    /// consumed as they were), and whose fork node waits to run again on the tokens its latest
    /// source run consumed. See `crate::fork`.
    pub fn from_forked(forked: &events::RunForked) -> Result<Self, StateError> {
        const EVENT: &str = "RunForked";
        let mut state =
            Self::from_started(&forked.as_started()).map_err(|e| inconsistent(EVENT, e.message))?;
        state.forked_from = Some(forked.source.clone());
        for kept in &forked.kept {
            state.keep(kept)?;
        }
        state.kept = state.node_runs.len();
        let node = state
            .flowchart
            .node_index(&forked.from_node)
            .ok_or_else(|| inconsistent(EVENT, format!("unknown node `{}`", forked.from_node)))?;
        let mut consumed = Vec::with_capacity(forked.rerun_consumed.len());
        for t in &forked.rerun_consumed {
            consumed.push(state.rerun_token(node, t)?);
        }
        state.reruns.push_back(Rerun { node, consumed });
        Ok(state)
    }

    /// Adds one kept node run of a fork's source: scheduled on the tokens it consumed, ended
    /// with its recorded result, its output delivered downstream.
    fn keep(&mut self, k: &events::KeptNodeRun) -> Result<(), StateError> {
        const EVENT: &str = "RunForked";
        if !matches!(
            k.status,
            NodeRunStatus::Succeeded
                | NodeRunStatus::SuccessWithWarning
                | NodeRunStatus::Skipped
                | NodeRunStatus::Failed
                | NodeRunStatus::TimedOut
                | NodeRunStatus::Canceled
        ) {
            return Err(inconsistent(EVENT, "a kept node run must have ended"));
        }
        self.scheduled(&events::NodeScheduled {
            run_id: self.run_id,
            node_id: k.node_id.clone(),
            node_run_id: k.node_run_id,
            node_type: k.node_type,
            attempt: k.attempt,
            execution_index: k.execution_index,
            // Not recorded for kept runs: the fork never compares their inputs again.
            input_context_hash: Digest::of(b""),
            consumed_tokens: k.consumed_tokens.clone(),
            retry_of: k.retry_of,
        })?;
        let i = self.node_runs.len() - 1;
        if let Some(routed) = &k.routed {
            let mut connectors = Vec::with_capacity(routed.len());
            for id in routed {
                let c = self
                    .flowchart
                    .connector_index(id)
                    .ok_or_else(|| inconsistent(EVENT, format!("unknown connector `{id}`")))?;
                connectors.push(c);
            }
            self.node_runs[i].routed = Some(connectors);
        }
        let id = k.node_run_id;
        self.end(EVENT, &id, k.status)?;
        let nr = &mut self.node_runs[i];
        nr.output = k.output.clone();
        nr.error = k.error.clone();
        nr.artifact = k.artifact_id;
        if nr.delivered() {
            self.deliver(i);
        }
        Ok(())
    }

    /// The token a fork's re-run consumes: still pending, or (when a kept earlier attempt of
    /// the fork node consumed it) the one that attempt holds.
    fn rerun_token(&mut self, node: usize, t: &ConsumedToken) -> Result<Token, StateError> {
        const EVENT: &str = "RunForked";
        let from = self.run_index(EVENT, &t.from_node_run_id)?;
        let connector = self
            .flowchart
            .connector_index(&t.connector_id)
            .ok_or_else(|| {
                inconsistent(EVENT, format!("unknown connector `{}`", t.connector_id))
            })?;
        let slot = self
            .flowchart
            .solid_incoming(node)
            .iter()
            .position(|&c| c == connector);
        if let Some(queue) = slot.and_then(|s| self.nodes[node].pending.get_mut(s))
            && let Some(pos) = queue.iter().position(|k| k.from == from)
            && let Some(token) = queue.remove(pos)
        {
            if self.nodes[node].pending.iter().all(VecDeque::is_empty) {
                self.candidates.remove(&node);
            }
            return Ok(token);
        }
        self.nodes[node]
            .runs
            .iter()
            .flat_map(|&r| self.node_runs[r].consumed.iter())
            .find(|k| k.from == from && k.connector == connector)
            .copied()
            .ok_or_else(|| {
                inconsistent(
                    EVENT,
                    format!(
                        "no token on `{}` from {}",
                        t.connector_id, t.from_node_run_id
                    ),
                )
            })
    }

    /// Rebuilds a run from its events, first to last.
    pub fn replay<'a>(
        events: impl IntoIterator<Item = &'a DomainEvent>,
    ) -> Result<Self, StateError> {
        let mut events = events.into_iter();
        let mut state = match events.next() {
            Some(DomainEvent::RunStarted(started)) => Self::from_started(started)?,
            Some(DomainEvent::RunForked(forked)) => Self::from_forked(forked)?,
            _ => {
                return Err(inconsistent(
                    "RunStarted",
                    "a run stream must begin with RunStarted or RunForked",
                ));
            }
        };
        for event in events {
            state.evolve(event)?;
        }
        Ok(state)
    }

    pub fn node_run_index(&self, id: &NodeRunId) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn node_run(&self, id: &NodeRunId) -> Option<&NodeRun> {
        self.node_run_index(id).and_then(|i| self.node_runs.get(i))
    }

    pub fn node_id(&self, node: usize) -> &str {
        self.flowchart.node_at(node).map_or("", |n| n.id.as_str())
    }

    /// The earliest durable timer.
    pub fn next_timer(&self) -> Option<Timer> {
        self.timers.first().copied()
    }

    /// When a settle step has something to do next: the earliest timer that is either in the
    /// future or due and actionable now. A due retry waits (without waking anyone) while the
    /// run is paused or at `max_parallel_nodes`; the step that frees it settles anyway.
    pub fn next_wake(&self, now: Timestamp) -> Option<Timestamp> {
        if self.status.is_terminal() {
            return None;
        }
        self.timers
            .iter()
            .find(|t| {
                t.at > now
                    || !matches!(t.kind, TimerKind::Retry(_))
                    || (self.status == RunStatus::Running && self.has_capacity())
            })
            .map(|t| t.at)
    }

    /// Whether another node run may start under `limits.max_parallel_nodes`.
    pub fn has_capacity(&self) -> bool {
        let limit = self
            .flowchart
            .doc()
            .limits
            .as_ref()
            .and_then(|l| l.max_parallel_nodes);
        limit.is_none_or(|max| (self.active.len() as u64) < max)
    }

    /// The latest node run of a node whose result still counts, if any.
    pub fn latest_run_of(&self, node: usize) -> Option<usize> {
        self.nodes
            .get(node)?
            .runs
            .iter()
            .rev()
            .copied()
            .find(|&i| !self.node_runs[i].invalidated)
    }

    /// The input context of a node run, as FLOWCHART-FORMAT.md defines it.
    pub fn input_context(&self, run: usize) -> Value {
        let Some(nr) = self.node_runs.get(run) else {
            return Value::Null;
        };
        self.build_context(nr.node, nr.execution_index, &nr.consumed, &nr.dotted)
    }

    /// Latest delivered result of each dotted parent of `node`: what `context` holds if the
    /// node is scheduled now.
    pub fn current_dotted(&self, node: usize) -> Vec<usize> {
        self.flowchart
            .dotted_incoming(node)
            .iter()
            .filter_map(|&c| self.flowchart.connector_source(c))
            .filter_map(|parent| self.nodes[parent].latest_delivered)
            .collect()
    }

    /// The input context a node run with these inputs sees.
    pub fn build_context(
        &self,
        node: usize,
        execution_index: u32,
        consumed: &[Token],
        dotted: &[usize],
    ) -> Value {
        let node_doc = self.flowchart.node_at(node);
        let mut upstream = Map::new();
        let mut latest: Option<&Token> = None;
        for token in consumed {
            let Some(from) = self.node_runs.get(token.from) else {
                continue;
            };
            upstream.insert(
                self.node_id(from.node).to_owned(),
                json!({
                    "output": from.output.clone().unwrap_or(Value::Null),
                    "node_run_id": from.id,
                    "status": from.status(),
                }),
            );
            if latest.is_none_or(|l| token.seq > l.seq) {
                latest = Some(token);
            }
        }
        let mut context = Map::new();
        for &parent in dotted {
            let Some(from) = self.node_runs.get(parent) else {
                continue;
            };
            context.insert(
                self.node_id(from.node).to_owned(),
                json!({ "output": from.output.clone().unwrap_or(Value::Null), "node_run_id": from.id }),
            );
        }
        let mut ctx = Map::new();
        ctx.insert("inputs".into(), self.inputs.clone());
        ctx.insert("upstream".into(), Value::Object(upstream));
        if let Some(from) = latest.and_then(|t| self.node_runs.get(t.from)) {
            ctx.insert(
                "latest_upstream".into(),
                json!({
                    "node_id": self.node_id(from.node),
                    "output": from.output.clone().unwrap_or(Value::Null),
                    "node_run_id": from.id,
                }),
            );
        }
        ctx.insert("context".into(), Value::Object(context));
        ctx.insert(
            "run".into(),
            json!({
                "id": self.run_id,
                "flowchart": self.flowchart_ref.name,
                "version": self.flowchart_ref.version,
            }),
        );
        ctx.insert(
            "node".into(),
            json!({
                "id": node_doc.map(|n| n.id.as_str()),
                "type": node_doc.map(|n| n.node_type.as_str()),
                "execution_index": execution_index,
            }),
        );
        Value::Object(ctx)
    }

    /// Applies one event. Events must come in stream order.
    pub fn evolve(&mut self, event: &DomainEvent) -> Result<(), StateError> {
        match event {
            DomainEvent::RunStarted(_) => {
                return Err(inconsistent("RunStarted", "the run has already started"));
            }
            DomainEvent::RunCompleted(e) => {
                self.status = RunStatus::Completed;
                self.output = e.output.clone();
            }
            DomainEvent::RunFailed(e) => {
                self.status = RunStatus::Failed;
                self.failure = Some(e.error.clone());
            }
            DomainEvent::RunPaused(_) => self.status = RunStatus::Paused,
            DomainEvent::RunResumed(_) => {
                self.status = RunStatus::Running;
                self.failure = None;
            }
            DomainEvent::RunCancelRequested(e) => {
                self.status = RunStatus::Canceling { force: e.force };
            }
            DomainEvent::RunCanceled(_) => self.status = RunStatus::Canceled,
            // Who drives the run changes nothing about what it is.
            DomainEvent::RunTakenOver(_) => {}
            DomainEvent::RunForked(_) => {
                return Err(inconsistent("RunForked", "the run has already started"));
            }
            // A link to a fork: nothing the decider looks at changes (a finished run stays
            // finished); the link is kept for `runs show`.
            DomainEvent::RunForkedTo(e) => self.forks.push((e.fork_run_id, e.from_node.clone())),
            DomainEvent::ChildRunStarted(e) => {
                let i = self.run_index("ChildRunStarted", &e.node_run_id)?;
                self.node_runs[i].child_run = Some(e.child_run_id);
            }
            DomainEvent::NodeScheduled(e) => self.scheduled(e)?,
            DomainEvent::NodeDispatched(e) => {
                // The publish ack may come back after a fast executor's result: then it is
                // recorded after the end, for its stream sequence, and arms nothing.
                let i = self.run_index("NodeDispatched", &e.node_run_id)?;
                self.node_runs[i].dispatched = true;
                if let Some(at) = e.dispatch_deadline
                    && self.node_runs[i].is_active()
                {
                    self.set_deadline(i, at);
                }
            }
            DomainEvent::NodeStarted(e) => {
                let i = self.active_index("NodeStarted", &e.node_run_id)?;
                if let Some(at) = self.node_runs[i].deadline.take() {
                    self.timers.remove(&Timer {
                        at,
                        kind: TimerKind::NodeDeadline(i),
                    });
                }
                let nr = &mut self.node_runs[i];
                nr.phase = Phase::Running;
                nr.executor = Some(e.executor.clone());
                nr.deadline = e.deadline;
                // A remote executor's calls may be recorded ahead of its NodeStarted.
                if nr.agent_calls.iter().any(made_workspace) {
                    self.workspace_holder
                        .get_or_insert_with(|| e.executor.clone());
                }
                if let Some(at) = e.deadline {
                    self.timers.insert(Timer {
                        at,
                        kind: TimerKind::NodeDeadline(i),
                    });
                }
            }
            DomainEvent::NodeSucceeded(e) => {
                let status = if e.warnings.is_empty() && !e.fallback_used {
                    NodeRunStatus::Succeeded
                } else {
                    NodeRunStatus::SuccessWithWarning
                };
                let i = self.end("NodeSucceeded", &e.node_run_id, status)?;
                self.node_runs[i].output = Some(e.output.clone());
                self.node_runs[i].warnings = e.warnings.clone();
                self.deliver(i);
            }
            DomainEvent::NodeSkipped(e) => {
                let i = self.end("NodeSkipped", &e.node_run_id, NodeRunStatus::Skipped)?;
                self.node_runs[i].output = Some(e.output.clone());
                self.deliver(i);
            }
            DomainEvent::NodeFailed(e) => {
                let i = self.end("NodeFailed", &e.node_run_id, NodeRunStatus::Failed)?;
                self.node_runs[i].error = Some(e.error.clone());
            }
            DomainEvent::NodeTimedOut(e) => {
                let i = self.end("NodeTimedOut", &e.node_run_id, NodeRunStatus::TimedOut)?;
                // Work that had to run on the run's workspace holder was routed to it: nobody
                // taking it means the holder is gone.
                let holder = match e.phase {
                    events::TimeoutPhase::Dispatch => {
                        self.workspace_holder_for(self.node_runs[i].node)
                    }
                    events::TimeoutPhase::Execution => None,
                };
                let (code, message) = match (e.phase, &holder) {
                    (events::TimeoutPhase::Dispatch, Some(holder)) => (
                        "workspace_holder_unavailable",
                        format!(
                            "executor `{holder}`, which holds the run's workspace, did not take \
                             the work within {} ms",
                            e.timeout_ms
                        ),
                    ),
                    (events::TimeoutPhase::Dispatch, None) => (
                        "dispatch_timeout",
                        format!("no executor took the work within {} ms", e.timeout_ms),
                    ),
                    (events::TimeoutPhase::Execution, _) => (
                        "execution_timeout",
                        format!("no result within {} ms", e.timeout_ms),
                    ),
                };
                self.node_runs[i].error = Some(ErrorInfo {
                    code: code.into(),
                    message,
                    retryable: true,
                    details: holder.map(|holder| serde_json::json!({ "holder": holder })),
                });
            }
            DomainEvent::NodeCanceled(e) => {
                self.end("NodeCanceled", &e.node_run_id, NodeRunStatus::Canceled)?;
            }
            DomainEvent::NodeRetryScheduled(e) => {
                let i = self.run_index("NodeRetryScheduled", &e.node_run_id)?;
                if self.node_runs[i].is_active() {
                    return Err(inconsistent(
                        "NodeRetryScheduled",
                        "the node run has not ended",
                    ));
                }
                let node = self.node_runs[i].node;
                if let Some(old) = self.nodes[node].retry_pending.replace(i) {
                    self.timers.retain(|t| t.kind != TimerKind::Retry(old));
                }
                self.timers.insert(Timer {
                    at: e.retry_at,
                    kind: TimerKind::Retry(i),
                });
            }
            DomainEvent::NodeRewound(e) => self.rewound(e)?,
            DomainEvent::NodeResultIgnored(e) => {
                let i = self.run_index("NodeResultIgnored", &e.node_run_id)?;
                self.node_runs[i].late_result_recorded = true;
            }
            DomainEvent::ToolCalled(e) => {
                // Only agent-loop calls are kept, and only while the node run may run again.
                if e.agent.is_some()
                    && let Some(i) = self.node_run_index(&e.node_run_id)
                    && self.node_runs[i].is_active()
                {
                    if made_workspace(e)
                        && let Some(executor) = &self.node_runs[i].executor
                    {
                        self.workspace_holder
                            .get_or_insert_with(|| executor.clone());
                    }
                    self.node_runs[i].agent_calls.push(e.clone());
                }
            }
            // The flowchart registry and the API's idempotency keys have streams of their own.
            DomainEvent::FlowchartVersionCreated(_) | DomainEvent::IdempotencyKeyRecorded(_) => {
                return Err(inconsistent(
                    event.event_type().as_str(),
                    "not an event of a run stream",
                ));
            }
            // The model registry has a stream per model.
            DomainEvent::ModelCreated(_)
            | DomainEvent::ModelUpdated(_)
            | DomainEvent::ModelDeleted(_)
            | DomainEvent::RagCollectionCreated(_)
            | DomainEvent::RagCollectionDeleted(_)
            | DomainEvent::RagIndexStarted(_)
            | DomainEvent::RagIndexCompleted(_)
            | DomainEvent::RagIndexFailed(_) => {
                return Err(inconsistent(
                    event.event_type().as_str(),
                    "not an event of a run stream",
                ));
            }
            // Tool state (memory, plans, milestones) lives in the tools' own streams.
            DomainEvent::MemoryEntryCreated(_)
            | DomainEvent::MemoryEntryUpdated(_)
            | DomainEvent::MemoryEntryDeleted(_)
            | DomainEvent::PlanCreated(_)
            | DomainEvent::PlanUpdated(_)
            | DomainEvent::PlanDeleted(_)
            | DomainEvent::PlanStagesReordered(_)
            | DomainEvent::PlanStageStatusSet(_)
            | DomainEvent::MilestoneCreated(_)
            | DomainEvent::MilestoneUpdated(_)
            | DomainEvent::MilestoneDeleted(_)
            | DomainEvent::MilestoneStatusSet(_)
            | DomainEvent::MilestoneEvidenceAttached(_)
            | DomainEvent::DecisionCreated(_)
            | DomainEvent::DecisionOptionsScored(_)
            | DomainEvent::DecisionOutcomeRecorded(_) => {
                return Err(inconsistent(
                    event.event_type().as_str(),
                    "not an event of a run stream",
                ));
            }
            DomainEvent::RoutingDecided(e) => {
                let i = self.active_index("RoutingDecided", &e.node_run_id)?;
                let mut routed = Vec::with_capacity(e.matched_connectors.len());
                for id in &e.matched_connectors {
                    let c = self.flowchart.connector_index(id).ok_or_else(|| {
                        inconsistent("RoutingDecided", format!("unknown connector `{id}`"))
                    })?;
                    routed.push(c);
                }
                self.node_runs[i].routed = Some(routed);
            }
            DomainEvent::ArtifactPersisted(e) => {
                let i = self.run_index("ArtifactPersisted", &e.node_run_id)?;
                let nr = &mut self.node_runs[i];
                if nr.is_active() {
                    return Err(inconsistent(
                        "ArtifactPersisted",
                        "the node run has not ended",
                    ));
                }
                if nr.artifact.replace(e.artifact_id).is_some() {
                    return Err(inconsistent(
                        "ArtifactPersisted",
                        "the node run already has its artifact",
                    ));
                }
            }
        }
        Ok(())
    }

    fn run_index(&self, event: &'static str, id: &NodeRunId) -> Result<usize, StateError> {
        self.node_run_index(id)
            .ok_or_else(|| inconsistent(event, format!("unknown node run {id}")))
    }

    fn active_index(&self, event: &'static str, id: &NodeRunId) -> Result<usize, StateError> {
        let i = self.run_index(event, id)?;
        if !self.node_runs[i].is_active() {
            return Err(inconsistent(
                event,
                format!("node run {id} has already ended"),
            ));
        }
        Ok(i)
    }

    fn scheduled(&mut self, e: &events::NodeScheduled) -> Result<(), StateError> {
        const EVENT: &str = "NodeScheduled";
        if self.index.contains_key(&e.node_run_id) {
            return Err(inconsistent(
                EVENT,
                format!("node run {} already exists", e.node_run_id),
            ));
        }
        let node = self
            .flowchart
            .node_index(&e.node_id)
            .ok_or_else(|| inconsistent(EVENT, format!("unknown node `{}`", e.node_id)))?;
        let (consumed, dotted, retry_of) = match &e.retry_of {
            Some(prev) => {
                let p = self.run_index(EVENT, prev)?;
                if self.nodes[node].retry_pending == Some(p) {
                    self.nodes[node].retry_pending = None;
                    self.timers.retain(|t| t.kind != TimerKind::Retry(p));
                }
                let prev = &self.node_runs[p];
                (prev.consumed.clone(), prev.dotted.clone(), Some(p))
            }
            None => {
                let rerun = self.reruns.iter().position(|r| {
                    r.node == node
                        && r.consumed.len() == e.consumed_tokens.len()
                        && r.consumed.iter().zip(&e.consumed_tokens).all(|(k, t)| {
                            self.node_runs
                                .get(k.from)
                                .is_some_and(|f| f.id == t.from_node_run_id)
                        })
                });
                let consumed = match rerun.and_then(|pos| self.reruns.remove(pos)) {
                    Some(rerun) => rerun.consumed,
                    None => self.take_tokens(node, &e.consumed_tokens)?,
                };
                let dotted = self.current_dotted(node);
                self.nodes[node].executions += 1;
                (consumed, dotted, None)
            }
        };
        let i = self.node_runs.len();
        let track = &mut self.nodes[node];
        let ordinal = u32::try_from(track.runs.len()).unwrap_or(u32::MAX);
        track.runs.push(i);
        self.node_runs.push(NodeRun {
            id: e.node_run_id,
            node,
            node_type: e.node_type,
            attempt: e.attempt,
            execution_index: e.execution_index,
            ordinal,
            phase: Phase::Scheduled,
            input_context_hash: e.input_context_hash,
            consumed,
            dotted,
            retry_of,
            deadline: None,
            executor: None,
            dispatched: false,
            late_result_recorded: false,
            output: None,
            error: None,
            warnings: Vec::new(),
            routed: None,
            artifact: None,
            invalidated: false,
            child_run: None,
            ended_seq: 0,
            agent_calls: Vec::new(),
        });
        self.index.insert(e.node_run_id, i);
        self.active.insert(i);
        Ok(())
    }

    /// Removes the consumed tokens from the pending queues; each must be pending.
    fn take_tokens(
        &mut self,
        node: usize,
        tokens: &[ConsumedToken],
    ) -> Result<Vec<Token>, StateError> {
        let mut taken = Vec::with_capacity(tokens.len());
        for t in tokens {
            let from = self.run_index("NodeScheduled", &t.from_node_run_id)?;
            let connector = self
                .flowchart
                .connector_index(&t.connector_id)
                .ok_or_else(|| {
                    inconsistent(
                        "NodeScheduled",
                        format!("unknown connector `{}`", t.connector_id),
                    )
                })?;
            let slot = self
                .flowchart
                .solid_incoming(node)
                .iter()
                .position(|&c| c == connector);
            let pending = slot.and_then(|s| self.nodes[node].pending.get_mut(s));
            let found = pending.and_then(|q| {
                let pos = q.iter().position(|k| k.from == from)?;
                q.remove(pos)
            });
            let token = found.ok_or_else(|| {
                inconsistent(
                    "NodeScheduled",
                    format!(
                        "no pending token on `{}` from {}",
                        t.connector_id, t.from_node_run_id
                    ),
                )
            })?;
            taken.push(token);
        }
        if self.nodes[node].pending.iter().all(VecDeque::is_empty) {
            self.candidates.remove(&node);
        }
        Ok(taken)
    }

    /// Replaces the node run's deadline timer.
    fn set_deadline(&mut self, i: usize, at: Timestamp) {
        if let Some(old) = self.node_runs[i].deadline.replace(at) {
            self.timers.remove(&Timer {
                at: old,
                kind: TimerKind::NodeDeadline(i),
            });
        }
        self.timers.insert(Timer {
            at,
            kind: TimerKind::NodeDeadline(i),
        });
    }

    fn end(
        &mut self,
        event: &'static str,
        id: &NodeRunId,
        status: NodeRunStatus,
    ) -> Result<usize, StateError> {
        let i = self.active_index(event, id)?;
        self.end_seq += 1;
        let nr = &mut self.node_runs[i];
        nr.phase = Phase::Ended(status);
        nr.ended_seq = self.end_seq;
        // An ended node run never runs again: its recorded calls are the ledger's business.
        nr.agent_calls = Vec::new();
        if let Some(at) = nr.deadline {
            self.timers.remove(&Timer {
                at,
                kind: TimerKind::NodeDeadline(i),
            });
        }
        self.active.remove(&i);
        Ok(i)
    }

    /// A node run's output counts: record it and hand tokens to the solid children.
    fn deliver(&mut self, i: usize) {
        let node = self.node_runs[i].node;
        self.nodes[node].latest_delivered = Some(i);
        let outgoing: Vec<usize> = match &self.node_runs[i].routed {
            Some(routed) => routed.clone(),
            None => self.flowchart.solid_outgoing(node).to_vec(),
        };
        for connector in outgoing {
            let Some(target) = self.flowchart.connector_target(connector) else {
                continue;
            };
            let slot = self
                .flowchart
                .solid_incoming(target)
                .iter()
                .position(|&c| c == connector);
            let Some(queue) = slot.and_then(|s| self.nodes[target].pending.get_mut(s)) else {
                continue;
            };
            self.token_seq += 1;
            queue.push_back(Token {
                seq: self.token_seq,
                connector,
                from: i,
            });
            self.candidates.insert(target);
        }
    }

    fn rewound(&mut self, e: &events::NodeRewound) -> Result<(), StateError> {
        const EVENT: &str = "NodeRewound";
        let node = self
            .flowchart
            .node_index(&e.node_id)
            .ok_or_else(|| inconsistent(EVENT, format!("unknown node `{}`", e.node_id)))?;
        let target = self
            .latest_run_of(node)
            .ok_or_else(|| inconsistent(EVENT, format!("node `{}` has not run", e.node_id)))?;
        let consumed = self.node_runs[target].consumed.clone();
        let mut touched = BTreeSet::new();
        for id in &e.invalidated_node_run_ids {
            let i = self.run_index(EVENT, id)?;
            if self.node_runs[i].is_active() {
                return Err(inconsistent(
                    EVENT,
                    format!("node run {id} is still active"),
                ));
            }
            self.node_runs[i].invalidated = true;
            touched.insert(self.node_runs[i].node);
        }
        for &n in &touched {
            if let Some(r) = self.nodes[n].retry_pending.take() {
                self.timers.retain(|t| t.kind != TimerKind::Retry(r));
            }
            let latest = self.nodes[n]
                .runs
                .iter()
                .rev()
                .copied()
                .find(|&i| self.node_runs[i].delivered());
            self.nodes[n].latest_delivered = latest;
        }
        // Tokens produced by invalidated runs no longer count.
        let runs = &self.node_runs;
        for (n, track) in self.nodes.iter_mut().enumerate() {
            for queue in &mut track.pending {
                queue.retain(|t| !runs[t.from].invalidated);
            }
            if track.pending.iter().all(VecDeque::is_empty) {
                self.candidates.remove(&n);
            }
        }
        self.reruns.push_back(Rerun { node, consumed });
        Ok(())
    }

    /// Nodes reachable from `node` over solid connectors, `node` included.
    pub fn downstream(&self, node: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([node]);
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            for &c in self.flowchart.solid_outgoing(n) {
                if let Some(t) = self.flowchart.connector_target(c)
                    && seen.insert(t)
                {
                    stack.push(t);
                }
            }
        }
        seen
    }

    /// How many solid parents of `node` have a pending token, and how many it needs (for
    /// `all`: the parents outside loops).
    pub fn fan_in_progress(&self, node: usize) -> (usize, usize) {
        let Some(track) = self.nodes.get(node) else {
            return (0, 0);
        };
        let incoming = self.flowchart.solid_incoming(node);
        let all = self
            .flowchart
            .node_at(node)
            .is_some_and(|n| n.fan_in_or_default() == flowchart::FanIn::All);
        let counted = |c: usize| !all || !self.flowchart.is_loop_back(c);
        let have = incoming
            .iter()
            .zip(&track.pending)
            .filter(|(c, q)| counted(**c) && !q.is_empty())
            .count();
        let need = if all {
            incoming.iter().filter(|&&c| counted(c)).count()
        } else {
            self.flowchart.fan_in_threshold(node).unwrap_or(0)
        };
        (have, need)
    }
}
