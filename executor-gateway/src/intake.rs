//! Result intake: pulls executor reports from the results stream and hands them to the
//! engine. A message is acked only after the engine says its report is in the ledger (or
//! changed nothing), so a crash anywhere in between redelivers it; the engine uses the
//! message id as the append's request id, so a redelivered report writes nothing.
//!
//! A report that can never be recorded is terminated (`AckKind::Term`, never redelivered) and
//! counted by reason: an undecodable message, an unknown `wire_version`, a run the ledger does
//! not hold or a node run its run does not have. One that failed for a reason intake cannot see is redelivered with a growing delay
//! (1 s doubling to 30 s) until the consumer's `max_deliver`; then [`crate::dead_letter`]
//! takes over. Each report's wait for its commit runs on its own task, so a slow or unknown run
//! does not hold up the reports of other runs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_ledger::EventStore;
use runledger_orchestrator::engine::{Engine, EngineError, load_run};
use runledger_orchestrator::executor::{Delivery, ResultSender};
use tokio::sync::{oneshot, watch};

use crate::GatewayError;
use crate::dead_letter::follow_max_deliveries;
use crate::messages::{MSG_ID_HEADER, ReportMessage, WIRE_VERSION};
use crate::metrics::{Consumer, DropReason, GatewayMetrics};
use crate::topology::Topology;

/// Asked only about a report that failed to record: why it never can be (`Some`), or `None`
/// when another try may succeed.
pub type NeverRecordable =
    Arc<dyn Fn(RunId, NodeRunId) -> BoxFuture<'static, Option<DropReason>> + Send + Sync>;

/// Where intake hands reports, and what it asks when one could not be recorded.
#[derive(Clone)]
pub struct IntakeSink {
    pub reports: ResultSender,
    pub never_recordable: NeverRecordable,
    pub metrics: Arc<GatewayMetrics>,
}

impl IntakeSink {
    /// Reports go to `engine`; a report that failed is judged by its run in the ledger: no
    /// such run, or no such node run in it, will not change by redelivery.
    pub fn for_engine<S: EventStore + 'static>(
        engine: &Engine<S>,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        let ledger = engine.clone();
        let never_recordable: NeverRecordable = Arc::new(move |run_id, node_run_id| {
            let ledger = ledger.clone();
            Box::pin(async move {
                match load_run(ledger.store(), run_id).await {
                    Err(EngineError::RunNotFound(_)) => Some(DropReason::UnknownRun),
                    Ok(run) if run.state.node_run_index(&node_run_id).is_none() => {
                        Some(DropReason::UnknownNodeRun)
                    }
                    _ => None,
                }
            })
        });
        Self {
            reports: engine.reports(),
            never_recordable,
            metrics,
        }
    }
}

/// Pulls reports until `shutdown` turns true. NATS outages are waited out: the loop
/// re-subscribes once the server is back.
pub async fn run_intake(
    js: jetstream::Context,
    topology: Topology,
    sink: IntakeSink,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), GatewayError> {
    let record_wait = topology.ack_wait.mul_f32(0.8);
    tokio::spawn(follow_max_deliveries(
        js.clone(),
        topology.results_stream(),
        topology.intake_consumer(),
        Consumer::Intake,
        Arc::clone(&sink.metrics),
        shutdown.clone(),
    ));
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let consumer = match topology.intake_consumer_of(&js).await {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::warn!(error = %e, "result intake waiting for NATS");
                wait_or_shutdown(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "result intake cannot subscribe; retrying");
                wait_or_shutdown(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = shutdown.changed() => return Ok(()),
            };
            match next {
                Some(Ok(message)) => take(message, &sink, record_wait),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "result intake lost its subscription; re-subscribing");
                    wait_or_shutdown(&mut shutdown, Duration::from_millis(500)).await;
                    break;
                }
                None => break,
            }
        }
    }
}

/// Decodes a report, refusing what this build cannot read. `Err` carries the reason to
/// terminate the message for.
pub fn decode_report(payload: &[u8]) -> Result<ReportMessage, (DropReason, String)> {
    // The version is read first, so a newer message whose shape changed is refused as a newer
    // version rather than as garbage.
    #[derive(serde::Deserialize)]
    struct Versioned {
        wire_version: u32,
    }
    match serde_json::from_slice::<Versioned>(payload) {
        Ok(Versioned {
            wire_version: WIRE_VERSION,
        }) => {}
        Ok(Versioned { wire_version }) => {
            return Err((
                DropReason::UnknownWireVersion,
                format!("wire_version {wire_version}; this build speaks {WIRE_VERSION}"),
            ));
        }
        Err(e) => return Err((DropReason::Undecodable, e.to_string())),
    }
    serde_json::from_slice(payload).map_err(|e| (DropReason::Undecodable, e.to_string()))
}

fn take(message: jetstream::Message, sink: &IntakeSink, record_wait: Duration) {
    let report = match decode_report(&message.payload) {
        Ok(report) => report,
        Err((reason, error)) => {
            // Redelivery cannot fix it: keep it out of the way, say so, and count it.
            tracing::error!(subject = %message.subject, reason = reason.as_str(), %error, "executor report terminated");
            sink.metrics.count_terminated(Consumer::Intake, reason);
            tokio::spawn(async move {
                let _ = message.ack_with(AckKind::Term).await;
            });
            return;
        }
    };
    let message_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(MSG_ID_HEADER))
        .map(|v| v.as_str().to_owned());
    let (run_id, node_run_id) = (report.run_id, report.report.node_run_id());
    let (recorded, done) = oneshot::channel();
    let delivery = Delivery {
        run_id,
        report: report.report,
        message_id,
        recorded: Some(recorded),
    };
    if sink.reports.send(delivery).is_err() {
        // The engine is shutting down; JetStream redelivers to whoever runs next.
        return;
    }
    let (never_recordable, metrics) = (
        Arc::clone(&sink.never_recordable),
        Arc::clone(&sink.metrics),
    );
    tokio::spawn(async move {
        let ack = match tokio::time::timeout(record_wait, done).await {
            Ok(Ok(())) => AckKind::Ack,
            // Not recorded: for good when its run or node run does not exist, else try
            // again later.
            Ok(Err(_)) => match never_recordable(run_id, node_run_id).await {
                Some(reason) => {
                    tracing::error!(%run_id, %node_run_id, reason = reason.as_str(), subject = %message.subject, "executor report terminated");
                    metrics.count_terminated(Consumer::Intake, reason);
                    AckKind::Term
                }
                None => AckKind::Nak(Some(redelivery_delay(&message))),
            },
            Err(_) => AckKind::Nak(Some(redelivery_delay(&message))),
        };
        if let Err(e) = message.ack_with(ack).await {
            tracing::debug!(error = %e, "report ack failed; it will be redelivered and found recorded");
        }
    });
}

/// 1 s after the first delivery, doubling up to 30 s: a report that keeps failing costs less
/// and less until `max_deliver` ends it.
fn redelivery_delay(message: &jetstream::Message) -> Duration {
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1).clamp(1, 6);
    let doublings = u32::try_from(delivered - 1).unwrap_or(0);
    Duration::from_secs(1u64 << doublings).min(Duration::from_secs(30))
}

async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}
