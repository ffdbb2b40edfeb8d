//! Google Gemini `generateContent`, two ways:
//! - Developer API: `POST {base_url}/v1beta/models/{model_id}:generateContent` with
//!   `x-goog-api-key`;
//! - Vertex AI (`settings.vertex`): `POST {base_url}/v1/projects/{project}/locations/{location}/
//!   publishers/google/models/{model_id}:generateContent` with `Authorization: Bearer <token>`,
//!   the token (e.g. from `gcloud auth print-access-token`, refreshed by whoever runs the
//!   executor) read from `api_key_env`.
//!
//! `responseMimeType: application/json` asks for JSON; the schema is named in the system
//! instruction, since Gemini's own `responseSchema` accepts only a subset of JSON Schema.

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::model::ModelSpec;
use runledger_orchestrator::provider::{
    Answer, BoxFuture, ModelProvider, ModelRequest, ModelResponse, Role,
};
use serde_json::{Value, json};

use super::{HttpModel, PreparedCall, ProviderError, headers, tokens};

pub struct Gemini {
    http: HttpModel,
}

impl Gemini {
    pub fn new(spec: ModelSpec) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpModel::new(spec)?,
        })
    }

    /// The `generateContent` URL, Developer API or Vertex AI.
    pub fn url(&self) -> String {
        let spec = &self.http.spec;
        let base = spec.effective_base_url();
        match &spec.settings.vertex {
            Some(v) => format!(
                "{base}/v1/projects/{}/locations/{}/publishers/google/models/{}:generateContent",
                v.project, v.location, spec.model_id
            ),
            None => format!("{base}/v1beta/models/{}:generateContent", spec.model_id),
        }
    }

    pub fn body(&self, request: &ModelRequest<'_>) -> Value {
        let s = &self.http.spec.settings;
        let contents: Vec<Value> = request
            .messages()
            .into_iter()
            .map(|m| {
                let role = match m.role {
                    Role::User => "user",
                    Role::Assistant => "model",
                };
                json!({ "role": role, "parts": [{ "text": m.content }] })
            })
            .collect();
        let mut config = json!({ "responseMimeType": "application/json" });
        if let Some(t) = s.temperature {
            config["temperature"] = json!(t);
        }
        if let Some(n) = s.max_tokens {
            config["maxOutputTokens"] = json!(n);
        }
        if let Some(budget) = s.thinking_budget_tokens {
            config["thinkingConfig"] = json!({ "thinkingBudget": budget });
        }
        json!({
            "contents": contents,
            "systemInstruction": { "parts": [{ "text": request.system_instruction() }] },
            "generationConfig": config,
        })
    }

    async fn call(&self, request: ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
        let credential = self.http.credential()?;
        let name = &self.http.spec.name;
        let auth = match (&credential, self.http.spec.settings.vertex.is_some()) {
            (Some(c), true) => Some(c.header("authorization", "Bearer ", name)?),
            (Some(c), false) => Some(c.header("x-goog-api-key", "", name)?),
            (None, _) => None,
        };
        let call = PreparedCall {
            url: self.url(),
            headers: headers(auth, &[]),
            body: self.body(&request),
        };
        let body = self
            .http
            .send(call, credential.as_ref(), request.deadline)
            .await?;
        self.answer(&body)
    }

    /// Joins the non-thought text parts of the first candidate and reads `usageMetadata`
    /// (output tokens = candidate tokens + thinking tokens, as billed).
    pub fn answer(&self, body: &Value) -> Result<ModelResponse, ProviderError> {
        if let Some(reason) = body
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
        {
            return Err(self.http.refused(format!("prompt blocked: {reason}")));
        }
        let candidate = body
            .pointer("/candidates/0")
            .ok_or_else(|| self.http.bad_response("no candidates"))?;
        let parts = candidate
            .pointer("/content/parts")
            .and_then(Value::as_array);
        let text: String = parts
            .into_iter()
            .flatten()
            .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        if text.is_empty()
            && let Some(reason) = candidate.get("finishReason").and_then(Value::as_str)
            && !matches!(reason, "STOP" | "MAX_TOKENS")
        {
            return Err(self.http.refused(format!("finishReason {reason}")));
        }
        let output_tokens = match (
            tokens(body, "/usageMetadata/candidatesTokenCount"),
            tokens(body, "/usageMetadata/thoughtsTokenCount"),
        ) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        Ok(ModelResponse {
            answer: Answer::from_text(&text),
            input_tokens: tokens(body, "/usageMetadata/promptTokenCount"),
            output_tokens,
        })
    }
}

impl ModelProvider for Gemini {
    fn name(&self) -> &str {
        "gemini"
    }

    fn complete<'a>(
        &'a self,
        request: ModelRequest<'a>,
    ) -> BoxFuture<'a, Result<ModelResponse, ErrorInfo>> {
        Box::pin(async move {
            self.call(request)
                .await
                .map_err(|e| e.to_error_info(&self.http.spec))
        })
    }
}
