//! The model registry's types: a model is a name that `task` nodes use (`model: NAME`), bound
//! to exactly one provider, the model id at that provider and provider-specific settings.
//!
//! Specs are recorded in the ledger (`ModelCreated` / `ModelUpdated`), so they must never hold a
//! secret: `api_key_env` is the *name* of the environment variable that holds the key, read by
//! the executor at call time, and `base_url` may not carry credentials (user info or a query
//! string). [`ModelSpec::validate`] enforces both, with errors that name the offending field.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::flowchart::SCRIPTED_MODEL;
use crate::ids::{IdError, StreamId};

/// Prefix of the ledger streams that hold one model each (`model-<name>`).
pub const MODEL_STREAM_PREFIX: &str = "model-";
/// Longest model name, in bytes.
pub const MAX_NAME_LEN: usize = 100;
/// Per-request timeout when the spec sets none.
pub const DEFAULT_TIMEOUT_S: u64 = 120;
/// Longest per-request timeout a spec may set.
pub const MAX_TIMEOUT_S: u64 = 3600;
/// OpenAI's API, the default of `openai_compatible` models without `base_url`.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The Gemini Developer API; Vertex AI models default to their regional endpoint instead.
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// `max_tokens` sent to Anthropic when the spec sets none (the Messages API requires one).
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = 4096;
/// Anthropic's smallest extended-thinking budget.
pub const MIN_ANTHROPIC_THINKING_BUDGET: u32 = 1024;
/// Gemini's largest thinking budget.
pub const MAX_GEMINI_THINKING_BUDGET: u32 = 32_768;
/// Values OpenAI accepts for `reasoning_effort`.
pub const REASONING_EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh"];

/// The wire protocol a model is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI chat completions: OpenAI, vLLM and other compatible servers (`base_url`).
    OpenaiCompatible,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini: the Developer API, or Vertex AI with `settings.vertex`.
    Gemini,
    /// The built-in offline model, answering from `scripted` lists or a `--script` fixture.
    Scripted,
}

impl ProviderKind {
    pub const ALL: &'static [ProviderKind] = &[
        ProviderKind::OpenaiCompatible,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Scripted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenaiCompatible => "openai_compatible",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Scripted => "scripted",
        }
    }

    pub fn parse(text: &str) -> Option<ProviderKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which executors run a model's node runs (the NATS subject `runledger.dispatch.<class>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorClass {
    /// Hosted providers over HTTP.
    Frontier,
    /// Local OpenAI-compatible servers (vLLM), usually on GPU nodes.
    Vllm,
}

impl ExecutorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorClass::Frontier => "frontier",
            ExecutorClass::Vllm => "vllm",
        }
    }

    pub fn parse(text: &str) -> Option<ExecutorClass> {
        [ExecutorClass::Frontier, ExecutorClass::Vllm]
            .into_iter()
            .find(|c| c.as_str() == text)
    }

    /// The class a model gets when its spec names none: every provider defaults to
    /// `frontier`; a vLLM server is an `openai_compatible` model that says `vllm` explicitly.
    pub fn default_for(_provider: ProviderKind) -> ExecutorClass {
        ExecutorClass::Frontier
    }
}

impl fmt::Display for ExecutorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One registered model, as recorded on `ModelCreated` / `ModelUpdated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// What `task` nodes write in `model:`. `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 100 bytes;
    /// `scripted` is reserved for the built-in model.
    pub name: String,
    pub provider: ProviderKind,
    /// The model's id at the provider (`gpt-4o`, `claude-sonnet-4-5`, `gemini-2.5-pro`,
    /// `meta-llama/Llama-3.1-8B-Instruct`).
    pub model_id: String,
    /// Where the provider's API is; defaults per provider (see the `DEFAULT_*_BASE_URL`
    /// constants). Required for `executor_class: vllm`. No user info, query or fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Name of the environment variable that holds the API key (Vertex AI: an OAuth access
    /// token), read when the model is called. Never the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Absent means [`ExecutorClass::default_for`] the provider; the registry records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_class: Option<ExecutorClass>,
    /// Per-request timeout, 1 to 3600 s (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "ModelSettings::is_empty")]
    pub settings: ModelSettings,
}

/// Provider-specific settings. Which keys a provider accepts is checked by
/// [`ModelSpec::validate`] (`setting_not_allowed`), so a setting never silently does nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Sampling temperature: 0 to 2 (Anthropic: 0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Most tokens the model may produce per call (OpenAI `max_completion_tokens`, Anthropic
    /// `max_tokens`, Gemini `maxOutputTokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// OpenAI-compatible only: `none`, `minimal`, `low`, `medium`, `high` or `xhigh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Anthropic extended thinking (>= 1024 and below `max_tokens`) or Gemini thinking budget
    /// (0 to 32768; 0 turns thinking off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget_tokens: Option<u32>,
    /// Gemini only: call Vertex AI in this project and location instead of the Developer API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex: Option<VertexSettings>,
}

impl ModelSettings {
    pub fn is_empty(&self) -> bool {
        self == &ModelSettings::default()
    }
}

/// Where a Gemini model runs on Vertex AI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VertexSettings {
    /// Google Cloud project id.
    pub project: String,
    /// Region (`us-central1`, `europe-west4`, ...) or `global`.
    pub location: String,
}

/// Why a spec is not valid. Each names the field (`settings.reasoning_effort`, `base_url`, ...)
/// and has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelSpecError {
    #[error("{field}: required {context}")]
    Missing {
        field: &'static str,
        context: String,
    },
    #[error("{field}: not used by provider `{provider}`")]
    NotAllowed {
        field: &'static str,
        provider: ProviderKind,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("name: `{name}` is the built-in model and cannot be registered")]
    Reserved { name: String },
}

impl ModelSpecError {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            ModelSpecError::Missing { .. } => "missing_field",
            ModelSpecError::NotAllowed { .. } => "setting_not_allowed",
            ModelSpecError::Invalid { .. } => "invalid_value",
            ModelSpecError::Reserved { .. } => "reserved_name",
        }
    }

    /// The offending field, as written in a spec.
    pub fn field(&self) -> &'static str {
        match self {
            ModelSpecError::Missing { field, .. }
            | ModelSpecError::NotAllowed { field, .. }
            | ModelSpecError::Invalid { field, .. } => field,
            ModelSpecError::Reserved { .. } => "name",
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ModelSpecError {
    ModelSpecError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl ModelSpec {
    /// A spec with only the required fields set.
    pub fn new(
        name: impl Into<String>,
        provider: ProviderKind,
        model_id: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            provider,
            model_id: model_id.into(),
            base_url: None,
            api_key_env: None,
            executor_class: None,
            timeout_s: None,
            description: None,
            settings: ModelSettings::default(),
        }
    }

    /// The ledger stream that holds this model.
    pub fn stream_id(name: &str) -> Result<StreamId, IdError> {
        StreamId::new(format!("{MODEL_STREAM_PREFIX}{name}"))
    }

    pub fn effective_executor_class(&self) -> ExecutorClass {
        self.executor_class
            .unwrap_or_else(|| ExecutorClass::default_for(self.provider))
    }

    pub fn effective_timeout_s(&self) -> u64 {
        self.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S)
    }

    /// `base_url` without a trailing slash, or the provider's default. Vertex AI defaults to
    /// `https://<location>-aiplatform.googleapis.com` (`global`: no region prefix).
    pub fn effective_base_url(&self) -> String {
        if let Some(url) = &self.base_url {
            return url.trim_end_matches('/').to_owned();
        }
        match self.provider {
            ProviderKind::OpenaiCompatible => DEFAULT_OPENAI_BASE_URL.to_owned(),
            ProviderKind::Anthropic => DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            ProviderKind::Gemini => match &self.settings.vertex {
                Some(v) if v.location == "global" => "https://aiplatform.googleapis.com".to_owned(),
                Some(v) => format!("https://{}-aiplatform.googleapis.com", v.location),
                None => DEFAULT_GEMINI_BASE_URL.to_owned(),
            },
            ProviderKind::Scripted => String::new(),
        }
    }

    /// The spec as the registry records it: the executor class made explicit.
    pub fn normalized(mut self) -> Self {
        self.executor_class = Some(self.effective_executor_class());
        self
    }

    /// Checks every field against the provider's rules; the first problem is returned.
    pub fn validate(&self) -> Result<(), ModelSpecError> {
        self.check_name()?;
        self.check_model_id()?;
        self.check_endpoint()?;
        if let Some(t) = self.timeout_s
            && !(1..=MAX_TIMEOUT_S).contains(&t)
        {
            return Err(invalid(
                "timeout_s",
                format!("must be 1 to {MAX_TIMEOUT_S} seconds, not {t}"),
            ));
        }
        if let Some(d) = &self.description
            && d.chars().count() > 1000
        {
            return Err(invalid("description", "must be at most 1000 characters"));
        }
        self.check_settings()
    }

    fn check_name(&self) -> Result<(), ModelSpecError> {
        check_model_name(&self.name)
    }

    fn check_model_id(&self) -> Result<(), ModelSpecError> {
        let id = &self.model_id;
        if id.is_empty() {
            return Err(ModelSpecError::Missing {
                field: "model_id",
                context: "(the model's id at the provider)".into(),
            });
        }
        if id.len() > 200 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "model_id",
                "must be 1 to 200 characters without spaces",
            ));
        }
        // Gemini puts the id in the URL path: keep it to one path segment.
        if self.provider == ProviderKind::Gemini
            && !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(invalid(
                "model_id",
                "Gemini model ids use only A-Z a-z 0-9 - _ . (e.g. `gemini-2.5-pro`)",
            ));
        }
        Ok(())
    }

    fn check_endpoint(&self) -> Result<(), ModelSpecError> {
        let provider = self.provider;
        if provider == ProviderKind::Scripted {
            if self.base_url.is_some() {
                return Err(ModelSpecError::NotAllowed {
                    field: "base_url",
                    provider,
                });
            }
            if self.api_key_env.is_some() {
                return Err(ModelSpecError::NotAllowed {
                    field: "api_key_env",
                    provider,
                });
            }
        }
        if let Some(url) = &self.base_url {
            check_base_url(url)?;
        }
        match &self.api_key_env {
            Some(name) => check_env_name(name)?,
            None if matches!(provider, ProviderKind::Anthropic | ProviderKind::Gemini) => {
                let what = if self.settings.vertex.is_some() {
                    "the OAuth access token"
                } else {
                    "the API key"
                };
                return Err(ModelSpecError::Missing {
                    field: "api_key_env",
                    context: format!(
                        "for provider `{provider}`: the name of the environment variable that holds {what}"
                    ),
                });
            }
            None => {}
        }
        if self.effective_executor_class() == ExecutorClass::Vllm {
            if provider != ProviderKind::OpenaiCompatible {
                return Err(invalid(
                    "executor_class",
                    format!("`vllm` executors serve `openai_compatible` models, not `{provider}`"),
                ));
            }
            if self.base_url.is_none() {
                return Err(ModelSpecError::Missing {
                    field: "base_url",
                    context: "for executor_class `vllm` (the vLLM server's URL)".into(),
                });
            }
        }
        Ok(())
    }

    fn check_settings(&self) -> Result<(), ModelSpecError> {
        let s = &self.settings;
        let provider = self.provider;
        let not_allowed = |field| Err(ModelSpecError::NotAllowed { field, provider });
        if provider == ProviderKind::Scripted && !s.is_empty() {
            let field = if s.temperature.is_some() {
                "settings.temperature"
            } else if s.max_tokens.is_some() {
                "settings.max_tokens"
            } else if s.reasoning_effort.is_some() {
                "settings.reasoning_effort"
            } else if s.thinking_budget_tokens.is_some() {
                "settings.thinking_budget_tokens"
            } else {
                "settings.vertex"
            };
            return not_allowed(field);
        }
        if let Some(t) = s.temperature {
            let max = if provider == ProviderKind::Anthropic {
                1.0
            } else {
                2.0
            };
            if !t.is_finite() || !(0.0..=max).contains(&t) {
                return Err(invalid(
                    "settings.temperature",
                    format!("must be between 0 and {max} for provider `{provider}`, not {t}"),
                ));
            }
        }
        if s.max_tokens == Some(0) {
            return Err(invalid("settings.max_tokens", "must be at least 1"));
        }
        if let Some(effort) = &s.reasoning_effort {
            if provider != ProviderKind::OpenaiCompatible {
                return not_allowed("settings.reasoning_effort");
            }
            if !REASONING_EFFORTS.contains(&effort.as_str()) {
                return Err(invalid(
                    "settings.reasoning_effort",
                    format!("`{effort}` is not one of {}", REASONING_EFFORTS.join(", ")),
                ));
            }
        }
        if let Some(budget) = s.thinking_budget_tokens {
            match provider {
                ProviderKind::Anthropic => {
                    let max_tokens = s.max_tokens.unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);
                    if budget < MIN_ANTHROPIC_THINKING_BUDGET {
                        return Err(invalid(
                            "settings.thinking_budget_tokens",
                            format!(
                                "must be at least {MIN_ANTHROPIC_THINKING_BUDGET}, not {budget}"
                            ),
                        ));
                    }
                    if budget >= max_tokens {
                        return Err(invalid(
                            "settings.thinking_budget_tokens",
                            format!(
                                "must be less than settings.max_tokens ({max_tokens}), not {budget}"
                            ),
                        ));
                    }
                    if s.temperature.is_some() {
                        return Err(invalid(
                            "settings.temperature",
                            "cannot be set together with extended thinking (Anthropic)",
                        ));
                    }
                }
                ProviderKind::Gemini => {
                    if budget > MAX_GEMINI_THINKING_BUDGET {
                        return Err(invalid(
                            "settings.thinking_budget_tokens",
                            format!("must be at most {MAX_GEMINI_THINKING_BUDGET}, not {budget}"),
                        ));
                    }
                }
                _ => return not_allowed("settings.thinking_budget_tokens"),
            }
        }
        if let Some(vertex) = &s.vertex {
            if provider != ProviderKind::Gemini {
                return not_allowed("settings.vertex");
            }
            if !is_gcp_project(&vertex.project) {
                return Err(invalid(
                    "settings.vertex.project",
                    "must be a Google Cloud project id: 6 to 30 of a-z 0-9 -, starting with a letter",
                ));
            }
            let loc = &vertex.location;
            if loc.is_empty()
                || loc.len() > 50
                || !loc
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(invalid(
                    "settings.vertex.location",
                    "must be a region such as `us-central1`, or `global`",
                ));
            }
        }
        Ok(())
    }
}

/// Checks a model name on its own (CLI arguments name models before any spec exists).
pub fn check_model_name(name: &str) -> Result<(), ModelSpecError> {
    if name == SCRIPTED_MODEL {
        return Err(ModelSpecError::Reserved {
            name: name.to_owned(),
        });
    }
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!(
                "must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 - _ . starting with a letter or digit"
            ),
        ))
    }
}

/// `http(s)://host[:port][/path]` with no user info, query or fragment: those are where
/// credentials hide, and the spec is recorded in the ledger.
fn check_base_url(url: &str) -> Result<(), ModelSpecError> {
    base_url_problem(url, "api_key_env").map_err(|reason| invalid("base_url", reason))
}

/// Why `url` is not `http(s)://host[:port][/path]` without user info, query or fragment (the
/// places credentials hide); `secret_key` names where the credential belongs instead. Shared
/// with the flowchart's `git_policy.forge.api_base`.
pub(crate) fn base_url_problem(url: &str, secret_key: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| "must start with http:// or https://".to_owned())?;
    if url.len() > 2000 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be at most 2000 characters without spaces".into());
    }
    if url.contains(['?', '#']) {
        return Err(format!(
            "must not have a query or fragment (keys belong in {secret_key})"
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "must not contain user info (keys belong in {secret_key})"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| "has an unclosed `[`".to_owned())?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(format!("port `{p}` is not a number from 0 to 65535"));
    }
    Ok(())
}

/// Environment variable names as shells write them: upper case, digits and `_`. This also
/// catches a key pasted where its variable's name belongs.
fn check_env_name(name: &str) -> Result<(), ModelSpecError> {
    if is_env_name(name) {
        Ok(())
    } else {
        Err(invalid(
            "api_key_env",
            "must be the NAME of an environment variable (A-Z 0-9 _, e.g. OPENAI_API_KEY), never the key itself",
        ))
    }
}

/// 1 to 128 of `A-Z 0-9 _`, not starting with a digit. Shared with the flowchart's
/// `git_policy.forge.token_env`.
pub(crate) fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn is_gcp_project(p: &str) -> bool {
    let b = p.as_bytes();
    (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !p.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai() -> ModelSpec {
        let mut s = ModelSpec::new("gpt", ProviderKind::OpenaiCompatible, "gpt-4o");
        s.api_key_env = Some("OPENAI_API_KEY".into());
        s
    }

    fn field_of(spec: &ModelSpec) -> (&'static str, &'static str) {
        let e = spec.validate().unwrap_err();
        assert!(
            e.to_string().starts_with(e.field()),
            "the message names the field first: {e}"
        );
        (e.field(), e.code())
    }

    #[test]
    fn valid_specs_of_every_provider_pass() {
        openai().validate().unwrap();
        let mut vllm = ModelSpec::new(
            "llama",
            ProviderKind::OpenaiCompatible,
            "meta-llama/Llama-3.1-8B-Instruct",
        );
        vllm.base_url = Some("http://10.0.0.5:8000/v1".into());
        vllm.executor_class = Some(ExecutorClass::Vllm);
        vllm.validate().unwrap();
        let mut claude = ModelSpec::new("claude", ProviderKind::Anthropic, "claude-sonnet-4-5");
        claude.api_key_env = Some("ANTHROPIC_API_KEY".into());
        claude.settings.max_tokens = Some(8000);
        claude.settings.thinking_budget_tokens = Some(2048);
        claude.validate().unwrap();
        let mut gemini = ModelSpec::new("gem", ProviderKind::Gemini, "gemini-2.5-pro");
        gemini.api_key_env = Some("GCP_TOKEN".into());
        gemini.settings.vertex = Some(VertexSettings {
            project: "my-project-1".into(),
            location: "europe-west4".into(),
        });
        gemini.validate().unwrap();
        assert_eq!(
            gemini.effective_base_url(),
            "https://europe-west4-aiplatform.googleapis.com"
        );
        ModelSpec::new("offline", ProviderKind::Scripted, "any")
            .validate()
            .unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = openai();
        s.name = "scripted".into();
        assert_eq!(field_of(&s), ("name", "reserved_name"));
        s.name = "has space".into();
        assert_eq!(field_of(&s), ("name", "invalid_value"));

        let mut s = openai();
        s.api_key_env = Some("sk-live-abc123".into());
        assert_eq!(field_of(&s), ("api_key_env", "invalid_value"));
        let e = s.validate().unwrap_err().to_string();
        assert!(
            !e.contains("sk-live-abc123"),
            "the message does not echo what may be a key: {e}"
        );

        let mut s = openai();
        s.base_url = Some("https://user:secret@api.example.com/v1".into());
        assert_eq!(field_of(&s), ("base_url", "invalid_value"));
        s.base_url = Some("https://api.example.com/v1?key=x".into());
        assert_eq!(field_of(&s), ("base_url", "invalid_value"));
        s.base_url = Some("ftp://api.example.com".into());
        assert_eq!(field_of(&s), ("base_url", "invalid_value"));
        s.base_url = Some("http://127.0.0.1:99999/v1".into());
        assert_eq!(field_of(&s), ("base_url", "invalid_value"));

        let mut s = openai();
        s.settings.reasoning_effort = Some("extreme".into());
        assert_eq!(field_of(&s), ("settings.reasoning_effort", "invalid_value"));
        s.settings.reasoning_effort = None;
        s.settings.thinking_budget_tokens = Some(2000);
        assert_eq!(
            field_of(&s),
            ("settings.thinking_budget_tokens", "setting_not_allowed")
        );
        s.settings.thinking_budget_tokens = None;
        s.settings.temperature = Some(2.5);
        assert_eq!(field_of(&s), ("settings.temperature", "invalid_value"));
        s.settings.temperature = None;
        s.executor_class = Some(ExecutorClass::Vllm);
        assert_eq!(field_of(&s), ("base_url", "missing_field"));

        let mut claude = ModelSpec::new("claude", ProviderKind::Anthropic, "claude-x");
        assert_eq!(field_of(&claude), ("api_key_env", "missing_field"));
        claude.api_key_env = Some("ANTHROPIC_API_KEY".into());
        claude.settings.reasoning_effort = Some("high".into());
        assert_eq!(
            field_of(&claude),
            ("settings.reasoning_effort", "setting_not_allowed")
        );
        claude.settings.reasoning_effort = None;
        claude.settings.thinking_budget_tokens = Some(5000);
        assert_eq!(
            field_of(&claude),
            ("settings.thinking_budget_tokens", "invalid_value"),
            "above the default max_tokens"
        );
        claude.settings.max_tokens = Some(9000);
        claude.settings.temperature = Some(0.5);
        assert_eq!(field_of(&claude), ("settings.temperature", "invalid_value"));

        let mut gem = ModelSpec::new("gem", ProviderKind::Gemini, "models/gemini?x");
        gem.api_key_env = Some("GEMINI_API_KEY".into());
        assert_eq!(field_of(&gem), ("model_id", "invalid_value"));
        gem.model_id = "gemini-2.5-flash".into();
        gem.settings.vertex = Some(VertexSettings {
            project: "X".into(),
            location: "us-central1".into(),
        });
        assert_eq!(field_of(&gem), ("settings.vertex.project", "invalid_value"));

        let mut scripted = ModelSpec::new("offline", ProviderKind::Scripted, "x");
        scripted.settings.max_tokens = Some(5);
        assert_eq!(
            field_of(&scripted),
            ("settings.max_tokens", "setting_not_allowed")
        );
    }

    #[test]
    fn specs_round_trip_and_reject_unknown_keys() {
        let mut s = openai().normalized();
        s.settings.reasoning_effort = Some("low".into());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["executor_class"], "frontier");
        assert_eq!(json["provider"], "openai_compatible");
        assert_eq!(
            serde_json::from_value::<ModelSpec>(json.clone()).unwrap(),
            s
        );
        let mut extra = json;
        extra["api_key"] = serde_json::Value::String("nope".into());
        assert!(serde_json::from_value::<ModelSpec>(extra).is_err());
        assert_eq!(ModelSpec::stream_id("gpt").unwrap().as_str(), "model-gpt");
    }
}
