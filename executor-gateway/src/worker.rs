//! The executor runtime behind `runledger executor`: pulls work of one class, reports that it
//! took it, runs it with progress heartbeats, publishes the result, and only then acks.
//!
//! Crash safety comes from that order. An executor that dies before its ack leaves the
//! message to be redelivered after the consumer's ack wait; the next executor runs it again
//! and publishes a result with the same message id, which the results stream stores once and
//! the engine records once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use runledger_contracts::events::ToolCalled;
use runledger_contracts::time::Timestamp;
use runledger_orchestrator::agent::CallReporter;
use runledger_orchestrator::executor::{
    Providers, Report, refuse_workspace_elsewhere, run_node_reporting,
};
use runledger_orchestrator::remote_calls::NodeRunCalls;
use tokio::sync::{Semaphore, watch};

use crate::GatewayError;
use crate::calls::{CallsAnswer, ask_recorded_calls};
use crate::dead_letter::follow_max_deliveries;
use crate::messages::{
    DispatchRefused, ReportMessage, WIRE_VERSION, decode_dispatch, publish_within,
    result_message_id, started_message_id,
};
use crate::metrics::{Consumer, DropReason, GatewayMetrics};
use crate::run_ended::{InFlight, follow_run_ends};
use crate::topology::Topology;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub executor_class: String,
    /// Node runs run at once.
    pub concurrency: usize,
    /// Recorded as `NodeStarted.executor`.
    pub executor_id: String,
    /// Exit after this long with nothing to do (Kubernetes Jobs); `None`: run until stopped.
    pub exit_when_idle: Option<Duration>,
}

/// What a worker did, for its last log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    pub ran: u64,
    /// Dispatches the engine had given up on before they were taken (not run).
    pub expired: u64,
    /// Messages that were not dispatches of this wire version (terminated, not run).
    pub rejected: u64,
    /// Redelivered work left for later because no engine said which of its calls are recorded.
    pub deferred: u64,
    /// Node runs stopped in hand because their run ended.
    pub stopped: u64,
}

/// Runs until `shutdown` turns true (then drains: stops pulling and finishes what it holds)
/// or until idle for `exit_when_idle`. Pulls two consumers: its class's (work any executor of
/// the class may run) and its own (work routed to this `executor_id`: nodes of runs whose
/// workspace it holds).
pub async fn run_worker(
    js: jetstream::Context,
    topology: Topology,
    config: WorkerConfig,
    providers: Arc<Providers>,
    shutdown: watch::Receiver<bool>,
) -> Result<WorkerStats, GatewayError> {
    let concurrency = config.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let (stats_tx, mut stats_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let in_flight = Arc::new(InFlight::default());
    tokio::spawn(follow_run_ends(
        js.client(),
        topology.clone(),
        Arc::clone(&in_flight),
        Arc::clone(&providers),
        shutdown.clone(),
    ));
    let shared = Shared {
        in_flight,
        js: js.clone(),
        topology: topology.clone(),
        config: config.clone(),
        providers,
        permits: Arc::clone(&permits),
        concurrency,
        stats: stats_tx,
        last_busy: Arc::new(std::sync::Mutex::new(Instant::now())),
    };
    tokio::spawn(follow_max_deliveries(
        js.clone(),
        topology.dispatch_stream(),
        topology.executor_consumer(&config.executor_class),
        Consumer::Executor,
        GatewayMetrics::global(),
        shutdown.clone(),
    ));
    tokio::spawn(follow_max_deliveries(
        js,
        topology.dispatch_stream(),
        topology.routed_consumer(&config.executor_id),
        Consumer::Executor,
        GatewayMetrics::global(),
        shutdown.clone(),
    ));
    // Both end on `shutdown`, and both on the worker's idleness (shared).
    tokio::join!(
        pull_loop(&shared, Source::Class, shutdown.clone()),
        pull_loop(&shared, Source::Routed, shutdown),
    );
    drop(shared);
    // Drain: wait for every node run in hand to publish its result and ack.
    let _all = permits
        .acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX))
        .await;
    let mut stats = WorkerStats::default();
    while let Ok(outcome) = stats_rx.try_recv() {
        stats.count(outcome);
    }
    Ok(stats)
}

/// What both pull loops of a worker share.
struct Shared {
    in_flight: Arc<InFlight>,
    js: jetstream::Context,
    topology: Topology,
    config: WorkerConfig,
    providers: Arc<Providers>,
    permits: Arc<Semaphore>,
    concurrency: usize,
    stats: tokio::sync::mpsc::UnboundedSender<Outcome>,
    /// The last time either loop had work in hand (for `exit_when_idle`).
    last_busy: Arc<std::sync::Mutex<Instant>>,
}

impl Shared {
    fn busy_now(&self) {
        if let Ok(mut at) = self.last_busy.lock() {
            *at = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_busy
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or_default()
    }
}

/// Which consumer a pull loop reads.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The class's, shared by every executor of the class.
    Class,
    /// This executor's own: work routed to it as a run's workspace holder.
    Routed,
}

/// Pulls one consumer until `shutdown` turns true or the worker has been idle for
/// `exit_when_idle`; each message runs on its own task under one of the shared permits.
async fn pull_loop(shared: &Shared, source: Source, mut shutdown: watch::Receiver<bool>) {
    let heartbeat = shared.topology.ack_wait / 3;
    let mut consumer = None;
    let mut retries = crate::retry_log::RetryLog::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if shared.permits.available_permits() < shared.concurrency {
            shared.busy_now();
        }
        if let Some(idle) = shared.config.exit_when_idle
            && shared.idle_for() >= idle
        {
            tracing::info!(idle_s = idle.as_secs(), "idle; exiting");
            break;
        }
        let free = shared.permits.available_permits();
        if free == 0 {
            tokio::select! {
                permit = Arc::clone(&shared.permits).acquire_owned() => drop(permit),
                _ = shutdown.changed() => {}
            }
            continue;
        }
        if consumer.is_none() {
            let got = match source {
                Source::Class => {
                    shared
                        .topology
                        .executor_consumer_of(&shared.js, &shared.config.executor_class)
                        .await
                }
                Source::Routed => {
                    shared
                        .topology
                        .routed_consumer_of(&shared.js, &shared.config.executor_id)
                        .await
                }
            };
            match got {
                Ok(c) => consumer = Some(c),
                Err(e) => {
                    retries.failed("waiting for NATS", &e);
                    pause(&mut shutdown, Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let Some(pull) = consumer.as_ref() else {
            continue;
        };
        let batch = pull
            .batch()
            .max_messages(free)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => {
                retries.recovered();
                batch
            }
            Err(e) => {
                retries.failed("pull failed; retrying", &e);
                consumer = None;
                pause(&mut shutdown, Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = batch.next() => next,
                _ = shutdown.changed() => break,
            };
            match next {
                Some(Ok(message)) => {
                    shared.busy_now();
                    let Ok(permit) = Arc::clone(&shared.permits).acquire_owned().await else {
                        break;
                    };
                    let (js, topology, providers, stats_tx) = (
                        shared.js.clone(),
                        shared.topology.clone(),
                        Arc::clone(&shared.providers),
                        shared.stats.clone(),
                    );
                    let executor_id = shared.config.executor_id.clone();
                    let in_flight = Arc::clone(&shared.in_flight);
                    tokio::spawn(async move {
                        let worker = Worker {
                            js: &js,
                            topology: &topology,
                            providers: &providers,
                            executor_id: &executor_id,
                            in_flight: &in_flight,
                        };
                        let outcome = handle(worker, message, heartbeat).await;
                        let _ = stats_tx.send(outcome);
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "pull batch ended");
                    break;
                }
                None => break,
            }
        }
    }
}

/// A node that ends within this is reported with one message (`Ran`) instead of two.
const QUICK_NODE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ran,
    Expired,
    Rejected,
    Deferred,
    Stopped,
}

impl WorkerStats {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ran => self.ran += 1,
            Outcome::Expired => self.expired += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Deferred => self.deferred += 1,
            Outcome::Stopped => self.stopped += 1,
        }
    }
}

/// What one node run's handling needs of its worker.
struct Worker<'a> {
    js: &'a jetstream::Context,
    topology: &'a Topology,
    providers: &'a Providers,
    executor_id: &'a str,
    in_flight: &'a Arc<InFlight>,
}

async fn handle(worker: Worker<'_>, message: jetstream::Message, heartbeat: Duration) -> Outcome {
    let Worker {
        js,
        topology,
        providers,
        executor_id,
        in_flight,
    } = worker;
    let dispatch = match decode_dispatch(&message.payload) {
        Ok(dispatch) => dispatch,
        Err(refused) => {
            let reason = match &refused {
                DispatchRefused::WireVersion(version) => {
                    tracing::error!(
                        wire_version = version,
                        "dispatch of an unknown wire version terminated"
                    );
                    DropReason::UnknownWireVersion
                }
                DispatchRefused::Undecodable(e) => {
                    tracing::error!(subject = %message.subject, error = %e, "undecodable dispatch terminated");
                    DropReason::Undecodable
                }
            };
            GatewayMetrics::global().count_terminated(Consumer::Executor, reason);
            let _ = message.ack_with(AckKind::Term).await;
            return Outcome::Rejected;
        }
    };
    if dispatch.not_after.is_some_and(|at| at < Timestamp::now()) {
        let _ = message.ack_with(AckKind::Term).await;
        return Outcome::Expired;
    }
    let mut work = dispatch.work;
    let (run_id, node_run_id, attempt) = (work.run_id, work.node_run_id, work.attempt);
    // A run this executor heard end takes no more work.
    let Some(running) = in_flight.start(run_id, node_run_id) else {
        let _ = message.ack_with(AckKind::Term).await;
        return Outcome::Expired;
    };
    // A redelivered agent node may have applied calls before: learn them from the ledger.
    let delivered = message.info().map_or(1, |info| info.delivered);
    if delivered > 1 && runledger_orchestrator::agent::is_agent(&work.node) {
        match ask_recorded_calls(&js.client(), topology, run_id, node_run_id).await {
            Some(CallsAnswer::Calls(NodeRunCalls::Active { calls, .. })) => {
                tracing::info!(%node_run_id, delivered, recorded = calls.len(), "redelivered work runs with the ledger's recorded calls");
                merge_recorded(&mut work.recorded_calls, calls);
            }
            Some(answer) => {
                // Ended, or a node run or run the ledger does not have: nobody waits for it.
                tracing::info!(%node_run_id, ?answer, "redelivered work no longer needed; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return Outcome::Expired;
            }
            None => {
                // Without the ledger's word a recorded call could be applied twice: not now.
                tracing::warn!(%node_run_id, "redelivered work left for later: no engine told its recorded calls");
                let _ = message
                    .ack_with(AckKind::Nak(Some(topology.ack_wait)))
                    .await;
                return Outcome::Deferred;
            }
        }
    }
    let subject = topology.results_subject(run_id);
    // An agent node's calls are published as they happen, in order, ahead of its result.
    let (calls_tx, calls_rx) = tokio::sync::mpsc::unbounded_channel();
    let call_publisher = tokio::spawn(publish_calls(js.clone(), subject.clone(), run_id, calls_rx));
    let reporter = QueueReporter(calls_tx);
    let node = async {
        // A node of a run whose workspace another executor holds fails before any tool runs.
        if let Some(refusal) = refuse_workspace_elsewhere(&work, executor_id) {
            drop(reporter);
            return refusal;
        }
        let result = run_node_reporting(providers, &work, Some(&reporter)).await;
        drop(reporter);
        result
    };
    // The run's end stops the node where it is (`None`).
    let mut stop = running.stop.clone();
    let run = async {
        tokio::select! {
            result = node => Some(result),
            _ = async {
                if stop.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => None,
        }
    };
    tokio::pin!(run);
    // An interval of zero would panic; a heartbeat more often than 10 ms is pointless anyway.
    let heartbeat = heartbeat.max(Duration::from_millis(10));
    let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A node that finishes at once is reported in one message (`Ran`); a slower one says it
    // started first, so the engine arms its execution deadline. The node and its heartbeats
    // keep running while that report is retried (a NATS outage): stalling them would let the
    // dispatch be redelivered and the model be called twice. A start that never got through
    // is folded into the result (`Ran`).
    let report = match tokio::time::timeout(QUICK_NODE, &mut run).await {
        Ok(Some(result)) => Report::Ran {
            executor: executor_id.to_owned(),
            result,
        },
        Ok(None) => return run_ended(&message, node_run_id).await,
        Err(_) => {
            let started = ReportMessage {
                wire_version: WIRE_VERSION,
                run_id,
                report: Report::Started {
                    node_run_id,
                    attempt,
                    executor: executor_id.to_owned(),
                },
            };
            let payload = serde_json::to_vec(&started).unwrap_or_default();
            let started_id = started_message_id(node_run_id, attempt);
            let announce = publish_within(js, subject.clone(), &started_id, payload, Duration::MAX);
            tokio::pin!(announce);
            let mut announced = false;
            let mut announcing = true;
            let result = loop {
                tokio::select! {
                    result = &mut run => break result,
                    sent = &mut announce, if announcing => {
                        announcing = false;
                        announced = sent.is_some();
                    }
                    _ = beats.tick() => heartbeat_once(&message, node_run_id).await,
                }
            };
            let Some(result) = result else {
                return run_ended(&message, node_run_id).await;
            };
            if announced {
                Report::Finished(result)
            } else {
                Report::Ran {
                    executor: executor_id.to_owned(),
                    result,
                }
            }
        }
    };
    // Every call's report is out (or given up on) before the result that ends the node run.
    if let Err(e) = call_publisher.await {
        tracing::warn!(%node_run_id, error = %e, "tool call publisher stopped");
    }
    let finished = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id,
        report,
    };
    let payload = match serde_json::to_vec(&finished) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!(%node_run_id, error = %e, "result not encodable; the node run will time out");
            return Outcome::Ran;
        }
    };
    // Heartbeats go on while the result is retried, so the work is not redelivered and run
    // again meanwhile; after RESULT_PUBLISH_BOUND the dispatch is left unacked, for another
    // executor once NATS is back.
    let result_id = result_message_id(node_run_id, attempt);
    let publish = publish_within(js, subject, &result_id, payload, RESULT_PUBLISH_BOUND);
    tokio::pin!(publish);
    let published = loop {
        tokio::select! {
            sent = &mut publish => break sent.is_some(),
            _ = beats.tick() => heartbeat_once(&message, node_run_id).await,
        }
    };
    if !published {
        tracing::warn!(%node_run_id, "result not published; the dispatch is left to be redelivered");
        return Outcome::Ran;
    }
    if let Err(e) = message.ack().await {
        tracing::debug!(%node_run_id, error = %e, "ack failed; the work will be redelivered and its result found recorded");
    }
    Outcome::Ran
}

/// Adds the ledger's recorded calls to those the work carried (by idempotency key; the
/// ledger's first record of a key wins).
fn merge_recorded(carried: &mut Vec<ToolCalled>, ledger: Vec<ToolCalled>) {
    let mut merged = ledger;
    for call in carried.drain(..) {
        if !merged
            .iter()
            .any(|known| known.idempotency_key == call.idempotency_key)
        {
            merged.push(call);
        }
    }
    *carried = merged;
}

/// A node run stopped because its run ended: its dispatch is done with (terminated: no
/// executor should run it again) and no result is published.
async fn run_ended(
    message: &jetstream::Message,
    node_run_id: runledger_contracts::ids::NodeRunId,
) -> Outcome {
    tracing::info!(%node_run_id, "run ended; node run stopped");
    if let Err(e) = message.ack_with(AckKind::Term).await {
        tracing::debug!(%node_run_id, error = %e, "terminating a stopped node run's dispatch failed");
    }
    Outcome::Stopped
}

/// Hands an agent node's calls to [`publish_calls`].
struct QueueReporter(tokio::sync::mpsc::UnboundedSender<ToolCalled>);

impl CallReporter for QueueReporter {
    fn report(&self, call: ToolCalled) {
        let _ = self.0.send(call);
    }
}

/// Publishes each call as a `Report::ToolCall` (`Nats-Msg-Id: toolcall:<key>`), in order,
/// until the reporter is dropped. A call that cannot be published within
/// [`RESULT_PUBLISH_BOUND`] is logged and left out: the node's result still goes.
async fn publish_calls(
    js: jetstream::Context,
    subject: String,
    run_id: runledger_contracts::ids::RunId,
    mut calls: tokio::sync::mpsc::UnboundedReceiver<ToolCalled>,
) {
    while let Some(call) = calls.recv().await {
        let id = format!("toolcall:{}", call.idempotency_key);
        let message = ReportMessage {
            wire_version: WIRE_VERSION,
            run_id,
            report: Report::ToolCall(Box::new(call)),
        };
        let Ok(payload) = serde_json::to_vec(&message) else {
            continue;
        };
        if publish_within(&js, subject.clone(), &id, payload, RESULT_PUBLISH_BOUND)
            .await
            .is_none()
        {
            tracing::warn!(message_id = %id, "tool call report not published");
        }
    }
}

/// How long an executor retries publishing a result before it leaves the work to be
/// redelivered (its heartbeats run meanwhile).
const RESULT_PUBLISH_BOUND: Duration = Duration::from_secs(600);

/// Tells JetStream the work is still in hand, so it is not redelivered.
async fn heartbeat_once(
    message: &jetstream::Message,
    node_run_id: runledger_contracts::ids::NodeRunId,
) {
    if let Err(e) = message.ack_with(AckKind::Progress).await {
        tracing::debug!(%node_run_id, error = %e, "heartbeat failed");
    }
}

async fn pause(shutdown: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}
