//! Every tool name a task node may list in `tools:`, fixed by FLOWCHART-FORMAT.md.
//!
//! The catalog is what save-time validation knows: a name that is not here, or a glob that
//! matches none of these names, is `unknown_tool`. Whether a process can actually serve a tool
//! is a run-time question (the tool registry of the engine or executor that runs the node; a
//! tool it lacks is the call result `tool_unavailable`). MCP tools (`mcp__<server>__<tool>`)
//! are not listed: their servers say what they offer, so those names are checked by shape only.

/// Every built-in tool, grouped by domain in catalog order.
pub const TOOL_NAMES: &[&str] = &[
    // memory
    "memory_get",
    "memory_list",
    "memory_create",
    "memory_update",
    "memory_delete",
    "memory_search",
    // plan
    "plan_get",
    "plan_list",
    "plan_create",
    "plan_update",
    "plan_delete",
    "plan_reorder_stages",
    "plan_set_stage_status",
    // milestone
    "milestone_get",
    "milestone_list",
    "milestone_create",
    "milestone_update",
    "milestone_delete",
    "milestone_set_status",
    "milestone_attach_evidence",
    // decision
    "decision_create",
    "decision_evaluate",
    "decision_list_options",
    "decision_score_options",
    "decision_record_outcome",
    "decision_get",
    "decision_list",
    // workflow control
    "workflow_pause",
    "workflow_resume",
    "workflow_cancel",
    "node_retry",
    "node_skip",
    "node_rewind",
    // observability
    "run_get",
    "node_run_get",
    "logs_get",
    "tool_calls_get",
    "artifact_get",
    "failure_trace_get",
    // connector / branch
    "branch_evaluate",
    "connector_conditions_get",
    "connector_conditions_validate",
    "next_nodes_resolve",
    // contract validation
    "node_output_validate",
    "condition_validate",
    // model / provider
    "provider_list",
    "provider_get",
    "model_list",
    "model_get",
    "model_validate_provider_settings",
    // rag
    "rag_source_list",
    "rag_index_status",
    "rag_trigger_index",
    "rag_query",
    // workspace
    "workspace_list",
    "workspace_read",
    "workspace_write",
    "workspace_mkdir",
    "workspace_delete",
    "workspace_move",
    "workspace_copy",
    "workspace_search",
    "workspace_apply_patch",
    "workspace_chmod",
    // git
    "git_status",
    "git_diff",
    "git_log",
    "git_show",
    "git_branch_create",
    "git_branch_switch",
    "git_commit",
    "git_tag_create",
    "git_cherry_pick",
    "git_rebase_noninteractive",
    "git_push",
    "git_pr_create",
    // command execution
    "command_run",
    "command_start",
    "command_status",
    "command_kill",
];

/// Whether the tool `name` works in the run's workspace (workspace, git and command tools):
/// its first such call creates the workspace on the executor that serves it.
pub fn uses_run_workspace(name: &str) -> bool {
    ["workspace_", "git_", "command_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Whether a node's `tools:` allowlist lets it call any tool of the run's workspace (a name
/// or a glob matching one). Such a node must run where the run's workspace is.
pub fn allowlist_reaches_run_workspace(entries: &[String]) -> bool {
    entries.iter().any(|entry| {
        if is_glob(entry) {
            compile_glob(entry).is_ok_and(|glob| {
                TOOL_NAMES
                    .iter()
                    .any(|name| uses_run_workspace(name) && glob.is_match(name))
            })
        } else {
            uses_run_workspace(entry)
        }
    })
}

/// Prefix of tools served by MCP servers: `mcp__<server>__<tool>`.
pub const MCP_PREFIX: &str = "mcp__";

/// Whether `name` is a valid tool name: 1-64 of `[a-z0-9_]`.
pub fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `name` is a valid MCP server name: 1-32 of `[a-z0-9_-]`, no `__` (the separator of
/// MCP tool names).
pub fn is_mcp_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `mcp__<server>__<tool>` split into server and tool, when `name` has that shape.
pub fn split_mcp_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(MCP_PREFIX)?;
    let (server, tool) = rest.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// Whether an allowlist entry is a glob (`*`, `?` or `[`) rather than a name.
pub fn is_glob(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

/// Why an allowlist entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    #[error("`{0}` is not a tool name (1-64 of a-z, 0-9, _) nor a glob")]
    BadName(String),
    #[error("`{entry}` is not a glob: {message}")]
    BadGlob { entry: String, message: String },
    #[error("no tool is named `{0}`")]
    UnknownTool(String),
    #[error("the glob `{0}` matches no tool")]
    GlobMatchesNothing(String),
    #[error("`{0}` is not `mcp__<server>__<tool>` with a valid server and tool name")]
    BadMcpName(String),
}

/// Compiles an allowlist glob (`*` does not cross anything: tool names have no separator).
pub fn compile_glob(entry: &str) -> Result<globset::GlobMatcher, AllowlistError> {
    globset::Glob::new(entry)
        .map(|g| g.compile_matcher())
        .map_err(|e| AllowlistError::BadGlob {
            entry: entry.to_owned(),
            message: e.kind().to_string(),
        })
}

/// Checks one `tools:` entry against the catalog: a catalog name, a glob matching at least one
/// catalog name (or an MCP glob, `mcp__docs__*`, checked by shape), or an MCP tool name.
pub fn check_entry(entry: &str) -> Result<(), AllowlistError> {
    if entry.starts_with(MCP_PREFIX) {
        let plain = entry.replace(['*', '?'], "x");
        return match split_mcp_name(&plain) {
            Some((server, tool)) if is_mcp_server_name(server) && is_tool_name(tool) => {
                if is_glob(entry) {
                    compile_glob(entry).map(|_| ())
                } else {
                    Ok(())
                }
            }
            _ => Err(AllowlistError::BadMcpName(entry.to_owned())),
        };
    }
    if is_glob(entry) {
        let matcher = compile_glob(entry)?;
        return if TOOL_NAMES.iter().any(|name| matcher.is_match(name)) {
            Ok(())
        } else {
            Err(AllowlistError::GlobMatchesNothing(entry.to_owned()))
        };
    }
    if !is_tool_name(entry) {
        return Err(AllowlistError::BadName(entry.to_owned()));
    }
    if TOOL_NAMES.contains(&entry) {
        Ok(())
    } else {
        Err(AllowlistError::UnknownTool(entry.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_are_valid_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for name in TOOL_NAMES {
            assert!(is_tool_name(name), "{name}");
            assert!(seen.insert(name), "{name} twice");
        }
        assert_eq!(TOOL_NAMES.len(), 80);
        assert_eq!(
            TOOL_NAMES.iter().filter(|n| uses_run_workspace(n)).count(),
            26
        );
    }

    /// docs/tools.md documents every tool of the catalog in a table row of its own (arguments,
    /// result, errors, side effects), and agents.md's catalog table names each.
    #[test]
    fn every_catalog_tool_is_documented() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let tools = std::fs::read_to_string(docs.join("tools.md")).unwrap();
        let agents = std::fs::read_to_string(docs.join("agents.md")).unwrap();
        for name in TOOL_NAMES {
            assert!(
                tools.contains(&format!("\n| `{name}` |")),
                "docs/tools.md has no row for `{name}`"
            );
            assert!(
                agents.contains(&format!("`{name}`")),
                "docs/agents.md's catalog lacks `{name}`"
            );
        }
    }

    #[test]
    fn entries_are_names_globs_or_mcp_tools() {
        assert_eq!(check_entry("workspace_read"), Ok(()));
        assert_eq!(check_entry("git_*"), Ok(()));
        assert_eq!(check_entry("mcp__docs__search"), Ok(()));
        assert_eq!(check_entry("mcp__docs__*"), Ok(()));
        assert_eq!(
            check_entry("workspace_reed"),
            Err(AllowlistError::UnknownTool("workspace_reed".into()))
        );
        assert_eq!(
            check_entry("svn_*"),
            Err(AllowlistError::GlobMatchesNothing("svn_*".into()))
        );
        assert!(matches!(
            check_entry("Workspace.read"),
            Err(AllowlistError::BadName(_))
        ));
        assert!(matches!(
            check_entry("mcp__Docs__x"),
            Err(AllowlistError::BadMcpName(_))
        ));
        assert!(matches!(
            check_entry("mcp__docs"),
            Err(AllowlistError::BadMcpName(_))
        ));
    }

    #[test]
    fn allowlists_reaching_the_run_workspace() {
        let list = |entries: &[&str]| entries.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert!(allowlist_reaches_run_workspace(&list(&[
            "memory_get",
            "git_status"
        ])));
        assert!(allowlist_reaches_run_workspace(&list(&["*_run"])));
        assert!(!allowlist_reaches_run_workspace(&list(&[
            "memory_*",
            "rag_query"
        ])));
        assert!(!allowlist_reaches_run_workspace(&list(&["mcp__docs__*"])));
    }
}
