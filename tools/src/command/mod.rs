//! The `command` domain: programs run in the run's workspace, one to its end (`command_run`) or
//! in the background (`command_start`, `command_status`, `command_kill`). Limits: a timeout,
//! bounded output, rlimits (CPU, address space, processes, file size, no core dumps) and an
//! environment of allowlisted variables. Commands are not otherwise sandboxed: they run with
//! the executor's user, so give `command_*` only to nodes that may run code.

pub mod jobs;
mod run;
mod spawn;
mod specs;

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::ids::RunId;
use serde_json::Value;

use crate::args::invalid;
use crate::runtime::Runtime;

/// The `command_*` tools.
pub struct CommandDomain {
    runtime: Arc<Runtime>,
}

impl CommandDomain {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        CommandDomain { runtime }
    }

    async fn serve(
        &self,
        ctx: &ToolCallContext,
        name: &str,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let rt = &self.runtime;
        match name {
            "command_run" => {
                let ws = rt.workspace(ctx).await?;
                run::run(&ws, &rt.config, arguments).await
            }
            "command_start" => {
                let ws = rt.workspace(ctx).await?;
                rt.jobs.start(ctx.run_id, &ws, &rt.config, arguments).await
            }
            "command_status" => rt.jobs.status(ctx.run_id, arguments),
            "command_kill" => rt.jobs.kill(ctx.run_id, arguments),
            other => Err(invalid("name", format!("`{other}` is not a command tool"))),
        }
    }
}

impl ToolDomain for CommandDomain {
    fn domain(&self) -> &str {
        "command"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        specs::specs(&self.runtime.config.limits)
    }

    fn call<'a>(
        &'a self,
        ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(self.serve(ctx, name, arguments))
    }

    fn run_finished(&self, run_id: RunId, failed: bool) {
        self.runtime.run_finished(run_id, failed);
    }
}
