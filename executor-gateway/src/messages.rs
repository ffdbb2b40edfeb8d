//! What travels over NATS. Both message kinds are JSON; their `Nats-Msg-Id` headers make
//! republishing safe (the stream's duplicate window stores one copy).

use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use runledger_orchestrator::executor::{NodeWork, Report};
use serde::{Deserialize, Serialize};

/// Version of the wire format below; bumped on any incompatible change.
pub const WIRE_VERSION: u32 = 1;

/// One node run's work, published to `runledger.dispatch.<class>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchMessage {
    pub wire_version: u32,
    pub executor_class: String,
    /// After this the engine has given up on this dispatch (dispatch timeout): an executor
    /// that takes it later drops it instead of running work nobody waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    pub work: NodeWork,
}

/// What an executor tells the engine, published to `runledger.results.<run id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportMessage {
    pub wire_version: u32,
    pub run_id: RunId,
    pub report: Report,
}

/// `Nats-Msg-Id` of a dispatch: `run:node_run:attempt`.
pub fn dispatch_message_id(run_id: RunId, node_run_id: NodeRunId, attempt: u32) -> String {
    format!("{run_id}:{node_run_id}:{attempt}")
}

/// `Nats-Msg-Id` of the report that an executor took the work.
pub fn started_message_id(node_run_id: NodeRunId, attempt: u32) -> String {
    format!("started:{node_run_id}:{attempt}")
}

/// `Nats-Msg-Id` of a result: one per node run attempt, whoever ran it and however often.
pub fn result_message_id(node_run_id: NodeRunId, attempt: u32) -> String {
    format!("result:{node_run_id}:{attempt}")
}

/// The header JetStream de-duplicates on.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Publishes `payload` with a de-duplication id and waits for the stream's ack; returns the
/// stream sequence (the first copy's sequence when this one was a duplicate).
pub async fn publish(
    js: &async_nats::jetstream::Context,
    subject: String,
    message_id: &str,
    payload: Vec<u8>,
) -> Result<u64, crate::GatewayError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID_HEADER, message_id);
    let ack = js
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(|e| crate::GatewayError::nats("publish", e))?
        .await
        .map_err(|e| crate::GatewayError::nats("get a publish ack", e))?;
    Ok(ack.sequence)
}

/// Publishes until the stream acks: a report must not be lost to a NATS restart. Waits grow
/// from 50 ms to 5 s.
pub async fn publish_until_acked(
    js: &async_nats::jetstream::Context,
    subject: String,
    message_id: &str,
    payload: Vec<u8>,
) -> u64 {
    let mut delay = std::time::Duration::from_millis(50);
    let mut retries = crate::retry_log::RetryLog::new();
    loop {
        match publish(js, subject.clone(), message_id, payload.clone()).await {
            Ok(sequence) => return sequence,
            Err(e) => {
                retries.failed(&format!("publish of {message_id} failed; retrying"), &e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Publishes until the stream acks or `bound` has passed; `None` when it gave up. Waits grow
/// from 50 ms to 5 s. For an executor, whose node and heartbeats must keep running meanwhile
/// and which must not hold a message forever.
pub async fn publish_within(
    js: &async_nats::jetstream::Context,
    subject: String,
    message_id: &str,
    payload: Vec<u8>,
    bound: std::time::Duration,
) -> Option<u64> {
    // A bound too large to add (Duration::MAX) means no bound.
    let give_up = tokio::time::Instant::now().checked_add(bound);
    let mut delay = std::time::Duration::from_millis(50);
    let mut retries = crate::retry_log::RetryLog::new();
    loop {
        match publish(js, subject.clone(), message_id, payload.clone()).await {
            Ok(sequence) => return Some(sequence),
            Err(e) => {
                if give_up.is_some_and(|at| tokio::time::Instant::now() + delay > at) {
                    tracing::warn!(message_id, error = %e, "publish failed; giving up");
                    return None;
                }
                retries.failed(&format!("publish of {message_id} failed; retrying"), &e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Why a dispatch cannot be run by this build.
#[derive(Debug)]
pub enum DispatchRefused {
    /// A `wire_version` other than [`WIRE_VERSION`].
    WireVersion(u32),
    /// Not a dispatch at all.
    Undecodable(serde_json::Error),
}

/// Decodes a dispatch, reading its `wire_version` first: a newer message whose shape changed
/// is refused as a newer version, not as garbage, and never run as if it were this one.
pub fn decode_dispatch(payload: &[u8]) -> Result<DispatchMessage, DispatchRefused> {
    #[derive(Deserialize)]
    struct Versioned {
        wire_version: u32,
    }
    match serde_json::from_slice::<Versioned>(payload) {
        Ok(Versioned {
            wire_version: WIRE_VERSION,
        }) => runledger_contracts::strict_json::from_slice(payload)
            .map_err(|e| DispatchRefused::Undecodable(e.source)),
        Ok(Versioned { wire_version }) => Err(DispatchRefused::WireVersion(wire_version)),
        Err(e) => Err(DispatchRefused::Undecodable(e)),
    }
}
