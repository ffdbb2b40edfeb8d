//! Errors of setting the domains up (not of calls: those are `ToolCallError`).

use std::path::PathBuf;

/// Why [`crate::domains`] or the MCP registry could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("cannot create the workspace root {path}")]
    WorkspaceRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the MCP registry {path}")]
    RegistryRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the MCP registry {path} is not valid")]
    RegistryParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the MCP registry {path}")]
    RegistryWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: {message}")]
    InvalidServer {
        field: &'static str,
        message: String,
    },
    #[error("MCP server `{0}` is already registered")]
    ServerExists(String),
    #[error("no MCP server named `{0}`")]
    UnknownServer(String),
    #[error("cannot set up the forge's HTTP client")]
    HttpClient {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("MCP server `{server}`: {what}")]
    Mcp {
        server: String,
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ToolsError {
    /// The stable code the CLI prints.
    pub fn code(&self) -> &'static str {
        match self {
            ToolsError::WorkspaceRoot { .. } => "workspace_root_unavailable",
            ToolsError::RegistryRead { .. } | ToolsError::RegistryWrite { .. } => "mcp_registry_io",
            ToolsError::RegistryParse { .. } => "mcp_registry_invalid",
            ToolsError::InvalidServer { .. } => "invalid_argument",
            ToolsError::ServerExists(_) => "mcp_server_exists",
            ToolsError::UnknownServer(_) => "unknown_mcp_server",
            ToolsError::Mcp { .. } => "mcp_unavailable",
            ToolsError::HttpClient { .. } => "http_client_unavailable",
        }
    }
}

/// An error and its sources on one line.
#[cfg(feature = "mcp")]
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
