//! The run service: drives runs against the ledger.
//!
//! Each loaded run is owned by one task (its *driver*) holding the run state and the stream
//! version it was built from. Every step decides events against that state and appends them
//! with `ExpectedVersion::Exact(version)`: the version check is the fence between engines, so
//! two engines on one run cannot fork it. A step that loses the race reloads the run and tries
//! again. One step is one append, so everything a result causes (the node's end, its artifact,
//! the next node runs) commits together.
//!
//! Timers are deadlines recorded in events; a driver sleeps until the earliest one. A driver
//! also polls its stream's head when idle, so controls written by other processes (the CLI)
//! take effect. A restarted engine rebuilds each unfinished run from its stream and hands its
//! running node runs to the executor again; the attempt fence absorbs any duplicate result.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger_contracts::digest::Digest;
use runledger_contracts::events::{Control, DomainEvent, ErrorInfo, ParentRun};
use runledger_contracts::flowchart::Flowchart;
use runledger_contracts::ids::{CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_contracts::envelope::{NewEvent, RecordedEvent};
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion, StoreError};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

use crate::decide::{
    self, Cause, Command, ControlAction, DecideError, NodeOutcome, NodeResult, Settings, StartRun,
    SystemEnv,
};
use crate::executor::{Delivery, INPROCESS, NodeExecutor, Report, ResultSender, SUBFLOW};
use crate::state::{Phase, RunState, RunStatus, StateError};

#[path = "tools/driver.rs"]
mod tool_driver;

/// How many times a step is re-decided after losing a race before it gives up.
const MAX_STEP_ATTEMPTS: u32 = 8;
/// Events read per page when a run is loaded.
const PAGE: usize = 5_000;

/// Where the flowcharts of sub-flow nodes come from.
pub trait FlowchartSource: Send + Sync + 'static {
    /// The flowchart `name` (at `version`, when given) and the version it is.
    fn resolve(&self, name: &str, version: Option<u32>) -> Result<(Arc<Flowchart>, Option<u32>), String>;
}

/// No sub-flows available: every `flowchart` node fails with `subflow_unavailable`.
pub struct NoFlowcharts;

impl FlowchartSource for NoFlowcharts {
    fn resolve(&self, name: &str, _: Option<u32>) -> Result<(Arc<Flowchart>, Option<u32>), String> {
        Err(format!("no flowchart source is configured to find `{name}`"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decide(#[from] DecideError),
    #[error("run {run_id} is corrupt at version {version}: {message}")]
    Corrupt { run_id: RunId, version: u64, message: String },
    #[error("run {0} does not exist")]
    RunNotFound(RunId),
    #[error("the engine is shutting down")]
    Shutdown,
    #[error("gave up after {0} attempts: other writers kept changing the run")]
    Contended(u32),
}

impl EngineError {
    /// A stable code for CLI and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Store(e) => e.code(),
            EngineError::Decide(e) => e.code(),
            EngineError::Corrupt { .. } => "run_corrupt",
            EngineError::RunNotFound(_) => "run_not_found",
            EngineError::Shutdown => "shutdown",
            EngineError::Contended(_) => "contended",
        }
    }
}

impl From<StateError> for EngineError {
    fn from(e: StateError) -> Self {
        EngineError::Decide(DecideError::State(e))
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub settings: Settings,
    /// How often an idle driver checks its stream for events written by someone else.
    pub poll_interval: Duration,
    /// Recorded as the actor of runs the engine starts itself (child runs).
    pub actor: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { settings: Settings::default(), poll_interval: Duration::from_millis(250), actor: "runledger".into() }
    }
}

/// How a run ended (or where it is, for `status`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub run_id: RunId,
    pub status: RunStatus,
    pub node_runs: usize,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub version: u64,
}

impl RunSummary {
    fn of(state: &RunState, version: u64) -> Self {
        Self {
            run_id: state.run_id,
            status: state.status,
            node_runs: state.node_runs.len(),
            output: state.output.clone(),
            error: state.failure.clone(),
            version,
        }
    }
}

/// Events a driver appended, for followers (`run --wait`).
#[derive(Debug, Clone)]
pub struct AppendedBatch {
    pub run_id: RunId,
    pub events: Vec<RecordedEvent>,
}

/// What a control did.
#[derive(Debug, Clone)]
pub struct ControlOutcome {
    pub events: Vec<RecordedEvent>,
    /// The request id had been used on this run before; nothing new was written.
    pub deduplicated: bool,
}

/// A run loaded from its stream.
pub struct LoadedRun {
    pub state: RunState,
    pub version: u64,
    pub correlation_id: CorrelationId,
}

/// Reads a whole run stream and rebuilds its state.
pub async fn load_run<S: EventStore>(store: &S, run_id: RunId) -> Result<LoadedRun, EngineError> {
    load_run_noting(store, run_id, None).await.map(|(loaded, _)| loaded)
}

/// [`load_run`], also returning the events that `request` wrote (in the same single read), so
/// an idempotent control can tell whether it was applied before.
async fn load_run_noting<S: EventStore>(
    store: &S,
    run_id: RunId,
    request: Option<&RequestId>,
) -> Result<(LoadedRun, Vec<RecordedEvent>), EngineError> {
    let stream = StreamId::for_run(run_id);
    let mut state: Option<RunState> = None;
    let mut version = 0;
    let mut correlation_id = None;
    let mut noted = Vec::new();
    let mut head: Option<Digest> = None;
    loop {
        let page = store.read_stream(&stream, version + 1, PAGE).await?;
        let done = page.len() < PAGE;
        for recorded in page {
            check_linked(run_id, version, head.as_ref(), &recorded)?;
            head = Some(recorded.hash);
            correlation_id.get_or_insert_with(|| recorded.correlation_id.clone());
            apply_recorded(&mut state, &recorded, run_id)?;
            version = recorded.stream_version;
            if request.is_some_and(|r| *r == recorded.request_id) {
                noted.push(recorded);
            }
        }
        if done {
            break;
        }
    }
    match (state, correlation_id) {
        (Some(state), Some(correlation_id)) => Ok((LoadedRun { state, version, correlation_id }, noted)),
        _ => Err(EngineError::RunNotFound(run_id)),
    }
}

/// A run is rebuilt only from an unbroken stream: versions 1, 2, 3, ... each chained to the one
/// before. A missing or re-linked event (someone edited the table) would otherwise replay into
/// a plausible but false state, e.g. "completed" with a node run's end deleted.
fn check_linked(run_id: RunId, previous: u64, head: Option<&Digest>, recorded: &RecordedEvent) -> Result<(), EngineError> {
    let expected = previous + 1;
    if recorded.stream_version != expected {
        return Err(EngineError::Corrupt {
            run_id,
            version: expected,
            message: format!("version {expected} is missing (the next event is version {})", recorded.stream_version),
        });
    }
    if let Some(head) = head
        && recorded.prev_hash != *head
    {
        return Err(EngineError::Corrupt {
            run_id,
            version: expected,
            message: "its prev_hash is not the hash of the event before it".to_owned(),
        });
    }
    Ok(())
}

fn evolve_recorded(state: &mut RunState, recorded: &RecordedEvent, run_id: RunId) -> Result<(), EngineError> {
    let corrupt = |message: String| EngineError::Corrupt { run_id, version: recorded.stream_version, message };
    let event = recorded.decode().map_err(|e| corrupt(e.to_string()))?;
    state.evolve(&event).map_err(|e| corrupt(e.to_string()))
}

fn apply_recorded(state: &mut Option<RunState>, recorded: &RecordedEvent, run_id: RunId) -> Result<(), EngineError> {
    if let Some(state) = state {
        return evolve_recorded(state, recorded, run_id);
    }
    let corrupt = |message: String| EngineError::Corrupt { run_id, version: recorded.stream_version, message };
    match recorded.decode().map_err(|e| corrupt(e.to_string()))? {
        DomainEvent::RunStarted(started) => {
            *state = Some(RunState::from_started(&started).map_err(|e| corrupt(e.to_string()))?);
            Ok(())
        }
        _ => Err(corrupt("a run stream must begin with RunStarted".into())),
    }
}

/// Applies an operator control straight to the ledger, without a running engine: reads the
/// run, decides, appends. Idempotent by request id. An engine driving the run picks the
/// events up on its next poll and carries on from there.
pub async fn apply_control<S: EventStore>(
    store: &S,
    run_id: RunId,
    action: ControlAction,
    control: Control,
    request_id: RequestId,
) -> Result<ControlOutcome, EngineError> {
    let stream = StreamId::for_run(run_id);
    for _ in 0..MAX_STEP_ATTEMPTS {
        let (mut loaded, used) = load_run_noting(store, run_id, Some(&request_id)).await?;
        if !used.is_empty() {
            return Ok(ControlOutcome { events: used, deduplicated: true });
        }
        let cause = Cause { request_id: request_id.clone(), correlation_id: loaded.correlation_id.clone() };
        let command = Command::Control { action: action.clone(), control: control.clone() };
        let events = decide::decide(&mut loaded.state, command, &mut SystemEnv, &cause, &Settings::default())?;
        let request = append_request(&cause, &events)?;
        match store.append(&stream, ExpectedVersion::Exact(loaded.version), request).await {
            Ok(outcome) => return Ok(ControlOutcome { deduplicated: outcome.deduplicated, events: outcome.events }),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::Contended(MAX_STEP_ATTEMPTS))
}

fn append_request(cause: &Cause, events: &[DomainEvent]) -> Result<AppendRequest, EngineError> {
    let mut new_events = Vec::with_capacity(events.len());
    for event in events {
        let new = NewEvent::from_domain(event).map_err(|e| {
            EngineError::Decide(DecideError::InvalidInput { field: "event", message: e.to_string() })
        })?;
        new_events.push(new);
    }
    Ok(AppendRequest::new(cause.request_id.clone(), cause.correlation_id.clone(), new_events))
}

fn request_id(text: String) -> RequestId {
    RequestId::new(text).unwrap_or_else(|_| RequestId::generate())
}

/// The child run of a `flowchart` node run: derived from the node run, so starting it twice
/// finds the first one.
pub fn child_run_id(node_run_id: NodeRunId) -> RunId {
    let digest = blake3::hash(format!("child-run:{node_run_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    RunId(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

enum Msg {
    Report(Delivery),
    /// A `memory`, `plan` or `milestone` node run to execute in the driver (`tools/driver.rs`).
    ToolNode(NodeRunId),
    /// The child run of a `flowchart` node run exists now.
    ChildStarted { node_run_id: NodeRunId, child: RunId },
    Control {
        action: ControlAction,
        control: Control,
        request_id: RequestId,
        reply: oneshot::Sender<Result<ControlOutcome, EngineError>>,
    },
}

struct DriverHandle {
    tx: mpsc::UnboundedSender<Msg>,
    done: watch::Receiver<RunSummary>,
}

struct Inner<S> {
    store: S,
    executor: Arc<dyn NodeExecutor>,
    flowcharts: Arc<dyn FlowchartSource>,
    config: EngineConfig,
    drivers: Mutex<HashMap<RunId, DriverHandle>>,
    results: ResultSender,
    appended: broadcast::Sender<Arc<AppendedBatch>>,
}

/// The run engine. Cheap to clone; all clones drive the same runs.
pub struct Engine<S: EventStore + 'static> {
    inner: Arc<Inner<S>>,
}

impl<S: EventStore + 'static> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<S: EventStore + 'static> Engine<S> {
    /// Creates the engine and its result router. Must be called inside a tokio runtime.
    pub fn new(store: S, executor: Arc<dyn NodeExecutor>, flowcharts: Arc<dyn FlowchartSource>, config: EngineConfig) -> Self {
        let (results, mut results_rx) = mpsc::unbounded_channel::<Delivery>();
        let (appended, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            store,
            executor,
            flowcharts,
            config,
            drivers: Mutex::new(HashMap::new()),
            results,
            appended,
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(delivery) = results_rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                Engine { inner }.deliver(delivery).await;
            }
        });
        Self { inner }
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Where executors that run outside this process (result intake) send their reports.
    pub fn reports(&self) -> ResultSender {
        self.inner.results.clone()
    }

    /// Appended events of every run this engine drives, as they commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppendedBatch>> {
        self.inner.appended.subscribe()
    }

    /// Starts a run and drives it. Idempotent by request id: a repeated start returns the run
    /// the first one created.
    pub async fn start(&self, start: StartRun, request_id: RequestId, correlation_id: CorrelationId) -> Result<RunId, EngineError> {
        let run_id = start.run_id;
        let stream = StreamId::for_run(run_id);
        let cause = Cause { request_id, correlation_id };
        let (state, events) = decide::start_run(start, &mut SystemEnv, &cause, &self.inner.config.settings)?;
        let request = append_request(&cause, &events)?;
        match self.inner.store.append(&stream, ExpectedVersion::NoStream, request).await {
            Ok(outcome) if !outcome.deduplicated => {
                let version = outcome.last_version();
                let _ = self.inner.appended.send(Arc::new(AppendedBatch { run_id, events: outcome.events }));
                self.spawn_driver(LoadedRun { state, version, correlation_id: cause.correlation_id })
                    .map(|_| run_id)
            }
            // Started before (same request, or the same run id): drive what the ledger holds.
            Ok(_) | Err(StoreError::Conflict { .. }) => self.ensure_driven(run_id).await.map(|_| run_id),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads a run and drives it, unless it is already driven here or has ended.
    /// Returns its summary as loaded.
    pub async fn ensure_driven(&self, run_id: RunId) -> Result<RunSummary, EngineError> {
        if let Some(summary) = self.driven_summary(run_id) {
            return Ok(summary);
        }
        let loaded = load_run(&self.inner.store, run_id).await?;
        let summary = RunSummary::of(&loaded.state, loaded.version);
        if !loaded.state.status.is_terminal() {
            self.spawn_driver(loaded)?;
        }
        Ok(summary)
    }

    fn driven_summary(&self, run_id: RunId) -> Option<RunSummary> {
        let drivers = self.inner.drivers.lock().ok()?;
        let handle = drivers.get(&run_id)?;
        if handle.tx.is_closed() {
            return None;
        }
        Some(handle.done.borrow().clone())
    }

    /// Picks up every run in the ledger that has not ended. Returns how many it now drives.
    pub async fn resume_unfinished(&self) -> Result<usize, EngineError> {
        let heads = self.inner.store.list_streams("run-").await?;
        let mut driven = 0;
        for head in heads {
            let Some(run_id) = head.stream_id.as_str().strip_prefix("run-").and_then(|id| id.parse().ok()) else {
                continue;
            };
            if self.is_driven(run_id) {
                driven += 1;
                continue;
            }
            match self.ensure_driven(run_id).await {
                Ok(summary) if !summary.status.is_terminal() => driven += 1,
                Ok(_) => {}
                Err(e @ EngineError::Corrupt { .. }) => tracing::error!(%run_id, error = %e, "cannot resume run"),
                Err(e) => return Err(e),
            }
        }
        Ok(driven)
    }

    pub fn is_driven(&self, run_id: RunId) -> bool {
        self.inner
            .drivers
            .lock()
            .map(|d| d.get(&run_id).is_some_and(|h| !h.tx.is_closed()))
            .unwrap_or(false)
    }

    /// Waits until the run ends (loading and driving it if needed).
    pub async fn wait(&self, run_id: RunId) -> Result<RunSummary, EngineError> {
        let summary = self.ensure_driven(run_id).await?;
        if summary.status.is_terminal() && !self.is_driven(run_id) {
            return Ok(summary);
        }
        let mut done = {
            let drivers = self.inner.drivers.lock().map_err(|_| EngineError::Shutdown)?;
            match drivers.get(&run_id) {
                Some(handle) => handle.done.clone(),
                None => return Ok(summary),
            }
        };
        loop {
            let summary = done.borrow_and_update().clone();
            if summary.status.is_terminal() {
                return Ok(summary);
            }
            if done.changed().await.is_err() {
                // The driver stopped without an end: report what the ledger says.
                let loaded = load_run(&self.inner.store, run_id).await?;
                return Ok(RunSummary::of(&loaded.state, loaded.version));
            }
        }
    }

    /// Applies an operator control through the run's driver (loading the run if needed), so
    /// that what it makes possible is scheduled in the same breath.
    pub async fn control(
        &self,
        run_id: RunId,
        action: ControlAction,
        control: Control,
        request_id: RequestId,
    ) -> Result<ControlOutcome, EngineError> {
        self.ensure_driven(run_id).await?;
        let tx = {
            let drivers = self.inner.drivers.lock().map_err(|_| EngineError::Shutdown)?;
            drivers.get(&run_id).filter(|h| !h.tx.is_closed()).map(|h| h.tx.clone())
        };
        match tx {
            Some(tx) => {
                let (reply, answer) = oneshot::channel();
                tx.send(Msg::Control { action, control, request_id, reply }).map_err(|_| EngineError::Shutdown)?;
                answer.await.map_err(|_| EngineError::Shutdown)?
            }
            None => {
                // An ended run: controls that reopen it go to the ledger, then it is driven.
                let outcome = apply_control(&self.inner.store, run_id, action, control, request_id).await?;
                self.ensure_driven(run_id).await?;
                Ok(outcome)
            }
        }
    }

    /// Hands an executor's report to the run's driver; a run not driven here is loaded, and
    /// one that has ended records a late result as ignored.
    pub async fn deliver(&self, delivery: Delivery) {
        let run_id = delivery.run_id;
        let tx = self
            .inner
            .drivers
            .lock()
            .ok()
            .and_then(|d| d.get(&run_id).filter(|h| !h.tx.is_closed()).map(|h| h.tx.clone()));
        let delivery = match tx {
            Some(tx) => match tx.send(Msg::Report(delivery)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(Msg::Report(delivery))) => delivery,
                Err(_) => return,
            },
            None => delivery,
        };
        if let Err(e) = self.record_late(delivery).await {
            tracing::warn!(%run_id, error = %e, "could not record an executor report");
        }
    }

    async fn record_late(&self, delivery: Delivery) -> Result<(), EngineError> {
        let run_id = delivery.run_id;
        let mut loaded = load_run(&self.inner.store, run_id).await?;
        if !loaded.state.status.is_terminal() {
            self.spawn_driver(loaded)?;
            let tx = self.inner.drivers.lock().ok().and_then(|d| d.get(&run_id).map(|h| h.tx.clone()));
            if let Some(tx) = tx {
                let _ = tx.send(Msg::Report(delivery));
            }
            return Ok(());
        }
        let Delivery { report, message_id, recorded, .. } = delivery;
        let cause = Cause {
            request_id: report_request_id(&report, message_id.as_deref()),
            correlation_id: loaded.correlation_id.clone(),
        };
        let mut events = Vec::new();
        for command in report_commands(report) {
            events.extend(decide::decide(&mut loaded.state, command, &mut SystemEnv, &cause, &self.inner.config.settings)?);
        }
        if !events.is_empty() {
            let request = append_request(&cause, &events)?;
            let stream = StreamId::for_run(run_id);
            match self.inner.store.append(&stream, ExpectedVersion::Exact(loaded.version), request).await {
                Ok(_) | Err(StoreError::RequestMismatch { .. }) => {}
                // Someone else wrote meanwhile; the report is delivered again by its queue.
                Err(StoreError::Conflict { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(recorded) = recorded {
            let _ = recorded.send(());
        }
        Ok(())
    }

    fn spawn_driver(&self, loaded: LoadedRun) -> Result<(), EngineError> {
        let run_id = loaded.state.run_id;
        let (tx, rx) = mpsc::unbounded_channel();
        let me = tx.downgrade();
        let (done_tx, done_rx) = watch::channel(RunSummary::of(&loaded.state, loaded.version));
        {
            let mut drivers = self.inner.drivers.lock().map_err(|_| EngineError::Shutdown)?;
            if drivers.get(&run_id).is_some_and(|h| !h.tx.is_closed()) {
                return Ok(());
            }
            drivers.insert(run_id, DriverHandle { tx, done: done_rx });
        }
        let driver = Driver {
            engine: self.clone(),
            stream: StreamId::for_run(run_id),
            state: loaded.state,
            version: loaded.version,
            correlation_id: loaded.correlation_id,
            dispatched: HashSet::new(),
            rx,
            me,
            done: done_tx,
            last_append: tokio::time::Instant::now(),
            tools: Default::default(),
        };
        tokio::spawn(driver.run());
        Ok(())
    }

    /// What starting the child run of a `flowchart` node run takes, or why it cannot start.
    fn prepare_child(&self, parent: &RunState, index: usize) -> Result<(StartRun, CorrelationId), NodeOutcome> {
        let nr = &parent.node_runs[index];
        let node = parent.flowchart.node_at(nr.node).ok_or_else(|| fail("subflow_unavailable", "the node is not in the flowchart"))?;
        let name = node.flowchart.clone().unwrap_or_default();
        let (flowchart, version) = self
            .inner
            .flowcharts
            .resolve(&name, node.version)
            .map_err(|e| fail("subflow_unavailable", &e))?;
        let context = parent.input_context(index);
        let inputs = context
            .get("latest_upstream")
            .and_then(|l| l.get("output"))
            .filter(|o| o.is_object())
            .cloned()
            .unwrap_or_else(|| parent.inputs.clone());
        let start = StartRun {
            run_id: child_run_id(nr.id),
            flowchart,
            version,
            inputs,
            parent: Some(ParentRun { run_id: parent.run_id, node_id: node.id.clone(), node_run_id: nr.id }),
            actor: self.inner.config.actor.clone(),
        };
        Ok((start, parent_correlation(parent)))
    }
}

fn parent_correlation(parent: &RunState) -> CorrelationId {
    CorrelationId::new(format!("run-{}", parent.run_id)).unwrap_or_else(|_| CorrelationId::generate())
}

fn fail(code: &str, message: &str) -> NodeOutcome {
    NodeOutcome::Failed(ErrorInfo { code: code.into(), message: message.into(), retryable: false, details: None })
}

/// Owns one run: its state, its version, its timers.
struct Driver<S: EventStore + 'static> {
    engine: Engine<S>,
    stream: StreamId,
    state: RunState,
    version: u64,
    correlation_id: CorrelationId,
    /// Node runs handed to an executor (or a child run) by this driver.
    dispatched: HashSet<NodeRunId>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// This driver's own mailbox, for tasks it spawns.
    me: mpsc::WeakUnboundedSender<Msg>,
    done: watch::Sender<RunSummary>,
    last_append: tokio::time::Instant,
    /// Tool node runs: folded tool streams and the tool events of the step in flight.
    tools: tool_driver::ToolNodes,
}

/// Results decided together in one append, at most.
const RESULT_BATCH: usize = 256;

/// How long a step waits for more reports after a remote `Dispatched` or `Started`.
const REPORT_LINGER: Duration = Duration::from_millis(2);

impl<S: EventStore + 'static> Driver<S> {
    #[tracing::instrument(name = "run", skip_all, fields(run_id = %self.state.run_id, correlation_id = %self.correlation_id))]
    async fn run(mut self) {
        let run_id = self.state.run_id;
        if let Err(e) = self.drive().await {
            tracing::error!(%run_id, error = %e, "run driver stopped");
        }
        self.done.send_replace(RunSummary::of(&self.state, self.version));
        // Unregister before the last messages are lost: later results go to `record_late`.
        self.rx.close();
        let leftovers: Vec<Msg> = std::iter::from_fn(|| self.rx.try_recv().ok()).collect();
        if let Ok(mut drivers) = self.engine.inner.drivers.lock() {
            drivers.remove(&run_id);
        }
        for msg in leftovers {
            match msg {
                Msg::Report(delivery) => {
                    let engine = self.engine.clone();
                    tokio::spawn(async move { engine.deliver(delivery).await });
                }
                Msg::Control { action, control, request_id, reply } => {
                    let store = &self.engine.inner.store;
                    let _ = reply.send(apply_control(store, run_id, action, control, request_id).await);
                }
                Msg::ChildStarted { .. } | Msg::ToolNode(_) => {}
            }
        }
    }

    async fn drive(&mut self) -> Result<(), EngineError> {
        self.redispatch().await;
        self.step_settle().await?;
        let poll = self.engine.inner.config.poll_interval;
        while !self.state.status.is_terminal() {
            let wake = self.next_wake();
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    None => return Ok(()),
                    Some(Msg::Report(first)) => {
                        let mut reports = vec![first];
                        // A remote node run's `Dispatched` and `Started` come a fraction of a
                        // millisecond apart, and a fast node's result right after: waiting
                        // briefly for them saves a commit each.
                        let mut linger = self.engine.inner.config.settings.remote.is_some()
                            && !matches!(reports[0].report, Report::Finished(_) | Report::Ran { .. });
                        let until = tokio::time::Instant::now() + REPORT_LINGER;
                        while reports.len() < RESULT_BATCH {
                            let next = match self.rx.try_recv() {
                                Ok(msg) => Some(msg),
                                Err(_) if linger => tokio::time::timeout_at(until, self.rx.recv()).await.ok().flatten(),
                                Err(_) => None,
                            };
                            match next {
                                Some(Msg::Report(more)) => {
                                    linger &= !matches!(more.report, Report::Finished(_) | Report::Ran { .. });
                                    reports.push(more);
                                }
                                Some(other) => {
                                    self.record_reports(std::mem::take(&mut reports)).await?;
                                    self.handle(other).await?;
                                    break;
                                }
                                None => break,
                            }
                        }
                        if !reports.is_empty() {
                            self.record_reports(reports).await?;
                        }
                    }
                    Some(other) => self.handle(other).await?,
                },
                _ = sleep_until(wake) => self.step_settle().await?,
                _ = tokio::time::sleep(poll) => {
                    if self.last_append.elapsed() >= poll {
                        self.catch_up().await?;
                    }
                }
            }
        }
        self.notify_parent().await;
        Ok(())
    }

    /// When the next timer needs a settle step, as a tokio instant (now, if one is overdue).
    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let now = runledger_contracts::time::Timestamp::now();
        let at = self.state.next_wake(now)?;
        let ms = u64::try_from(now.millis_until(at)).unwrap_or(0);
        Some(tokio::time::Instant::now() + Duration::from_millis(ms + 1))
    }

    async fn handle(&mut self, msg: Msg) -> Result<(), EngineError> {
        let (action, control, request_id, reply) = match msg {
            Msg::Control { action, control, request_id, reply } => (action, control, request_id, reply),
            Msg::ChildStarted { node_run_id, child } => {
                let request = request_id(format!("child-{node_run_id}"));
                let command = Command::ChildStarted { node_run_id, child_run_id: child };
                match self.step(command, request).await {
                    Err(EngineError::Decide(e @ (DecideError::NotApplicable { .. } | DecideError::UnknownNodeRun(_)))) => {
                        tracing::warn!(run_id = %self.state.run_id, error = %e, "child run not recorded");
                    }
                    other => {
                        other?;
                    }
                }
                return Ok(());
            }
            Msg::Report(delivery) => return self.record_reports(vec![delivery]).await,
            Msg::ToolNode(node_run_id) => return self.run_tool_node(node_run_id).await,
        };
        let outcome = self.control(action, control, request_id).await;
        let _ = reply.send(outcome);
        if !self.state.status.is_terminal() {
            self.step_settle().await?;
        }
        Ok(())
    }

    async fn control(&mut self, action: ControlAction, control: Control, request_id: RequestId) -> Result<ControlOutcome, EngineError> {
        self.catch_up().await?;
        let earlier = self.engine.inner.store.read_stream(&self.stream, 1, usize::MAX).await?;
        let used: Vec<RecordedEvent> = earlier.into_iter().filter(|e| e.request_id == request_id).collect();
        if !used.is_empty() {
            return Ok(ControlOutcome { events: used, deduplicated: true });
        }
        let command = Command::Control { action, control };
        match self.step(command, request_id).await? {
            Some(events) => Ok(ControlOutcome { events, deduplicated: false }),
            None => Ok(ControlOutcome { events: Vec::new(), deduplicated: true }),
        }
    }

    /// Decides a batch of executor reports as one step; queues hear that their messages are
    /// recorded only after the append commits.
    async fn record_reports(&mut self, deliveries: Vec<Delivery>) -> Result<(), EngineError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let request = match deliveries.as_slice() {
            [one] => report_request_id(&one.report, one.message_id.as_deref()),
            many => {
                let mut hasher = blake3::Hasher::new();
                for d in many {
                    match &d.message_id {
                        Some(id) => hasher.update(id.as_bytes()),
                        None => hasher.update(report_request_id(&d.report, None).as_str().as_bytes()),
                    };
                }
                request_id(format!("results-{}-{}", many.len(), &hasher.finalize().to_hex()[..32]))
            }
        };
        let mut acks = Vec::new();
        let mut commands = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            if let Report::Finished(result) | Report::Ran { result, .. } = &d.report {
                self.dispatched.remove(&result.node_run_id);
            }
            acks.extend(d.recorded);
            commands.extend(report_commands(d.report));
        }
        self.step_many(commands, request).await?;
        for ack in acks {
            let _ = ack.send(());
        }
        Ok(())
    }

    async fn step_settle(&mut self) -> Result<(), EngineError> {
        let request = request_id(format!("settle-{}-v{}", self.state.run_id, self.version));
        self.step(Command::Settle, request).await.map(|_| ())
    }

    async fn step(&mut self, command: Command, request: RequestId) -> Result<Option<Vec<RecordedEvent>>, EngineError> {
        self.step_many(vec![command], request).await
    }

    /// Decides the commands as one step and appends the events in one request. Returns the
    /// recorded events, or `None` when another writer got there first with this request.
    async fn step_many(&mut self, commands: Vec<Command>, request: RequestId) -> Result<Option<Vec<RecordedEvent>>, EngineError> {
        let settings = self.engine.inner.config.settings.clone();
        for attempt in 0..MAX_STEP_ATTEMPTS {
            let is_settle = matches!(commands.as_slice(), [Command::Settle]);
            let request = if is_settle && attempt > 0 {
                request_id(format!("settle-{}-v{}", self.state.run_id, self.version))
            } else {
                request.clone()
            };
            let cause = Cause { request_id: request, correlation_id: self.correlation_id.clone() };
            let mut events = Vec::new();
            for command in &commands {
                match decide::decide(&mut self.state, command.clone(), &mut SystemEnv, &cause, &settings) {
                    Ok(more) => events.extend(more),
                    // A malformed result is the executor's fault: drop it (the node run times
                    // out and its retry policy applies) rather than stop driving the run.
                    Err(e @ (DecideError::UnknownNodeRun(_) | DecideError::InvalidInput { .. }))
                        if matches!(command, Command::RecordResult(_) | Command::Dispatched { .. } | Command::Started { .. }) =>
                    {
                        tracing::warn!(run_id = %self.state.run_id, error = %e, "executor result dropped");
                    }
                    Err(e @ DecideError::State(_)) => {
                        self.reload().await?;
                        return Err(e.into());
                    }
                    Err(e) => {
                        if !events.is_empty() {
                            // Earlier commands of this step already changed the state.
                            self.reload().await?;
                        }
                        return Err(e.into());
                    }
                }
            }
            if events.is_empty() {
                return Ok(Some(Vec::new()));
            }
            let append = append_request(&cause, &events)?;
            let span = tracing::debug_span!("append", request_id = %cause.request_id, expected_version = self.version);
            let appended = self.append_step(append).instrument(span).await;
            match appended {
                Ok(outcome) if !outcome.deduplicated => {
                    self.version = outcome.last_version();
                    tracing::debug!(version = self.version, events = outcome.events.len(), "appended");
                    self.last_append = tokio::time::Instant::now();
                    self.done.send_replace(RunSummary::of(&self.state, self.version));
                    let recorded = outcome.events;
                    if self.engine.inner.appended.receiver_count() > 0 {
                        let batch = AppendedBatch { run_id: self.state.run_id, events: recorded.clone() };
                        let _ = self.engine.inner.appended.send(Arc::new(batch));
                    }
                    self.effects(&events).await;
                    return Ok(Some(recorded));
                }
                Ok(_) | Err(StoreError::RequestMismatch { .. }) => {
                    // This request was recorded already (by us before a crash, or by another
                    // engine): the ledger's version of it stands.
                    self.reload().await?;
                    self.redispatch().await;
                    return Ok(None);
                }
                Err(StoreError::Conflict { .. }) => {
                    self.reload().await?;
                    self.redispatch().await;
                }
                Err(e) => {
                    self.reload_with_backoff().await?;
                    if attempt + 1 == MAX_STEP_ATTEMPTS {
                        return Err(e.into());
                    }
                    tracing::warn!(run_id = %self.state.run_id, error = %e, "append failed; retrying");
                }
            }
        }
        Err(EngineError::Contended(MAX_STEP_ATTEMPTS))
    }

    /// Rebuilds the state from the stream (after a lost race or a failed append).
    async fn reload(&mut self) -> Result<(), EngineError> {
        let loaded = load_run(&self.engine.inner.store, self.state.run_id).await?;
        self.state = loaded.state;
        self.version = loaded.version;
        self.done.send_replace(RunSummary::of(&self.state, self.version));
        Ok(())
    }

    async fn reload_with_backoff(&mut self) -> Result<(), EngineError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.reload().await {
                Ok(()) => return Ok(()),
                Err(EngineError::Store(StoreError::Database(e))) => {
                    tracing::warn!(run_id = %self.state.run_id, error = %e, "ledger unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies events someone else appended, then carries on from the new state.
    async fn catch_up(&mut self) -> Result<(), EngineError> {
        let store = &self.engine.inner.store;
        let Some(head) = store.stream_head(&self.stream).await? else { return Ok(()) };
        if head.version <= self.version {
            self.last_append = tokio::time::Instant::now();
            return Ok(());
        }
        let newer = store.read_stream(&self.stream, self.version + 1, usize::MAX).await?;
        let run_id = self.state.run_id;
        for recorded in &newer {
            evolve_recorded(&mut self.state, recorded, run_id)?;
            self.version = recorded.stream_version;
        }
        self.last_append = tokio::time::Instant::now();
        self.done.send_replace(RunSummary::of(&self.state, self.version));
        let _ = self.engine.inner.appended.send(Arc::new(AppendedBatch { run_id: self.state.run_id, events: newer }));
        if !self.state.status.is_terminal() {
            self.redispatch().await;
            self.step_settle().await?;
        }
        Ok(())
    }

    /// Hands every running node run that this driver has not dispatched to its executor.
    async fn redispatch(&mut self) {
        if self.state.status.is_terminal() {
            return;
        }
        let running: Vec<usize> = self
            .state
            .active
            .iter()
            .copied()
            .filter(|&i| {
                let nr = &self.state.node_runs[i];
                let unpublished = nr.phase == Phase::Scheduled
                    && !nr.dispatched
                    && self.engine.inner.config.settings.dispatches_remotely(nr.node_type);
                (nr.phase == Phase::Running || unpublished) && !self.dispatched.contains(&nr.id)
            })
            .collect();
        for i in running {
            self.dispatch(i).await;
        }
    }

    async fn effects(&mut self, events: &[DomainEvent]) {
        for event in events {
            let ended = match event {
                DomainEvent::NodeScheduled(e) if self.engine.inner.config.settings.dispatches_remotely(e.node_type) => {
                    if let Some(i) = self.state.node_run_index(&e.node_run_id)
                        && self.state.node_runs[i].phase == Phase::Scheduled
                    {
                        self.dispatch(i).await;
                    }
                    continue;
                }
                DomainEvent::NodeStarted(e) => {
                    if let Some(i) = self.state.node_run_index(&e.node_run_id)
                        && self.state.node_runs[i].is_active()
                    {
                        self.dispatch(i).await;
                    }
                    continue;
                }
                DomainEvent::NodeTimedOut(e) => e.node_run_id,
                DomainEvent::NodeCanceled(e) => e.node_run_id,
                DomainEvent::NodeSkipped(e) => e.node_run_id,
                _ => continue,
            };
            // A sub-flow node run that ended without its child: the child is canceled too.
            if let Some(child) = self.state.node_run(&ended).and_then(|nr| nr.child_run) {
                let engine = self.engine.clone();
                tokio::spawn(async move {
                    let control = Control { actor: engine.inner.config.actor.clone(), reason: "its parent node run ended".into() };
                    let request = request_id(format!("cancel-{child}"));
                    if let Err(e) = apply_control(&engine.inner.store, child, ControlAction::Cancel { force: true }, control, request).await {
                        tracing::debug!(%child, error = %e, "child run not canceled");
                    }
                });
            }
        }
    }

    #[tracing::instrument(name = "node_run", skip_all, fields(node_run_id = %self.state.node_runs[i].id, node_id = self.state.node_id(self.state.node_runs[i].node), attempt = self.state.node_runs[i].attempt))]
    async fn dispatch(&mut self, i: usize) {
        tracing::debug!("dispatching");
        let nr = &self.state.node_runs[i];
        let id = nr.id;
        if !self.dispatched.insert(id) {
            return;
        }
        if crate::tools::runs_in_engine(nr.node_type) && nr.phase == Phase::Running {
            self.queue_tool_node(id);
            return;
        }
        let remote = nr.phase == Phase::Scheduled && self.engine.inner.config.settings.dispatches_remotely(nr.node_type);
        match nr.executor.as_deref() {
            None if remote => {
                if let Some(work) = self.state.work(i) {
                    self.engine.inner.executor.submit(work, self.engine.inner.results.clone());
                }
            }
            Some(SUBFLOW) => self.dispatch_child(i),
            Some(executor) if executor == self.engine.inner.config.settings.executor || executor == INPROCESS => {
                if let Some(work) = self.state.work(i) {
                    self.engine.inner.executor.submit(work, self.engine.inner.results.clone());
                }
            }
            _ => {
                // Another executor kind owns it (e.g. NATS); its results arrive through that path.
                self.dispatched.remove(&id);
            }
        }
    }

    /// Starts (or finds) the child run in a task of its own; the driver records
    /// `ChildRunStarted` when it hears back, and the child reports its end as a result.
    fn dispatch_child(&mut self, i: usize) {
        let nr = &self.state.node_runs[i];
        let (node_run_id, attempt, known) = (nr.id, nr.attempt, nr.child_run);
        let engine = self.engine.clone();
        let parent_id = self.state.run_id;
        let prepared = match known {
            Some(child) => Ok(Err(child)),
            None => engine.prepare_child(&self.state, i).map(Ok),
        };
        let me = self.me.clone();
        tokio::spawn(async move {
            let report = |outcome| Delivery::finished(parent_id, NodeResult { node_run_id, attempt, outcome, tool_calls: Vec::new() });
            let child = match prepared {
                Err(outcome) => {
                    let _ = engine.inner.results.send(report(outcome));
                    return;
                }
                Ok(Err(known)) => known,
                Ok(Ok((start, correlation))) => {
                    let child = start.run_id;
                    let request = request_id(format!("start-{child}"));
                    if let Err(e) = engine.start(start, request, correlation).await {
                        let _ = engine.inner.results.send(report(fail("subflow_unavailable", &e.to_string())));
                        return;
                    }
                    if let Some(me) = me.upgrade() {
                        let _ = me.send(Msg::ChildStarted { node_run_id, child });
                    }
                    child
                }
            };
            // A child that has already ended reports now; a running one reports when it ends.
            match engine.ensure_driven(child).await {
                Ok(summary) if summary.status.is_terminal() && !engine.is_driven(child) => {
                    let _ = engine.inner.results.send(Delivery::finished(parent_id, child_result(&summary, node_run_id, attempt)));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = engine.inner.results.send(report(fail("subflow_unavailable", &e.to_string())));
                }
            }
        });
    }

    /// A child run that ended reports to its parent's node run.
    async fn notify_parent(&self) {
        let Some(parent) = &self.state.parent else { return };
        let Ok(parent_state) = load_run(&self.engine.inner.store, parent.run_id).await else { return };
        let Some(nr) = parent_state.state.node_run(&parent.node_run_id) else { return };
        let summary = RunSummary::of(&self.state, self.version);
        let result = child_result(&summary, parent.node_run_id, nr.attempt);
        let _ = self.engine.inner.results.send(Delivery::finished(parent.run_id, result));
    }
}

/// The request id of a step that records one report: the carrying message's id when it has
/// one, so a redelivered message finds its first append.
fn report_request_id(report: &Report, message_id: Option<&str>) -> RequestId {
    if let Some(id) = message_id {
        return request_id(id.to_owned());
    }
    match report {
        Report::Finished(r) | Report::Ran { result: r, .. } => request_id(format!("result-{}", r.node_run_id)),
        Report::Dispatched { node_run_id, .. } => request_id(format!("dispatched-{node_run_id}")),
        Report::Started { node_run_id, .. } => request_id(format!("started-{node_run_id}")),
    }
}

fn report_commands(report: Report) -> Vec<Command> {
    match report {
        Report::Finished(result) => vec![Command::RecordResult(result)],
        Report::Dispatched { node_run_id, attempt, executor_class, message_id, stream_sequence } => {
            vec![Command::Dispatched { node_run_id, attempt, executor_class, message_id, stream_sequence }]
        }
        Report::Started { node_run_id, attempt, executor } => vec![Command::Started { node_run_id, attempt, executor }],
        Report::Ran { executor, result } => vec![
            Command::Started { node_run_id: result.node_run_id, attempt: result.attempt, executor },
            Command::RecordResult(result),
        ],
    }
}

fn child_result(summary: &RunSummary, node_run_id: NodeRunId, attempt: u32) -> NodeResult {
    let outcome = match summary.status {
        RunStatus::Completed => NodeOutcome::Succeeded {
            output: serde_json::json!({ "run_id": summary.run_id, "output": summary.output }),
            warnings: Vec::new(),
            fallback_used: false,
        },
        other => {
            let reason = summary.error.as_ref().map(|e| format!(": {}", e.message)).unwrap_or_default();
            fail("subflow_failed", &format!("child run {} ended {}{reason}", summary.run_id, other.as_str()))
        }
    };
    NodeResult { node_run_id, attempt, outcome, tool_calls: Vec::new() }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts of node runs per status, for summaries.
pub fn status_counts(state: &RunState) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for nr in &state.node_runs {
        let key = match nr.status() {
            Some(status) => decide::status_name(status),
            None => "running",
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
