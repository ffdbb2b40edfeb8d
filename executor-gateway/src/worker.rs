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
use tokio::sync::{Semaphore, watch};

use crate::GatewayError;
use crate::dead_letter::follow_max_deliveries;
use crate::messages::{
    DispatchRefused, ReportMessage, WIRE_VERSION, decode_dispatch, publish_within,
    result_message_id, started_message_id,
};
use crate::metrics::{Consumer, DropReason, GatewayMetrics};
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
}

/// Runs until `shutdown` turns true (then drains: stops pulling and finishes what it holds)
/// or until idle for `exit_when_idle`.
pub async fn run_worker(
    js: jetstream::Context,
    topology: Topology,
    config: WorkerConfig,
    providers: Arc<Providers>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<WorkerStats, GatewayError> {
    let concurrency = config.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let (stats_tx, mut stats_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut stats = WorkerStats::default();
    let mut last_busy = Instant::now();
    let heartbeat = topology.ack_wait / 3;
    let mut consumer = None;
    let mut retries = crate::retry_log::RetryLog::new();
    tokio::spawn(follow_max_deliveries(
        js.clone(),
        topology.dispatch_stream(),
        topology.executor_consumer(&config.executor_class),
        Consumer::Executor,
        GatewayMetrics::global(),
        shutdown.clone(),
    ));
    loop {
        while let Ok(outcome) = stats_rx.try_recv() {
            stats.count(outcome);
        }
        if *shutdown.borrow() {
            break;
        }
        if permits.available_permits() < concurrency {
            last_busy = Instant::now();
        }
        if let Some(idle) = config.exit_when_idle
            && last_busy.elapsed() >= idle
        {
            tracing::info!(idle_s = idle.as_secs(), "idle; exiting");
            break;
        }
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => drop(permit),
                _ = shutdown.changed() => {}
            }
            continue;
        }
        if consumer.is_none() {
            match topology
                .executor_consumer_of(&js, &config.executor_class)
                .await
            {
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
                    last_busy = Instant::now();
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        break;
                    };
                    let (js, topology, providers, stats_tx) = (
                        js.clone(),
                        topology.clone(),
                        Arc::clone(&providers),
                        stats_tx.clone(),
                    );
                    let executor_id = config.executor_id.clone();
                    tokio::spawn(async move {
                        let outcome =
                            handle(&js, &topology, &providers, &executor_id, message, heartbeat)
                                .await;
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
    // Drain: wait for every node run in hand to publish its result and ack.
    let _all = permits
        .acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX))
        .await;
    while let Ok(outcome) = stats_rx.try_recv() {
        stats.count(outcome);
    }
    Ok(stats)
}

/// A node that ends within this is reported with one message (`Ran`) instead of two.
const QUICK_NODE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ran,
    Expired,
    Rejected,
}

impl WorkerStats {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ran => self.ran += 1,
            Outcome::Expired => self.expired += 1,
            Outcome::Rejected => self.rejected += 1,
        }
    }
}

async fn handle(
    js: &jetstream::Context,
    topology: &Topology,
    providers: &Providers,
    executor_id: &str,
    message: jetstream::Message,
    heartbeat: Duration,
) -> Outcome {
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
    let work = dispatch.work;
    let (run_id, node_run_id, attempt) = (work.run_id, work.node_run_id, work.attempt);
    let subject = topology.results_subject(run_id);
    // An agent node's calls are published as they happen, in order, ahead of its result.
    let (calls_tx, calls_rx) = tokio::sync::mpsc::unbounded_channel();
    let call_publisher = tokio::spawn(publish_calls(js.clone(), subject.clone(), run_id, calls_rx));
    let reporter = QueueReporter(calls_tx);
    let run = async {
        // A node of a run whose workspace another executor holds fails before any tool runs.
        if let Some(refusal) = refuse_workspace_elsewhere(&work, executor_id) {
            drop(reporter);
            return refusal;
        }
        let result = run_node_reporting(providers, &work, Some(&reporter)).await;
        drop(reporter);
        result
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
        Ok(result) => Report::Ran {
            executor: executor_id.to_owned(),
            result,
        },
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
