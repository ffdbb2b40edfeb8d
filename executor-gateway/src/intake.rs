//! Result intake: pulls executor reports from the results stream and hands them to the
//! engine. A message is acked only after the engine says its report is in the ledger (or
//! changed nothing), so a crash anywhere in between redelivers it; the engine uses the
//! message id as the append's request id, so a redelivered report writes nothing.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use runledger_orchestrator::executor::{Delivery, ResultSender};
use tokio::sync::{oneshot, watch};

use crate::GatewayError;
use crate::messages::{MSG_ID_HEADER, ReportMessage};
use crate::topology::Topology;

/// Pulls reports until `shutdown` turns true. NATS outages are waited out: the loop
/// re-subscribes once the server is back.
pub async fn run_intake(
    js: jetstream::Context,
    topology: Topology,
    engine: ResultSender,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), GatewayError> {
    let record_wait = topology.ack_wait.mul_f32(0.8);
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
                Some(Ok(message)) => take(message, &engine, record_wait),
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

fn take(message: jetstream::Message, engine: &ResultSender, record_wait: Duration) {
    let parsed: Result<ReportMessage, _> = serde_json::from_slice(&message.payload);
    let report = match parsed {
        Ok(report) => report,
        Err(e) => {
            // Not ours to fix by redelivery: keep it out of the way and say so.
            tracing::error!(subject = %message.subject, error = %e, "undecodable executor report dropped");
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
    let (recorded, done) = oneshot::channel();
    let delivery = Delivery {
        run_id: report.run_id,
        report: report.report,
        message_id,
        recorded: Some(recorded),
    };
    if engine.send(delivery).is_err() {
        // The engine is shutting down; JetStream redelivers to whoever runs next.
        return;
    }
    tokio::spawn(async move {
        let ack = match tokio::time::timeout(record_wait, done).await {
            Ok(Ok(())) => AckKind::Ack,
            _ => AckKind::Nak(Some(Duration::from_secs(1))),
        };
        if let Err(e) = message.ack_with(ack).await {
            tracing::debug!(error = %e, "report ack failed; it will be redelivered and found recorded");
        }
    });
}

async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}
