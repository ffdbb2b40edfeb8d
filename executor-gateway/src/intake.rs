//! Result intake: pulls executor reports from the results stream and hands them to the
//! engine. A message is acked only after the engine says its report is in the ledger (or
//! changed nothing), so a crash anywhere in between redelivers it; the engine uses the
//! message id as the append's request id, so a redelivered report writes nothing.
//!
//! The engine answers each report with a typed outcome (recorded, duplicate, refused for good,
//! transient). A report that can never be recorded is terminated (`AckKind::Term`, never
//! redelivered), logged once at error with its reason and counted by reason: an undecodable
//! message or an unknown `wire_version` (seen here), or a report the engine refused (a run the
//! ledger does not hold, a node run its run does not have, content the decider or the ledger
//! refuses). A transient failure, or no answer within 80% of the ack wait, is redelivered with
//! a growing delay (1 s doubling to 30 s) until the consumer's `max_deliver`; then
//! [`crate::dead_letter`] takes over. Each report's wait for its commit runs on its own task,
//! so a slow or unknown run does not hold up the reports of other runs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use runledger_ledger::EventStore;
use runledger_orchestrator::delivery::{DeliveryOutcome, Receipt, Refusal};
use runledger_orchestrator::engine::Engine;
use runledger_orchestrator::executor::{Delivery, ResultSender};
use tokio::sync::watch;

use crate::GatewayError;
use crate::dead_letter::follow_max_deliveries;
use crate::messages::{MSG_ID_HEADER, ReportMessage, WIRE_VERSION};
use crate::metrics::{Consumer, DropReason, GatewayMetrics};
use crate::retry_log::RetryLog;
use crate::topology::Topology;

/// Where intake hands reports.
#[derive(Clone)]
pub struct IntakeSink {
    pub reports: ResultSender,
    pub metrics: Arc<GatewayMetrics>,
    /// When set, intake also answers executors' questions about a node run's recorded tool
    /// calls ([`crate::calls`]).
    pub calls: Option<crate::calls::CallsSource>,
}

impl IntakeSink {
    /// Reports go to `engine`, which answers each with what became of it.
    pub fn for_engine<S: EventStore + 'static>(
        engine: &Engine<S>,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self {
            reports: engine.reports(),
            metrics,
            calls: Some(crate::calls::calls_of_engine(engine)),
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
    if let Some(source) = sink.calls.clone() {
        tokio::spawn(crate::calls::serve_recorded_calls(
            js.client(),
            topology.clone(),
            source,
            shutdown.clone(),
        ));
    }
    let mut retries = RetryLog::new();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let consumer = match topology.intake_consumer_of(&js).await {
            Ok(consumer) => consumer,
            Err(e) => {
                retries.failed("result intake waiting for NATS", &e);
                wait_or_shutdown(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut messages = match consumer.messages().await {
            Ok(messages) => {
                retries.recovered();
                messages
            }
            Err(e) => {
                retries.failed("result intake cannot subscribe; retrying", &e);
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
                    retries.failed("result intake lost its subscription; re-subscribing", &e);
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
    // Strict: a report (or any part of it) sent as an array is not read by position.
    runledger_contracts::strict_json::from_slice(payload)
        .map_err(|e| (DropReason::Undecodable, e.to_string()))
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
    let (receipt, answer) = Receipt::channel();
    let delivery = Delivery {
        run_id,
        report: report.report,
        message_id,
        receipt: Some(receipt),
    };
    if sink.reports.send(delivery).is_err() {
        // The engine is shutting down; JetStream redelivers to whoever runs next.
        return;
    }
    let metrics = Arc::clone(&sink.metrics);
    tokio::spawn(async move {
        let outcome = tokio::time::timeout(record_wait, answer.outcome())
            .await
            .unwrap_or(DeliveryOutcome::Transient);
        let ack = match outcome {
            DeliveryOutcome::Recorded | DeliveryOutcome::Duplicate => AckKind::Ack,
            // Redelivery cannot change the engine's mind: end it now, say why once, count it.
            DeliveryOutcome::Refused(refusal) => {
                let reason = drop_reason(&refusal);
                tracing::error!(%run_id, %node_run_id, reason = reason.as_str(), code = refusal.code, refusal = %refusal.message, subject = %message.subject, "executor report terminated");
                metrics.count_terminated(Consumer::Intake, reason);
                AckKind::Term
            }
            DeliveryOutcome::Transient => AckKind::Nak(Some(redelivery_delay(&message))),
        };
        if let Err(e) = message.ack_with(ack).await {
            tracing::debug!(error = %e, "report ack failed; it will be redelivered and found recorded");
        }
    });
}

/// The `/metrics` reason of a refusal: its own series for the two the issue named, one for
/// the rest (their codes are in the log line).
fn drop_reason(refusal: &Refusal) -> DropReason {
    match refusal.code {
        "unknown_run" => DropReason::UnknownRun,
        "unknown_node_run" => DropReason::UnknownNodeRun,
        _ => DropReason::Refused,
    }
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
