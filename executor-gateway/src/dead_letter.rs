//! What happens to a message JetStream gave up on. The consumers have a `max_deliver`, so a
//! message that keeps failing (a report the engine can never record for a reason intake cannot
//! see, a dispatch that crashes every executor) is not redelivered forever. When that limit is
//! hit the server publishes a max-deliveries advisory; this module follows it, logs the
//! message at warn, counts it, and deletes it from its work-queue stream, where it would
//! otherwise stay (unacked, never delivered again) and hold storage.
//!
//! The advisory is read through a queue group, so with several engines (or executors) one of
//! them handles each advisory, and the count in `/metrics` is per process.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;

use crate::messages::MSG_ID_HEADER;
use crate::metrics::{Consumer, GatewayMetrics};

/// What a max-deliveries advisory says (`io.nats.jetstream.advisory.v1.max_deliver`).
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// The subject the server publishes max-deliveries advisories of one consumer on.
pub fn advisory_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// Follows the advisories of `consumer_name` on `stream_name` until `shutdown` turns true;
/// resubscribes after a NATS outage.
pub async fn follow_max_deliveries(
    js: jetstream::Context,
    stream_name: String,
    consumer_name: String,
    consumer: Consumer,
    metrics: Arc<GatewayMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let subject = advisory_subject(&stream_name, &consumer_name);
    let client = js.client();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut advisories = match client
            .queue_subscribe(subject.clone(), format!("{consumer_name}_ADVISORIES"))
            .await
        {
            Ok(subscription) => subscription,
            Err(e) => {
                tracing::debug!(error = %e, "cannot follow max-deliveries advisories yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        loop {
            let advisory = tokio::select! {
                advisory = advisories.next() => advisory,
                _ = shutdown.changed() => return,
            };
            let Some(advisory) = advisory else { break };
            let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(&advisory.payload) else {
                tracing::warn!(stream = %stream_name, consumer = %consumer_name, "unreadable max-deliveries advisory");
                continue;
            };
            metrics.count_max_deliveries(consumer);
            dead_letter(&js, &stream_name, &consumer_name, &advisory).await;
        }
    }
}

/// Logs the message the advisory names and removes it from its stream.
async fn dead_letter(
    js: &jetstream::Context,
    stream_name: &str,
    consumer_name: &str,
    advisory: &MaxDeliveries,
) {
    let sequence = advisory.stream_seq;
    let stream = match js.get_stream(stream_name).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(stream = %stream_name, consumer = %consumer_name, sequence, error = %e,
                "message dropped after max deliveries; its stream is not readable");
            return;
        }
    };
    let (subject, message_id) = match stream.get_raw_message(sequence).await {
        Ok(message) => {
            let id = message
                .headers
                .get(MSG_ID_HEADER)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            (message.subject.to_string(), id)
        }
        Err(_) => (String::new(), String::new()),
    };
    tracing::warn!(stream = %stream_name, consumer = %consumer_name, sequence, deliveries = advisory.deliveries,
        %subject, %message_id, "message dropped after max deliveries (dead-lettered)");
    if let Err(e) = stream.delete_message(sequence).await {
        tracing::debug!(sequence, error = %e, "dead-lettered message not deleted (gone already?)");
    }
}
