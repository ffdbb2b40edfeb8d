//! The `git` domain: the run's checkout through the git binary ([`runner`]), local operations
//! freely, `git_push` and `git_pr_create` only under the git policy ([`policy`]);
//! `git_pr_create` opens pull requests through [`forge`].

pub mod forge;
mod ops;
pub mod policy;
mod remote;
pub mod runner;
mod specs;

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::ids::RunId;
use serde_json::Value;

use crate::args::invalid;
use crate::runtime::Runtime;

/// The `git_*` tools.
pub struct GitDomain {
    runtime: Arc<Runtime>,
}

impl GitDomain {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        GitDomain { runtime }
    }

    async fn serve(
        &self,
        ctx: &ToolCallContext,
        name: &str,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let ws = self.runtime.workspace(ctx).await?;
        let git = ops::Git::new(&self.runtime.git, &ws);
        match name {
            "git_status" => git.status(arguments).await,
            "git_diff" => git.diff(arguments).await,
            "git_log" => git.log(arguments).await,
            "git_show" => git.show(arguments).await,
            "git_branch_create" => git.branch_create(arguments).await,
            "git_branch_switch" => git.branch_switch(arguments).await,
            "git_commit" => git.commit(arguments).await,
            "git_tag_create" => git.tag_create(arguments).await,
            "git_cherry_pick" => git.cherry_pick(arguments).await,
            "git_rebase_noninteractive" => git.rebase(arguments).await,
            "git_push" => remote::push(&git, ctx.git_policy.as_ref(), arguments).await,
            "git_pr_create" => remote::pr_create(&git, &self.runtime.forge, ctx, arguments).await,
            other => Err(invalid("name", format!("`{other}` is not a git tool"))),
        }
    }
}

impl ToolDomain for GitDomain {
    fn domain(&self) -> &str {
        "git"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        specs::specs()
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
