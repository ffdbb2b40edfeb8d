//! The run service: drives runs against the ledger.
//!
//! Each loaded run is owned by one task (its *driver*) holding the run state and the stream
//! version it was built from. Every step decides events against that state and appends them
//! with `ExpectedVersion::Exact(version)`: the version check is the fence between engines, so
//! two engines on one run cannot fork it. A step that loses the race reloads the run and tries
//! again. One step is one append, so everything a result causes (the node's end, its artifact,
//! the next node runs) commits together.
//!
//! Timers are deadlines recorded in events; a driver sleeps until the earliest one. Writes of
//! other processes to its run (a control from the CLI, a report recorded by another instance)
//! reach a driver as a wake from the lease keeper (NOTIFY); only an engine without one (alone on
//! its ledger) polls its stream's head when idle. A restarted engine rebuilds each unfinished run from its stream and hands its
//! running node runs to the executor again; the attempt fence absorbs any duplicate result.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{NewEvent, RecordedEvent};
use runledger_contracts::events::{Control, DomainEvent, ErrorInfo, ParentRun, RunTakenOver};
use runledger_contracts::ids::{CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_ledger::leases::Claim;
use runledger_ledger::{
    AppendOutcome, AppendRequest, EventStore, ExpectedVersion, StoreError, StreamAppend,
};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

use crate::commit::{self, GroupCommit, GroupCommitConfig};
use crate::decide::{
    self, Cause, Command, ControlAction, DecideError, Env, NodeOutcome, NodeResult, Settings,
    StartRun, StepEnv,
};
use crate::delivery::{DeliveryOutcome, Receipt, Refusal};
use crate::executor::{Delivery, INPROCESS, NodeExecutor, NodeWork, Report, ResultSender, SUBFLOW};
use crate::inputs::{report_commands, settle_request_id};
use crate::lease::{Ownership, Solo};
use crate::state::{Phase, RunState, RunStatus, StateError};
use crate::unstorable;

#[path = "tools/driver.rs"]
mod tool_driver;

/// How many times a step is re-decided after losing a race before it gives up.
const MAX_STEP_ATTEMPTS: u32 = 8;
/// The longest a driver sleeps for one timer; a later timer is simply looked at again then.
const MAX_TIMER_SLEEP_MS: u64 = 24 * 60 * 60 * 1000;
/// Events read per page when a run is loaded.
const PAGE: usize = 5_000;

pub use crate::subflows::{FlowchartSource, NoFlowcharts, ResolveError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decide(#[from] DecideError),
    #[error("run {run_id} is corrupt at version {version}: {message}")]
    Corrupt {
        run_id: RunId,
        version: u64,
        message: String,
    },
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
    /// How often an idle driver checks its stream for events written by someone else, when
    /// nobody wakes it for them ([`crate::lease::Ownership::hears_wakes`]).
    pub poll_interval: Duration,
    /// Recorded as the actor of runs the engine starts itself (child runs).
    pub actor: String,
    /// Steps of different runs that are ready together share one commit ([`crate::commit`]).
    pub group_commit: GroupCommitConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            poll_interval: Duration::from_millis(250),
            actor: "runledger".into(),
            group_commit: GroupCommitConfig::default(),
        }
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
    load_run_noting(store, run_id, None)
        .await
        .map(|(loaded, _)| loaded)
}

/// [`load_run`], also returning the events that `request` wrote (in the same single read), so
/// an idempotent control can tell whether it was applied before.
pub(crate) async fn load_run_noting<S: EventStore>(
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
        (Some(state), Some(correlation_id)) => Ok((
            LoadedRun {
                state,
                version,
                correlation_id,
            },
            noted,
        )),
        _ => Err(EngineError::RunNotFound(run_id)),
    }
}

/// A run is rebuilt only from an unbroken stream: versions 1, 2, 3, ... each chained to the one
/// before. A missing or re-linked event (someone edited the table) would otherwise replay into
/// a plausible but false state, e.g. "completed" with a node run's end deleted.
fn check_linked(
    run_id: RunId,
    previous: u64,
    head: Option<&Digest>,
    recorded: &RecordedEvent,
) -> Result<(), EngineError> {
    let expected = previous + 1;
    if recorded.stream_version != expected {
        return Err(EngineError::Corrupt {
            run_id,
            version: expected,
            message: format!(
                "version {expected} is missing (the next event is version {})",
                recorded.stream_version
            ),
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

fn evolve_recorded(
    state: &mut RunState,
    recorded: &RecordedEvent,
    run_id: RunId,
) -> Result<(), EngineError> {
    let corrupt = |message: String| EngineError::Corrupt {
        run_id,
        version: recorded.stream_version,
        message,
    };
    let event = recorded.decode().map_err(|e| corrupt(e.to_string()))?;
    state.evolve(&event).map_err(|e| corrupt(e.to_string()))
}

fn apply_recorded(
    state: &mut Option<RunState>,
    recorded: &RecordedEvent,
    run_id: RunId,
) -> Result<(), EngineError> {
    if let Some(state) = state {
        return evolve_recorded(state, recorded, run_id);
    }
    let corrupt = |message: String| EngineError::Corrupt {
        run_id,
        version: recorded.stream_version,
        message,
    };
    match recorded.decode().map_err(|e| corrupt(e.to_string()))? {
        DomainEvent::RunStarted(started) => {
            *state = Some(RunState::from_started(&started).map_err(|e| corrupt(e.to_string()))?);
            Ok(())
        }
        DomainEvent::RunForked(forked) => {
            *state = Some(RunState::from_forked(&forked).map_err(|e| corrupt(e.to_string()))?);
            Ok(())
        }
        _ => Err(corrupt(
            "a run stream must begin with RunStarted or RunForked".into(),
        )),
    }
}

/// Applies an operator control straight to the ledger, without a running engine: reads the
/// run, decides, appends. Idempotent by request id (looked up in the store's request index).
/// The caller wakes the run's owner ([`crate::lease::Ownership::wake_owner`], or
/// `LeaseStore::wake_owner` from the CLI), which reads the events and carries on from there.
pub async fn apply_control<S: EventStore>(
    store: &S,
    run_id: RunId,
    action: ControlAction,
    control: Control,
    request_id: RequestId,
) -> Result<ControlOutcome, EngineError> {
    let stream = StreamId::for_run(run_id);
    for _ in 0..MAX_STEP_ATTEMPTS {
        // Applied before? One index probe, not a read of the stream.
        let used = store.find_request(&stream, &request_id).await?;
        if !used.is_empty() {
            return Ok(ControlOutcome {
                events: used,
                deduplicated: true,
            });
        }
        let mut loaded = load_run(store, run_id).await?;
        let cause = Cause {
            request_id: request_id.clone(),
            correlation_id: loaded.correlation_id.clone(),
        };
        let command = Command::Control {
            action: action.clone(),
            control: control.clone(),
        };
        let mut env = StepEnv::begin();
        let events = decide::decide(
            &mut loaded.state,
            command,
            &mut env,
            &cause,
            &Settings::default(),
        )?;
        let request = append_request(&cause, &events, &env)?;
        match store
            .append(&stream, ExpectedVersion::Exact(loaded.version), request)
            .await
        {
            Ok(outcome) => {
                return Ok(ControlOutcome {
                    deduplicated: outcome.deduplicated,
                    events: outcome.events,
                });
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::Contended(MAX_STEP_ATTEMPTS))
}

/// The append of a step's events, recorded at the step's clock reading.
pub(crate) fn append_request(
    cause: &Cause,
    events: &[DomainEvent],
    env: &StepEnv,
) -> Result<AppendRequest, EngineError> {
    let mut new_events = Vec::with_capacity(events.len());
    for event in events {
        let new = NewEvent::from_domain(event).map_err(|e| {
            EngineError::Decide(DecideError::InvalidInput {
                field: "event",
                message: e.to_string(),
            })
        })?;
        new_events.push(new);
    }
    let mut request = AppendRequest::new(
        cause.request_id.clone(),
        cause.correlation_id.clone(),
        new_events,
    );
    request.recorded_at = Some(env.now());
    Ok(request)
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
    ChildStarted {
        node_run_id: NodeRunId,
        child: RunId,
    },
    Control {
        action: ControlAction,
        control: Control,
        request_id: RequestId,
        reply: oneshot::Sender<Result<ControlOutcome, EngineError>>,
    },
    /// Someone else wrote to the run (a wake from the lease keeper): read the new events.
    CatchUp,
    /// The instance is shutting down: dispatch nothing new, stop once local work has reported.
    Drain,
    /// The run's lease is gone (taken over, or the drain ran out of time): stop now.
    Stop,
    /// These executors are gone (a failed Kubernetes Job): fail what they had started.
    ExecutorsLost(Arc<ExecutorsLost>),
}

/// Executors that died with their work, and the failure to record for each node run they had
/// started (message id `<key>:<node_run_id>`, so a loss reported again writes nothing).
#[derive(Debug)]
pub struct ExecutorsLost {
    pub executor_ids: Vec<String>,
    pub error: ErrorInfo,
    pub key: String,
}

struct DriverHandle {
    /// Tells this driver from a successor registered under the same run.
    id: u64,
    tx: mpsc::UnboundedSender<Msg>,
    done: watch::Receiver<RunSummary>,
}

struct Inner<S> {
    store: S,
    executor: Arc<dyn NodeExecutor>,
    flowcharts: Arc<dyn FlowchartSource>,
    config: EngineConfig,
    drivers: Mutex<HashMap<RunId, DriverHandle>>,
    next_driver: AtomicU64,
    results: ResultSender,
    appended: broadcast::Sender<Arc<AppendedBatch>>,
    ownership: Arc<dyn Ownership>,
    commits: Arc<GroupCommit>,
}

/// The run engine. Cheap to clone; all clones drive the same runs.
pub struct Engine<S: EventStore + 'static> {
    inner: Arc<Inner<S>>,
}

impl<S: EventStore + 'static> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: EventStore + 'static> Engine<S> {
    /// Creates the engine and its result router. Must be called inside a tokio runtime.
    pub fn new(
        store: S,
        executor: Arc<dyn NodeExecutor>,
        flowcharts: Arc<dyn FlowchartSource>,
        config: EngineConfig,
    ) -> Self {
        Self::with_ownership(store, executor, flowcharts, config, Arc::new(Solo))
    }

    /// [`Engine::new`] for one of several instances on a ledger: it drives only the runs whose
    /// lease `ownership` grants ([`crate::lease`]).
    pub fn with_ownership(
        store: S,
        executor: Arc<dyn NodeExecutor>,
        flowcharts: Arc<dyn FlowchartSource>,
        config: EngineConfig,
        ownership: Arc<dyn Ownership>,
    ) -> Self {
        let (results, mut results_rx) = mpsc::unbounded_channel::<Delivery>();
        let (appended, _) = broadcast::channel(4096);
        let commits = Arc::new(GroupCommit::new(config.group_commit));
        let inner = Arc::new(Inner {
            store,
            executor,
            flowcharts,
            config,
            drivers: Mutex::new(HashMap::new()),
            next_driver: AtomicU64::new(1),
            results,
            appended,
            ownership,
            commits,
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(delivery) = results_rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine { inner };
                // A report of a run not driven here needs the ledger (load, maybe record): on
                // its own task, so a slow or unknown run does not hold up other runs' reports.
                if let Some(late) = engine.to_driver(delivery) {
                    tokio::spawn(async move { engine.deliver_late(late).await });
                }
            }
        });
        Self { inner }
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Appends one step's events: through group commit, so steps of other runs that are ready
    /// at the same time share its transaction (or straight, when group commit is off). The
    /// outcome is this append's own, as [`EventStore::append`] would give it.
    async fn commit(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let commits = &self.inner.commits;
        if !commits.enabled() {
            return self.inner.store.append(stream, expected, request).await;
        }
        let (outcome, lead) = commits.enqueue(StreamAppend::new(stream.clone(), expected, request));
        if let Some((mut slot, batch)) = lead {
            commit::write(&self.inner.store, batch).await;
            if let Some(more) = GroupCommit::next_batch(&mut slot) {
                // Appends queued while this one committed: written on a task of their own, so
                // this driver goes on with its run now.
                let engine = self.clone();
                tokio::spawn(async move {
                    let mut batch = more;
                    loop {
                        commit::write(&engine.inner.store, batch).await;
                        match GroupCommit::next_batch(&mut slot) {
                            Some(next) => batch = next,
                            None => break,
                        }
                    }
                });
            }
        }
        outcome.await.unwrap_or_else(|_| Err(commit::lost()))
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
    ///
    /// The run's lease is taken before `RunStarted` commits (other instances are woken by that
    /// commit); when another instance holds it, or this one is full or draining, the run is
    /// recorded and left to the others.
    pub async fn start(
        &self,
        start: StartRun,
        request_id: RequestId,
        correlation_id: CorrelationId,
    ) -> Result<RunId, EngineError> {
        let run_id = start.run_id;
        let claim = self.inner.ownership.acquire(run_id).await?;
        let started = self.record_start(start, request_id, correlation_id).await;
        match (started, claim) {
            (Ok(Some(loaded)), Some(_)) => self.spawn_driver(loaded).map(|_| run_id),
            // Started before (same request, or the same run id): drive what the ledger holds.
            (Ok(None), Some(claim)) => self
                .ensure_driven_with(run_id, Some(claim))
                .await
                .map(|_| run_id),
            (Ok(_), None) => Ok(run_id),
            (Err(e), claim) => {
                if claim.is_some() {
                    self.inner.ownership.release(run_id, false);
                }
                Err(e)
            }
        }
    }

    /// Records a run's start and leaves it to whichever instance takes it from the run index
    /// (`runledger run` without `--wait`). Idempotent by request id like [`Engine::start`].
    pub async fn start_detached(
        &self,
        start: StartRun,
        request_id: RequestId,
        correlation_id: CorrelationId,
    ) -> Result<RunId, EngineError> {
        let run_id = start.run_id;
        self.record_start(start, request_id, correlation_id)
            .await
            .map(|_| run_id)
    }

    /// Appends `RunStarted` (and what the start decides). `None`: the run existed already.
    async fn record_start(
        &self,
        start: StartRun,
        request_id: RequestId,
        correlation_id: CorrelationId,
    ) -> Result<Option<LoadedRun>, EngineError> {
        let run_id = start.run_id;
        let stream = StreamId::for_run(run_id);
        let cause = Cause {
            request_id,
            correlation_id,
        };
        let mut env = StepEnv::begin();
        let (state, events) =
            decide::start_run(start, &mut env, &cause, &self.inner.config.settings)?;
        let request = append_request(&cause, &events, &env)?;
        match self
            .commit(&stream, ExpectedVersion::NoStream, request)
            .await
        {
            Ok(outcome) if !outcome.deduplicated => {
                let version = outcome.last_version();
                let _ = self.inner.appended.send(Arc::new(AppendedBatch {
                    run_id,
                    events: outcome.events,
                }));
                Ok(Some(LoadedRun {
                    state,
                    version,
                    correlation_id: cause.correlation_id,
                }))
            }
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Forks a finished run ([`crate::fork::fork`]) and drives the fork, unless another
    /// instance holds its lease (then that instance drives it, found through the run index).
    pub async fn fork(
        &self,
        request: crate::fork::ForkRequest,
    ) -> Result<crate::fork::ForkOutcome, EngineError> {
        let outcome = crate::fork::fork(&self.inner.store, request).await?;
        self.ensure_driven(outcome.run_id).await?;
        Ok(outcome)
    }

    /// Loads a run and drives it, unless it is already driven here, has ended, or another
    /// instance holds its lease. Returns its summary as loaded.
    pub async fn ensure_driven(&self, run_id: RunId) -> Result<RunSummary, EngineError> {
        self.ensure_driven_with(run_id, None).await
    }

    async fn ensure_driven_with(
        &self,
        run_id: RunId,
        claim: Option<Claim>,
    ) -> Result<RunSummary, EngineError> {
        if let Some(summary) = self.driven_summary(run_id) {
            return Ok(summary);
        }
        let loaded = load_run(&self.inner.store, run_id).await?;
        let summary = RunSummary::of(&loaded.state, loaded.version);
        if loaded.state.status.is_terminal() {
            return Ok(summary);
        }
        let claim = match claim {
            Some(claim) => Some(claim),
            None => self.inner.ownership.acquire(run_id).await?,
        };
        if let Some(claim) = claim {
            self.drive_claimed(loaded, claim).await?;
        }
        Ok(summary)
    }

    /// Drives a run whose lease this instance has just been granted by the lease keeper
    /// ([`crate::lease::keep`]). A run that has ended meanwhile hands its lease back.
    pub async fn adopt(&self, claim: Claim) -> Result<(), EngineError> {
        let run_id = claim.run_id;
        if self.is_driven(run_id) {
            return Ok(());
        }
        let loaded = load_run(&self.inner.store, run_id).await?;
        if loaded.state.status.is_terminal() {
            self.inner.ownership.release(run_id, false);
            return Ok(());
        }
        self.drive_claimed(loaded, claim).await
    }

    /// Records the takeover when the run changed hands, then drives it. `RunTakenOver` is
    /// appended at the version just loaded: a previous owner still writing fails its next
    /// version check, reloads, sees it and stops.
    async fn drive_claimed(&self, mut loaded: LoadedRun, claim: Claim) -> Result<(), EngineError> {
        let run_id = loaded.state.run_id;
        if let (true, Some(instance)) = (claim.changed_hands, self.inner.ownership.instance_id()) {
            let event = DomainEvent::RunTakenOver(RunTakenOver {
                run_id,
                instance_id: instance.to_owned(),
                epoch: claim.epoch,
                previous_instance_id: claim.previous_owner.clone(),
            });
            let cause = Cause {
                request_id: request_id(format!("takeover-{run_id}-{}", claim.epoch)),
                correlation_id: loaded.correlation_id.clone(),
            };
            let mut attempts = 0;
            loop {
                let request =
                    append_request(&cause, std::slice::from_ref(&event), &StepEnv::begin())?;
                let stream = StreamId::for_run(run_id);
                match self
                    .inner
                    .store
                    .append(&stream, ExpectedVersion::Exact(loaded.version), request)
                    .await
                {
                    Ok(outcome) => {
                        if !outcome.deduplicated {
                            loaded.state.evolve(&event)?;
                            loaded.version = outcome.last_version();
                            let _ = self.inner.appended.send(Arc::new(AppendedBatch {
                                run_id,
                                events: outcome.events,
                            }));
                        } else {
                            loaded = load_run(&self.inner.store, run_id).await?;
                        }
                        break;
                    }
                    Err(StoreError::Conflict { .. }) if attempts < MAX_STEP_ATTEMPTS => {
                        attempts += 1;
                        loaded = load_run(&self.inner.store, run_id).await?;
                        if loaded.state.status.is_terminal() {
                            self.inner.ownership.release(run_id, false);
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            tracing::info!(%run_id, epoch = claim.epoch, previous = ?claim.previous_owner, "took the run over");
        }
        self.spawn_driver(loaded)
    }

    /// Has the run's driver read what others wrote to the run (a wake from another instance);
    /// nothing when the run is not driven here.
    pub fn poke(&self, run_id: RunId) {
        let tx = self
            .inner
            .drivers
            .lock()
            .ok()
            .and_then(|d| d.get(&run_id).map(|h| h.tx.clone()));
        if let Some(tx) = tx {
            let _ = tx.send(Msg::CatchUp);
        }
    }

    /// Tells the run's owner, wherever it runs, that something else wrote to the run
    /// ([`crate::lease::Ownership::wake_owner`]); nothing when this engine is alone.
    pub async fn wake_owner(&self, run_id: RunId) {
        self.inner.ownership.wake_owner(run_id).await;
    }

    /// [`Engine::poke`] for every run driven here (wakes may have been lost).
    pub fn poke_all(&self) {
        let senders: Vec<_> = self
            .inner
            .drivers
            .lock()
            .map(|d| d.values().map(|h| h.tx.clone()).collect())
            .unwrap_or_default();
        for tx in senders {
            let _ = tx.send(Msg::CatchUp);
        }
    }

    /// Stops driving a run whose lease this instance lost.
    pub fn relinquish(&self, run_id: RunId) {
        let tx = self
            .inner
            .drivers
            .lock()
            .ok()
            .and_then(|d| d.get(&run_id).map(|h| h.tx.clone()));
        if let Some(tx) = tx {
            let _ = tx.send(Msg::Stop);
        }
    }

    /// Fails, with `lost.error`, every node run that one of `lost.executor_ids` had started in
    /// a run this instance drives (the owners of other runs do the same for theirs). Each
    /// driver checks its own state; nothing is read from the ledger.
    pub fn executors_lost(&self, lost: ExecutorsLost) -> usize {
        let lost = Arc::new(lost);
        let senders: Vec<_> = self
            .inner
            .drivers
            .lock()
            .map(|d| d.values().map(|h| h.tx.clone()).collect())
            .unwrap_or_default();
        senders
            .iter()
            .filter(|tx| tx.send(Msg::ExecutorsLost(Arc::clone(&lost))).is_ok())
            .count()
    }

    /// How many runs this engine drives now.
    pub fn driven(&self) -> usize {
        self.inner
            .drivers
            .lock()
            .map(|d| d.values().filter(|h| !h.tx.is_closed()).count())
            .unwrap_or(0)
    }

    /// Graceful shutdown: every driver stops dispatching and ends once the work it handed to an
    /// in-process executor has reported (its results are recorded), or when `patience` runs
    /// out. What is left is recorded in the ledger for the next owner. Returns how many drivers
    /// had to be stopped before their work reported.
    pub async fn drain(&self, patience: Duration) -> usize {
        let senders: Vec<_> = self
            .inner
            .drivers
            .lock()
            .map(|d| d.values().map(|h| h.tx.clone()).collect())
            .unwrap_or_default();
        for tx in &senders {
            let _ = tx.send(Msg::Drain);
        }
        let deadline = tokio::time::Instant::now() + patience;
        while self.driven() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left: Vec<_> = self
            .inner
            .drivers
            .lock()
            .map(|d| d.values().map(|h| h.tx.clone()).collect())
            .unwrap_or_default();
        let stopped = left.iter().filter(|tx| tx.send(Msg::Stop).is_ok()).count();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.driven() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stopped
    }

    fn driven_summary(&self, run_id: RunId) -> Option<RunSummary> {
        let drivers = self.inner.drivers.lock().ok()?;
        let handle = drivers.get(&run_id)?;
        if handle.tx.is_closed() {
            return None;
        }
        Some(handle.done.borrow().clone())
    }

    pub fn is_driven(&self, run_id: RunId) -> bool {
        self.inner
            .drivers
            .lock()
            .map(|d| d.get(&run_id).is_some_and(|h| !h.tx.is_closed()))
            .unwrap_or(false)
    }

    /// Waits until the run ends, driving it when this instance may (else following the
    /// instance that does).
    pub async fn wait(&self, run_id: RunId) -> Result<RunSummary, EngineError> {
        let summary = self.ensure_driven(run_id).await?;
        if summary.status.is_terminal() && !self.is_driven(run_id) {
            return Ok(summary);
        }
        let done = {
            let drivers = self
                .inner
                .drivers
                .lock()
                .map_err(|_| EngineError::Shutdown)?;
            drivers.get(&run_id).map(|handle| handle.done.clone())
        };
        let Some(mut done) = done else {
            return Box::pin(self.follow(run_id)).await;
        };
        loop {
            let summary = done.borrow_and_update().clone();
            if summary.status.is_terminal() {
                return Ok(summary);
            }
            if done.changed().await.is_err() {
                // The driver stopped without an end (its lease went elsewhere): follow the run.
                return Box::pin(self.follow(run_id)).await;
            }
        }
    }

    /// Follows a run another instance drives until it ends, reading only what was appended
    /// since the last look (every `poll_interval`) and broadcasting it like a driver would.
    /// A run whose owner stopped renewing is taken over here when this instance may.
    async fn follow(&self, run_id: RunId) -> Result<RunSummary, EngineError> {
        /// Quiet polls between two attempts to take the run's lease.
        const QUIET_POLLS_BEFORE_CLAIM: u32 = 8;
        let mut loaded = load_run(&self.inner.store, run_id).await?;
        let stream = StreamId::for_run(run_id);
        let mut quiet = 0;
        while !loaded.state.status.is_terminal() {
            tokio::time::sleep(self.inner.config.poll_interval).await;
            let newer = self
                .inner
                .store
                .read_stream(&stream, loaded.version + 1, PAGE)
                .await?;
            if newer.is_empty() {
                quiet += 1;
                if quiet >= QUIET_POLLS_BEFORE_CLAIM {
                    quiet = 0;
                    if self.ensure_driven(run_id).await.is_ok() && self.is_driven(run_id) {
                        return Box::pin(self.wait(run_id)).await;
                    }
                }
                continue;
            }
            quiet = 0;
            for recorded in &newer {
                evolve_recorded(&mut loaded.state, recorded, run_id)?;
                loaded.version = recorded.stream_version;
            }
            let _ = self.inner.appended.send(Arc::new(AppendedBatch {
                run_id,
                events: newer,
            }));
        }
        Ok(RunSummary::of(&loaded.state, loaded.version))
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
            let drivers = self
                .inner
                .drivers
                .lock()
                .map_err(|_| EngineError::Shutdown)?;
            drivers
                .get(&run_id)
                .filter(|h| !h.tx.is_closed())
                .map(|h| h.tx.clone())
        };
        match tx {
            Some(tx) => {
                let (reply, answer) = oneshot::channel();
                tx.send(Msg::Control {
                    action,
                    control,
                    request_id,
                    reply,
                })
                .map_err(|_| EngineError::Shutdown)?;
                answer.await.map_err(|_| EngineError::Shutdown)?
            }
            None => {
                // An ended run: controls that reopen it go to the ledger, then it is driven.
                let outcome =
                    apply_control(&self.inner.store, run_id, action, control, request_id).await?;
                if !outcome.deduplicated {
                    self.inner.ownership.wake_owner(run_id).await;
                }
                self.ensure_driven(run_id).await?;
                Ok(outcome)
            }
        }
    }

    /// Hands an executor's report to the run's driver; a run not driven here is loaded, and
    /// one that has ended records a late result as ignored.
    pub async fn deliver(&self, delivery: Delivery) {
        if let Some(late) = self.to_driver(delivery) {
            self.deliver_late(late).await;
        }
    }

    /// Hands the report to the run's driver when one runs here; else gives it back.
    fn to_driver(&self, delivery: Delivery) -> Option<Delivery> {
        let run_id = delivery.run_id;
        let tx = self.inner.drivers.lock().ok().and_then(|d| {
            d.get(&run_id)
                .filter(|h| !h.tx.is_closed())
                .map(|h| h.tx.clone())
        });
        match tx {
            Some(tx) => match tx.send(Msg::Report(delivery)) {
                Ok(()) => None,
                Err(mpsc::error::SendError(Msg::Report(delivery))) => Some(delivery),
                Err(_) => None,
            },
            None => Some(delivery),
        }
    }

    async fn deliver_late(&self, delivery: Delivery) {
        let run_id = delivery.run_id;
        if let Err(e) = self.record_late(delivery).await {
            tracing::warn!(%run_id, error = %e, "could not record an executor report");
        }
    }

    /// A report for a run not driven here: drive the run when this instance may take its
    /// lease; otherwise (another instance drives it, or it has ended) decide the report
    /// against the run as recorded and append it, fenced by the version read, then wake the
    /// owner (NOTIFY), which reads the events and dispatches what they scheduled.
    async fn record_late(&self, mut delivery: Delivery) -> Result<(), EngineError> {
        let run_id = delivery.run_id;
        let mut loaded = match load_run(&self.inner.store, run_id).await {
            Err(e @ EngineError::RunNotFound(_)) => {
                settle(
                    delivery.receipt.take(),
                    DeliveryOutcome::Refused(Refusal::new("unknown_run", e.to_string())),
                );
                return Ok(());
            }
            loaded => loaded?,
        };
        if !loaded.state.status.is_terminal()
            && let Some(claim) = self.inner.ownership.acquire(run_id).await?
        {
            self.drive_claimed(loaded, claim).await?;
            let tx = self
                .inner
                .drivers
                .lock()
                .ok()
                .and_then(|d| d.get(&run_id).map(|h| h.tx.clone()));
            if let Some(tx) = tx {
                let _ = tx.send(Msg::Report(delivery));
            }
            return Ok(());
        }
        let Delivery {
            report,
            message_id,
            receipt,
            ..
        } = delivery;
        let cause = Cause {
            request_id: report_request_id(&report, message_id.as_deref()),
            correlation_id: loaded.correlation_id.clone(),
        };
        let stream = StreamId::for_run(run_id);
        let outcome = 'attempts: {
            for attempt in 0..MAX_STEP_ATTEMPTS {
                if attempt > 0 {
                    loaded = load_run(&self.inner.store, run_id).await?;
                }
                let mut events = Vec::new();
                let mut env = StepEnv::begin();
                for command in report_commands(report.clone()) {
                    match decide::decide(
                        &mut loaded.state,
                        command,
                        &mut env,
                        &cause,
                        &self.inner.config.settings,
                    ) {
                        Ok(more) => events.extend(more),
                        Err(e) => match Refusal::of_decide(&e) {
                            // The run as recorded says no, and will say it to every copy.
                            Some(refusal) => break 'attempts DeliveryOutcome::Refused(refusal),
                            None => return Err(e.into()),
                        },
                    }
                }
                if events.is_empty() {
                    break 'attempts DeliveryOutcome::Duplicate;
                }
                let request = append_request(&cause, &events, &env)?;
                match self
                    .inner
                    .store
                    .append(&stream, ExpectedVersion::Exact(loaded.version), request)
                    .await
                {
                    Ok(o) if o.deduplicated => break 'attempts DeliveryOutcome::Duplicate,
                    Ok(_) => {
                        // The owner dispatches what this report scheduled (or, if it ended the
                        // run, stops and hands its lease back): tell it now.
                        self.inner.ownership.wake_owner(run_id).await;
                        break 'attempts DeliveryOutcome::Recorded;
                    }
                    Err(StoreError::RequestMismatch { .. }) => {
                        break 'attempts DeliveryOutcome::Duplicate;
                    }
                    // The owner wrote meanwhile: decide again against what it wrote.
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) if refused_for_its_content(&e) => {
                        break 'attempts DeliveryOutcome::Refused(Refusal::new(
                            e.code(),
                            e.to_string(),
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // Still contended: the report's queue delivers it again.
            DeliveryOutcome::Transient
        };
        settle(receipt, outcome);
        Ok(())
    }

    fn spawn_driver(&self, loaded: LoadedRun) -> Result<(), EngineError> {
        let run_id = loaded.state.run_id;
        let (tx, rx) = mpsc::unbounded_channel();
        let me = tx.downgrade();
        let (done_tx, done_rx) = watch::channel(RunSummary::of(&loaded.state, loaded.version));
        let id = self.inner.next_driver.fetch_add(1, Ordering::Relaxed);
        {
            let mut drivers = self
                .inner
                .drivers
                .lock()
                .map_err(|_| EngineError::Shutdown)?;
            if drivers.get(&run_id).is_some_and(|h| !h.tx.is_closed()) {
                return Ok(());
            }
            drivers.insert(
                run_id,
                DriverHandle {
                    id,
                    tx,
                    done: done_rx,
                },
            );
        }
        let driver = Driver {
            id,
            draining: false,
            stopped: false,
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
            refused: Vec::new(),
            contexts: Vec::new(),
        };
        tokio::spawn(driver.run());
        Ok(())
    }

    /// What starting the child run of a `flowchart` node run takes, or why it cannot start.
    fn prepare_child(
        &self,
        parent: &RunState,
        index: usize,
    ) -> Result<(StartRun, CorrelationId), NodeOutcome> {
        let nr = &parent.node_runs[index];
        let node = parent
            .flowchart
            .node_at(nr.node)
            .ok_or_else(|| fail("subflow_unavailable", "the node is not in the flowchart"))?;
        let name = node.flowchart.clone().unwrap_or_default();
        let (flowchart, version) = self
            .inner
            .flowcharts
            .resolve(&name, node.version)
            .map_err(|e| fail("subflow_unavailable", &e.chain()))?;
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
            parent: Some(ParentRun {
                run_id: parent.run_id,
                node_id: node.id.clone(),
                node_run_id: nr.id,
            }),
            actor: self.inner.config.actor.clone(),
        };
        Ok((start, parent_correlation(parent)))
    }
}

/// Removes a stopping driver's entry, unless a successor has replaced it meanwhile (a late
/// report can start a new driver for the run as soon as the old one closed its mailbox).
fn unregister(drivers: &Mutex<HashMap<RunId, DriverHandle>>, run_id: RunId, id: u64) -> bool {
    let Ok(mut drivers) = drivers.lock() else {
        return false;
    };
    if drivers.get(&run_id).is_some_and(|h| h.id == id) {
        drivers.remove(&run_id);
        return true;
    }
    false
}

fn parent_correlation(parent: &RunState) -> CorrelationId {
    CorrelationId::new(format!("run-{}", parent.run_id))
        .unwrap_or_else(|_| CorrelationId::generate())
}

fn fail(code: &str, message: &str) -> NodeOutcome {
    NodeOutcome::Failed(ErrorInfo {
        code: code.into(),
        message: message.into(),
        retryable: false,
        details: None,
    })
}

/// Owns one run: its state, its version, its timers.
struct Driver<S: EventStore + 'static> {
    /// Its entry in the engine's map of drivers (see `run`).
    id: u64,
    /// Shutting down: nothing new is handed to executors; ends once local work reported.
    draining: bool,
    /// Told to stop (lease lost, drain out of time) or saw another instance take the run over.
    stopped: bool,
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
    /// The commands of the last step the decider refused for good, by index, with why: their
    /// reports' queues are told to terminate them rather than redeliver.
    refused: Vec<(usize, Refusal)>,
    /// Input contexts the step being applied built for the node runs it scheduled, by node
    /// run index: handed to the executors by `dispatch`, emptied after each step.
    contexts: Vec<(usize, Value)>,
}

/// Results decided together in one append, at most.
const RESULT_BATCH: usize = 256;

/// How long a step waits for more reports after a remote `Dispatched` or `Started`.
const REPORT_LINGER: Duration = Duration::from_millis(2);

impl<S: EventStore + 'static> Driver<S> {
    #[tracing::instrument(name = "run", skip_all, fields(run_id = %self.state.run_id, correlation_id = %self.correlation_id))]
    async fn run(mut self) {
        let run_id = self.state.run_id;
        let outcome = self.drive().await;
        if let Err(e) = &outcome {
            tracing::error!(%run_id, error = %e, "run driver stopped");
        }
        self.done
            .send_replace(RunSummary::of(&self.state, self.version));
        // Unregister before the last messages are lost: later results go to `record_late`.
        self.rx.close();
        let leftovers: Vec<Msg> = std::iter::from_fn(|| self.rx.try_recv().ok()).collect();
        unregister(&self.engine.inner.drivers, run_id, self.id);
        // Hand the lease back: at once to anyone for a run still unfinished (a driver that
        // failed, or drained), quietly for one that ended. A driver told to stop has no lease.
        match outcome {
            Err(EngineError::Corrupt { .. }) => {}
            _ if self.stopped => {}
            _ => {
                let unfinished = !self.state.status.is_terminal();
                self.engine.inner.ownership.release(run_id, unfinished);
            }
        }
        for msg in leftovers {
            match msg {
                Msg::Report(delivery) => {
                    let engine = self.engine.clone();
                    tokio::spawn(async move { engine.deliver(delivery).await });
                }
                Msg::Control {
                    action,
                    control,
                    request_id,
                    reply,
                } => {
                    let store = &self.engine.inner.store;
                    let _ =
                        reply.send(apply_control(store, run_id, action, control, request_id).await);
                }
                Msg::ChildStarted { .. }
                | Msg::ToolNode(_)
                | Msg::CatchUp
                | Msg::Drain
                | Msg::Stop
                | Msg::ExecutorsLost(_) => {}
            }
        }
    }

    async fn drive(&mut self) -> Result<(), EngineError> {
        self.redispatch().await;
        self.step_settle().await?;
        let poll = self.engine.inner.config.poll_interval;
        while !self.state.status.is_terminal() {
            if self.stopped || (self.draining && self.dispatched.is_empty()) {
                return Ok(());
            }
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
                // Writes of others arrive as `Msg::CatchUp` when the instance hears wakes;
                // otherwise (one engine alone, no lease keeper) look for them every `poll`.
                _ = tokio::time::sleep(poll), if !self.engine.inner.ownership.hears_wakes() => {
                    if self.last_append.elapsed() >= poll {
                        self.catch_up().await?;
                    }
                }
            }
        }
        self.notify_parent().await;
        if self.state.status.is_terminal() {
            self.engine
                .inner
                .executor
                .run_finished(self.state.run_id, self.state.status != RunStatus::Completed);
        }
        Ok(())
    }

    /// When the next timer needs a settle step, as a tokio instant (now, if one is overdue).
    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let now = runledger_contracts::time::Timestamp::now();
        let at = self.state.next_wake(now)?;
        // A far deadline only needs a wake-up before it; a sum that would overflow the clock
        // (a timeout of 2^53 seconds) must not panic the driver.
        let ms = u64::try_from(now.millis_until(at))
            .unwrap_or(0)
            .min(MAX_TIMER_SLEEP_MS);
        Some(tokio::time::Instant::now() + Duration::from_millis(ms + 1))
    }

    async fn handle(&mut self, msg: Msg) -> Result<(), EngineError> {
        let (action, control, request_id, reply) = match msg {
            Msg::Control {
                action,
                control,
                request_id,
                reply,
            } => (action, control, request_id, reply),
            Msg::ChildStarted { node_run_id, child } => {
                let request = request_id(format!("child-{node_run_id}"));
                let command = Command::ChildStarted {
                    node_run_id,
                    child_run_id: child,
                };
                match self.step(command, request).await {
                    Err(EngineError::Decide(
                        e @ (DecideError::NotApplicable { .. } | DecideError::UnknownNodeRun(_)),
                    )) => {
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
            Msg::CatchUp => return self.catch_up().await,
            Msg::Drain => {
                // Tool node runs already queued still run (they are this driver's own work).
                self.draining = true;
                return Ok(());
            }
            Msg::Stop => {
                self.stopped = true;
                return Ok(());
            }
            Msg::ExecutorsLost(lost) => return self.fail_lost_node_runs(&lost).await,
        };
        let outcome = self.control(action, control, request_id).await;
        let _ = reply.send(outcome);
        if !self.state.status.is_terminal() {
            self.step_settle().await?;
        }
        Ok(())
    }

    async fn control(
        &mut self,
        action: ControlAction,
        control: Control,
        request_id: RequestId,
    ) -> Result<ControlOutcome, EngineError> {
        self.catch_up().await?;
        let used = self
            .engine
            .inner
            .store
            .find_request(&self.stream, &request_id)
            .await?;
        if !used.is_empty() {
            return Ok(ControlOutcome {
                events: used,
                deduplicated: true,
            });
        }
        let command = Command::Control { action, control };
        match self.step(command, request_id).await? {
            Some(events) => Ok(ControlOutcome {
                events,
                deduplicated: false,
            }),
            None => Ok(ControlOutcome {
                events: Vec::new(),
                deduplicated: true,
            }),
        }
    }

    /// Decides a batch of executor reports as one step; queues hear that their messages are
    /// recorded only after the append commits.
    async fn record_reports(&mut self, deliveries: Vec<Delivery>) -> Result<(), EngineError> {
        // Agent-loop calls are steps of their own, each idempotent by its call's key; they
        // come before the result of their node run on the same channel, so they go first.
        let (calls, deliveries): (Vec<Delivery>, Vec<Delivery>) = deliveries
            .into_iter()
            .partition(|d| matches!(d.report, Report::ToolCall(_)));
        for call in calls {
            self.record_tool_call(call).await?;
        }
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
                        None => {
                            hasher.update(report_request_id(&d.report, None).as_str().as_bytes())
                        }
                    };
                }
                request_id(format!(
                    "results-{}-{}",
                    many.len(),
                    &hasher.finalize().to_hex()[..32]
                ))
            }
        };
        let mut receipts = Vec::with_capacity(deliveries.len());
        let mut commands = Vec::with_capacity(deliveries.len());
        // Which delivery each command came from, so a refused command's report is told so.
        let mut sources = Vec::with_capacity(deliveries.len());
        for (source, d) in deliveries.into_iter().enumerate() {
            if let Report::Finished(result) | Report::Ran { result, .. } = &d.report {
                self.dispatched.remove(&result.node_run_id);
            }
            receipts.push(d.receipt);
            for command in report_commands(d.report) {
                commands.push(command);
                sources.push(source);
            }
        }
        let written = self.step_many(commands, request).await?;
        let mut outcomes: Vec<DeliveryOutcome> = match written {
            Some(events) if !events.is_empty() => vec![DeliveryOutcome::Recorded; receipts.len()],
            _ => vec![DeliveryOutcome::Duplicate; receipts.len()],
        };
        for (command, refusal) in std::mem::take(&mut self.refused) {
            if let Some(&source) = sources.get(command) {
                outcomes[source] = DeliveryOutcome::Refused(refusal);
            }
        }
        for (receipt, outcome) in receipts.into_iter().zip(outcomes) {
            match (receipt, outcome) {
                (Some(receipt), outcome) => receipt.settle(outcome),
                // No queue to say it (the in-process pool, a lost executor): say it here.
                (None, DeliveryOutcome::Refused(refusal)) => {
                    tracing::warn!(run_id = %self.state.run_id, code = refusal.code, reason = %refusal.message, "executor result refused");
                }
                (None, _) => {}
            }
        }
        Ok(())
    }

    /// Appends one agent-loop call. A call whose key the ledger already holds (the attempt
    /// ran again after a crash, or the message came twice) is a duplicate: the first record
    /// stands. A result larger than [`crate::tool_results::MAX_INLINE_TOOL_RESULT`] goes to the blob table and the
    /// event names its digest.
    async fn record_tool_call(&mut self, delivery: Delivery) -> Result<(), EngineError> {
        let Delivery {
            report, receipt, ..
        } = delivery;
        let Report::ToolCall(mut call) = report else {
            return Ok(());
        };
        let request = request_id(format!("toolcall-{}", call.idempotency_key));
        let store = &self.engine.inner.store;
        let outcome = if !store.find_request(&self.stream, &request).await?.is_empty() {
            DeliveryOutcome::Duplicate
        } else {
            if let Err(e) = crate::tool_results::offload(store, &mut call).await {
                // Not stored: the receipt (or its absence) makes the report come again.
                tracing::warn!(run_id = %self.state.run_id, error = %e, "tool result blob not stored");
                return Ok(());
            }
            match self.step(Command::RecordToolCall(call), request).await? {
                Some(events) if !events.is_empty() => DeliveryOutcome::Recorded,
                _ => match self.refused.pop() {
                    Some((_, refusal)) => DeliveryOutcome::Refused(refusal),
                    None => DeliveryOutcome::Duplicate,
                },
            }
        };
        if let Some(receipt) = receipt {
            receipt.settle(outcome);
        }
        Ok(())
    }

    async fn step_settle(&mut self) -> Result<(), EngineError> {
        let request = request_id(settle_request_id(self.state.run_id, self.version));
        self.step(Command::Settle, request).await.map(|_| ())
    }

    async fn step(
        &mut self,
        command: Command,
        request: RequestId,
    ) -> Result<Option<Vec<RecordedEvent>>, EngineError> {
        self.step_many(vec![command], request).await
    }

    /// Decides the commands as one step and appends the events in one request. Returns the
    /// recorded events, or `None` when another writer got there first with this request.
    async fn step_many(
        &mut self,
        mut commands: Vec<Command>,
        request: RequestId,
    ) -> Result<Option<Vec<RecordedEvent>>, EngineError> {
        let settings = self.engine.inner.config.settings.clone();
        let mut refused_results = false;
        let mut failed_run = false;
        for attempt in 0..MAX_STEP_ATTEMPTS {
            self.refused.clear();
            let is_settle = matches!(commands.as_slice(), [Command::Settle]);
            let request = if is_settle && attempt > 0 {
                request_id(settle_request_id(self.state.run_id, self.version))
            } else {
                request.clone()
            };
            let cause = Cause {
                request_id: request,
                correlation_id: self.correlation_id.clone(),
            };
            let mut events = Vec::new();
            let mut contexts = Vec::new();
            let mut env = StepEnv::begin();
            for (index, command) in commands.iter().enumerate() {
                match decide::decide_step(
                    &mut self.state,
                    command.clone(),
                    &mut env,
                    &cause,
                    &settings,
                ) {
                    Ok(more) => {
                        events.extend(more.events);
                        contexts.extend(more.contexts);
                    }
                    // A malformed result is the executor's fault: drop it (the node run times
                    // out and its retry policy applies) rather than stop driving the run.
                    Err(
                        e @ (DecideError::UnknownNodeRun(_) | DecideError::InvalidInput { .. }),
                    ) if matches!(
                        command,
                        Command::RecordResult(_)
                            | Command::RecordToolCall(_)
                            | Command::Dispatched { .. }
                            | Command::Started { .. }
                    ) =>
                    {
                        // Said once, where the report's queue hears of it (and terminates it).
                        tracing::debug!(run_id = %self.state.run_id, error = %e, "executor report refused");
                        if let Some(refusal) = Refusal::of_decide(&e) {
                            self.refused.push((index, refusal));
                        }
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
            let append = append_request(&cause, &events, &env)?;
            let span = tracing::debug_span!("append", request_id = %cause.request_id, expected_version = self.version);
            let appended = self.append_step(append).instrument(span).await;
            match appended {
                Ok(outcome) if !outcome.deduplicated => {
                    self.version = outcome.last_version();
                    tracing::debug!(
                        version = self.version,
                        events = outcome.events.len(),
                        "appended"
                    );
                    self.last_append = tokio::time::Instant::now();
                    self.done
                        .send_replace(RunSummary::of(&self.state, self.version));
                    let recorded = outcome.events;
                    if self.engine.inner.appended.receiver_count() > 0 {
                        let batch = AppendedBatch {
                            run_id: self.state.run_id,
                            events: recorded.clone(),
                        };
                        let _ = self.engine.inner.appended.send(Arc::new(batch));
                    }
                    self.contexts = contexts;
                    self.effects(&events).await;
                    self.contexts.clear();
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
                Err(e) if e.is_transient() => {
                    if attempt + 1 == MAX_STEP_ATTEMPTS {
                        self.reload_with_backoff().await?;
                        return Err(e.into());
                    }
                    tracing::warn!(run_id = %self.state.run_id, error = %e, "append failed; retrying");
                    tokio::time::sleep(Duration::from_millis(10 << attempt.min(8))).await;
                    self.reload_with_backoff().await?;
                }
                // Permanent: the same append would be refused again, so it is never tried
                // again. Executor results are recorded as `invalid_output` failures instead
                // (once), so the run goes on; a control answers its caller with the refusal
                // and changes nothing; any other step fails the run (`ledger_refused`), so
                // its driver neither stops nor starts over on the same step.
                Err(e) => {
                    self.reload_with_backoff().await?;
                    if !refused_results
                        && let Some(refused) = unstorable::refuse_results(&commands, &e)
                    {
                        tracing::warn!(run_id = %self.state.run_id, error = %e, "the ledger refused executor results; recording them as invalid_output");
                        refused_results = true;
                        commands = refused;
                        // A tool node's events went with its result: they are refused too.
                        self.tools.drop_pending();
                        continue;
                    }
                    let control = commands
                        .iter()
                        .any(|c| matches!(c, Command::Control { .. }));
                    if failed_run || control || self.state.status.is_terminal() {
                        return Err(e.into());
                    }
                    tracing::error!(run_id = %self.state.run_id, error = %e, "the ledger refused a step of the run for good; failing the run");
                    failed_run = true;
                    commands = vec![Command::FailRun {
                        error: unstorable::ledger_refused(&e),
                    }];
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
        self.done
            .send_replace(RunSummary::of(&self.state, self.version));
        Ok(())
    }

    async fn reload_with_backoff(&mut self) -> Result<(), EngineError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.reload().await {
                Ok(()) => return Ok(()),
                Err(EngineError::Store(e)) if e.is_transient() => {
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
        let Some(head) = store.stream_head(&self.stream).await? else {
            return Ok(());
        };
        if head.version <= self.version {
            self.last_append = tokio::time::Instant::now();
            // Work recorded while this instance could not trust its lease was not handed out
            // (see `dispatch`): it goes out now, if the lease is trusted again.
            self.redispatch().await;
            return Ok(());
        }
        let newer = store
            .read_stream(&self.stream, self.version + 1, usize::MAX)
            .await?;
        let run_id = self.state.run_id;
        for recorded in &newer {
            evolve_recorded(&mut self.state, recorded, run_id)?;
            self.version = recorded.stream_version;
            self.stopped |= self.taken_over_by_another(recorded);
        }
        self.last_append = tokio::time::Instant::now();
        self.done
            .send_replace(RunSummary::of(&self.state, self.version));
        let _ = self.engine.inner.appended.send(Arc::new(AppendedBatch {
            run_id: self.state.run_id,
            events: newer,
        }));
        if !self.state.status.is_terminal() {
            self.redispatch().await;
            self.step_settle().await?;
        }
        Ok(())
    }

    async fn fail_lost_node_runs(&mut self, lost: &ExecutorsLost) -> Result<(), EngineError> {
        let run_id = self.state.run_id;
        let deliveries: Vec<Delivery> = self
            .state
            .active
            .iter()
            .map(|&i| &self.state.node_runs[i])
            .filter(|nr| {
                nr.phase == Phase::Running
                    && nr
                        .executor
                        .as_ref()
                        .is_some_and(|e| lost.executor_ids.contains(e))
            })
            .map(|nr| {
                let result = NodeResult {
                    node_run_id: nr.id,
                    attempt: nr.attempt,
                    outcome: NodeOutcome::Failed(lost.error.clone()),
                    tool_calls: Vec::new(),
                };
                let message_id = Some(format!("{}:{}", lost.key, nr.id));
                Delivery {
                    run_id,
                    report: Report::Finished(result),
                    message_id,
                    receipt: None,
                }
            })
            .collect();
        for delivery in deliveries {
            self.record_reports(vec![delivery]).await?;
        }
        Ok(())
    }

    /// Whether `recorded` says another instance drives the run now.
    fn taken_over_by_another(&self, recorded: &RecordedEvent) -> bool {
        if recorded.event_type.as_str() != "RunTakenOver" {
            return false;
        }
        let mine = self.engine.inner.ownership.instance_id();
        match recorded.decode() {
            Ok(DomainEvent::RunTakenOver(e)) => mine.is_some_and(|me| me != e.instance_id),
            _ => false,
        }
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
                    && self
                        .engine
                        .inner
                        .config
                        .settings
                        .dispatches_remotely(nr.node_type);
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
                DomainEvent::NodeScheduled(e)
                    if self
                        .engine
                        .inner
                        .config
                        .settings
                        .dispatches_remotely(e.node_type) =>
                {
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
                    let control = Control {
                        actor: engine.inner.config.actor.clone(),
                        reason: "its parent node run ended".into(),
                    };
                    let request = request_id(format!("cancel-{child}"));
                    if let Err(e) = apply_control(
                        &engine.inner.store,
                        child,
                        ControlAction::Cancel { force: true },
                        control,
                        request,
                    )
                    .await
                    {
                        tracing::debug!(%child, error = %e, "child run not canceled");
                    }
                });
            }
        }
    }

    #[tracing::instrument(name = "node_run", skip_all, fields(node_run_id = %self.state.node_runs[i].id, node_id = self.state.node_id(self.state.node_runs[i].node), attempt = self.state.node_runs[i].attempt))]
    async fn dispatch(&mut self, i: usize) {
        // Only the run's owner hands out work; a draining or fenced-off driver leaves it
        // recorded for the next owner, which dispatches it when it takes the run over.
        if self.draining || self.stopped || !self.engine.inner.ownership.holds(self.state.run_id) {
            return;
        }
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
        let remote = nr.phase == Phase::Scheduled
            && self
                .engine
                .inner
                .config
                .settings
                .dispatches_remotely(nr.node_type);
        let submit = match nr.executor.as_deref() {
            None => remote,
            Some(SUBFLOW) => {
                self.dispatch_child(i);
                return;
            }
            Some(executor) => {
                executor == self.engine.inner.config.settings.executor || executor == INPROCESS
            }
        };
        if !submit {
            // Another executor kind owns it (e.g. NATS); its results arrive through that path.
            self.dispatched.remove(&id);
            return;
        }
        if let Some(work) = self.work(i).await {
            self.engine
                .inner
                .executor
                .submit(work, self.engine.inner.results.clone());
        }
    }

    /// The work of node run `i`, with the results of its recorded calls that went to the blob
    /// table read back ([`crate::tool_results::restore`]).
    async fn work(&mut self, i: usize) -> Option<NodeWork> {
        let context = self
            .contexts
            .iter()
            .position(|(j, _)| *j == i)
            .map(|pos| self.contexts.swap_remove(pos).1);
        let mut work = self.state.work_with(i, context)?;
        crate::tool_results::restore(&self.engine.inner.store, &mut work).await;
        Some(work)
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
            let report = |outcome| {
                Delivery::finished(
                    parent_id,
                    NodeResult {
                        node_run_id,
                        attempt,
                        outcome,
                        tool_calls: Vec::new(),
                    },
                )
            };
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
                        let _ = engine
                            .inner
                            .results
                            .send(report(fail("subflow_unavailable", &e.to_string())));
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
                    let _ = engine.inner.results.send(Delivery::finished(
                        parent_id,
                        child_result(&summary, node_run_id, attempt),
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = engine
                        .inner
                        .results
                        .send(report(fail("subflow_unavailable", &e.to_string())));
                }
            }
        });
    }

    /// A child run that ended reports to its parent's node run.
    async fn notify_parent(&self) {
        let Some(parent) = &self.state.parent else {
            return;
        };
        let Ok(parent_state) = load_run(&self.engine.inner.store, parent.run_id).await else {
            return;
        };
        let Some(nr) = parent_state.state.node_run(&parent.node_run_id) else {
            return;
        };
        let summary = RunSummary::of(&self.state, self.version);
        let result = child_result(&summary, parent.node_run_id, nr.attempt);
        let _ = self
            .engine
            .inner
            .results
            .send(Delivery::finished(parent.run_id, result));
    }
}

/// The request id of a step that records one report: the carrying message's id when it has
/// one, so a redelivered message finds its first append.
fn report_request_id(report: &Report, message_id: Option<&str>) -> RequestId {
    if let Some(id) = message_id {
        return request_id(id.to_owned());
    }
    match report {
        Report::Finished(r) | Report::Ran { result: r, .. } => {
            request_id(format!("result-{}", r.node_run_id))
        }
        Report::Dispatched { node_run_id, .. } => request_id(format!("dispatched-{node_run_id}")),
        Report::Started { node_run_id, .. } => request_id(format!("started-{node_run_id}")),
        Report::ToolCall(call) => request_id(format!("toolcall-{}", call.idempotency_key)),
    }
}

fn child_result(summary: &RunSummary, node_run_id: NodeRunId, attempt: u32) -> NodeResult {
    let outcome = match summary.status {
        RunStatus::Completed => NodeOutcome::Succeeded {
            output: serde_json::json!({ "run_id": summary.run_id, "output": summary.output }),
            warnings: Vec::new(),
            fallback_used: false,
            agent: None,
        },
        other => {
            let reason = summary
                .error
                .as_ref()
                .map(|e| format!(": {}", e.message))
                .unwrap_or_default();
            fail(
                "subflow_failed",
                &format!(
                    "child run {} ended {}{reason}",
                    summary.run_id,
                    other.as_str()
                ),
            )
        }
    };
    NodeResult {
        node_run_id,
        attempt,
        outcome,
        tool_calls: Vec::new(),
    }
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

/// Answers a report's queue, when it has one waiting.
fn settle(receipt: Option<Receipt>, outcome: DeliveryOutcome) {
    if let Some(receipt) = receipt {
        receipt.settle(outcome);
    }
}

/// Whether an append was refused because of what the report carries, so the same report is
/// refused on every delivery. A ledger that is corrupt or a database that rejects the
/// statement is the engine's trouble: such a report is redelivered (until `max_deliver`).
fn refused_for_its_content(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::InvalidEvent { .. } | StoreError::InvalidRequest(_)
    )
}

#[cfg(test)]
mod unregister_tests {
    use super::*;

    fn handle(id: u64, run_id: RunId) -> DriverHandle {
        let (tx, _rx) = mpsc::unbounded_channel();
        let summary = RunSummary {
            run_id,
            status: RunStatus::Running,
            node_runs: 0,
            output: None,
            error: None,
            version: 1,
        };
        let (_tx, done) = watch::channel(summary);
        DriverHandle { id, tx, done }
    }

    /// The race: a driver closes its mailbox, a late report starts a successor for the same run
    /// (`spawn_driver` replaces a closed entry), then the first driver unregisters. It must not
    /// remove the successor, or the next report would start a third driver beside it.
    #[test]
    fn a_stopping_driver_leaves_its_successor_registered() {
        let run_id = RunId::new_v7();
        let drivers = Mutex::new(HashMap::new());
        drivers.lock().unwrap().insert(run_id, handle(1, run_id));
        drivers.lock().unwrap().insert(run_id, handle(2, run_id));
        assert!(
            !unregister(&drivers, run_id, 1),
            "the old driver removed its successor"
        );
        assert_eq!(drivers.lock().unwrap().get(&run_id).map(|h| h.id), Some(2));
        assert!(unregister(&drivers, run_id, 2));
        assert!(drivers.lock().unwrap().is_empty());
    }
}
