//! Model providers over HTTP: OpenAI-compatible chat completions ([`openai`]), Anthropic
//! Messages ([`anthropic`]) and Google Gemini, Developer API or Vertex AI ([`gemini`]). Each
//! implements `runledger_orchestrator::provider::ModelProvider` for one registered model.
//!
//! Rules every adapter follows (docs/providers.md):
//! - HTTP only, through one `reqwest` client per model; nothing here starts a process (a test
//!   scans this crate's sources for process spawning).
//! - The API key is read from the environment variable the spec names, at call time. It goes
//!   into a header marked sensitive and into nothing else: not the ledger, not logs, not error
//!   messages (provider error texts are scrubbed of it, and auth failures carry no body).
//! - One HTTP request per call, no retry and no fallback to another model here: a failure
//!   becomes a typed error at once and the node's retry policy decides (see
//!   [`ProviderError::retryable`]).
//! - Each request has a timeout: the model's `timeout_s`, cut short by the node run's deadline.

pub mod anthropic;
pub mod embeddings;
pub mod gemini;
pub mod openai;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Once};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use runledger_contracts::events::ErrorInfo;
use runledger_contracts::model::{ModelSpec, ProviderKind};
use runledger_contracts::time::Timestamp;
use runledger_orchestrator::provider::{ModelProvider, ScriptedProvider};
use serde_json::{Value, json};

/// Longest provider error text kept in an error message.
const MAX_PROVIDER_MESSAGE: usize = 300;

/// A provider call that did not produce an answer. Codes are stable; messages never hold a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("model `{model}`: environment variable `{var}` (its api_key_env) is not set")]
    CredentialsMissing { model: String, var: String },
    #[error("model `{model}`: provider unavailable at {endpoint}: {reason}")]
    Unavailable {
        model: String,
        endpoint: String,
        reason: String,
        status: Option<u16>,
    },
    #[error("model `{model}`: the provider refused the credentials from `{var}` (HTTP {status})")]
    AuthFailed {
        model: String,
        var: String,
        status: u16,
    },
    #[error("model `{model}`: rate limited by the provider (HTTP 429)")]
    RateLimited { model: String },
    #[error("model `{model}`: no answer within {timeout_ms} ms")]
    Timeout { model: String, timeout_ms: u64 },
    #[error("model `{model}`: the provider rejected the request (HTTP {status}): {message}")]
    Rejected {
        model: String,
        status: u16,
        message: String,
    },
    #[error("model `{model}`: the provider's response is not in its documented format: {reason}")]
    BadResponse { model: String, reason: String },
    #[error("model `{model}`: the provider declined to answer: {reason}")]
    Refused { model: String, reason: String },
    #[error("model `{model}`: cannot set up its HTTP client: {reason}")]
    Client { model: String, reason: String },
}

impl ProviderError {
    /// A stable snake_case code (`NodeFailed.error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::CredentialsMissing { .. } => "provider_credentials_missing",
            ProviderError::Unavailable { .. } => "provider_unavailable",
            ProviderError::AuthFailed { .. } => "provider_auth_failed",
            ProviderError::RateLimited { .. } => "provider_rate_limited",
            ProviderError::Timeout { .. } => "provider_timeout",
            ProviderError::Rejected { .. } => "provider_rejected",
            ProviderError::BadResponse { .. } => "provider_bad_response",
            ProviderError::Refused { .. } => "provider_refused",
            ProviderError::Client { .. } => "provider_client_error",
        }
    }

    /// Whether the node's retry policy may try again: only for conditions that pass on their
    /// own (connection refused, 5xx, 429, timeout). Bad credentials, a missing variable, a
    /// rejected request or a refusal would fail the same way again.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable { .. }
                | ProviderError::RateLimited { .. }
                | ProviderError::Timeout { .. }
        )
    }

    fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Unavailable { status, .. } => *status,
            ProviderError::AuthFailed { status, .. } | ProviderError::Rejected { status, .. } => {
                Some(*status)
            }
            ProviderError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// The error as a node failure, with the provider, model and HTTP status in `details`.
    pub fn to_error_info(&self, spec: &ModelSpec) -> ErrorInfo {
        let mut details = json!({ "provider": spec.provider.as_str(), "model": spec.name, "model_id": spec.model_id });
        if let Some(status) = self.status() {
            details["status"] = json!(status);
        }
        ErrorInfo {
            code: self.code().to_owned(),
            message: self.to_string(),
            retryable: self.retryable(),
            details: Some(details),
        }
    }
}

/// Installs rustls' `ring` crypto provider as the process default, once. reqwest is built
/// without a provider of its own (no aws-lc-rs), so this must run before any client is built.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another part of the process installed a provider first; that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The provider instance for a registered model. `scripted` models share the built-in
/// scripted provider (and its `--script` fixture).
pub fn provider_for(
    spec: &ModelSpec,
    scripted: &ScriptedProvider,
) -> Result<Arc<dyn ModelProvider>, ProviderError> {
    Ok(match spec.provider {
        ProviderKind::OpenaiCompatible => Arc::new(openai::OpenAiCompatible::new(spec.clone())?),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(spec.clone())?),
        ProviderKind::Gemini => Arc::new(gemini::Gemini::new(spec.clone())?),
        ProviderKind::Scripted => Arc::new(scripted.clone()),
    })
}

/// What every adapter shares: the spec, one HTTP client, and the request plumbing.
#[derive(Debug, Clone)]
pub(crate) struct HttpModel {
    pub spec: ModelSpec,
    client: reqwest::Client,
}

/// A request ready to send: where, which headers (the credential one marked sensitive), what.
pub(crate) struct PreparedCall {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl HttpModel {
    pub fn new(spec: ModelSpec) -> Result<Self, ProviderError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("runledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Client {
                model: spec.name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { spec, client })
    }

    /// The credential, read now from the variable the spec names; `None` when it names none.
    pub fn credential(&self) -> Result<Option<Credential>, ProviderError> {
        let Some(var) = &self.spec.api_key_env else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(Credential {
                var: var.clone(),
                value: value.trim().to_owned(),
            })),
            _ => Err(ProviderError::CredentialsMissing {
                model: self.spec.name.clone(),
                var: var.clone(),
            }),
        }
    }

    /// The request timeout: the model's `timeout_s`, or less when the node run's deadline is
    /// nearer (at least 1 ms, so a passed deadline fails fast as a timeout).
    pub fn timeout(&self, deadline: Option<Timestamp>) -> Duration {
        let own = Duration::from_secs(self.spec.effective_timeout_s());
        match deadline {
            Some(at) => {
                let left = u64::try_from(Timestamp::now().millis_until(at))
                    .unwrap_or(0)
                    .max(1);
                own.min(Duration::from_millis(left))
            }
            None => own,
        }
    }

    /// POSTs the call and returns the response's JSON body; every failure typed.
    pub async fn send(
        &self,
        call: PreparedCall,
        credential: Option<&Credential>,
        deadline: Option<Timestamp>,
    ) -> Result<Value, ProviderError> {
        let model = self.spec.name.clone();
        let timeout = self.timeout(deadline);
        let endpoint = call.url.clone();
        let sent = self
            .client
            .post(&call.url)
            .headers(call.headers)
            .json(&call.body)
            .timeout(timeout)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Err(transport_error(&model, &endpoint, timeout, &e, credential)),
        };
        let status = response.status().as_u16();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return Err(transport_error(&model, &endpoint, timeout, &e, credential)),
        };
        if status == 401 || status == 403 {
            // The body of an auth failure may quote part of the key: it is not kept.
            let var = credential.map_or_else(|| "(none)".to_owned(), |c| c.var.clone());
            return Err(ProviderError::AuthFailed { model, var, status });
        }
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status == 429 {
            return Err(ProviderError::RateLimited { model });
        }
        if status >= 500 {
            let reason = format!(
                "HTTP {status}{}",
                provider_message(body.as_ref(), &bytes, credential)
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            return Err(ProviderError::Unavailable {
                model,
                endpoint,
                reason,
                status: Some(status),
            });
        }
        if !(200..300).contains(&status) {
            let message = provider_message(body.as_ref(), &bytes, credential)
                .unwrap_or_else(|| "no error message".into());
            return Err(ProviderError::Rejected {
                model,
                status,
                message,
            });
        }
        body.ok_or_else(|| ProviderError::BadResponse {
            model,
            reason: "the body is not JSON".into(),
        })
    }

    pub fn bad_response(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::BadResponse {
            model: self.spec.name.clone(),
            reason: reason.into(),
        }
    }

    pub fn refused(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::Refused {
            model: self.spec.name.clone(),
            reason: reason.into(),
        }
    }
}

/// An API key (or access token) and the variable it came from. Its `Debug` hides the value.
pub(crate) struct Credential {
    pub var: String,
    pub value: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({} = ***)", self.var)
    }
}

impl Credential {
    /// The header that carries it, marked sensitive so it is never printed.
    pub fn header(
        &self,
        name: &'static str,
        prefix: &str,
        model: &str,
    ) -> Result<(HeaderName, HeaderValue), ProviderError> {
        let mut value =
            HeaderValue::from_str(&format!("{prefix}{}", self.value)).map_err(|_| {
                ProviderError::Client {
                    model: model.to_owned(),
                    reason: format!(
                        "the value of `{}` is not a valid HTTP header value",
                        self.var
                    ),
                }
            })?;
        value.set_sensitive(true);
        Ok((HeaderName::from_static(name), value))
    }
}

/// `Content-Type`-less headers plus the credential header, if any.
pub(crate) fn headers(
    credential: Option<(HeaderName, HeaderValue)>,
    extra: &[(&'static str, &str)],
) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Some((name, value)) = credential {
        map.insert(name, value);
    }
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            map.insert(HeaderName::from_static(name), v);
        }
    }
    map
}

fn transport_error(
    model: &str,
    endpoint: &str,
    timeout: Duration,
    e: &reqwest::Error,
    credential: Option<&Credential>,
) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout {
            model: model.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
    }
    // The source chain says why (connection refused, DNS, TLS); the URL is already in `endpoint`.
    let mut reason = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    if reason.is_empty() {
        reason = e.to_string();
    }
    ProviderError::Unavailable {
        model: model.to_owned(),
        endpoint: endpoint.to_owned(),
        reason: scrub(&reason, credential),
        status: None,
    }
}

/// The provider's own error text (`error.message` in all three APIs, or the raw body),
/// scrubbed of the credential and cut to a line.
fn provider_message(
    body: Option<&Value>,
    raw: &[u8],
    credential: Option<&Credential>,
) -> Option<String> {
    let text = match body {
        Some(b) => b
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| b.get("error").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| b.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| b.to_string()),
        None => String::from_utf8_lossy(raw).into_owned(),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    Some(truncate(&scrub(&text, credential), MAX_PROVIDER_MESSAGE))
}

/// Replaces every occurrence of the credential with `[redacted]`.
fn scrub(text: &str, credential: Option<&Credential>) -> String {
    match credential {
        Some(c) if !c.value.is_empty() => text.replace(&c.value, "[redacted]"),
        _ => text.to_owned(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A token count at `path` (a JSON Pointer) of a response.
pub(crate) fn tokens(body: &Value, path: &str) -> Option<u64> {
    body.pointer(path).and_then(Value::as_u64)
}
