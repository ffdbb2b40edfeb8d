//! The tools a process can serve: every [`ToolDomain`] it was built with, indexed by tool name.
//!
//! A tool's name says nothing reliable about its domain (`run_get` and `node_retry` belong to
//! domains named otherwise), so the registry maps each spec's name to the domain that declared
//! it. A node's allowlist (names and globs over the catalog, `mcp_servers`) resolves against it:
//! tools the process serves are offered to the model; allowed tools it does not serve are
//! remembered as unavailable, and a call of one is answered `tool_unavailable`.

use std::collections::BTreeMap;
use std::sync::Arc;

use runledger_contracts::agent_tool::{ToolDomain, ToolSpec};
use runledger_contracts::ids::RunId;
use runledger_contracts::tool_catalog::{self, MCP_PREFIX};

/// Why a registry could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("tool `{name}` is declared by both domain `{first}` and domain `{second}`")]
    DuplicateTool {
        name: String,
        first: String,
        second: String,
    },
    #[error("domain `{domain}` declares `{name}`, which is not a tool name (1-64 of a-z, 0-9, _)")]
    BadName { domain: String, name: String },
    #[error("the parameters of tool `{name}` are not a usable JSON Schema: {message}")]
    BadSchema { name: String, message: String },
}

impl RegistryError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        "tool_registry_invalid"
    }
}

struct Entry {
    domain: usize,
    spec: ToolSpec,
    validator: Arc<jsonschema::Validator>,
}

/// Tool name -> (domain, spec, compiled argument schema).
#[derive(Clone, Default)]
pub struct ToolRegistry {
    domains: Vec<Arc<dyn ToolDomain>>,
    by_name: Arc<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a node may call, resolved against a registry.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Served here, offered to the model, in name order.
    pub offered: Vec<ToolSpec>,
    /// Allowed by the node but not served by this process (names, or `mcp__<server>__*` for a
    /// server this process does not know, or the glob that matched only such names).
    pub unavailable: Vec<String>,
}

impl Allowed {
    pub fn is_offered(&self, name: &str) -> bool {
        self.offered.iter().any(|s| s.name == name)
    }

    /// Whether the node allowed `name` although no domain here serves it.
    pub fn is_unavailable(&self, name: &str) -> bool {
        self.unavailable.iter().any(|entry| {
            entry == name
                || (tool_catalog::is_glob(entry)
                    && tool_catalog::compile_glob(entry).is_ok_and(|g| g.is_match(name)))
        })
    }
}

impl ToolRegistry {
    /// A registry with no tools.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Indexes every spec of every domain; a name declared twice, a name that is not a tool
    /// name or a parameters schema that does not compile is refused.
    pub fn new(domains: Vec<Arc<dyn ToolDomain>>) -> Result<Self, RegistryError> {
        let mut by_name: BTreeMap<String, Entry> = BTreeMap::new();
        for (index, domain) in domains.iter().enumerate() {
            for spec in domain.specs() {
                if !tool_catalog::is_tool_name(&spec.name) {
                    return Err(RegistryError::BadName {
                        domain: domain.domain().to_owned(),
                        name: spec.name,
                    });
                }
                if let Some(first) = by_name.get(&spec.name) {
                    return Err(RegistryError::DuplicateTool {
                        name: spec.name,
                        first: domains[first.domain].domain().to_owned(),
                        second: domain.domain().to_owned(),
                    });
                }
                let validator = jsonschema::validator_for(&spec.parameters).map_err(|e| {
                    RegistryError::BadSchema {
                        name: spec.name.clone(),
                        message: e.to_string(),
                    }
                })?;
                by_name.insert(
                    spec.name.clone(),
                    Entry {
                        domain: index,
                        spec,
                        validator: Arc::new(validator),
                    },
                );
            }
        }
        Ok(Self {
            domains,
            by_name: Arc::new(by_name),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every tool served, in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.by_name.get(name).map(|e| &e.spec)
    }

    /// The domain that declared `name`.
    pub fn domain_of(&self, name: &str) -> Option<&Arc<dyn ToolDomain>> {
        self.by_name.get(name).map(|e| &self.domains[e.domain])
    }

    /// The compiled schema of `name`'s arguments.
    pub(crate) fn validator(&self, name: &str) -> Option<&jsonschema::Validator> {
        self.by_name.get(name).map(|e| e.validator.as_ref())
    }

    /// Resolves a node's `tools` (names and globs) and `mcp_servers` into what is offered and
    /// what is allowed but not served here.
    pub fn resolve(&self, tools: &[String], mcp_servers: &[String]) -> Allowed {
        let mut offered: BTreeMap<&str, &ToolSpec> = BTreeMap::new();
        let mut unavailable = Vec::new();
        for entry in tools {
            if tool_catalog::is_glob(entry) {
                let Ok(glob) = tool_catalog::compile_glob(entry) else {
                    continue;
                };
                let served: Vec<&Entry> = self
                    .by_name
                    .iter()
                    .filter(|(name, _)| glob.is_match(name.as_str()))
                    .map(|(_, e)| e)
                    .collect();
                for e in &served {
                    offered.insert(&e.spec.name, &e.spec);
                }
                let missing = tool_catalog::TOOL_NAMES
                    .iter()
                    .any(|name| glob.is_match(name) && !self.by_name.contains_key(*name));
                if missing || served.is_empty() {
                    unavailable.push(entry.clone());
                }
            } else if let Some(e) = self.by_name.get(entry) {
                offered.insert(&e.spec.name, &e.spec);
            } else {
                unavailable.push(entry.clone());
            }
        }
        for server in mcp_servers {
            let prefix = format!("{MCP_PREFIX}{server}__");
            let mut any = false;
            for (name, e) in self.by_name.iter() {
                if name.starts_with(&prefix) {
                    offered.insert(&e.spec.name, &e.spec);
                    any = true;
                }
            }
            if !any {
                unavailable.push(format!("{prefix}*"));
            }
        }
        Allowed {
            offered: offered.into_values().cloned().collect(),
            unavailable,
        }
    }

    /// Tells every domain that a run ended.
    pub fn run_finished(&self, run_id: RunId, failed: bool) {
        for domain in &self.domains {
            domain.run_finished(run_id, failed);
        }
    }
}
