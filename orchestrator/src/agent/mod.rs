//! The agent runtime of `task` nodes: the loop around every tool call (docs/agents.md).
//!
//! - [`registry`]: the tools a process serves ([`ToolRegistry`], built from `ToolDomain`s)
//!   and how a node's allowlist resolves against them.
//! - [`prompt`]: prompt composition (agent system, role, skills, prompt, additional prompt).
//! - [`turns`]: the loop, model -> tool calls -> results -> model, bounded by `max_turns`.
//! - [`calls`]: one tool call: allowlist, argument validation, reuse of a recorded call,
//!   the domain's call and its `ToolCalled`.
//! - [`transcript`]: the conversation so far and the lineage the node's artifact records.
//!
//! The loop runs where the node runs (the engine's in-process pool, or a `runledger executor`);
//! it serves the tools of that process's registry. Tool domains never write the ledger: every
//! call is reported as a `ToolCalled` through a [`CallReporter`], which the engine appends as
//! its own step, idempotently by the call's key.

pub mod calls;
pub mod prompt;
pub mod registry;
pub mod transcript;
pub mod turns;

#[cfg(test)]
mod tests;

use runledger_contracts::events::ToolCalled;
use runledger_contracts::flowchart::Node;
use runledger_contracts::ids::RunId;

pub use registry::{Allowed, RegistryError, ToolRegistry};
pub use turns::{TaskRun, run_task};

use crate::executor::{Delivery, Report, ResultSender};

/// Whether a task node is an agent: it lists tools or MCP servers. Its calls are reported as
/// they happen and its turns are bounded by `max_turns`.
pub fn is_agent(node: &Node) -> bool {
    node.tools.as_ref().is_some_and(|t| !t.is_empty())
        || node.mcp_servers.as_ref().is_some_and(|s| !s.is_empty())
}

/// Where an agent node's `ToolCalled`s go as they happen.
pub trait CallReporter: Send + Sync {
    fn report(&self, call: ToolCalled);
}

/// The in-process reporter: each call is a [`Report::ToolCall`] on the engine's result
/// channel, ahead of the node run's result on the same channel.
pub struct ChannelReporter {
    pub run_id: RunId,
    pub results: ResultSender,
}

impl CallReporter for ChannelReporter {
    fn report(&self, call: ToolCalled) {
        // The engine may have shut down; the attempt is then run again on recovery and the
        // call, if it had side effects, is not applied twice only if it was recorded.
        let _ = self.results.send(Delivery {
            run_id: self.run_id,
            report: Report::ToolCall(Box::new(call)),
            message_id: None,
            receipt: None,
        });
    }
}
