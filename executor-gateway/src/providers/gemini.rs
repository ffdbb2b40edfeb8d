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
//! Tools go as `tools: [{functionDeclarations: [...]}]` (then without the JSON response type,
//! which Gemini refuses with function calling); `functionCall` parts come back as calls and
//! their results go as `functionResponse` parts.

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::model::ModelSpec;
use runledger_orchestrator::provider::{
    Answer, BoxFuture, Message, ModelProvider, ModelRequest, ModelResponse, Role, ToolCallRequest,
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
            .map(|m| match m {
                Message::Text { role, content } => {
                    let role = match role {
                        Role::User => "user",
                        Role::Assistant => "model",
                    };
                    json!({ "role": role, "parts": [{ "text": content }] })
                }
                Message::ToolCalls { text, calls } => {
                    let mut parts = Vec::with_capacity(calls.len() + 1);
                    if !text.is_empty() {
                        parts.push(json!({ "text": text }));
                    }
                    for c in calls {
                        parts.push(json!({ "functionCall": { "name": c.name, "args": c.arguments } }));
                    }
                    json!({ "role": "model", "parts": parts })
                }
                Message::ToolResults(results) => {
                    let parts: Vec<Value> = results
                        .iter()
                        .map(|r| {
                            json!({ "functionResponse": { "name": r.name, "response": { "content": r.content } } })
                        })
                        .collect();
                    json!({ "role": "user", "parts": parts })
                }
            })
            .collect();
        // Gemini refuses a JSON response type together with function calling: with tools the
        // system instruction alone asks for JSON.
        let mut config = if request.tools.is_empty() {
            json!({ "responseMimeType": "application/json" })
        } else {
            json!({})
        };
        if let Some(t) = s.temperature {
            config["temperature"] = json!(t);
        }
        if let Some(n) = s.max_tokens {
            config["maxOutputTokens"] = json!(n);
        }
        if let Some(budget) = s.thinking_budget_tokens {
            config["thinkingConfig"] = json!({ "thinkingBudget": budget });
        }
        let mut body = json!({
            "contents": contents,
            "systemInstruction": { "parts": [{ "text": request.system_instruction() }] },
            "generationConfig": config,
        });
        if !request.tools.is_empty() {
            let declarations: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    json!({ "name": t.name, "description": t.description, "parameters": t.parameters })
                })
                .collect();
            body["tools"] = json!([{ "functionDeclarations": declarations }]);
        }
        body
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
        self.answer_turn(&body, request.model_calls_before() + 1)
    }

    /// Joins the non-thought text parts of the first candidate and reads `usageMetadata`
    /// (output tokens = candidate tokens + thinking tokens, as billed).
    pub fn answer(&self, body: &Value) -> Result<ModelResponse, ProviderError> {
        self.answer_turn(body, 1)
    }

    /// [`Self::answer`] for model turn `turn` (names the turn's function calls).
    pub fn answer_turn(&self, body: &Value, turn: u32) -> Result<ModelResponse, ProviderError> {
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
        let calls: Vec<ToolCallRequest> = parts
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("functionCall"))
            .enumerate()
            .filter_map(|(i, call)| {
                let name = call.get("name").and_then(Value::as_str)?;
                Some(ToolCallRequest {
                    // Gemini names calls only in some versions; the turn's order is the id.
                    id: call
                        .get("id")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("call_{}_{i}", turn), str::to_owned),
                    name: name.to_owned(),
                    arguments: call.get("args").cloned().unwrap_or_else(|| json!({})),
                })
            })
            .collect();
        let has_calls = parts
            .into_iter()
            .flatten()
            .any(|p| p.get("functionCall").is_some());
        if text.is_empty()
            && !has_calls
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
        if !calls.is_empty() {
            let mut response = ModelResponse::calls(text, calls);
            response.input_tokens = tokens(body, "/usageMetadata/promptTokenCount");
            response.output_tokens = output_tokens;
            return Ok(response);
        }
        Ok(ModelResponse {
            answer: Answer::from_text(&text),
            tool_calls: Vec::new(),
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
