//! The tool domains an agent `task` node calls that live on the ledger: memory, plans,
//! milestones, decisions, workflow controls of the node's own run, observability of runs,
//! connectors (routing), contract checks and the model registry.
//!
//! Each domain implements [`ToolDomain`] (`runledger_contracts::agent_tool`): it names its
//! tools with their JSON Schemas and serves calls; the agent loop owns the allowlist, argument
//! validation, the `ToolCalled` event and the turn budget. What a domain writes is its own
//! state, through the code path that already writes it for nodes and operators:
//!
//! - `memory_*`, `plan_*`, `milestone_*`, `decision_*` go through [`crate::tools`] (the same
//!   typed operations, pure deciders and events as `memory`/`plan`/`milestone` nodes), with the
//!   call's idempotency key `<node_run>:<turn>:<call>` as the tool stream's request id, so a call
//!   the ledger already holds is never applied twice ([`store_call`]); one generic
//!   [`StoreDomain`] serves the four kinds, whose modules only describe their tools;
//! - `workflow_*` and `node_*` controls go through [`crate::engine::apply_control`], the path of
//!   `runledger runs control|node`, with `node:<node_id>` as actor, and wake the run's owner;
//! - everything else only reads.
//!
//! The tool names are fixed by the flowchart format (FLOWCHART-FORMAT.md); a domain's prefix is
//! not always its tools' prefix (`observability` serves `run_get`, `logs_get`, ...). Every tool
//! is documented in docs/tools.md ("Ledger tools").

mod connector;
mod contract;
mod decision;
mod memory;
mod milestone;
mod model;
mod observability;
mod plan;
mod schema;
mod store_call;
mod store_domain;
mod workflow;

use std::sync::{Arc, OnceLock};

use runledger_contracts::agent_tool::{ToolCallContext, ToolCallError, ToolDomain};
use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::Flowchart;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::leases::LeaseStore;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::engine::Engine;
use crate::lease::{Ownership, WakeFuture};
use crate::state::RunState;
use crate::tools::ToolKind;

pub use connector::ConnectorDomain;
pub use contract::ContractDomain;
pub use model::ModelDomain;
pub use observability::{MAX_READ_LIMIT, ObservabilityDomain};
pub use store_domain::StoreDomain;
pub use workflow::WorkflowDomain;

/// What the ledger-backed domains need from the process that runs the agent loop.
pub struct LedgerToolDeps<S> {
    /// The ledger: tool streams, run streams, the model registry.
    pub store: Arc<S>,
    /// Tells the run's driver, wherever it runs, that a workflow tool wrote a control to its
    /// run, as `runledger runs control` does after it appends.
    pub waker: Arc<dyn RunWaker>,
}

impl<S> Clone for LedgerToolDeps<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            waker: Arc::clone(&self.waker),
        }
    }
}

/// Every ledger-backed domain, ready for the agent loop's registry.
pub fn ledger_domains<S: EventStore + 'static>(
    deps: LedgerToolDeps<S>,
) -> Vec<Arc<dyn ToolDomain>> {
    let store = deps.store;
    vec![
        Arc::new(StoreDomain::new(
            Arc::clone(&store),
            ToolKind::Memory,
            memory::specs,
        )),
        Arc::new(StoreDomain::new(
            Arc::clone(&store),
            ToolKind::Plan,
            plan::specs,
        )),
        Arc::new(StoreDomain::new(
            Arc::clone(&store),
            ToolKind::Milestone,
            milestone::specs,
        )),
        Arc::new(
            StoreDomain::new(Arc::clone(&store), ToolKind::Decision, decision::specs)
                .with_local("decision_evaluate", decision::evaluate),
        ),
        Arc::new(WorkflowDomain::new(Arc::clone(&store), deps.waker)),
        Arc::new(ObservabilityDomain::new(Arc::clone(&store))),
        Arc::new(ConnectorDomain::new(Arc::clone(&store))),
        Arc::new(ContractDomain::new(Arc::clone(&store))),
        Arc::new(ModelDomain::new(store)),
    ]
}

/// Wakes the driver of a run after a write it did not make itself.
pub trait RunWaker: Send + Sync {
    fn wake(&self, run_id: RunId) -> WakeFuture<'_>;
}

/// Through the engine's own [`Ownership`]: with leases, a NOTIFY to the instance that holds
/// the run; alone ([`crate::lease::Solo`]), nothing, as the driver polls its stream.
pub struct WakeOwner(pub Arc<dyn Ownership>);

impl RunWaker for WakeOwner {
    fn wake(&self, run_id: RunId) -> WakeFuture<'_> {
        self.0.wake_owner(run_id)
    }
}

/// From a process without an engine (a remote executor): the lease table's wake, as the CLI
/// does. A failed wake is only slower: the owner reads the control on its next poll or append.
impl RunWaker for LeaseStore {
    fn wake(&self, run_id: RunId) -> WakeFuture<'_> {
        Box::pin(async move {
            if let Err(e) = self.wake_owner(run_id).await {
                tracing::warn!(%run_id, error = %e, "cannot wake the run's owner");
            }
        })
    }
}

/// In the engine's own process: the run's driver is poked to read the control now, or, when
/// the run had ended (a retry, skip or rewind reopens it), driven again, as `Engine::control`
/// does for an ended run; the run's owner elsewhere is woken too.
impl<S: EventStore + 'static> RunWaker for Engine<S> {
    fn wake(&self, run_id: RunId) -> WakeFuture<'_> {
        Box::pin(async move {
            self.wake_owner(run_id).await;
            if self.is_driven(run_id) {
                self.poke(run_id);
            } else if let Err(e) = self.ensure_driven(run_id).await {
                tracing::warn!(%run_id, error = %e, "the run could not be driven after a control");
            }
        })
    }
}

/// An engine that exists only after the domains do (its executors hold them): wakes go to
/// [`RunWaker for Engine`](Engine) once [`LateEngine::bind`] was called, and are left to the
/// driver's poll before.
pub struct LateEngine<S: EventStore + 'static> {
    engine: OnceLock<Engine<S>>,
}

impl<S: EventStore + 'static> Default for LateEngine<S> {
    fn default() -> Self {
        Self {
            engine: OnceLock::new(),
        }
    }
}

impl<S: EventStore + 'static> LateEngine<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The engine to wake from now on; a second call changes nothing.
    pub fn bind(&self, engine: Engine<S>) {
        let _ = self.engine.set(engine);
    }
}

impl<S: EventStore + 'static> RunWaker for LateEngine<S> {
    fn wake(&self, run_id: RunId) -> WakeFuture<'_> {
        match self.engine.get() {
            Some(engine) => engine.wake(run_id),
            None => Box::pin(std::future::ready(())),
        }
    }
}

/// Nobody to wake: the run's driver polls its stream (the SQLite ledger, one engine).
pub struct PollOnly;

impl RunWaker for PollOnly {
    fn wake(&self, _run_id: RunId) -> WakeFuture<'_> {
        Box::pin(std::future::ready(()))
    }
}

// ---- shared by the domains -------------------------------------------------------------------

/// Reads a call's arguments into their typed form; an error names the argument's path.
pub(crate) fn parse<T: DeserializeOwned>(arguments: Value) -> Result<T, ToolCallError> {
    serde_path_to_error::deserialize(arguments).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        ToolCallError::InvalidArguments {
            message: if path.is_empty() || path == "." {
                message
            } else {
                format!("{path}: {message}")
            },
        }
    })
}

/// A tool of another domain reached this one: the loop's registry is wrong.
pub(crate) fn unknown_tool(domain: &str, name: &str) -> ToolCallError {
    ToolCallError::Failed {
        code: "unknown_tool",
        message: format!("the {domain} domain has no tool `{name}`"),
        source: None,
    }
}

pub(crate) fn not_found(message: impl Into<String>) -> ToolCallError {
    ToolCallError::Failed {
        code: "not_found",
        message: message.into(),
        source: None,
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> ToolCallError {
    ToolCallError::InvalidArguments {
        message: message.into(),
    }
}

/// The ledger could not be read or written.
pub(crate) fn unavailable(e: runledger_ledger::StoreError) -> ToolCallError {
    ToolCallError::Failed {
        code: "unavailable",
        message: format!("the ledger could not be reached: {e}"),
        source: Some(Box::new(e)),
    }
}

/// The flowchart the calling run executes (as recorded on its `RunStarted`).
pub(crate) async fn run_flowchart<S: EventStore>(
    store: &S,
    ctx: &ToolCallContext,
) -> Result<Arc<Flowchart>, ToolCallError> {
    let first = store
        .read_stream(&StreamId::for_run(ctx.run_id), 1, 1)
        .await
        .map_err(unavailable)?;
    let event = first
        .first()
        .ok_or_else(|| not_found(format!("run {} does not exist", ctx.run_id)))?;
    let corrupt = |message: String| ToolCallError::Failed {
        code: "run_corrupt",
        message,
        source: None,
    };
    let decoded = event.decode().map_err(|e| corrupt(e.to_string()))?;
    let state = match decoded {
        DomainEvent::RunStarted(started) => RunState::from_started(&started),
        DomainEvent::RunForked(forked) => RunState::from_forked(&forked),
        other => {
            return Err(corrupt(format!(
                "the run begins with {}",
                other.event_type()
            )));
        }
    }
    .map_err(|e| corrupt(e.to_string()))?;
    Ok(state.flowchart)
}
