//! The document form of a flowchart: exactly what users write, in YAML or JSON.
//!
//! Keys are a user-facing contract (see FLOWCHART-FORMAT.md): extend, never rename.
//!
//! Why optional fields everywhere and one flat [`Node`]: the document must deserialize even when it
//! is wrong in ways only the whole graph reveals, so that validation can report *every* problem
//! at once. Which keys a node type accepts, numeric ranges and cross references are therefore
//! checked by [`super::validate`], not by serde. Likewise serde's `deny_unknown_fields` is not
//! used: it would stop at the first unknown key, while [`super::parse`] collects all of them
//! (the JSON Schema still says `additionalProperties: false` via `#[schemars(deny_unknown_fields)]`).

use schemars::JsonSchema;
use serde::de::{self, MapAccess, VariantAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// Built-in node timeout when neither the node nor `defaults` sets one.
pub const DEFAULT_TIMEOUT_S: u64 = 300;
/// Built-in `retry.max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 1;
/// Built-in `retry.backoff_ms`.
pub const DEFAULT_BACKOFF_MS: u64 = 500;
/// Built-in `retry.backoff_multiplier`.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
/// Built-in `rag.top_k`.
pub const DEFAULT_TOP_K: u32 = 5;
/// Model turns of a task node that sets no `max_turns`.
pub const DEFAULT_MAX_TURNS: u32 = 20;
/// Largest `max_turns`.
pub const MAX_MAX_TURNS: u32 = 200;
/// Name of the built-in model whose answers are listed in the node's `scripted` key.
pub const SCRIPTED_MODEL: &str = "scripted";

/// A whole flowchart document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FlowchartDoc {
    /// The flowchart's name; all versions of a flowchart share it.
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub connectors: Vec<Connector>,
    /// Where the run's workspace comes from (tool nodes that use `workspace_*` / `git_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceDoc>,
    /// What git may do beyond the local repository, for every node that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_policy: Option<GitPolicyDoc>,
}

impl FlowchartDoc {
    /// JSON Schema of the document (every object closed with `additionalProperties: false`).
    pub fn json_schema() -> schemars::Schema {
        schemars::schema_for!(FlowchartDoc)
    }

    /// `limits.max_node_executions`, if set.
    pub fn max_node_executions(&self) -> Option<u64> {
        self.limits.as_ref().and_then(|l| l.max_node_executions)
    }
}

/// Run-wide limits; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Limits {
    /// Total node runs allowed in one run; required when solid connectors form a cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_node_executions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_runtime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_parallel_nodes: Option<u64>,
}

/// Defaults that per-node keys of the same name override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// Retry policy. A node's `retry` replaces `defaults.retry` as a whole; keys left out take the
/// built-in defaults (1 attempt, 500 ms, multiplier 2.0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in total, the first included (>= 1).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    /// Delay before the second attempt.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Each further delay is the previous one times this (>= 1.0).
    #[serde(default = "default_backoff_multiplier")]
    #[schemars(range(min = 1.0))]
    pub backoff_multiplier: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_ms: DEFAULT_BACKOFF_MS,
            backoff_multiplier: DEFAULT_BACKOFF_MULTIPLIER,
        }
    }
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_backoff_ms() -> u64 {
    DEFAULT_BACKOFF_MS
}
fn default_backoff_multiplier() -> f64 {
    DEFAULT_BACKOFF_MULTIPLIER
}
fn default_top_k() -> u32 {
    DEFAULT_TOP_K
}

/// The kind of a node; it decides which other keys the node accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeType {
    Start,
    End,
    Task,
    Decision,
    Memory,
    Plan,
    Milestone,
    Rag,
    Flowchart,
}

impl NodeType {
    pub const ALL: &'static [NodeType] = &[
        NodeType::Start,
        NodeType::End,
        NodeType::Task,
        NodeType::Decision,
        NodeType::Memory,
        NodeType::Plan,
        NodeType::Milestone,
        NodeType::Rag,
        NodeType::Flowchart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Start => "start",
            NodeType::End => "end",
            NodeType::Task => "task",
            NodeType::Decision => "decision",
            NodeType::Memory => "memory",
            NodeType::Plan => "plan",
            NodeType::Milestone => "milestone",
            NodeType::Rag => "rag",
            NodeType::Flowchart => "flowchart",
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many solid parents must deliver a token before a node runs: `all` (default), `any` or
/// `{ custom: N }`.
// (De)serialized by hand so that `Custom` is `{ custom: N }` in YAML too: serde_yaml_ng would
// otherwise insist on a `!custom N` tag, which is not part of the format. The JSON Schema is the
// derived (externally tagged) one, which describes exactly that shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FanIn {
    /// Every solid parent (the default).
    #[default]
    All,
    /// The first solid parent.
    Any,
    /// N solid parents, 1 <= N <= number of solid incoming connectors.
    Custom(#[schemars(range(min = 1))] u32),
}

impl Serialize for FanIn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FanIn::All => serializer.serialize_str("all"),
            FanIn::Any => serializer.serialize_str("any"),
            FanIn::Custom(n) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("custom", n)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for FanIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FanInVisitor)
    }
}

struct FanInVisitor;

const FAN_IN_VARIANTS: &[&str] = &["all", "any", "custom"];

impl<'de> Visitor<'de> for FanInVisitor {
    type Value = FanIn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`all`, `any` or `{ custom: N }`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FanIn, E> {
        match v {
            "all" => Ok(FanIn::All),
            "any" => Ok(FanIn::Any),
            "custom" => Err(E::custom("`custom` fan-in needs a count: `{ custom: N }`")),
            other => Err(E::unknown_variant(other, FAN_IN_VARIANTS)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FanIn, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        if key != "custom" {
            return Err(de::Error::unknown_variant(&key, &["custom"]));
        }
        let n = map.next_value::<u32>()?;
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom(
                "`fan_in` mapping takes the single key `custom`",
            ));
        }
        Ok(FanIn::Custom(n))
    }

    /// YAML's tagged form `!custom 2`, as serde_yaml_ng spells enum variants.
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<FanIn, A::Error> {
        let (name, variant) = data.variant::<String>()?;
        match name.as_str() {
            "all" => variant.unit_variant().map(|()| FanIn::All),
            "any" => variant.unit_variant().map(|()| FanIn::Any),
            "custom" => variant.newtype_variant::<u32>().map(FanIn::Custom),
            other => Err(de::Error::unknown_variant(other, FAN_IN_VARIANTS)),
        }
    }
}

/// One node; `type` selects which of the other keys are allowed.
// A single flat struct rather than an enum per type: which keys a type allows is checked by
// validation, so that every misplaced key is reported with its path (`key_not_allowed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Node {
    /// `[A-Za-z_][A-Za-z0-9_-]*`: ids appear in condition paths such as `upstream.<id>`.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Absent means `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_in: Option<FanIn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// A model name from the registry; `scripted` is built in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Prompt template (`{{ inputs.topic }}` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// JSON Schema the output must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_repair_attempts: Option<u32>,
    /// Answers of the `scripted` model, one per attempt in order; the last one repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scripted: Option<Vec<ScriptedResponse>>,
    /// Decision conditions, evaluated in order; every match fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ConditionDoc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_match: Option<NoMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestone: Option<MilestoneConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<RagConfig>,
    /// Name of the sub-flowchart (type `flowchart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flowchart: Option<String>,
    /// Version of the sub-flowchart; absent means the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<u32>,
    /// Tools the model may call: names from the tool catalog, globs over them (`git_*`) or
    /// `mcp__<server>__<tool>` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// MCP servers (by registry name) whose tools join the allowlist as `mcp__<server>__<tool>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Vec<String>>,
    /// Model turns allowed before the node fails with `max_turns_exceeded` (1-200, default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 200))]
    pub max_turns: Option<u32>,
    /// The agent's system prompt, role and skills, composed before the node's prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentDoc>,
    /// Text appended after the node's prompt (a template like `prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_prompt: Option<String>,
    /// What git may do beyond the local repository; replaces the flowchart's `git_policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_policy: Option<GitPolicyDoc>,
}

impl Node {
    /// A node with only `id` and `type` set.
    pub fn new(id: impl Into<String>, node_type: NodeType) -> Self {
        Self {
            id: id.into(),
            node_type,
            description: None,
            fan_in: None,
            timeout_s: None,
            retry: None,
            model: None,
            prompt: None,
            output_schema: None,
            schema_repair_attempts: None,
            scripted: None,
            conditions: None,
            no_match: None,
            memory: None,
            plan: None,
            milestone: None,
            rag: None,
            flowchart: None,
            version: None,
            tools: None,
            mcp_servers: None,
            max_turns: None,
            agent: None,
            additional_prompt: None,
            git_policy: None,
        }
    }

    pub fn fan_in_or_default(&self) -> FanIn {
        self.fan_in.unwrap_or_default()
    }

    /// Whether this node's model is the built-in scripted model.
    pub fn is_scripted(&self) -> bool {
        self.model.as_deref() == Some(SCRIPTED_MODEL)
    }

    /// The optional keys that are present, by their document name (for key-per-type checks).
    pub fn present_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut add = |present: bool, key: &'static str| {
            if present {
                keys.push(key);
            }
        };
        add(self.fan_in.is_some(), "fan_in");
        add(self.timeout_s.is_some(), "timeout_s");
        add(self.retry.is_some(), "retry");
        add(self.model.is_some(), "model");
        add(self.prompt.is_some(), "prompt");
        add(self.output_schema.is_some(), "output_schema");
        add(
            self.schema_repair_attempts.is_some(),
            "schema_repair_attempts",
        );
        add(self.scripted.is_some(), "scripted");
        add(self.conditions.is_some(), "conditions");
        add(self.no_match.is_some(), "no_match");
        add(self.memory.is_some(), "memory");
        add(self.plan.is_some(), "plan");
        add(self.milestone.is_some(), "milestone");
        add(self.rag.is_some(), "rag");
        add(self.flowchart.is_some(), "flowchart");
        add(self.version.is_some(), "version");
        add(self.tools.is_some(), "tools");
        add(self.mcp_servers.is_some(), "mcp_servers");
        add(self.max_turns.is_some(), "max_turns");
        add(self.agent.is_some(), "agent");
        add(self.additional_prompt.is_some(), "additional_prompt");
        add(self.git_policy.is_some(), "git_policy");
        keys
    }
}

impl NodeType {
    /// Keys this type accepts besides `id`, `type` and `description`. (`scripted` is further
    /// restricted to `model: scripted`.)
    pub fn allowed_keys(self) -> &'static [&'static str] {
        match self {
            NodeType::Start => &[],
            NodeType::End => &["fan_in"],
            NodeType::Task => &[
                "fan_in",
                "timeout_s",
                "retry",
                "model",
                "prompt",
                "output_schema",
                "schema_repair_attempts",
                "scripted",
                "tools",
                "mcp_servers",
                "max_turns",
                "agent",
                "additional_prompt",
                "git_policy",
            ],
            NodeType::Decision => &["fan_in", "conditions", "no_match"],
            NodeType::Memory => &["fan_in", "timeout_s", "retry", "memory"],
            NodeType::Plan => &["fan_in", "timeout_s", "retry", "plan"],
            NodeType::Milestone => &["fan_in", "timeout_s", "retry", "milestone"],
            NodeType::Rag => &["fan_in", "timeout_s", "retry", "model", "rag"],
            NodeType::Flowchart => &["fan_in", "timeout_s", "retry", "flowchart", "version"],
        }
    }

    /// Keys this type requires besides `id` and `type`.
    pub fn required_keys(self) -> &'static [&'static str] {
        match self {
            NodeType::Task => &["model"],
            NodeType::Memory => &["memory"],
            NodeType::Plan => &["plan"],
            NodeType::Milestone => &["milestone"],
            NodeType::Rag => &["rag"],
            NodeType::Flowchart => &["flowchart"],
            NodeType::Start | NodeType::End | NodeType::Decision => &[],
        }
    }

    /// Whether nodes of this type are timed and retried (their `timeout_s`/`retry` apply).
    pub fn runs_work(self) -> bool {
        !matches!(self, NodeType::Start | NodeType::End | NodeType::Decision)
    }
}

/// One answer of the scripted model: exactly one of `output` / `error` / `tool_calls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScriptedResponse {
    /// Tool calls the model asks for in this turn (several: parallel calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ScriptedToolCall>>,
    /// The output (any JSON, `null` included).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Value")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ScriptedError>,
    /// Delay before answering (use with `timeout_s` to script a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

impl ScriptedResponse {
    /// How many of `output`, `error` and `tool_calls` the response has (1 when it is valid).
    pub fn kinds(&self) -> usize {
        usize::from(self.output.is_some())
            + usize::from(self.error.is_some())
            + usize::from(self.tool_calls.is_some())
    }
}

/// One tool call of a scripted model turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScriptedToolCall {
    pub tool: String,
    /// The arguments object; absent means `{}`.
    #[serde(default = "empty_object")]
    pub arguments: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// The `agent:` block of a task node: prompt fragments composed before the node's prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AgentDoc {
    /// The system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The role the model plays (`reviewer`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Skill names, each a prompt fragment in composition order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
}

/// Flowchart key `workspace:`: the repository cloned into each run's workspace. `repo` and
/// `ref` may hold `{{ inputs.<name> }}` placeholders, filled at run start
/// ([`WorkspaceDoc::resolve`], `flowchart/workspace.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WorkspaceDoc {
    /// A local path or a git URL; may name an input (`{{ inputs.repo }}`).
    pub repo: String,
    /// Branch, tag or commit; the remote's default when absent.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Keep the workspace of a failed run for inspection.
    #[serde(default)]
    pub keep_on_failure: bool,
}

/// `git_policy:` (flowchart or node): what git may do beyond the local repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GitPolicyDoc {
    #[serde(default)]
    pub push: bool,
    #[serde(default)]
    pub pr_create: bool,
    /// Globs of branch names that may be pushed; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// Where `git_pr_create` opens pull requests; without it an allowed call fails with
    /// `forge_not_configured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeDoc>,
}

/// `git_policy.forge`: a forge with the GitHub REST shape of pull requests (GitHub, Gitea,
/// Forgejo). The token is never written here: `token_env` names the executor's environment
/// variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ForgeDoc {
    /// The API's base URL: `https://api.github.com`, `https://gitea.example.org/api/v1`.
    pub api_base: String,
    /// `owner/name` of the repository pull requests are opened on.
    pub repo: String,
    /// Name of the environment variable that holds the API token (e.g. `GITHUB_TOKEN`).
    pub token_env: String,
}

impl GitPolicyDoc {
    /// The contract form tool domains receive.
    pub fn policy(&self) -> crate::agent_tool::GitPolicy {
        crate::agent_tool::GitPolicy {
            push: self.push,
            pr_create: self.pr_create,
            branches: self.branches.clone(),
            forge: self.forge.as_ref().map(|f| crate::agent_tool::Forge {
                api_base: f.api_base.clone(),
                repo: f.repo.clone(),
                token_env: f.token_env.clone(),
            }),
        }
    }
}

/// `Some` whenever the key is present, so that `output: null` is an output of `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A scripted failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScriptedError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
}

/// One decision condition: `connector` fires when `when` holds.
// `when` stays a string here so a syntax error is reported by validation with its path
// (`condition_syntax`) instead of aborting deserialization; the validated `Flowchart` holds the
// parsed `crate::condition::Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConditionDoc {
    pub connector: String,
    pub when: String,
}

/// What a decision does when no condition and no `route_key` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoMatchPolicy {
    /// The decision node fails.
    Fail,
    /// Route to `connector`.
    Fallback,
}

/// What a decision does when nothing matches: `{ policy: fail }` or
/// `{ policy: fallback, connector: ID }`.
// A struct rather than a tagged enum: serde buffers tagged enums, which would hide unknown keys
// inside them from the unknown-key report, and a missing fallback connector must be reported by
// validation (`fallback_missing`). The validated form is `NoMatchRoute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NoMatch {
    pub policy: NoMatchPolicy,
    /// Required with `fallback`, not allowed with `fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryOperation {
    Get,
    List,
    Create,
    Update,
    Delete,
    Search,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanOperation {
    Get,
    List,
    Create,
    Update,
    Delete,
    ReorderStages,
    SetStageStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MilestoneOperation {
    Get,
    List,
    Create,
    Update,
    Delete,
    SetStatus,
    AttachEvidence,
}

/// Config of a `memory` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MemoryConfig {
    pub operation: MemoryOperation,
    #[serde(default)]
    pub args: Map<String, Value>,
    /// Whether a failed operation may degrade to a fallback result instead of failing the node.
    #[serde(default)]
    pub allow_fallback: bool,
    /// The node's output when the fallback is used (with `allow_fallback: true`); absent means
    /// `{ fallback: true, error: { code, message } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_output: Option<Value>,
}

/// Config of a `plan` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PlanConfig {
    pub operation: PlanOperation,
    #[serde(default)]
    pub args: Map<String, Value>,
    #[serde(default)]
    pub allow_fallback: bool,
    /// As in [`MemoryConfig::fallback_output`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_output: Option<Value>,
}

/// Config of a `milestone` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MilestoneConfig {
    pub operation: MilestoneOperation,
    #[serde(default)]
    pub args: Map<String, Value>,
    #[serde(default)]
    pub allow_fallback: bool,
    /// As in [`MemoryConfig::fallback_output`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_output: Option<Value>,
}

/// Most hits a `rag` query may ask for.
pub const MAX_TOP_K: u32 = 100;

/// What a `rag` node does with its collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RagOperation {
    /// Retrieve the `top_k` best chunks for `query` (the default).
    #[default]
    Query,
    /// Index the collection's sources (`mode: full | delta`).
    Index,
}

impl RagOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            RagOperation::Query => "query",
            RagOperation::Index => "index",
        }
    }

    fn is_query(&self) -> bool {
        *self == RagOperation::Query
    }
}

/// Config of a `rag` node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RagConfig {
    /// A collection of the RAG registry (`runledger rag sources create`).
    pub collection: String,
    #[serde(default, skip_serializing_if = "RagOperation::is_query")]
    pub operation: RagOperation,
    /// Query template, rendered from the input context like a prompt. Required for `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default = "default_top_k")]
    #[schemars(range(min = 1, max = 100))]
    pub top_k: u32,
    /// `index` only: `full` or `delta` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::rag::IndexMode>,
    /// `query` only: search only these sources of the collection (none: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// `query` only: search only files whose `<source>/<path>` matches this glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_glob: Option<String>,
}

/// `solid` triggers the target and counts toward its fan-in; `dotted` only passes context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorMode {
    #[default]
    Solid,
    Dotted,
}

/// An edge between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Connector {
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub id: String,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub mode: ConnectorMode,
}

impl Connector {
    pub fn new(id: impl Into<String>, from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            mode: ConnectorMode::Solid,
        }
    }

    pub fn is_solid(&self) -> bool {
        self.mode == ConnectorMode::Solid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object schema that lists properties must be closed.
    fn assert_closed(value: &Value, at: &str) {
        match value {
            Value::Object(map) => {
                if map.contains_key("properties") {
                    assert_eq!(
                        map.get("additionalProperties"),
                        Some(&Value::Bool(false)),
                        "schema object at {at} is not closed"
                    );
                }
                for (k, v) in map {
                    assert_closed(v, &format!("{at}/{k}"));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    assert_closed(v, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn json_schema_closes_every_object() {
        let schema = serde_json::to_value(FlowchartDoc::json_schema()).unwrap();
        assert_closed(&schema, "#");
        let defs = schema["$defs"].as_object().unwrap();
        for name in [
            "Node",
            "Connector",
            "Retry",
            "Limits",
            "Defaults",
            "NoMatch",
            "RagConfig",
        ] {
            assert!(defs.contains_key(name), "missing $defs/{name}");
        }
        // The `{custom: N}` variant of fan_in is an object too.
        let fan_in = serde_json::to_string(&defs["FanIn"]).unwrap();
        assert!(fan_in.contains("\"custom\"") && fan_in.contains("\"additionalProperties\":false"));
        assert_eq!(schema["additionalProperties"], Value::Bool(false));
        assert_eq!(
            defs["Node"]["properties"]["id"]["pattern"],
            "^[A-Za-z_][A-Za-z0-9_-]*$"
        );
    }

    #[test]
    fn node_types_and_enums_use_snake_case() {
        for t in NodeType::ALL {
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                Value::String(t.as_str().into())
            );
        }
        assert_eq!(
            serde_json::to_value(PlanOperation::ReorderStages).unwrap(),
            "reorder_stages"
        );
        assert_eq!(
            serde_json::to_value(MilestoneOperation::AttachEvidence).unwrap(),
            "attach_evidence"
        );
        assert_eq!(
            serde_json::to_value(FanIn::Custom(2)).unwrap(),
            serde_json::json!({"custom": 2})
        );
        assert_eq!(serde_json::to_value(FanIn::Any).unwrap(), "any");
        assert_eq!(
            serde_yaml_ng::to_string(&FanIn::Custom(3)).unwrap(),
            "custom: 3\n"
        );
        for f in [FanIn::All, FanIn::Any, FanIn::Custom(3)] {
            let yaml = serde_yaml_ng::to_string(&f).unwrap();
            assert_eq!(serde_yaml_ng::from_str::<FanIn>(&yaml).unwrap(), f);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<FanIn>(&json).unwrap(), f);
        }
        assert_eq!(
            serde_yaml_ng::from_str::<FanIn>("!custom 4").unwrap(),
            FanIn::Custom(4)
        );
        for bad in [
            "custom",
            "some",
            "{}",
            "{custom: 1, any: 2}",
            "{many: 1}",
            "{custom: -1}",
        ] {
            assert!(serde_yaml_ng::from_str::<FanIn>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scripted_output_null_is_an_output() {
        let r: ScriptedResponse = serde_json::from_str(r#"{"output": null}"#).unwrap();
        assert_eq!(r.output, Some(Value::Null));
        let back = serde_json::to_string(&r).unwrap();
        assert_eq!(back, r#"{"output":null}"#);
        let none: ScriptedResponse = serde_json::from_str(r#"{"delay_ms": 5}"#).unwrap();
        assert_eq!(none.output, None);
    }

    #[test]
    fn retry_fields_default_individually() {
        let r: Retry = serde_json::from_str(r#"{"max_attempts": 3}"#).unwrap();
        assert_eq!(
            r,
            Retry {
                max_attempts: 3,
                backoff_ms: 500,
                backoff_multiplier: 2.0
            }
        );
    }

    #[test]
    fn every_type_allows_what_it_requires() {
        for t in NodeType::ALL {
            for k in t.required_keys() {
                assert!(
                    t.allowed_keys().contains(k),
                    "{t} requires {k} but does not allow it"
                );
            }
        }
    }
}
