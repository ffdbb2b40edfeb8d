//! The decider: given a run's state and a command, the events that follow.
//!
//! Every event is applied to the state with [`RunState::evolve`] the moment it is decided, so
//! later decisions of the same step see it (a start node finishing makes its children ready,
//! and so on) and the state after a step is exactly what replaying its events gives. Clock and
//! id generation come from [`Env`], so a replay with recorded ids reproduces the same events.
//!
//! [`decide`] works on the caller's state in place, which keeps a step's cost independent of the
//! run's length. When the events then fail to append, the caller must rebuild the state from the
//! stream ([`RunState::replay`]); [`decide_pure`] is the copy-on-call form for tests and replay.

use std::sync::Arc;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    self, ArtifactPersisted, ConsumedToken, Control, DomainEvent, ErrorInfo, FlowchartRef,
    NodeCanceled, NodeFailed, NodeResultIgnored, NodeRetryScheduled, NodeRewound, NodeRunStatus,
    NodeScheduled, NodeSkipped, NodeStarted, NodeSucceeded, NodeTimedOut, ParentRun,
    RoutingDecided, RunCancelRequested, RunCanceled, RunCompleted, RunFailed, RunPaused,
    RunResumed, RunStarted, TimeoutPhase, ToolCalled, Warning,
};
use runledger_contracts::flowchart::{FanIn, Flowchart, NodeType};
use runledger_contracts::ids::{ArtifactId, CorrelationId, NodeRunId, RequestId, RunId};
use runledger_contracts::storable;
use runledger_contracts::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::state::{Phase, RunState, RunStatus, StateError, TimerKind, Token};
use crate::unstorable;

/// The contract version of every artifact payload this engine writes.
pub const ARTIFACT_CONTRACT_VERSION: u32 = 1;

/// Backoff never waits longer than this, whatever the multiplier says.
pub const MAX_BACKOFF_MS: u64 = 24 * 60 * 60 * 1000;

/// The decider's view of the outside world.
pub trait Env {
    fn now(&self) -> Timestamp;
    fn node_run_id(&mut self) -> NodeRunId;
    fn artifact_id(&mut self) -> ArtifactId;
}

/// The wall clock and fresh UUIDv7 ids.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEnv;

impl Env for SystemEnv {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
    fn node_run_id(&mut self) -> NodeRunId {
        NodeRunId::new_v7()
    }
    fn artifact_id(&mut self) -> ArtifactId {
        ArtifactId::new_v7()
    }
}

/// The wall clock read once, when a step begins, and fresh UUIDv7 ids. Every time the step
/// derives (deadlines, retry times, the decision record) comes from that one reading, and the
/// engine records it as the step's `recorded_at`: so the recorded time is the decider's clock
/// input, and a replay feeds it back ([`crate::replay`]).
#[derive(Debug, Clone, Copy)]
pub struct StepEnv {
    now: Timestamp,
}

impl StepEnv {
    /// Reads the wall clock.
    pub fn begin() -> Self {
        Self {
            now: Timestamp::now(),
        }
    }
}

impl Env for StepEnv {
    fn now(&self) -> Timestamp {
        self.now
    }
    fn node_run_id(&mut self) -> NodeRunId {
        NodeRunId::new_v7()
    }
    fn artifact_id(&mut self) -> ArtifactId {
        ArtifactId::new_v7()
    }
}

/// The request a step is decided for; artifacts carry its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub request_id: RequestId,
    pub correlation_id: CorrelationId,
}

/// Engine settings that shape events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Recorded as `NodeStarted.executor` for work nodes (`inprocess` for the in-process pool).
    pub executor: String,
    /// Set when `task` and `rag` node runs go to remote executors (NATS): they stay scheduled
    /// until the dispatch is published (`NodeDispatched`, which arms the dispatch timeout) and
    /// an executor takes them (`NodeStarted`, which arms the execution timeout).
    pub remote: Option<RemoteDispatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteDispatch {
    /// How long a published dispatch may wait for an executor to take it.
    pub dispatch_timeout_ms: u64,
}

impl Settings {
    /// Whether node runs of this type leave the engine for a remote executor.
    pub fn dispatches_remotely(&self, node_type: NodeType) -> bool {
        self.remote.is_some() && crate::executor::remote_work(node_type)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            executor: crate::executor::INPROCESS.to_owned(),
            remote: None,
        }
    }
}

/// What happened to a node run, as an executor reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResult {
    pub node_run_id: NodeRunId,
    /// The attempt the executor ran; a result for another attempt is ignored.
    pub attempt: u32,
    pub outcome: NodeOutcome,
    /// Tool and provider calls the node run made, recorded before its end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCalled>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NodeOutcome {
    Succeeded {
        output: Value,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<Warning>,
        #[serde(default)]
        fallback_used: bool,
        /// An agent node's lineage (turns, tools used, prompt and request digests), recorded
        /// in its artifact's payload as `agent`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<Value>,
    },
    Failed(ErrorInfo),
}

/// An operator action.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlAction {
    Pause,
    Resume,
    Cancel {
        force: bool,
    },
    /// Re-run a failed or timed-out node with its recorded inputs.
    RetryNode {
        node: String,
    },
    /// End the node's current (or failed) node run with this output; downstream continues.
    SkipNode {
        node: String,
        output: Value,
    },
    /// Re-run the node and everything downstream of it.
    RewindNode {
        node: String,
    },
}

impl ControlAction {
    pub fn name(&self) -> &'static str {
        match self {
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Cancel { force: false } => "cancel",
            ControlAction::Cancel { force: true } => "cancel --force",
            ControlAction::RetryNode { .. } => "retry",
            ControlAction::SkipNode { .. } => "skip",
            ControlAction::RewindNode { .. } => "rewind",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Fire due timers and schedule whatever can run now.
    Settle,
    RecordResult(NodeResult),
    /// One agent-loop call of a node run, reported as it happened.
    RecordToolCall(Box<ToolCalled>),
    /// The engine started the child run of a `flowchart` node.
    ChildStarted {
        node_run_id: NodeRunId,
        child_run_id: RunId,
    },
    /// A remote node run's work was published to its executor queue.
    Dispatched {
        node_run_id: NodeRunId,
        attempt: u32,
        executor_class: String,
        message_id: String,
        stream_sequence: Option<u64>,
    },
    /// A remote executor took a node run.
    Started {
        node_run_id: NodeRunId,
        attempt: u32,
        executor: String,
    },
    Control {
        action: ControlAction,
        control: Control,
    },
    /// The ledger refused a step of the run for good (what the step would record can never be
    /// stored): the run fails with `error` rather than try the step again.
    FailRun {
        error: ErrorInfo,
    },
}

/// A run to start.
#[derive(Debug, Clone)]
pub struct StartRun {
    pub run_id: RunId,
    pub flowchart: Arc<Flowchart>,
    pub version: Option<u32>,
    pub inputs: Value,
    pub parent: Option<ParentRun>,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecideError {
    /// The command does not apply to the run as it is now; nothing was decided.
    #[error("{message}")]
    NotApplicable { code: &'static str, message: String },
    #[error("{field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    #[error("run has no node run {0}")]
    UnknownNodeRun(NodeRunId),
    /// A bug or a foreign stream: the state is no longer trustworthy.
    #[error(transparent)]
    State(#[from] StateError),
}

impl DecideError {
    pub fn code(&self) -> &'static str {
        match self {
            DecideError::NotApplicable { code, .. } => code,
            DecideError::InvalidInput { .. } => "invalid_input",
            DecideError::UnknownNodeRun(_) => "unknown_node_run",
            DecideError::State(_) => "state_inconsistent",
        }
    }
}

fn not_applicable(code: &'static str, message: impl Into<String>) -> DecideError {
    DecideError::NotApplicable {
        code,
        message: message.into(),
    }
}

/// Starts a run: `RunStarted`, then everything that can happen at once (the start node runs,
/// its children are scheduled and handed to executors).
pub fn start_run(
    start: StartRun,
    env: &mut impl Env,
    cause: &Cause,
    settings: &Settings,
) -> Result<(RunState, Vec<DomainEvent>), DecideError> {
    storable::storable_bytes(&start.inputs).map_err(|e| DecideError::InvalidInput {
        field: "inputs",
        message: e.to_string(),
    })?;
    // The workspace is made from the run's inputs: a start that cannot fill it is refused now,
    // not at the run's first workspace call.
    if let Some(workspace) = &start.flowchart.doc().workspace {
        workspace
            .resolve(&start.inputs)
            .map_err(|e| DecideError::InvalidInput {
                field: "inputs",
                message: e.to_string(),
            })?;
    }
    let definition =
        serde_json::to_value(start.flowchart.doc()).map_err(|e| DecideError::InvalidInput {
            field: "definition",
            message: e.to_string(),
        })?;
    let definition_hash = hash_json(&definition).map_err(|e| DecideError::InvalidInput {
        field: "definition",
        message: e.to_string(),
    })?;
    let limits = start.flowchart.doc().limits.as_ref();
    let deadline = limits
        .and_then(|l| l.max_runtime_s)
        .map(|s| add_ms(env.now(), s.saturating_mul(1000)));
    let started = RunStarted {
        run_id: start.run_id,
        flowchart: FlowchartRef {
            name: start.flowchart.name().to_owned(),
            version: start.version,
            definition_hash,
        },
        definition,
        inputs: start.inputs,
        parent: start.parent,
        deadline,
        actor: start.actor,
    };
    let mut state = RunState::new(&started, start.flowchart);
    let mut step = Step {
        state: &mut state,
        env,
        cause,
        settings,
        events: vec![started.into()],
        contexts: Vec::new(),
    };
    let root = step.state.flowchart.start();
    step.schedule(root, Vec::new(), None)?;
    step.settle()?;
    let events = step.events;
    Ok((state, events))
}

/// Starts a fork (`RunForked`, planned by [`crate::fork::plan_fork`]) with the run deadline
/// from now; with an operator output, the fork node's re-run is scheduled and skipped with it.
/// Nothing else: the fork node (or what follows the skip) is scheduled by the first settle
/// step of whichever engine drives the fork, with that engine's settings (in-process or NATS
/// dispatch), as after any recovery. Replay calls this with the recorded `RunForked`: the kept
/// results are its input, the deadline and the skip are decided again.
pub fn fork_run(
    mut forked: events::RunForked,
    env: &mut impl Env,
    cause: &Cause,
    settings: &Settings,
) -> Result<(RunState, Vec<DomainEvent>), DecideError> {
    if let Some(output) = &forked.output {
        storable::storable_bytes(output).map_err(|e| DecideError::InvalidInput {
            field: "output",
            message: e.to_string(),
        })?;
    }
    let flowchart_limits = forked
        .definition
        .get("limits")
        .and_then(|l| l.get("max_runtime_s"))
        .and_then(Value::as_u64);
    forked.deadline = flowchart_limits.map(|s| add_ms(env.now(), s.saturating_mul(1000)));
    let mut state = RunState::from_forked(&forked)?;
    let output = forked.output.clone();
    let control = forked.control.clone();
    let from_node = forked.from_node.clone();
    let mut step = Step {
        state: &mut state,
        env,
        cause,
        settings,
        events: vec![forked.into()],
        contexts: Vec::new(),
    };
    if let Some(output) = output {
        step.fork_skip(&from_node, output, control)?;
    }
    let events = step.events;
    Ok((state, events))
}

/// Decides `command` against `state`, applying each decided event to it.
///
/// On `Err` nothing was decided when the error is `NotApplicable`, `InvalidInput` or
/// `UnknownNodeRun`; after `State` the state must be rebuilt.
pub fn decide(
    state: &mut RunState,
    command: Command,
    env: &mut impl Env,
    cause: &Cause,
    settings: &Settings,
) -> Result<Vec<DomainEvent>, DecideError> {
    decide_step(state, command, env, cause, settings).map(|decided| decided.events)
}

/// What one [`decide_step`] decided.
#[derive(Debug, Default)]
pub struct Decided {
    pub events: Vec<DomainEvent>,
    /// The input context of each node run this step scheduled for an executor, by node run
    /// index. It is built anyway for `NodeScheduled.input_context_hash`; the engine hands it
    /// to the executor instead of building it a second time ([`RunState::work_with`]).
    ///
    /// [`RunState::work_with`]: crate::state::RunState::work_with
    pub contexts: Vec<(usize, Value)>,
}

/// [`decide`], keeping the input contexts of the node runs it scheduled for executors.
pub fn decide_step(
    state: &mut RunState,
    command: Command,
    env: &mut impl Env,
    cause: &Cause,
    settings: &Settings,
) -> Result<Decided, DecideError> {
    let mut step = Step {
        state,
        env,
        cause,
        settings,
        events: Vec::new(),
        contexts: Vec::new(),
    };
    match command {
        Command::Settle => step.settle()?,
        Command::RecordResult(result) => step.record_result(result)?,
        Command::RecordToolCall(call) => step.record_tool_call(*call)?,
        Command::ChildStarted {
            node_run_id,
            child_run_id,
        } => step.child_started(node_run_id, child_run_id)?,
        Command::Control { action, control } => step.control(action, control)?,
        Command::FailRun { error } => {
            if !step.state.status.is_terminal() {
                step.fail_run(error, None)?;
            }
        }
        Command::Dispatched {
            node_run_id,
            attempt,
            executor_class,
            message_id,
            stream_sequence,
        } => step.dispatched(
            node_run_id,
            attempt,
            executor_class,
            message_id,
            stream_sequence,
        )?,
        Command::Started {
            node_run_id,
            attempt,
            executor,
        } => step.started(node_run_id, attempt, executor)?,
    }
    Ok(Decided {
        events: step.events,
        contexts: step.contexts,
    })
}

/// [`decide`] on a copy: the state is left as it was. Costs a copy of the state.
pub fn decide_pure(
    state: &RunState,
    command: Command,
    env: &mut impl Env,
    cause: &Cause,
    settings: &Settings,
) -> Result<Vec<DomainEvent>, DecideError> {
    let mut scratch = state.clone();
    decide(&mut scratch, command, env, cause, settings)
}

/// Whether the node run ended with the result an executor sent (so a second copy of that
/// result is a redelivery), rather than by a timeout, a cancel or an operator.
fn ended_by_its_result(nr: &crate::state::NodeRun) -> bool {
    match nr.status() {
        Some(NodeRunStatus::Succeeded | NodeRunStatus::SuccessWithWarning) => true,
        Some(NodeRunStatus::Failed) => nr
            .error
            .as_ref()
            .is_some_and(|e| !ENGINE_FAILURE_CODES.contains(&e.code.as_str())),
        _ => false,
    }
}

/// Failure codes the engine itself gives a node run (no executor result involved).
const ENGINE_FAILURE_CODES: &[&str] = &[
    "dispatch_timeout",
    "execution_timeout",
    "subflow_unavailable",
];

/// `at` plus `ms` milliseconds, saturating at the last instant a timestamp can hold: a deadline
/// too far away to represent is "never", not "now".
pub fn add_ms(at: Timestamp, ms: u64) -> Timestamp {
    let micros = i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX);
    Timestamp::from_unix_micros(at.unix_micros().saturating_add(micros)).unwrap_or(Timestamp::MAX)
}

fn hash_json(value: &Value) -> Result<Digest, canonical::CanonicalError> {
    canonical::to_canonical_vec(value).map(|bytes| Digest::of(&bytes))
}

/// One decision step: emits events and applies them as it goes.
struct Step<'a, E: Env> {
    state: &'a mut RunState,
    env: &'a mut E,
    cause: &'a Cause,
    settings: &'a Settings,
    events: Vec<DomainEvent>,
    /// Input contexts of node runs scheduled for executors ([`Decided::contexts`]).
    contexts: Vec<(usize, Value)>,
}

impl<E: Env> Step<'_, E> {
    fn emit(&mut self, event: impl Into<DomainEvent>) -> Result<(), DecideError> {
        let event = event.into();
        self.state.evolve(&event)?;
        self.events.push(event);
        Ok(())
    }

    fn run_id(&self) -> RunId {
        self.state.run_id
    }

    fn node_id(&self, node: usize) -> String {
        self.state.node_id(node).to_owned()
    }

    fn node_index(&self, id: &str) -> Result<usize, DecideError> {
        self.state.flowchart.node_index(id).ok_or_else(|| {
            not_applicable("unknown_node", format!("the flowchart has no node `{id}`"))
        })
    }

    // ---- scheduling ----------------------------------------------------------------------

    /// Fires due timers, then schedules retries, re-runs and ready nodes until nothing more can
    /// happen now.
    fn settle(&mut self) -> Result<(), DecideError> {
        loop {
            if self.state.status.is_terminal() {
                return Ok(());
            }
            let now = self.env.now();
            let mut progressed = false;
            let due: Vec<_> = self
                .state
                .timers
                .iter()
                .take_while(|t| t.at <= now)
                .copied()
                .collect();
            for timer in due {
                if self.state.status.is_terminal() {
                    return Ok(());
                }
                if !self.state.timers.contains(&timer) {
                    continue;
                }
                match timer.kind {
                    TimerKind::RunDeadline => {
                        let max = self
                            .state
                            .flowchart
                            .doc()
                            .limits
                            .as_ref()
                            .and_then(|l| l.max_runtime_s);
                        let error = ErrorInfo {
                            code: "max_runtime_exceeded".into(),
                            message: format!(
                                "the run exceeded limits.max_runtime_s ({}s)",
                                max.unwrap_or_default()
                            ),
                            retryable: false,
                            details: None,
                        };
                        self.fail_run(error, None)?;
                        return Ok(());
                    }
                    TimerKind::NodeDeadline(i) => {
                        self.time_out(i)?;
                        progressed = true;
                    }
                    TimerKind::Retry(i) => {
                        if self.state.status == RunStatus::Running && self.has_capacity() {
                            self.retry(i)?;
                            progressed = true;
                        }
                    }
                }
            }
            match self.state.status {
                RunStatus::Running => {}
                RunStatus::Canceling { force } => {
                    if self.state.active.is_empty() {
                        self.emit(RunCanceled {
                            run_id: self.run_id(),
                            forced: force,
                        })?;
                    }
                    return Ok(());
                }
                _ => return Ok(()),
            }
            while self.has_capacity() && !self.state.status.is_terminal() {
                let Some(rerun) = self.state.reruns.front().cloned() else {
                    break;
                };
                if self.waits_for_workspace_holder(rerun.node) {
                    break;
                }
                self.schedule(rerun.node, rerun.consumed, None)?;
                progressed = true;
            }
            let candidates: Vec<usize> = self.state.candidates.iter().copied().collect();
            for node in candidates {
                while self.state.status == RunStatus::Running && self.has_capacity() {
                    if self.waits_for_workspace_holder(node) {
                        break;
                    }
                    let Some(tokens) = self.ready_tokens(node) else {
                        break;
                    };
                    self.schedule(node, tokens, None)?;
                    progressed = true;
                }
            }
            if !progressed {
                return self.check_stalled();
            }
        }
    }

    /// Over NATS, every node run that uses the run's workspace goes to the executor holding it.
    /// Until one does (the first such node run made it), a second would go to any executor and
    /// clone a workspace of its own: it waits for the holder, or for the first to end.
    fn waits_for_workspace_holder(&self, node: usize) -> bool {
        let state = &self.state;
        if state.workspace_holder.is_some() || !state.uses_run_workspace(node) {
            return false;
        }
        let remote = state
            .flowchart
            .node_at(node)
            .is_some_and(|n| self.settings.dispatches_remotely(n.node_type));
        remote
            && state
                .active
                .iter()
                .any(|&i| state.uses_run_workspace(state.node_runs[i].node))
    }

    /// Settles when the step made the run's workspace holder known: node runs waiting for it
    /// (see [`Self::waits_for_workspace_holder`]) go out now.
    fn settle_if_holder_found(&mut self, had_holder: bool) -> Result<(), DecideError> {
        if !had_holder && self.state.workspace_holder.is_some() {
            return self.settle();
        }
        Ok(())
    }

    /// Whether another node run may start under `limits.max_parallel_nodes`.
    fn has_capacity(&self) -> bool {
        self.state.has_capacity()
    }

    /// The tokens `node` would consume if its fan-in is satisfied.
    ///
    /// `all`: one token from every solid parent, or a single token that came around a loop
    /// (a loop's next round does not wait for parents outside the loop). `any` / `custom N`:
    /// the earliest pending token of each of the N connectors whose head token is oldest.
    fn ready_tokens(&self, node: usize) -> Option<Vec<Token>> {
        let track = self.state.nodes.get(node)?;
        let flowchart = &self.state.flowchart;
        let incoming = flowchart.solid_incoming(node);
        if flowchart.node_at(node)?.fan_in_or_default() == FanIn::All {
            let heads = incoming
                .iter()
                .zip(&track.pending)
                .map(|(&c, q)| (c, q.front().copied()));
            let looped = heads
                .clone()
                .filter(|(c, _)| flowchart.is_loop_back(*c))
                .filter_map(|(_, t)| t)
                .min_by_key(|t| t.seq);
            if let Some(token) = looped {
                return Some(vec![token]);
            }
            let forward: Vec<Token> = heads
                .filter(|(c, _)| !flowchart.is_loop_back(*c))
                .map(|(_, t)| t)
                .collect::<Option<Vec<Token>>>()?;
            let mut forward = forward;
            forward.sort_by_key(|t| t.seq);
            return (!forward.is_empty()).then_some(forward);
        }
        let threshold = flowchart.fan_in_threshold(node)?;
        let mut heads: Vec<Token> = track
            .pending
            .iter()
            .filter_map(|q| q.front().copied())
            .collect();
        if threshold == 0 || heads.len() < threshold {
            return None;
        }
        heads.sort_by_key(|t| t.seq);
        heads.truncate(threshold);
        Some(heads)
    }

    /// Creates a node run and, for nodes the engine runs itself, runs it.
    fn schedule(
        &mut self,
        node: usize,
        consumed: Vec<Token>,
        retry_of: Option<usize>,
    ) -> Result<(), DecideError> {
        let Some(node_type) = self.state.flowchart.node_at(node).map(|n| n.node_type) else {
            return Err(StateError {
                event: "NodeScheduled",
                message: format!("no node at {node}"),
            }
            .into());
        };
        if let Some(max) = self.state.flowchart.max_node_executions() {
            let next = self.state.node_runs.len() as u64 + 1;
            if next > max {
                let error = ErrorInfo {
                    code: "max_node_executions_exceeded".into(),
                    message: format!(
                        "node `{}` would be node run {next}, but limits.max_node_executions is {max}",
                        self.node_id(node)
                    ),
                    retryable: false,
                    details: None,
                };
                return self.fail_run(error, None);
            }
        }
        let (i, context) = self.emit_scheduled(node, node_type, consumed, retry_of)?;
        let (node_run_id, attempt) = (self.state.node_runs[i].id, self.state.node_runs[i].attempt);
        match node_type {
            NodeType::Start => {
                let output = self.state.inputs.clone();
                self.succeed(i, output, Vec::new(), false)?;
            }
            NodeType::End => {
                let output = context
                    .get("latest_upstream")
                    .and_then(|l| l.get("output"))
                    .cloned();
                self.succeed(i, output.clone().unwrap_or(Value::Null), Vec::new(), false)?;
                self.complete_run(output)?;
            }
            NodeType::Decision => self.route(i, &context)?,
            // Stays scheduled: the gateway publishes it and reports `Dispatched`, then `Started`.
            _ if self.settings.dispatches_remotely(node_type) => self.contexts.push((i, context)),
            _ => {
                let executor = if node_type == NodeType::Flowchart {
                    crate::executor::SUBFLOW.to_owned()
                } else if self.settings.remote.is_some() {
                    crate::executor::INPROCESS.to_owned()
                } else {
                    self.settings.executor.clone()
                };
                let timeout_s = self
                    .state
                    .flowchart
                    .effective_timeout_s(node)
                    .unwrap_or_default();
                self.emit(NodeStarted {
                    run_id: self.run_id(),
                    node_id: self.node_id(node),
                    node_run_id,
                    attempt,
                    executor,
                    deadline: Some(add_ms(self.env.now(), timeout_s.saturating_mul(1000))),
                })?;
                self.contexts.push((i, context));
            }
        }
        Ok(())
    }

    /// Records a new node run: a fresh scheduling (`retry_of: None`, dotted context as it is
    /// now) or the next attempt of `retry_of` (its recorded inputs). Returns its index and its
    /// input context.
    fn emit_scheduled(
        &mut self,
        node: usize,
        node_type: NodeType,
        consumed: Vec<Token>,
        retry_of: Option<usize>,
    ) -> Result<(usize, Value), DecideError> {
        let (attempt, execution_index, dotted) =
            match retry_of.and_then(|p| self.state.node_runs.get(p)) {
                Some(prev) => (prev.attempt + 1, prev.execution_index, prev.dotted.clone()),
                None => (
                    1,
                    self.state.nodes[node].executions,
                    self.state.current_dotted(node),
                ),
            };
        let context = self
            .state
            .build_context(node, execution_index, &consumed, &dotted);
        let input_context_hash = hash_json(&context).map_err(|e| StateError {
            event: "NodeScheduled",
            message: e.to_string(),
        })?;
        let consumed_tokens = consumed
            .iter()
            .map(|t| ConsumedToken {
                connector_id: connector_id(&self.state.flowchart, t.connector),
                from_node_run_id: self.state.node_runs[t.from].id,
            })
            .collect();
        let node_run_id = self.env.node_run_id();
        self.emit(NodeScheduled {
            run_id: self.run_id(),
            node_id: self.node_id(node),
            node_run_id,
            node_type,
            attempt,
            execution_index,
            input_context_hash,
            consumed_tokens,
            retry_of: retry_of.map(|p| self.state.node_runs[p].id),
        })?;
        Ok((self.state.node_runs.len() - 1, context))
    }

    fn retry(&mut self, failed: usize) -> Result<(), DecideError> {
        let node = self.state.node_runs[failed].node;
        self.schedule(
            node,
            self.state.node_runs[failed].consumed.clone(),
            Some(failed),
        )
    }

    /// Nothing runs, nothing waits on a timer, and nothing can be scheduled: the run can never
    /// finish, so it fails now with the reason rather than hang.
    fn check_stalled(&mut self) -> Result<(), DecideError> {
        let state = &self.state;
        let waiting_retry = state
            .timers
            .iter()
            .any(|t| matches!(t.kind, TimerKind::Retry(_)));
        if state.status != RunStatus::Running
            || !state.active.is_empty()
            || waiting_retry
            || !state.reruns.is_empty()
        {
            return Ok(());
        }
        let waits: Vec<String> = state
            .candidates
            .iter()
            .map(|&n| {
                let (have, need) = state.fan_in_progress(n);
                format!(
                    "`{}` has {have} of the {need} solid parents it waits for",
                    state.node_id(n)
                )
            })
            .collect();
        let message = if waits.is_empty() {
            "no node can run and no end node was reached".to_owned()
        } else {
            format!("no node can run: {}", waits.join("; "))
        };
        let error = ErrorInfo {
            code: "run_stalled".into(),
            message,
            retryable: false,
            details: None,
        };
        self.fail_run(error, None)
    }

    // ---- decisions -----------------------------------------------------------------------

    fn route(&mut self, i: usize, context: &Value) -> Result<(), DecideError> {
        let node = self.state.node_runs[i].node;
        let flowchart = Arc::clone(&self.state.flowchart);
        let routed = crate::routing::route(&flowchart, node, context);
        let upstream_output = context.get("latest_upstream").and_then(|l| l.get("output"));
        let failure = routed.failure;
        let matched_connectors: Vec<String> = routed
            .fired
            .iter()
            .map(|&c| connector_id(&flowchart, c))
            .collect();
        let node_run_id = self.state.node_runs[i].id;
        let routing = RoutingDecided {
            run_id: self.run_id(),
            node_id: self.node_id(node),
            node_run_id,
            evaluations: routed.evaluations,
            route_key: routed.route_key,
            route_key_matched: routed.route_key_matched,
            matched_connectors,
            no_match: routed.no_match,
            fallback_connector: routed
                .fallback_connector
                .map(|c| connector_id(&flowchart, c)),
        };
        let routing_payload = serde_json::to_value(&routing).unwrap_or(Value::Null);
        let outcome = crate::tools::decision::outcome_call(
            &routing,
            upstream_output,
            failure.as_ref(),
            self.env.now(),
        );
        self.emit(routing)?;
        self.emit(outcome)?;
        match failure {
            Some(error) => self.fail(i, error, Some(routing_payload)),
            None => {
                let output = upstream_output.cloned().unwrap_or(Value::Null);
                let mut payload = routing_payload;
                if let Value::Object(map) = &mut payload {
                    map.insert("output".into(), output.clone());
                }
                self.emit(NodeSucceeded {
                    run_id: self.run_id(),
                    node_id: self.node_id(node),
                    node_run_id,
                    attempt: self.state.node_runs[i].attempt,
                    output,
                    warnings: Vec::new(),
                    fallback_used: false,
                })?;
                self.artifact(i, "routing", payload)
            }
        }
    }

    // ---- node run endings ------------------------------------------------------------------

    fn succeed(
        &mut self,
        i: usize,
        output: Value,
        warnings: Vec<Warning>,
        fallback_used: bool,
    ) -> Result<(), DecideError> {
        self.succeed_with(i, output, warnings, fallback_used, None)
    }

    /// [`Self::succeed`], with an agent node's lineage in the artifact.
    fn succeed_with(
        &mut self,
        i: usize,
        output: Value,
        warnings: Vec<Warning>,
        fallback_used: bool,
        agent: Option<Value>,
    ) -> Result<(), DecideError> {
        let nr = &self.state.node_runs[i];
        let (node, node_type) = (nr.node, nr.node_type);
        let mut payload =
            json!({ "output": output, "warnings": warnings, "fallback_used": fallback_used });
        if let (Some(agent), Value::Object(map)) = (agent, &mut payload)
            && unstorable::check_output(&agent).is_ok()
        {
            map.insert("agent".into(), agent);
        }
        self.emit(NodeSucceeded {
            run_id: self.run_id(),
            node_id: self.node_id(node),
            node_run_id: nr.id,
            attempt: nr.attempt,
            output,
            warnings,
            fallback_used,
        })?;
        self.artifact(i, success_artifact_type(node_type), payload)
    }

    /// Ends the node run as failed, then applies its retry policy.
    fn fail(
        &mut self,
        i: usize,
        error: ErrorInfo,
        routing: Option<Value>,
    ) -> Result<(), DecideError> {
        let nr = &self.state.node_runs[i];
        let mut payload = json!({ "error": error });
        if let (Some(routing), Value::Object(map)) = (routing, &mut payload) {
            map.insert("routing".into(), routing);
        }
        self.emit(NodeFailed {
            run_id: self.run_id(),
            node_id: self.node_id(nr.node),
            node_run_id: nr.id,
            attempt: nr.attempt,
            error,
        })?;
        self.artifact(i, "failure", payload)?;
        self.after_failure(i)
    }

    fn time_out(&mut self, i: usize) -> Result<(), DecideError> {
        let nr = &self.state.node_runs[i];
        if !nr.is_active() {
            return Ok(());
        }
        let phase = if nr.phase == Phase::Scheduled {
            TimeoutPhase::Dispatch
        } else {
            TimeoutPhase::Execution
        };
        let timeout_ms = match (phase, self.settings.remote) {
            (TimeoutPhase::Dispatch, Some(remote)) => remote.dispatch_timeout_ms,
            _ => self
                .state
                .flowchart
                .effective_timeout_s(nr.node)
                .unwrap_or_default()
                .saturating_mul(1000),
        };
        self.emit(NodeTimedOut {
            run_id: self.run_id(),
            node_id: self.node_id(nr.node),
            node_run_id: nr.id,
            attempt: nr.attempt,
            phase,
            timeout_ms,
        })?;
        let mut payload = json!({ "phase": phase, "timeout_ms": timeout_ms });
        if phase == TimeoutPhase::Dispatch
            && let (Some(holder), Value::Object(map)) = (
                self.state
                    .workspace_holder_for(self.state.node_runs[i].node),
                &mut payload,
            )
        {
            // The work was routed to the run's workspace holder, which did not take it.
            map.insert("workspace_holder".into(), Value::String(holder));
        }
        self.artifact(i, "timeout", payload)?;
        self.after_failure(i)
    }

    /// Retry with backoff when the policy allows it, else fail the run.
    fn after_failure(&mut self, i: usize) -> Result<(), DecideError> {
        if !matches!(self.state.status, RunStatus::Running | RunStatus::Paused) {
            return Ok(());
        }
        let nr = &self.state.node_runs[i];
        let retry = self
            .state
            .flowchart
            .effective_retry(nr.node)
            .cloned()
            .unwrap_or_default();
        let retryable = nr.error.as_ref().is_none_or(|e| e.retryable);
        if nr.node_type.runs_work() && retryable && nr.attempt < retry.max_attempts {
            let exponent = i32::try_from(nr.attempt.saturating_sub(1)).unwrap_or(i32::MAX);
            let backoff = retry.backoff_ms as f64 * retry.backoff_multiplier.powi(exponent);
            let backoff_ms = if backoff.is_finite() {
                (backoff as u64).min(MAX_BACKOFF_MS)
            } else {
                MAX_BACKOFF_MS
            };
            return self.emit(NodeRetryScheduled {
                run_id: self.run_id(),
                node_id: self.node_id(nr.node),
                node_run_id: nr.id,
                next_attempt: nr.attempt + 1,
                retry_at: add_ms(self.env.now(), backoff_ms),
                backoff_ms,
                control: None,
            });
        }
        let cause = nr.error.clone().unwrap_or_else(|| ErrorInfo {
            code: "node_failed".into(),
            message: "the node run failed".into(),
            retryable: false,
            details: None,
        });
        let attempts = if nr.attempt > 1 {
            format!(" after {} attempts", nr.attempt)
        } else {
            String::new()
        };
        let error = ErrorInfo {
            code: cause.code.clone(),
            message: format!(
                "node `{}` failed{attempts}: {}",
                self.node_id(nr.node),
                cause.message
            ),
            retryable: false,
            details: cause.details.clone(),
        };
        self.fail_run(error, Some(i))
    }

    fn cancel_node(&mut self, i: usize, reason: &str, forced: bool) -> Result<(), DecideError> {
        let nr = &self.state.node_runs[i];
        self.emit(NodeCanceled {
            run_id: self.run_id(),
            node_id: self.node_id(nr.node),
            node_run_id: nr.id,
            attempt: nr.attempt,
            reason: reason.to_owned(),
            forced,
        })?;
        self.artifact(i, "canceled", json!({ "reason": reason, "forced": forced }))
    }

    fn cancel_active(&mut self, reason: &str) -> Result<(), DecideError> {
        let active: Vec<usize> = self.state.active.iter().copied().collect();
        for i in active {
            self.cancel_node(i, reason, true)?;
        }
        Ok(())
    }

    fn fail_run(&mut self, error: ErrorInfo, node_run: Option<usize>) -> Result<(), DecideError> {
        self.cancel_active("run failed")?;
        let (node_id, node_run_id) = match node_run.and_then(|i| self.state.node_runs.get(i)) {
            Some(nr) => (Some(self.state.node_id(nr.node).to_owned()), Some(nr.id)),
            None => (None, None),
        };
        self.emit(RunFailed {
            run_id: self.run_id(),
            error,
            node_id,
            node_run_id,
        })
    }

    fn complete_run(&mut self, output: Option<Value>) -> Result<(), DecideError> {
        self.cancel_active("run completed")?;
        let node_runs = u32::try_from(self.state.node_runs.len()).unwrap_or(u32::MAX);
        self.emit(RunCompleted {
            run_id: self.run_id(),
            node_runs,
            output,
        })
    }

    fn artifact(
        &mut self,
        i: usize,
        artifact_type: &str,
        payload: Value,
    ) -> Result<(), DecideError> {
        let nr = &self.state.node_runs[i];
        let status = nr.status().ok_or_else(|| StateError {
            event: "ArtifactPersisted",
            message: "the node run has not ended".into(),
        })?;
        let content_hash = hash_json(&payload).map_err(|e| StateError {
            event: "ArtifactPersisted",
            message: e.to_string(),
        })?;
        let artifact = ArtifactPersisted {
            run_id: self.run_id(),
            node_id: self.node_id(nr.node),
            node_run_id: nr.id,
            node_type: nr.node_type,
            artifact_id: self.env.artifact_id(),
            artifact_type: artifact_type.to_owned(),
            contract_version: ARTIFACT_CONTRACT_VERSION,
            status,
            payload,
            content: None,
            content_hash,
            idempotency_key: format!("{}:artifact", nr.id),
            request_id: self.cause.request_id.clone(),
            correlation_id: self.cause.correlation_id.clone(),
        };
        self.emit(artifact)
    }

    // ---- commands ----------------------------------------------------------------------------

    fn record_result(&mut self, result: NodeResult) -> Result<(), DecideError> {
        let i = self
            .state
            .node_run_index(&result.node_run_id)
            .ok_or(DecideError::UnknownNodeRun(result.node_run_id))?;
        let nr = &self.state.node_runs[i];
        if !nr.is_active() && (nr.late_result_recorded || ended_by_its_result(nr)) {
            // A redelivered result: the first copy is in the ledger already; write nothing.
            return Ok(());
        }
        let stale = if !nr.is_active() {
            Some(format!(
                "the node run already ended ({})",
                nr.status().map_or("", status_name)
            ))
        } else if nr.attempt != result.attempt {
            Some(format!(
                "attempt {} was superseded by attempt {}",
                result.attempt, nr.attempt
            ))
        } else {
            // A result of the current attempt is taken even before its `NodeDispatched` or
            // `NodeStarted`: over NATS the executor's result and the outbox's dispatch report
            // travel separately, and a fast executor's result can overtake them. Refusing it
            // lost the work (the node then waited for its execution timeout).
            None
        };
        if let Some(reason) = stale {
            return self.emit(NodeResultIgnored {
                run_id: self.run_id(),
                node_id: self.node_id(nr.node),
                node_run_id: nr.id,
                attempt: result.attempt,
                reason,
            });
        }
        if result
            .tool_calls
            .iter()
            .any(|call| call.node_run_id != result.node_run_id || call.run_id != self.run_id())
        {
            return Err(DecideError::InvalidInput {
                field: "tool_calls",
                message: "a tool call belongs to another node run".into(),
            });
        }
        // Content from outside is checked here, where it enters: an append the ledger must
        // refuse would fail the same way on every try (see `unstorable`).
        for call in result.tool_calls {
            self.emit(unstorable::storable_tool_call(call))?;
        }
        match result.outcome {
            NodeOutcome::Succeeded {
                output,
                warnings,
                fallback_used,
                agent,
            } => match unstorable::check_output(&output) {
                Ok(()) => self.succeed_with(i, output, warnings, fallback_used, agent)?,
                Err(e) => self.fail(i, unstorable::invalid_output("the output", &e), None)?,
            },
            NodeOutcome::Failed(error) => self.fail(i, unstorable::storable_error(error), None)?,
        }
        self.settle()
    }

    /// Records one agent-loop call of a node run of this run. The call happened, whatever
    /// became of its node run since (a call reported after its node run's end is still
    /// recorded); a call of another run or of a node run this run does not have is refused.
    fn record_tool_call(&mut self, call: ToolCalled) -> Result<(), DecideError> {
        if call.run_id != self.run_id() {
            return Err(DecideError::InvalidInput {
                field: "tool_call",
                message: "the tool call belongs to another run".into(),
            });
        }
        let i = self
            .state
            .node_run_index(&call.node_run_id)
            .ok_or(DecideError::UnknownNodeRun(call.node_run_id))?;
        if call.agent.is_none() || call.node_id != self.node_id(self.state.node_runs[i].node) {
            return Err(DecideError::InvalidInput {
                field: "tool_call",
                message: "a reported tool call names its node and its turn".into(),
            });
        }
        let had_holder = self.state.workspace_holder.is_some();
        self.emit(unstorable::storable_tool_call(call))?;
        self.settle_if_holder_found(had_holder)
    }

    /// Records the publish of a remote node run's work and arms its dispatch timeout. A report
    /// for a node run that moved on (ended, started, or dispatched already) changes nothing.
    fn dispatched(
        &mut self,
        node_run_id: NodeRunId,
        attempt: u32,
        executor_class: String,
        message_id: String,
        stream_sequence: Option<u64>,
    ) -> Result<(), DecideError> {
        let i = self
            .state
            .node_run_index(&node_run_id)
            .ok_or(DecideError::UnknownNodeRun(node_run_id))?;
        let nr = &self.state.node_runs[i];
        if nr.dispatched || nr.attempt != attempt || self.state.status.is_terminal() {
            return Ok(());
        }
        // An executor may report that it took (or even finished) the work before the publish
        // ack comes back: then there is no dispatch deadline to arm, only the sequence to record.
        let armed = nr.phase == Phase::Scheduled;
        let timeout_ms = self.settings.remote.map_or(0, |r| r.dispatch_timeout_ms);
        self.emit(runledger_contracts::events::NodeDispatched {
            run_id: self.run_id(),
            node_id: self.node_id(nr.node),
            node_run_id,
            attempt,
            executor_class,
            message_id,
            stream_sequence,
            dispatch_deadline: armed.then(|| add_ms(self.env.now(), timeout_ms)),
        })
    }

    /// A remote executor took the node run: its execution timeout starts now. Executors that
    /// take it again after a redelivery change nothing; the first start stands.
    fn started(
        &mut self,
        node_run_id: NodeRunId,
        attempt: u32,
        executor: String,
    ) -> Result<(), DecideError> {
        let i = self
            .state
            .node_run_index(&node_run_id)
            .ok_or(DecideError::UnknownNodeRun(node_run_id))?;
        let nr = &self.state.node_runs[i];
        if !nr.is_active() || nr.phase != Phase::Scheduled || nr.attempt != attempt {
            return Ok(());
        }
        let timeout_s = self
            .state
            .flowchart
            .effective_timeout_s(nr.node)
            .unwrap_or_default();
        let had_holder = self.state.workspace_holder.is_some();
        self.emit(NodeStarted {
            run_id: self.run_id(),
            node_id: self.node_id(nr.node),
            node_run_id,
            attempt,
            executor,
            deadline: Some(add_ms(self.env.now(), timeout_s.saturating_mul(1000))),
        })?;
        self.settle_if_holder_found(had_holder)
    }

    fn child_started(
        &mut self,
        node_run_id: NodeRunId,
        child_run_id: RunId,
    ) -> Result<(), DecideError> {
        let i = self
            .state
            .node_run_index(&node_run_id)
            .ok_or(DecideError::UnknownNodeRun(node_run_id))?;
        let nr = &self.state.node_runs[i];
        if nr.child_run == Some(child_run_id) || !nr.is_active() {
            return Ok(());
        }
        if nr.node_type != NodeType::Flowchart || nr.child_run.is_some() {
            return Err(not_applicable(
                "not_a_subflow",
                "the node run cannot start a child run",
            ));
        }
        self.emit(runledger_contracts::events::ChildRunStarted {
            run_id: self.run_id(),
            node_id: self.node_id(nr.node),
            node_run_id,
            child_run_id,
        })
    }

    fn control(&mut self, action: ControlAction, control: Control) -> Result<(), DecideError> {
        let status = self.state.status;
        let run_id = self.run_id();
        match action {
            ControlAction::Pause => {
                if status != RunStatus::Running {
                    return Err(not_applicable(
                        "run_not_running",
                        format!("cannot pause: the run is {}", status.as_str()),
                    ));
                }
                self.emit(RunPaused { run_id, control })
            }
            ControlAction::Resume => {
                if status != RunStatus::Paused {
                    return Err(not_applicable(
                        "run_not_paused",
                        format!("cannot resume: the run is {}", status.as_str()),
                    ));
                }
                self.emit(RunResumed { run_id, control })
            }
            ControlAction::Cancel { force } => {
                let allowed = match status {
                    RunStatus::Running | RunStatus::Paused => true,
                    RunStatus::Canceling { force: already } => force && !already,
                    _ => false,
                };
                if !allowed {
                    return Err(not_applicable(
                        "run_not_cancelable",
                        format!("cannot cancel: the run is {}", status.as_str()),
                    ));
                }
                self.emit(RunCancelRequested {
                    run_id,
                    control,
                    force,
                })?;
                if force {
                    let active: Vec<usize> = self.state.active.iter().copied().collect();
                    for i in active {
                        self.cancel_node(i, "run canceled", true)?;
                    }
                }
                if self.state.active.is_empty() {
                    self.emit(RunCanceled {
                        run_id,
                        forced: force,
                    })?;
                }
                Ok(())
            }
            ControlAction::RetryNode { node } => self.retry_node(&node, control),
            ControlAction::SkipNode { node, output } => self.skip_node(&node, output, control),
            ControlAction::RewindNode { node } => self.rewind_node(&node, control),
        }
    }

    /// Node controls work on running, paused and failed runs; a failed run is reopened first.
    fn reopen_for(&mut self, verb: &str, control: &Control) -> Result<(), DecideError> {
        match self.state.status {
            RunStatus::Running | RunStatus::Paused => Ok(()),
            RunStatus::Failed => self.emit(RunResumed {
                run_id: self.run_id(),
                control: control.clone(),
            }),
            other => Err(not_applicable(
                "run_not_controllable",
                format!("cannot {verb} a node: the run is {}", other.as_str()),
            )),
        }
    }

    fn failed_latest(&self, node: usize) -> Option<usize> {
        let latest = self.state.latest_run_of(node)?;
        matches!(
            self.state.node_runs[latest].status(),
            Some(NodeRunStatus::Failed | NodeRunStatus::TimedOut)
        )
        .then_some(latest)
    }

    fn active_run_of(&self, node: usize) -> Option<usize> {
        self.state
            .nodes
            .get(node)?
            .runs
            .iter()
            .rev()
            .copied()
            .find(|&i| self.state.node_runs[i].is_active())
    }

    fn retry_node(&mut self, id: &str, control: Control) -> Result<(), DecideError> {
        let node = self.node_index(id)?;
        if !matches!(
            self.state.status,
            RunStatus::Running | RunStatus::Paused | RunStatus::Failed
        ) {
            return self.reopen_for("retry", &control);
        }
        if self.active_run_of(node).is_some() {
            return Err(not_applicable(
                "node_busy",
                format!("node `{id}` is running; nothing to retry"),
            ));
        }
        if self.state.nodes[node].retry_pending.is_some() {
            return Err(not_applicable(
                "node_busy",
                format!("a retry of node `{id}` is already scheduled"),
            ));
        }
        let Some(failed) = self.failed_latest(node) else {
            return Err(not_applicable(
                "node_not_failed",
                format!("node `{id}` has no failed or timed-out node run to retry"),
            ));
        };
        self.reopen_for("retry", &control)?;
        let nr = &self.state.node_runs[failed];
        self.emit(NodeRetryScheduled {
            run_id: self.run_id(),
            node_id: id.to_owned(),
            node_run_id: nr.id,
            next_attempt: nr.attempt + 1,
            retry_at: self.env.now(),
            backoff_ms: 0,
            control: Some(control),
        })
    }

    fn skip_node(&mut self, id: &str, output: Value, control: Control) -> Result<(), DecideError> {
        let node = self.node_index(id)?;
        let node_type = self.state.flowchart.node_at(node).map(|n| n.node_type);
        if matches!(
            node_type,
            Some(NodeType::Decision | NodeType::Start | NodeType::End)
        ) {
            return Err(not_applicable(
                "node_not_skippable",
                format!("node `{id}` is run by the engine itself; retry or rewind it instead"),
            ));
        }
        unstorable::check_output(&output).map_err(|e| DecideError::InvalidInput {
            field: "output",
            message: e.to_string(),
        })?;
        if !matches!(
            self.state.status,
            RunStatus::Running | RunStatus::Paused | RunStatus::Failed
        ) {
            return self.reopen_for("skip", &control);
        }
        let target = match (self.active_run_of(node), self.failed_latest(node)) {
            (Some(active), _) => active,
            (None, Some(failed)) => {
                self.reopen_for("skip", &control)?;
                self.schedule_for_skip(failed)?
            }
            (None, None) => {
                return Err(not_applicable(
                    "node_not_skippable",
                    format!("node `{id}` has no running or failed node run to skip"),
                ));
            }
        };
        let nr = &self.state.node_runs[target];
        let payload = json!({ "output": output, "actor": control.actor, "reason": control.reason });
        self.emit(NodeSkipped {
            run_id: self.run_id(),
            node_id: id.to_owned(),
            node_run_id: nr.id,
            output,
            control,
        })?;
        self.artifact(target, "skipped", payload)
    }

    /// A new node run (the next attempt of `failed`) that the skip then ends.
    fn schedule_for_skip(&mut self, failed: usize) -> Result<usize, DecideError> {
        let prev = &self.state.node_runs[failed];
        let (node, node_type, consumed) = (prev.node, prev.node_type, prev.consumed.clone());
        self.emit_scheduled(node, node_type, consumed, Some(failed))
            .map(|(i, _)| i)
    }

    /// A fork's node with an operator output: its re-run is scheduled and ended at once with
    /// that output (`NodeSkipped`), as `skip` does, so downstream continues with it.
    fn fork_skip(&mut self, id: &str, output: Value, control: Control) -> Result<(), DecideError> {
        let node = self.node_index(id)?;
        let Some(node_type) = self.state.flowchart.node_at(node).map(|n| n.node_type) else {
            return Err(not_applicable("unknown_node", format!("no node `{id}`")));
        };
        let Some(pos) = self.state.reruns.iter().position(|r| r.node == node) else {
            return Err(not_applicable(
                "node_not_reached",
                format!("node `{id}` has no re-run waiting"),
            ));
        };
        let consumed = self.state.reruns[pos].consumed.clone();
        let (i, _) = self.emit_scheduled(node, node_type, consumed, None)?;
        let payload = json!({ "output": output, "actor": control.actor, "reason": control.reason });
        self.emit(NodeSkipped {
            run_id: self.run_id(),
            node_id: id.to_owned(),
            node_run_id: self.state.node_runs[i].id,
            output,
            control,
        })?;
        self.artifact(i, "skipped", payload)
    }

    fn rewind_node(&mut self, id: &str, control: Control) -> Result<(), DecideError> {
        let node = self.node_index(id)?;
        let Some(latest) = self.state.latest_run_of(node) else {
            return Err(not_applicable(
                "node_never_ran",
                format!("node `{id}` has not run; nothing to rewind"),
            ));
        };
        self.reopen_for("rewind", &control)?;
        let downstream = self.state.downstream(node);
        let invalidated: Vec<usize> = (latest..self.state.node_runs.len())
            .filter(|&i| {
                let nr = &self.state.node_runs[i];
                !nr.invalidated && downstream.contains(&nr.node)
            })
            .collect();
        for &i in &invalidated {
            if self.state.node_runs[i].is_active() {
                self.cancel_node(i, "rewound", true)?;
            }
        }
        let invalidated_node_run_ids = invalidated
            .iter()
            .map(|&i| self.state.node_runs[i].id)
            .collect();
        self.emit(NodeRewound {
            run_id: self.run_id(),
            node_id: id.to_owned(),
            control,
            invalidated_node_run_ids,
        })
    }
}

use crate::routing::connector_id;

fn success_artifact_type(node_type: NodeType) -> &'static str {
    match node_type {
        NodeType::Start => "run_input",
        NodeType::End => "run_output",
        NodeType::Task => "task_output",
        NodeType::Decision => "routing",
        NodeType::Memory | NodeType::Plan | NodeType::Milestone => "tool_result",
        NodeType::Rag => "retrieval",
        NodeType::Flowchart => "subflow_result",
    }
}

pub(crate) fn status_name(status: NodeRunStatus) -> &'static str {
    match status {
        NodeRunStatus::Succeeded => "succeeded",
        NodeRunStatus::SuccessWithWarning => "success_with_warning",
        NodeRunStatus::Failed => "failed",
        NodeRunStatus::TimedOut => "timed_out",
        NodeRunStatus::Skipped => "skipped",
        NodeRunStatus::Canceled => "canceled",
    }
}
