//! The tool domains of agent `task` nodes that act outside the ledger: the run's **workspace**
//! (files), **git**, **command** execution and **MCP** servers. Each implements the
//! [`ToolDomain`] contract of `runledger-contracts`; the agent loop owns everything around a
//! call (allowlist, schema validation, the `ToolCalled` event, idempotency, turn budget).
//!
//! - [`workspace`]: [`WorkspaceManager`] (one isolated directory per run, cloned fresh from the
//!   flowchart's `workspace:` at the run's first call, removed when the run ends) and the
//!   `workspace_*` tools, confined to the run's checkout.
//! - [`git`]: the `git_*` tools over the git binary with a clean environment; `git_push` and
//!   `git_pr_create` only under the node's or flowchart's git policy, `git_pr_create` through
//!   the forge client of `git/forge.rs` (the GitHub REST shape: GitHub, Gitea, Forgejo).
//! - [`command`]: `command_run` (timeout, bounded output, rlimits, environment allowlist) and
//!   background jobs (`command_start`, `command_status`, `command_kill`).
//! - [`mcp`]: the MCP server registry (`./.runledger/mcp.json`) and, with the `mcp` feature, one
//!   domain per server whose tools join as `mcp__<server>__<tool>` (official SDK `rmcp`).
//!
//! Process spawning in the whole codebase happens only in `command/`, `git/runner.rs` and
//! `mcp/stdio.rs` of this crate (enforced by the no-spawn guardrail test in
//! `executor-gateway/src/providers/tests.rs`). See docs/tools.md.

pub mod args;
pub mod command;
mod config;
mod error;
pub mod git;
mod http;
pub mod mcp;
pub mod output;
mod runtime;
pub mod workspace;

use std::sync::Arc;

pub use config::{GitIdentity, Limits, ToolsConfig};
pub use error::ToolsError;
pub use runledger_contracts::agent_tool::{
    Forge, GitPolicy, ToolCallContext, ToolCallError, ToolDomain, ToolSpec, WorkspaceSource,
};
pub use workspace::WorkspaceManager;

/// Every domain of this crate, ready for the agent loop: `workspace`, `git`, `command` (sharing
/// one [`WorkspaceManager`] under `config.workspace_root`) and, with the `mcp` feature, one
/// domain per server of the registry at `config.mcp_registry` (each server is started or
/// connected and its tools listed now, since [`ToolDomain::specs`] is synchronous).
///
/// A registry file that is missing means no servers; one that cannot be read or parsed is an
/// error. A server that cannot be reached is left out with a warning in the logs (its tools are
/// then unknown to the loop, so a node naming it fails validation instead of the executor
/// failing to start).
pub async fn domains(config: &ToolsConfig) -> Result<Vec<Arc<dyn ToolDomain>>, ToolsError> {
    let runtime = Arc::new(runtime::Runtime::new(config)?);
    let mut out: Vec<Arc<dyn ToolDomain>> = vec![
        Arc::new(workspace::WorkspaceDomain::new(runtime.clone())),
        Arc::new(git::GitDomain::new(runtime.clone())),
        Arc::new(command::CommandDomain::new(runtime)),
    ];
    if let Some(path) = &config.mcp_registry {
        let registry = mcp::registry::McpRegistry::load(path)?;
        mcp_domains(config, &registry, &mut out).await;
    }
    Ok(out)
}

#[cfg(feature = "mcp")]
async fn mcp_domains(
    config: &ToolsConfig,
    registry: &mcp::registry::McpRegistry,
    out: &mut Vec<Arc<dyn ToolDomain>>,
) {
    for (name, server) in registry.servers() {
        match mcp::McpDomain::connect(name, server, &config.limits).await {
            Ok(domain) => out.push(Arc::new(domain)),
            Err(e) => tracing::warn!(
                server = %name,
                error = %error::chain(&e),
                "MCP server unavailable; its tools are left out"
            ),
        }
    }
}

#[cfg(not(feature = "mcp"))]
async fn mcp_domains(
    _config: &ToolsConfig,
    registry: &mcp::registry::McpRegistry,
    _out: &mut Vec<Arc<dyn ToolDomain>>,
) {
    if registry.servers().next().is_some() {
        tracing::warn!("MCP servers are registered but this build has no `mcp` feature");
    }
}
