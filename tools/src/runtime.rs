//! What the workspace, git and command domains share: the configuration, the run workspaces,
//! the git runner, the forge client and the background jobs, so that the end of a run releases them once, in
//! order (jobs killed, then the directory removed), whichever domain hears of it first.

use std::sync::Arc;

use runledger_contracts::agent_tool::{ToolCallContext, ToolCallError};
use runledger_contracts::ids::RunId;

use crate::command::jobs::JobTable;
use crate::config::ToolsConfig;
use crate::error::ToolsError;
use crate::git::forge::ForgeClient;
use crate::git::runner::GitRunner;
use crate::workspace::manager::{Workspace, WorkspaceManager};

#[derive(Debug)]
pub(crate) struct Runtime {
    pub config: ToolsConfig,
    pub manager: WorkspaceManager,
    pub git: GitRunner,
    pub forge: ForgeClient,
    pub jobs: JobTable,
}

impl Runtime {
    pub fn new(config: &ToolsConfig) -> Result<Self, ToolsError> {
        let git = GitRunner::new(
            config.git_identity.clone(),
            config.limits.git_timeout,
            config.limits.max_git_output_bytes,
        );
        Ok(Runtime {
            config: config.clone(),
            manager: WorkspaceManager::new(
                &config.workspace_root,
                &config.instance_id,
                git.clone(),
            )?,
            git,
            forge: ForgeClient::new(config.limits.forge_timeout)?,
            jobs: JobTable::default(),
        })
    }

    /// The calling run's workspace, created at its first call.
    pub async fn workspace(&self, ctx: &ToolCallContext) -> Result<Arc<Workspace>, ToolCallError> {
        self.manager
            .acquire(ctx.run_id, ctx.workspace.as_ref())
            .await
    }

    /// The run ended: kill its background jobs, then release its workspace. Idempotent.
    pub fn run_finished(&self, run_id: RunId, failed: bool) {
        self.jobs.kill_run(run_id);
        self.manager.release(run_id, failed);
    }
}
