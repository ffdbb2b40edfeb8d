//! The `workspace` domain: files of the run's checkout. Every path is confined
//! ([`confine`]); reads, listings and searches are bounded by [`crate::Limits`].

mod confine;
mod files;
pub mod manager;
mod patch;
mod search;
mod specs;

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::ids::RunId;
use serde_json::Value;

use crate::args::invalid;
use crate::runtime::Runtime;

pub use confine::{Confined, confine};
pub use manager::{Workspace, WorkspaceManager};

/// The `workspace_*` tools.
pub struct WorkspaceDomain {
    runtime: Arc<Runtime>,
}

impl WorkspaceDomain {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        WorkspaceDomain { runtime }
    }

    async fn serve(
        &self,
        ctx: &ToolCallContext,
        name: &str,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let ws = self.runtime.workspace(ctx).await?;
        let root = ws.repo.clone();
        let limits = self.runtime.config.limits.clone();
        let name = name.to_owned();
        // File-system work is blocking: off the async workers.
        let work = tokio::task::spawn_blocking(move || match name.as_str() {
            "workspace_list" => files::list(&root, arguments, &limits),
            "workspace_read" => files::read(&root, arguments, &limits),
            "workspace_write" => files::write(&root, arguments, &limits),
            "workspace_mkdir" => files::mkdir(&root, arguments),
            "workspace_delete" => files::delete(&root, arguments),
            "workspace_move" => files::move_path(&root, arguments),
            "workspace_copy" => files::copy(&root, arguments, &limits),
            "workspace_chmod" => files::chmod(&root, arguments),
            "workspace_search" => search::search(&root, arguments, &limits),
            "workspace_apply_patch" => patch::apply(&root, arguments, &limits),
            other => Err(invalid(
                "name",
                format!("`{other}` is not a workspace tool"),
            )),
        });
        work.await.map_err(|e| {
            crate::args::failed_with("internal_error", "the workspace task did not finish", e)
        })?
    }
}

impl ToolDomain for WorkspaceDomain {
    fn domain(&self) -> &str {
        "workspace"
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
