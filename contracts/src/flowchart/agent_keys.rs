//! Save-time checks of the keys that make a task node an agent (`tools`, `mcp_servers`,
//! `max_turns`, `agent`, `additional_prompt`, `git_policy`) and of the flowchart's `workspace`
//! (whose `repo` and `ref` may hold only `{{ inputs.* }}` placeholders: [`super::workspace`])
//! and `git_policy`. Tool names are checked against [`crate::tool_catalog`]: an unknown name or
//! a glob that matches nothing fails the save with `unknown_tool`, not the run.

use super::error::{ValidationCode as C, join_index, join_key};
use super::model::{FlowchartDoc, GitPolicyDoc, MAX_MAX_TURNS, Node};
use super::workspace;
use crate::tool_catalog::{self, AllowlistError};

/// Every problem of the agent keys of task node `node` (at path `at`), as (code, path, message).
pub(super) fn check_node(at: &str, node: &Node) -> Vec<(C, String, String)> {
    let id = &node.id;
    let mut out = Vec::new();
    if let Some(tools) = &node.tools {
        for (k, entry) in tools.iter().enumerate() {
            if let Err(e) = tool_catalog::check_entry(entry) {
                let code = match e {
                    AllowlistError::UnknownTool(_) | AllowlistError::GlobMatchesNothing(_) => {
                        C::UnknownTool
                    }
                    _ => C::InvalidValue,
                };
                out.push((
                    code,
                    join_index(&join_key(at, "tools"), k),
                    format!("node `{id}`: {e}"),
                ));
            }
        }
    }
    if let Some(servers) = &node.mcp_servers {
        for (k, server) in servers.iter().enumerate() {
            if !tool_catalog::is_mcp_server_name(server) {
                out.push((
                    C::InvalidValue,
                    join_index(&join_key(at, "mcp_servers"), k),
                    format!(
                        "node `{id}`: `{server}` is not an MCP server name (1-32 of a-z, 0-9, _, -; no `__`)"
                    ),
                ));
            }
        }
    }
    if let Some(turns) = node.max_turns
        && !(1..=MAX_MAX_TURNS).contains(&turns)
    {
        out.push((
            C::InvalidValue,
            join_key(at, "max_turns"),
            format!("node `{id}`: `max_turns` must be 1 to {MAX_MAX_TURNS}, found {turns}"),
        ));
    }
    if let Some(agent) = &node.agent {
        let agent_at = join_key(at, "agent");
        for (key, value) in [("system", &agent.system), ("role", &agent.role)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                out.push((
                    C::InvalidValue,
                    join_key(&agent_at, key),
                    format!("node `{id}`: `agent.{key}` must not be empty"),
                ));
            }
        }
        for (k, skill) in agent.skills.iter().enumerate() {
            if skill.trim().is_empty() {
                out.push((
                    C::InvalidValue,
                    join_index(&join_key(&agent_at, "skills"), k),
                    format!("node `{id}`: a skill must not be empty"),
                ));
            }
        }
    }
    if let Some(policy) = &node.git_policy {
        out.extend(check_git_policy(&join_key(at, "git_policy"), policy));
    }
    out
}

/// Problems of the flowchart-level `workspace` and `git_policy`.
pub(super) fn check_doc(doc: &FlowchartDoc) -> Vec<(C, String, String)> {
    let mut out = Vec::new();
    if let Some(ws) = &doc.workspace {
        if ws.repo.trim().is_empty() {
            out.push((
                C::InvalidValue,
                "workspace.repo".to_owned(),
                "`workspace.repo` must name a local path or a git URL".to_owned(),
            ));
        }
        if ws.git_ref.as_deref().is_some_and(|r| r.trim().is_empty()) {
            out.push((
                C::InvalidValue,
                "workspace.ref".to_owned(),
                "`workspace.ref` must not be empty".to_owned(),
            ));
        }
        for (key, template) in [("repo", Some(&ws.repo)), ("ref", ws.git_ref.as_ref())] {
            if let Some(Err(problem)) = template.map(|t| workspace::check(t)) {
                out.push((
                    C::InvalidValue,
                    format!("workspace.{key}"),
                    format!("`workspace.{key}`: {problem}"),
                ));
            }
        }
    }
    if let Some(policy) = &doc.git_policy {
        out.extend(check_git_policy("git_policy", policy));
    }
    out
}

fn check_git_policy(at: &str, policy: &GitPolicyDoc) -> Vec<(C, String, String)> {
    let mut out = Vec::new();
    for (k, branch) in policy.branches.iter().enumerate() {
        if let Err(e) = globset::Glob::new(branch) {
            out.push((
                C::InvalidValue,
                join_index(&join_key(at, "branches"), k),
                format!("`{branch}` is not a branch glob: {}", e.kind()),
            ));
        }
    }
    if let Some(forge) = &policy.forge {
        let at = join_key(at, "forge");
        let mut bad = |key: &str, message: String| {
            out.push((C::InvalidValue, join_key(&at, key), message));
        };
        if let Err(reason) = crate::model::base_url_problem(&forge.api_base, "token_env") {
            bad("api_base", format!("`api_base` {reason}"));
        }
        if !is_repo(&forge.repo) {
            bad(
                "repo",
                format!(
                    "`{}` is not `owner/name` (each 1-100 of A-Z a-z 0-9 - _ .)",
                    forge.repo
                ),
            );
        }
        if !crate::model::is_env_name(&forge.token_env) {
            bad(
                "token_env",
                "must be the NAME of an environment variable (A-Z 0-9 _, e.g. GITHUB_TOKEN), never the token itself".into(),
            );
        }
    }
    out
}

/// `owner/name`, each part 1-100 of `A-Z a-z 0-9 - _ .`, neither `.` nor `..`.
fn is_repo(repo: &str) -> bool {
    let part = |p: &str| {
        (1..=100).contains(&p.len())
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    matches!(repo.split_once('/'), Some((owner, name)) if part(owner) && part(name))
}
