//! The run engine: turns a flowchart and its inputs into the run ledger.
//!
//! - [`state`]: `RunState` and `evolve`, the only way run state changes.
//! - [`decide`]: the pure decider, `decide(state, command) -> events`, with clock and ids
//!   injected through [`decide::Env`].
//! - [`agent`]: the loop of task nodes that call tools (registry, prompt composition,
//!   turns, tool calls, transcript).
//! - [`executor`] and [`provider`]: where work nodes run (the in-process pool, the `scripted`
//!   model) behind the `NodeExecutor` and `ModelProvider` traits.
//! - [`tools`]: the memory, plan and milestone tools (state event-sourced in their own
//!   streams), run by the engine in the same transaction as the node's end.
//! - [`agent_tools`]: the ledger-backed tool domains an agent `task` node may call (memory,
//!   plans, milestones, decisions, workflow controls, observability, connectors, contracts,
//!   models), behind the `ToolDomain` contract.
//! - [`routing`]: how a decision node routes, shared by the decider and the connector tools.
//! - [`engine`]: the run service that drives runs against an `EventStore`: one append per step,
//!   durable timers, operator controls, recovery after a crash.
//! - [`delivery`]: what became of an executor report (recorded, duplicate, refused for good,
//!   transient), told back to the queue that carried it.
//! - [`subflows`]: where sub-flow nodes' flowcharts come from (`FlowchartSource`).
//! - [`fork`]: a new run from a node of a finished one, linked both ways.
//! - [`lease`]: which engine instance drives which run (leases in PostgreSQL, takeover).
//! - [`tool_results`]: large agent tool results in the blob table (moved there before the
//!   append, read back when a node run's work is handed out again).
//!
//! See docs/engine.md for the rules the decider follows.

pub mod agent;
pub mod agent_tools;
pub mod commit;
pub mod decide;
pub mod delivery;
pub mod engine;
pub mod executor;
pub mod fork;
mod inputs;
pub mod lease;
pub mod provider;
pub mod rag;
pub mod remote_calls;
pub mod replay;
pub mod routing;
pub mod state;
pub mod subflows;
pub mod tool_results;
pub mod tools;
pub mod unstorable;

pub use decide::{
    Cause, Command, ControlAction, DecideError, Env, NodeOutcome, NodeResult, Settings, StartRun,
    StepEnv, SystemEnv,
};
pub use engine::{Engine, EngineConfig, EngineError, FlowchartSource, RunSummary};
pub use state::{RunState, RunStatus};

#[cfg(test)]
mod tests;
