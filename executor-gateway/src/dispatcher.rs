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
                let subject = topology.dispatch_subject(&class);
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
}
