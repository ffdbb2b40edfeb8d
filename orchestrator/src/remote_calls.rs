//! What an executor running a node run's work again (a redelivered dispatch) must know: the
//! tool calls the ledger already records for that node run, so none of them is applied twice
//! (docs/agents.md, "Idempotency after a crash"). Read from the run's stream, so any engine
//! can answer, whoever drives the run.

use runledger_contracts::events::ToolCalled;
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_ledger::EventStore;
use serde::{Deserialize, Serialize};

use crate::engine::{EngineError, load_run};

/// A node run's recorded tool calls, as the ledger has them now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeRunCalls {
    /// The node run has not ended: these calls (agent tool calls and model turns, in ledger
    /// order) are done and must not be applied again.
    Active {
        attempt: u32,
        calls: Vec<ToolCalled>,
    },
    /// The node run has ended (its result, a timeout, a cancel, the run's end): running its
    /// work again would serve nobody.
    Ended,
    /// The run has no such node run.
    Unknown,
}

/// The calls the ledger records for `node_run_id` of `run_id`, results kept in blobs read
/// back within [`crate::tool_results::MAX_RESTORED_RESULT_BYTES`]. `Err(RunNotFound)` for a run
/// the ledger does not hold; other errors are the store's (transient).
pub async fn recorded_calls<S: EventStore>(
    store: &S,
    run_id: RunId,
    node_run_id: NodeRunId,
) -> Result<NodeRunCalls, EngineError> {
    let loaded = load_run(store, run_id).await?;
    let state = loaded.state;
    let Some(i) = state.node_run_index(&node_run_id) else {
        return Ok(NodeRunCalls::Unknown);
    };
    let nr = &state.node_runs[i];
    if !nr.is_active() || state.status.is_terminal() {
        return Ok(NodeRunCalls::Ended);
    }
    let attempt = nr.attempt;
    let Some(mut work) = state.work(i) else {
        return Ok(NodeRunCalls::Ended);
    };
    // Results kept in blobs go back to the model, as on the engine's own re-submission.
    crate::tool_results::restore(store, &mut work).await;
    Ok(NodeRunCalls::Active {
        attempt,
        calls: work.recorded_calls,
    })
}
