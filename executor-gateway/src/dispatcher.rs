//! The engine's side of remote execution: a [`NodeExecutor`] that publishes `task` and `rag`
//! work to JetStream and reports `Dispatched` with the stream sequence once the stream has it.
//! Everything else (`memory`, `plan`, `milestone`) runs in the engine's own process.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::future::BoxFuture;
use runledger_contracts::flowchart::Node;
use runledger_contracts::time::Timestamp;
use runledger_orchestrator::decide::add_ms;
use runledger_orchestrator::executor::{
    Delivery, NodeExecutor, NodeWork, Report, ResultSender, remote_work,
};

use crate::messages::{DispatchMessage, WIRE_VERSION, dispatch_message_id, publish_until_acked};
use crate::topology::Topology;

/// Picks the executor class of a node's work (from the model registry in the binary, which
/// may need a look at the ledger: see [`crate::live_models`]).
pub type ClassOf = Arc<dyn Fn(&Node) -> BoxFuture<'static, String> + Send + Sync>;

/// Called on each remote dispatch with its run and class (e.g. to launch an executor Job).
pub type OnDispatch = Arc<dyn Fn(runledger_contracts::ids::RunId, &str) + Send + Sync>;

/// `frontier` for everything: the class when no registry says otherwise.
pub fn frontier_for_all() -> ClassOf {
    Arc::new(|_| Box::pin(async { "frontier".to_owned() }))
}

pub struct NatsDispatcher {
    js: jetstream::Context,
    topology: Topology,
    class_of: ClassOf,
    dispatch_timeout: Duration,
    local: Arc<dyn NodeExecutor>,
    on_dispatch: Option<OnDispatch>,
}

impl NatsDispatcher {
    /// `local` runs the node types that stay in the engine's process.
    pub fn new(
        js: jetstream::Context,
        topology: Topology,
        class_of: ClassOf,
        dispatch_timeout: Duration,
        local: Arc<dyn NodeExecutor>,
    ) -> Self {
        Self {
            js,
            topology,
            class_of,
            dispatch_timeout,
            local,
            on_dispatch: None,
        }
    }

    /// Calls `hook` with the run and class of every remote dispatch, before it is published.
    pub fn with_on_dispatch(mut self, hook: OnDispatch) -> Self {
        self.on_dispatch = Some(hook);
        self
    }
}

/// The subject of a dispatch: the class's, or, for a node that must run on the run's
/// workspace holder, the holder's own subject when an executor of this build pulls it (its
/// consumer exists). A holder without one (an executor of an older build, or one gone longer
/// than [`crate::topology::ROUTED_CONSUMER_IDLE`]) gets the class's subject as before: any
/// executor of the class may take it, and one that is not the holder fails the node run with
/// `workspace_elsewhere`. A holder whose consumer exists but that no longer pulls leaves the
/// work waiting until the dispatch deadline (`workspace_holder_unavailable`).
async fn route(
    js: &jetstream::Context,
    topology: &Topology,
    class: &str,
    holder: Option<&str>,
) -> String {
    let Some(holder) = holder else {
        return topology.dispatch_subject(class);
    };
    match topology.routed_consumer_exists(js, holder).await {
        Ok(true) => topology.executor_subject(holder),
        Ok(false) => {
            tracing::warn!(
                holder,
                "the workspace holder pulls no routed work; dispatching to its class"
            );
            topology.dispatch_subject(class)
        }
        Err(e) => {
            // NATS is down: the publish below waits for it; route to the holder, whose work
            // this is (its dispatch deadline bounds the wait if it is gone).
            tracing::warn!(holder, error = %e, "could not look up the workspace holder's consumer");
            topology.executor_subject(holder)
        }
    }
}

impl NodeExecutor for NatsDispatcher {
    fn submit(&self, work: NodeWork, results: ResultSender) {
        if !remote_work(work.node.node_type) {
            self.local.submit(work, results);
            return;
        }
        let js = self.js.clone();
        let class = (self.class_of)(&work.node);
        let (topology, on_dispatch) = (self.topology.clone(), self.on_dispatch.clone());
        let timeout_ms = u64::try_from(self.dispatch_timeout.as_millis()).unwrap_or(u64::MAX);
        let span = tracing::debug_span!("dispatch", run_id = %work.run_id, node_run_id = %work.node_run_id, attempt = work.attempt);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let class = class.await;
                let subject = route(&js, &topology, &class, work.workspace_holder.as_deref()).await;
                if let Some(hook) = &on_dispatch {
                    hook(work.run_id, &class);
                }
                let (run_id, node_run_id, attempt) = (work.run_id, work.node_run_id, work.attempt);
                let message_id = dispatch_message_id(run_id, node_run_id, attempt);
                let message = DispatchMessage {
                    wire_version: WIRE_VERSION,
                    executor_class: class.clone(),
                    not_after: Some(add_ms(Timestamp::now(), timeout_ms)),
                    work,
                };
                let payload = match serde_json::to_vec(&message) {
                    Ok(payload) => payload,
                    Err(e) => {
                        // Cannot happen for values the engine built; the dispatch timeout fails the node.
                        tracing::error!(%run_id, %node_run_id, error = %e, "dispatch not encodable");
                        return;
                    }
                };
                let sequence = publish_until_acked(&js, subject, &message_id, payload).await;
                let report = Report::Dispatched {
                    node_run_id,
                    attempt,
                    executor_class: class,
                    message_id,
                    stream_sequence: Some(sequence),
                };
                tracing::debug!(stream_sequence = sequence, "dispatch published");
                let _ = results.send(Delivery {
                    run_id,
                    report,
                    message_id: None,
                    receipt: None,
                });
            },
            span,
        ));
    }

    /// The engine's own tools release the run, and every executor hears that it ended.
    fn run_finished(&self, run_id: runledger_contracts::ids::RunId, failed: bool) {
        self.local.run_finished(run_id, failed);
        let (client, topology) = (self.js.client(), self.topology.clone());
        tokio::spawn(async move {
            crate::run_ended::publish_run_ended(&client, &topology, run_id, failed).await;
        });
    }
}
