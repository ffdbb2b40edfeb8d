//! Telling executors that a run ended (completed, failed or canceled).
//!
//! When a run's driver sees its run end, the engine's dispatcher publishes a
//! [`RunEndedMessage`] on `runledger.run_ended` (core NATS: every executor subscribed hears
//! it). An executor then stops the node runs of that run it has in hand (their dispatches are
//! terminated, no result is published: the run no longer takes any), refuses later
//! dispatches of it, and tells its tool domains (`ToolDomain::run_finished`): the run's
//! workspace is removed, or kept when the run failed and the flowchart says
//! `keep_on_failure`, and its background jobs are killed. An executor that is not connected
//! when the message goes out does not hear it (core NATS keeps nothing); its workspaces stay
//! until removed by hand.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_orchestrator::executor::Providers;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::messages::WIRE_VERSION;
use crate::topology::Topology;

/// A run ended; `failed` unless it completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEndedMessage {
    pub wire_version: u32,
    pub run_id: RunId,
    pub failed: bool,
}

/// Publishes that `run_id` ended (best effort: logged when NATS does not take it).
pub async fn publish_run_ended(
    client: &async_nats::Client,
    topology: &Topology,
    run_id: RunId,
    failed: bool,
) {
    let message = RunEndedMessage {
        wire_version: WIRE_VERSION,
        run_id,
        failed,
    };
    let Ok(payload) = serde_json::to_vec(&message) else {
        return;
    };
    let sent = async {
        client
            .publish(topology.run_ended_subject(), payload.into())
            .await?;
        client.flush().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    if let Err(e) = sent.await {
        tracing::warn!(%run_id, error = %e, "could not tell executors that the run ended");
    }
}

/// Runs an executor remembers as ended (to refuse their late dispatches).
const REMEMBERED_ENDS: usize = 4096;

/// The node runs an executor has in hand, by run, and the runs it heard end.
#[derive(Default)]
pub struct InFlight {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    running: HashMap<RunId, Vec<(NodeRunId, watch::Sender<bool>)>>,
    ended: HashSet<RunId>,
    ended_order: VecDeque<RunId>,
}

/// A node run in hand; dropping it forgets the node run.
pub struct Running {
    in_flight: Arc<InFlight>,
    run_id: RunId,
    node_run_id: NodeRunId,
    /// Turns true when the run ends.
    pub stop: watch::Receiver<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.in_flight.inner.lock()
            && let Some(runs) = inner.running.get_mut(&self.run_id)
        {
            runs.retain(|(id, _)| *id != self.node_run_id);
            if runs.is_empty() {
                inner.running.remove(&self.run_id);
            }
        }
    }
}

impl InFlight {
    /// Registers a node run about to run; `None` when its run has ended.
    pub fn start(self: &Arc<Self>, run_id: RunId, node_run_id: NodeRunId) -> Option<Running> {
        let (tx, rx) = watch::channel(false);
        let mut inner = self.inner.lock().ok()?;
        if inner.ended.contains(&run_id) {
            return None;
        }
        inner
            .running
            .entry(run_id)
            .or_default()
            .push((node_run_id, tx));
        Some(Running {
            in_flight: Arc::clone(self),
            run_id,
            node_run_id,
            stop: rx,
        })
    }

    /// Stops the run's node runs in hand and remembers the run as ended.
    fn end(&self, run_id: RunId) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.ended.insert(run_id) {
            inner.ended_order.push_back(run_id);
            if inner.ended_order.len() > REMEMBERED_ENDS
                && let Some(oldest) = inner.ended_order.pop_front()
            {
                inner.ended.remove(&oldest);
            }
        }
        for (_, stop) in inner.running.get(&run_id).into_iter().flatten() {
            let _ = stop.send(true);
        }
    }

    /// No node run in hand.
    fn is_idle(&self) -> bool {
        self.inner
            .lock()
            .is_ok_and(|inner| inner.running.is_empty())
    }

    fn holds(&self, run_id: RunId) -> bool {
        self.inner
            .lock()
            .is_ok_and(|inner| inner.running.contains_key(&run_id))
    }
}

/// How long the end of a run waits for its stopped node runs to let go before the tools are
/// told (a stopped node run ends at its next await).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often a draining executor looks whether its last node run let go.
const DRAIN_LOOK: Duration = Duration::from_millis(50);

/// Follows `runledger.run_ended` until `shutdown` turns true and no node run is in hand: stops
/// the ended run's node runs in hand, then tells `providers`' tool domains the run finished.
/// A draining executor still waits for its node runs to end, so it keeps hearing run ends
/// until then: a run that ends during the drain stops its work here at once, rather than after
/// its node runs have run to their end.
pub async fn follow_run_ends(
    client: async_nats::Client,
    topology: Topology,
    in_flight: Arc<InFlight>,
    providers: Arc<Providers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retries = crate::retry_log::RetryLog::new();
    let mut draining = *shutdown.borrow();
    loop {
        if draining && in_flight.is_idle() {
            return;
        }
        let mut ends = match client.subscribe(topology.run_ended_subject()).await {
            Ok(subscription) => {
                retries.recovered();
                subscription
            }
            Err(e) => {
                retries.failed("waiting for NATS to hear run ends", &e);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed(), if !draining => draining = true,
                    _ = tokio::time::sleep(DRAIN_LOOK), if draining => {}
                }
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = ends.next() => message,
                // A closed channel (its sender gone) counts as a shutdown too.
                _ = shutdown.changed(), if !draining => {
                    draining = true;
                    continue;
                }
                _ = tokio::time::sleep(DRAIN_LOOK), if draining => {
                    if in_flight.is_idle() {
                        return;
                    }
                    continue;
                }
            };
            let Some(message) = message else { break };
            let ended = match serde_json::from_slice::<RunEndedMessage>(&message.payload) {
                Ok(ended) if ended.wire_version == WIRE_VERSION => ended,
                Ok(other) => {
                    tracing::warn!(
                        wire_version = other.wire_version,
                        "run-ended message of an unknown wire version ignored"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable run-ended message ignored");
                    continue;
                }
            };
            in_flight.end(ended.run_id);
            let (in_flight, providers) = (Arc::clone(&in_flight), Arc::clone(&providers));
            tokio::spawn(async move {
                let waited = tokio::time::Instant::now();
                while in_flight.holds(ended.run_id) && waited.elapsed() < STOP_GRACE {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tracing::debug!(run_id = %ended.run_id, failed = ended.failed, "run ended; releasing its tools");
                providers.tools().run_finished(ended.run_id, ended.failed);
            });
        }
    }
}
