//! Where the agent tools of `run`, `serve`, `dev` and `executor` keep their state: the run
//! workspaces' root and the MCP server registry (docs/tools.md).

use std::path::PathBuf;

use runledger_tools::ToolsConfig;

/// Flags of the commands that run agent nodes.
#[derive(Debug, Clone, clap::Args)]
pub struct ToolArgs {
    /// Parent of every run's workspace directory (`<DIR>/<run_id>/`)
    /// [default: runledger-workspaces in the system temp dir].
    #[arg(long, value_name = "DIR", env = "RUNLEDGER_WORKSPACE_ROOT")]
    pub workspace_root: Option<PathBuf>,
    /// The MCP server registry `runledger mcp add` writes; its servers' tools join the nodes
    /// that name them in `mcp_servers:`.
    #[arg(
        long,
        value_name = "FILE",
        env = "RUNLEDGER_MCP_REGISTRY",
        default_value = ".runledger/mcp.json"
    )]
    pub mcp_registry: PathBuf,
}

impl ToolArgs {
    /// The tool domains' configuration: these paths, `runledger-tools`' defaults otherwise.
    pub fn config(&self) -> ToolsConfig {
        let defaults = ToolsConfig::default();
        ToolsConfig {
            workspace_root: self
                .workspace_root
                .clone()
                .unwrap_or(defaults.workspace_root),
            mcp_registry: Some(self.mcp_registry.clone()),
            ..defaults
        }
    }
}
