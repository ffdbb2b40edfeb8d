//! One MCP server as a tool domain (`mcp__<server>`): connected once (stdio child process or
//! streamable HTTP, through rmcp), its tools listed at connection time with their input schemas
//! and offered as `mcp__<server>__<tool>`. A call goes to the server as `tools/call`; a result
//! the server flags as an error is `mcp_tool_error`, a lost or silent server `mcp_unavailable`.
//! There is no reconnection: a server that dies stays unavailable until the executor restarts.

use std::collections::HashMap;
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use serde_json::{Value, json};

use super::registry::McpServer;
use crate::args::{failed, failed_with, invalid};
use crate::config::Limits;
use crate::error::ToolsError;

/// A tool of the server, as offered and as the server names it.
#[derive(Debug, Clone)]
pub struct McpTool {
    pub spec: ToolSpec,
    /// The server's own name of the tool.
    pub server_name: String,
}

/// The `mcp__<server>__*` tools of one server.
pub struct McpDomain {
    domain: String,
    server: String,
    tools: Vec<McpTool>,
    by_name: HashMap<String, String>,
    service: RunningService<RoleClient, ()>,
    timeout: Duration,
}

impl McpDomain {
    /// Starts or connects to the server and lists its tools.
    pub async fn connect(
        name: &str,
        server: &McpServer,
        limits: &Limits,
    ) -> Result<Self, ToolsError> {
        super::registry::validate_name(name)?;
        let err = |what: &str, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
            ToolsError::Mcp {
                server: name.to_owned(),
                what: what.to_owned(),
                source,
            }
        };
        let timeout = limits.mcp_timeout;
        let service = match server {
            McpServer::Stdio {
                command,
                args,
                env_allowlist,
            } => {
                let transport = super::stdio::start(command, args, env_allowlist)
                    .map_err(|e| err(&format!("cannot start `{command}`"), Some(Box::new(e))))?;
                tokio::time::timeout(timeout, ().serve(transport))
                    .await
                    .map_err(|_| err("no answer to initialize", None))?
                    .map_err(|e| err("initialize failed", Some(Box::new(e))))?
            }
            McpServer::Http {
                url,
                bearer_token_env,
            } => {
                use rmcp::transport::StreamableHttpClientTransport;
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                crate::http::install_crypto_provider();
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                if let Some(var) = bearer_token_env {
                    let token = std::env::var(var).map_err(|_| {
                        err(
                            &format!("the environment variable {var} (bearer token) is not set"),
                            None,
                        )
                    })?;
                    config = config.auth_header(token);
                }
                let transport = StreamableHttpClientTransport::from_config(config);
                tokio::time::timeout(timeout, ().serve(transport))
                    .await
                    .map_err(|_| err("no answer to initialize", None))?
                    .map_err(|e| err("initialize failed", Some(Box::new(e))))?
            }
        };
        let listed = tokio::time::timeout(timeout, service.list_all_tools())
            .await
            .map_err(|_| err("no answer to tools/list", None))?
            .map_err(|e| err("tools/list failed", Some(Box::new(e))))?;
        let mut tools = Vec::new();
        let mut by_name = HashMap::new();
        for tool in listed {
            let offered = format!("mcp__{name}__{}", sanitize(&tool.name));
            if offered.len() > 64 || by_name.contains_key(&offered) {
                tracing::warn!(server = %name, tool = %tool.name, "MCP tool left out: its name is too long or collides");
                continue;
            }
            let read_only = tool
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false);
            let spec = ToolSpec {
                name: offered.clone(),
                description: tool.description.as_deref().unwrap_or("").to_owned(),
                parameters: Value::Object((*tool.input_schema).clone()),
                side_effects: !read_only,
            };
            by_name.insert(offered, tool.name.to_string());
            tools.push(McpTool {
                spec,
                server_name: tool.name.to_string(),
            });
        }
        Ok(McpDomain {
            domain: format!("mcp__{name}"),
            server: name.to_owned(),
            tools,
            by_name,
            service,
            timeout,
        })
    }

    /// The server's tools as offered.
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    async fn serve(&self, name: &str, arguments: Value) -> Result<Value, ToolCallError> {
        let Some(server_name) = self.by_name.get(name) else {
            return Err(invalid(
                "name",
                format!("`{name}` is not a tool of MCP server `{}`", self.server),
            ));
        };
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            _ => return Err(invalid("arguments", "must be an object")),
        };
        let params = CallToolRequestParams::new(server_name.clone()).with_arguments(arguments);
        let result = tokio::time::timeout(self.timeout, self.service.call_tool(params))
            .await
            .map_err(|_| {
                failed(
                    "mcp_unavailable",
                    format!(
                        "MCP server `{}` did not answer within {:?}",
                        self.server, self.timeout
                    ),
                )
            })?
            .map_err(|e| {
                failed_with(
                    "mcp_unavailable",
                    format!("MCP server `{}`: {e}", self.server),
                    e,
                )
            })?;
        let text: Vec<String> = result
            .content
            .iter()
            .filter_map(|block| block.as_text().map(|t| t.text.clone()))
            .collect();
        let text = text.join("\n");
        if result.is_error == Some(true) {
            return Err(failed("mcp_tool_error", text));
        }
        let content = serde_json::to_value(&result.content).unwrap_or(Value::Null);
        Ok(json!({
            "text": text,
            "content": content,
            "structured_content": result.structured_content,
        }))
    }
}

impl ToolDomain for McpDomain {
    fn domain(&self) -> &str {
        &self.domain
    }

    fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec.clone()).collect()
    }

    fn call<'a>(
        &'a self,
        _ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(self.serve(name, arguments))
    }
}

/// A server's tool name in `[a-z0-9_]`: lowercased, anything else becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
