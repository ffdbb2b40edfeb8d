//! `runledger mcp add|list|remove|tools`: the registry of MCP servers task nodes may name in
//! `mcp_servers:` (a JSON file, default `./.runledger/mcp.json`; docs/tools.md#mcp).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use runledger_tools::ToolsError;
use runledger_tools::mcp::{McpRegistry, McpServer};
use serde_json::{Value, json};

use crate::Failure;

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The registry file.
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_MCP_REGISTRY",
        default_value = ".runledger/mcp.json",
        hide_env_values = true
    )]
    registry: PathBuf,
    #[command(subcommand)]
    command: McpCommand,
}

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Register a server: a stdio command (`--command`, which takes the rest of the line) or a
    /// streamable HTTP URL (`--url`).
    #[command(after_help = "Examples:\n  \
        runledger mcp add docs --command docs-mcp --root ./docs\n  \
        runledger mcp add search --url https://mcp.example.org/mcp --bearer-token-env SEARCH_TOKEN")]
    Add(AddArgs),
    /// List the registered servers.
    List {
        /// Print `{"servers": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Remove a server; nodes that name it fail validation.
    Remove {
        name: String,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Start or connect to a server and list its tools as nodes see them (`mcp__<server>__<tool>`).
    Tools {
        name: String,
        /// Print `{"server", "tools": [{"name", "server_name", "description", "side_effects", "parameters"}]}`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The name nodes use (1-32 of a-z 0-9 _, starting with a letter, no `__`).
    name: String,
    /// Print the result as one JSON object (give it before --command).
    #[arg(long)]
    json: bool,
    /// NAME of an environment variable holding a bearer token for --url (never the token).
    #[arg(long, value_name = "VAR", requires = "url")]
    bearer_token_env: Option<String>,
    /// An environment variable of the executor the stdio server may see (repeatable; PATH, HOME
    /// and LANG always pass).
    #[arg(long = "env-allow", value_name = "VAR")]
    env_allowlist: Vec<String>,
    /// Streamable HTTP endpoint.
    #[arg(long, conflicts_with = "command", required_unless_present = "command")]
    url: Option<String>,
    /// The server's program and its arguments: everything after --command.
    #[arg(
        long,
        num_args = 1..,
        allow_hyphen_values = true,
        value_name = "CMD [ARGS..]",
        conflicts_with = "url"
    )]
    command: Vec<String>,
}

impl McpArgs {
    pub fn wants_json(&self) -> bool {
        match &self.command {
            McpCommand::Add(args) => args.json,
            McpCommand::List { json }
            | McpCommand::Remove { json, .. }
            | McpCommand::Tools { json, .. } => *json,
        }
    }
}

pub async fn run(args: McpArgs) -> Result<(), Failure> {
    let path = args.registry;
    let load = || McpRegistry::load(&path).map_err(|e| failure("mcp", e));
    match args.command {
        McpCommand::Add(add) => {
            let server = match (&add.url, add.command.split_first()) {
                (Some(url), _) => McpServer::Http {
                    url: url.clone(),
                    bearer_token_env: add.bearer_token_env.clone(),
                },
                (None, Some((command, rest))) => McpServer::Stdio {
                    command: command.clone(),
                    args: rest.to_vec(),
                    env_allowlist: add.env_allowlist.clone(),
                },
                (None, None) => {
                    return Err(Failure::usage("give --command CMD [ARGS..] or --url URL"));
                }
            };
            let mut registry = load()?;
            registry
                .add(&add.name, server.clone())
                .map_err(|e| failure("mcp add", e))?;
            registry.save(&path).map_err(|e| failure("mcp add", e))?;
            if add.json {
                let mut line =
                    json!({ "ok": true, "action": "add", "name": add.name, "registry": path });
                line["server"] = serde_json::to_value(&server).unwrap_or(Value::Null);
                outln!("{line}");
            } else {
                outln!(
                    "mcp add: server {} ({}) registered in {}",
                    add.name,
                    server.describe(),
                    path.display()
                );
            }
            Ok(())
        }
        McpCommand::List { json } => {
            let registry = load()?;
            if json {
                let servers: Vec<Value> = registry
                    .servers()
                    .map(|(name, server)| {
                        let mut v = serde_json::to_value(server).unwrap_or(Value::Null);
                        v["name"] = json!(name);
                        v
                    })
                    .collect();
                outln!("{}", json!({ "servers": servers }));
            } else if registry.servers().next().is_none() {
                outln!("no MCP servers in {}", path.display());
            } else {
                for (name, server) in registry.servers() {
                    outln!("{name}\t{}", server.describe());
                }
            }
            Ok(())
        }
        McpCommand::Remove { name, json } => {
            let mut registry = load()?;
            registry
                .remove(&name)
                .map_err(|e| failure("mcp remove", e))?;
            registry.save(&path).map_err(|e| failure("mcp remove", e))?;
            if json {
                outln!(
                    "{}",
                    json!({ "ok": true, "action": "remove", "name": name })
                );
            } else {
                outln!("mcp remove: server {name} removed from {}", path.display());
            }
            Ok(())
        }
        McpCommand::Tools { name, json } => {
            let registry = load()?;
            let server = registry
                .get(&name)
                .ok_or_else(|| failure("mcp tools", ToolsError::UnknownServer(name.clone())))?;
            tools(&name, server, json).await
        }
    }
}

#[cfg(feature = "mcp")]
async fn tools(name: &str, server: &McpServer, json: bool) -> Result<(), Failure> {
    let limits = runledger_tools::Limits::default();
    let domain = runledger_tools::mcp::McpDomain::connect(name, server, &limits)
        .await
        .map_err(|e| failure("mcp tools", e))?;
    if json {
        let tools: Vec<Value> = domain
            .tools()
            .iter()
            .map(|t| {
                json!({
                    "name": t.spec.name,
                    "server_name": t.server_name,
                    "description": t.spec.description,
                    "side_effects": t.spec.side_effects,
                    "parameters": t.spec.parameters,
                })
            })
            .collect();
        outln!("{}", json!({ "server": name, "tools": tools }));
    } else {
        for t in domain.tools() {
            outln!("{}\t{}", t.spec.name, t.spec.description);
        }
    }
    Ok(())
}

#[cfg(not(feature = "mcp"))]
async fn tools(_name: &str, _server: &McpServer, _json: bool) -> Result<(), Failure> {
    Err(
        Failure::new("this runledger was built without the `mcp` feature")
            .with_code("mcp_unsupported"),
    )
}

fn failure(what: &str, e: ToolsError) -> Failure {
    let code = e.code();
    let failure = Failure::caused(what, e).with_code(code);
    if code == "invalid_argument" {
        failure.as_usage()
    } else {
        failure
    }
}
