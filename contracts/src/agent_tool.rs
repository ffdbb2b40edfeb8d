//! The contract between the agent loop of a `task` node and the tool domains it may call.
//!
//! A domain (`workspace`, `git`, `command`, `memory`, `workflow`, an MCP server, ...) implements
//! [`ToolDomain`]: it names its tools with their JSON Schemas and serves calls. The loop owns
//! everything around a call: the allowlist, argument validation against `parameters`, the
//! `ToolCalled` event, idempotency of side-effecting calls and the turn budget. A domain never
//! writes to the ledger on the loop's behalf and never sees a tool it did not declare.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{NodeRunId, RunId};

/// One tool a model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// `<domain>_<operation>` (or `mcp__<server>__<tool>`), 1-64 of `[a-z0-9_]`.
    pub name: String,
    /// What the model is told the tool does.
    pub description: String,
    /// JSON Schema of the arguments object; the loop validates arguments against it before
    /// [`ToolDomain::call`] runs.
    pub parameters: Value,
    /// True when a call changes something outside the ledger (files, git, processes, remote
    /// systems). Such calls carry the idempotency key `<node_run>:<turn>:<call>` and are not
    /// applied again when the ledger already records them as done.
    pub side_effects: bool,
}

/// Where a run's workspace comes from (flowchart key `workspace:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSource {
    /// A local path or a git URL, cloned fresh into the run's workspace.
    pub repo: String,
    /// Branch, tag or commit to check out; the remote's default when absent.
    pub git_ref: Option<String>,
    /// Keep the workspace directory when the run fails, for inspection.
    pub keep_on_failure: bool,
}

/// What git may do beyond the local repository (flowchart or node key `git_policy:`). Without
/// one, `git_push` and `git_pr_create` are refused and the refusal is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitPolicy {
    pub push: bool,
    pub pr_create: bool,
    /// Globs of branch names that may be pushed; empty means any.
    pub branches: Vec<String>,
    /// Where `git_pr_create` opens pull requests (absent in work published before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<Forge>,
}

/// A forge with the GitHub REST shape of pull requests (`POST {api_base}/repos/{repo}/pulls`):
/// GitHub, Gitea and Forgejo (`.../api/v1`). Holds the *name* of the token's environment
/// variable, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forge {
    pub api_base: String,
    /// `owner/name`.
    pub repo: String,
    pub token_env: String,
}

/// What a domain sees of the call it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallContext {
    pub run_id: RunId,
    pub node_id: String,
    pub node_run_id: NodeRunId,
    /// 1-based model turn that asked for the call.
    pub turn: u32,
    /// 0-based index of the call within its turn (parallel calls).
    pub call_index: u32,
    /// `<node_run>:<turn>:<call>`.
    pub idempotency_key: String,
    pub workspace: Option<WorkspaceSource>,
    pub git_policy: Option<GitPolicy>,
}

/// Why a call produced no result. Every variant goes back to the model as an error result and
/// into the `ToolCalled` event; none of them fails the node by itself.
#[derive(Debug, thiserror::Error)]
pub enum ToolCallError {
    /// The arguments do not fit what the tool needs (beyond what the schema could say).
    #[error("invalid arguments: {message}")]
    InvalidArguments { message: String },
    /// Refused by confinement or policy: a path escaping the workspace, a push without policy.
    #[error("refused ({code}): {message}")]
    Refused { code: &'static str, message: String },
    /// The tool ran and failed.
    #[error("{code}: {message}")]
    Failed {
        code: &'static str,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A remote system did not answer in time or failed on its side (HTTP 5xx): the same call
    /// may succeed later. Recorded with `retryable: true`.
    #[error("{code}: {message}")]
    Transient {
        code: &'static str,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ToolCallError {
    /// The stable, machine-readable code recorded in the event.
    pub fn code(&self) -> &'static str {
        match self {
            ToolCallError::InvalidArguments { .. } => "invalid_arguments",
            ToolCallError::Refused { code, .. }
            | ToolCallError::Failed { code, .. }
            | ToolCallError::Transient { code, .. } => code,
        }
    }

    /// Whether the same call may succeed later ([`ToolCallError::Transient`]).
    pub fn retryable(&self) -> bool {
        matches!(self, ToolCallError::Transient { .. })
    }
}

pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, ToolCallError>> + Send + 'a>>;

/// A family of tools served by one implementation.
pub trait ToolDomain: Send + Sync {
    /// The domain prefix of its tools' names (`workspace`, `git`, `mcp__docs`, ...).
    fn domain(&self) -> &str;
    /// Every tool of the domain; the loop offers the model the ones the node allows.
    fn specs(&self) -> Vec<ToolSpec>;
    /// Serve one call of a tool from [`ToolDomain::specs`], arguments already validated.
    fn call<'a>(
        &'a self,
        ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a>;
    /// The run ended: release what the domain holds for it (workspaces, background jobs).
    fn run_finished(&self, _run_id: RunId, _failed: bool) {}
}
