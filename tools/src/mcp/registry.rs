//! The MCP server registry: a JSON file (default `./.runledger/mcp.json`) naming each server a
//! node may list in `mcp_servers:`, managed by `runledger mcp add|list|remove|tools`.
//!
//! ```json
//! { "servers": {
//!     "docs": { "transport": "stdio", "command": "docs-mcp", "args": ["--root", "docs"] },
//!     "search": { "transport": "http", "url": "https://mcp.example.org/mcp", "bearer_token_env": "SEARCH_TOKEN" } } }
//! ```
//!
//! Secrets are never stored: an HTTP server's bearer token is named by the environment variable
//! that holds it, and URLs with credentials in them are refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ToolsError;

/// How to reach one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpServer {
    /// A child process speaking MCP on stdin/stdout (started with a clean environment plus
    /// `env_allowlist` of the executor's variables).
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        env_allowlist: Vec<String>,
    },
    /// A streamable HTTP endpoint.
    Http {
        url: String,
        /// Name of the environment variable holding a bearer token, read at connection time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bearer_token_env: Option<String>,
    },
}

impl McpServer {
    /// `stdio: CMD ARGS..` or `http: URL`, for listings.
    pub fn describe(&self) -> String {
        match self {
            McpServer::Stdio { command, args, .. } => {
                let mut s = format!("stdio: {command}");
                for a in args {
                    s.push(' ');
                    s.push_str(a);
                }
                s
            }
            McpServer::Http { url, .. } => format!("http: {url}"),
        }
    }

    fn validate(&self) -> Result<(), ToolsError> {
        match self {
            McpServer::Stdio { command, .. } if command.trim().is_empty() => {
                Err(ToolsError::InvalidServer {
                    field: "command",
                    message: "must name a program".into(),
                })
            }
            McpServer::Http { url, .. } => {
                let Some((scheme, rest)) = url.split_once("://") else {
                    return Err(ToolsError::InvalidServer {
                        field: "url",
                        message: "must be an http:// or https:// URL".into(),
                    });
                };
                if scheme != "http" && scheme != "https" {
                    return Err(ToolsError::InvalidServer {
                        field: "url",
                        message: "must be an http:// or https:// URL".into(),
                    });
                }
                let authority = rest.split('/').next().unwrap_or("");
                if authority.contains('@') {
                    return Err(ToolsError::InvalidServer {
                        field: "url",
                        message: "must not hold credentials; use --bearer-token-env".into(),
                    });
                }
                Ok(())
            }
            McpServer::Stdio { .. } => Ok(()),
        }
    }
}

/// The registry file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpRegistry {
    #[serde(default)]
    servers: BTreeMap<String, McpServer>,
}

/// Checks a server name: 1-32 of `a-z 0-9 _`, starting with a letter, no `__` (tool names are
/// `mcp__<server>__<tool>`, and must stay within 64 characters).
pub fn validate_name(name: &str) -> Result<(), ToolsError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(ToolsError::InvalidServer {
            field: "name",
            message: format!(
                "`{name}`: 1-32 of a-z 0-9 _, starting with a letter, without `__` or a trailing `_`"
            ),
        })
    }
}

impl McpRegistry {
    /// Reads the registry; a missing file is an empty registry.
    pub fn load(path: &Path) -> Result<Self, ToolsError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| ToolsError::RegistryParse {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(McpRegistry::default()),
            Err(source) => Err(ToolsError::RegistryRead {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the registry (to a temporary file renamed over the old one), creating its
    /// directory.
    pub fn save(&self, path: &Path) -> Result<(), ToolsError> {
        let io = |source| ToolsError::RegistryWrite {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        text.push(b'\n');
        let tmp: PathBuf = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    pub fn servers(&self) -> impl Iterator<Item = (&String, &McpServer)> {
        self.servers.iter()
    }

    pub fn get(&self, name: &str) -> Option<&McpServer> {
        self.servers.get(name)
    }

    /// Adds a server under a new name.
    pub fn add(&mut self, name: &str, server: McpServer) -> Result<(), ToolsError> {
        validate_name(name)?;
        server.validate()?;
        if self.servers.contains_key(name) {
            return Err(ToolsError::ServerExists(name.to_owned()));
        }
        self.servers.insert(name.to_owned(), server);
        Ok(())
    }

    /// Removes a server.
    pub fn remove(&mut self, name: &str) -> Result<McpServer, ToolsError> {
        self.servers
            .remove(name)
            .ok_or_else(|| ToolsError::UnknownServer(name.to_owned()))
    }
}
