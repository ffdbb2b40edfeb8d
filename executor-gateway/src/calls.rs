//! Recorded tool calls for executors that run a node run's work again.
//!
//! A dispatch JetStream redelivers (its executor died, or its ack was lost) carries the work as
//! first published, without the tool calls made since. Before it runs such work, an executor
//! asks the engines (core NATS request/reply on `runledger.calls`, queue group `engines`) which
//! calls the ledger records for the node run, and gives them to the agent loop as
//! `NodeWork.recorded_calls`: a recorded call is answered from the ledger, never applied again.
//! An engine answers from the run's stream ([`runledger_orchestrator::remote_calls`]), so any
//! engine can, whoever drives the run. No answer means the work is not run now: it is left to
//! be redelivered (the dispatch's deadlines bound how long).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_ledger::EventStore;
use runledger_orchestrator::engine::{Engine, EngineError};
use runledger_orchestrator::remote_calls::{NodeRunCalls, recorded_calls};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::messages::WIRE_VERSION;
use crate::topology::Topology;

/// An executor's question: the recorded calls of one node run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallsRequest {
    pub wire_version: u32,
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
}

/// An engine's answer: the node run's calls, or why it could not read them now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallsReply {
    pub wire_version: u32,
    #[serde(flatten)]
    pub answer: CallsAnswer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallsAnswer {
    Calls(NodeRunCalls),
    /// The run is not in the ledger.
    UnknownRun,
    /// The ledger could not be read (ask again later).
    Unavailable {
        message: String,
    },
}

/// Where an engine process reads a node run's recorded calls.
pub type CallsSource =
    Arc<dyn Fn(RunId, NodeRunId) -> BoxFuture<'static, CallsAnswer> + Send + Sync>;

/// The calls of `engine`'s ledger.
pub fn calls_of_engine<S: EventStore + 'static>(engine: &Engine<S>) -> CallsSource {
    let engine = engine.clone();
    Arc::new(move |run_id, node_run_id| {
        let engine = engine.clone();
        Box::pin(async move {
            match recorded_calls(engine.store(), run_id, node_run_id).await {
                Ok(calls) => CallsAnswer::Calls(calls),
                Err(EngineError::RunNotFound(_)) => CallsAnswer::UnknownRun,
                Err(e) => CallsAnswer::Unavailable {
                    message: e.to_string(),
                },
            }
        })
    })
}

/// The queue group of the engines' responders: each request is answered by one engine.
const ENGINES: &str = "engines";

/// Answers executors' [`CallsRequest`]s from `source` until `shutdown` turns true; subscribes
/// again when the subscription ends (a NATS outage).
pub async fn serve_recorded_calls(
    client: async_nats::Client,
    topology: Topology,
    source: CallsSource,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retries = crate::retry_log::RetryLog::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut requests = match client
            .queue_subscribe(topology.calls_subject(), ENGINES.to_owned())
            .await
        {
            Ok(subscription) => {
                retries.recovered();
                subscription
            }
            Err(e) => {
                retries.failed("recorded-calls responder waiting for NATS", &e);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        loop {
            let request = tokio::select! {
                request = requests.next() => request,
                _ = shutdown.changed() => return,
            };
            let Some(request) = request else { break };
            let Some(reply_to) = request.reply.clone() else {
                continue;
            };
            let (client, source) = (client.clone(), Arc::clone(&source));
            tokio::spawn(async move {
                let answer = match serde_json::from_slice::<CallsRequest>(&request.payload) {
                    Ok(asked) if asked.wire_version == WIRE_VERSION => {
                        source(asked.run_id, asked.node_run_id).await
                    }
                    Ok(asked) => CallsAnswer::Unavailable {
                        message: format!("unknown wire_version {}", asked.wire_version),
                    },
                    Err(e) => CallsAnswer::Unavailable {
                        message: format!("not a calls request: {e}"),
                    },
                };
                let reply = CallsReply {
                    wire_version: WIRE_VERSION,
                    answer,
                };
                match serde_json::to_vec(&reply) {
                    Ok(payload) => {
                        if let Err(e) = client.publish(reply_to, payload.into()).await {
                            tracing::debug!(error = %e, "recorded-calls reply not sent");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "recorded-calls reply not encodable"),
                }
            });
        }
    }
}

/// How long an executor waits for one answer, and how often it asks before it gives up.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
const ASK_TRIES: u32 = 3;

/// Asks the engines for the recorded calls of `node_run_id`; `None` when no engine gave an
/// answer (none up, the ledger unreadable) after [`ASK_TRIES`] tries.
pub async fn ask_recorded_calls(
    client: &async_nats::Client,
    topology: &Topology,
    run_id: RunId,
    node_run_id: NodeRunId,
) -> Option<CallsAnswer> {
    let request = CallsRequest {
        wire_version: WIRE_VERSION,
        run_id,
        node_run_id,
    };
    let payload = serde_json::to_vec(&request).ok()?;
    for attempt in 1..=ASK_TRIES {
        let asked = tokio::time::timeout(
            ASK_TIMEOUT,
            client.request(topology.calls_subject(), payload.clone().into()),
        )
        .await;
        match asked {
            Ok(Ok(message)) => match serde_json::from_slice::<CallsReply>(&message.payload) {
                Ok(CallsReply {
                    wire_version: WIRE_VERSION,
                    answer: CallsAnswer::Unavailable { message },
                }) => {
                    tracing::warn!(%node_run_id, attempt, reason = %message, "engine could not read the recorded calls");
                }
                Ok(CallsReply {
                    wire_version: WIRE_VERSION,
                    answer,
                }) => return Some(answer),
                Ok(reply) => {
                    tracing::warn!(%node_run_id, wire_version = reply.wire_version, "recorded-calls reply of an unknown wire version");
                }
                Err(e) => {
                    tracing::warn!(%node_run_id, error = %e, "undecodable recorded-calls reply")
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(%node_run_id, attempt, error = %e, "no engine answered for the recorded calls")
            }
            Err(_) => {
                tracing::warn!(%node_run_id, attempt, "no engine answered for the recorded calls in time")
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    None
}
