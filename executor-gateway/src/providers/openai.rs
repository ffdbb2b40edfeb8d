//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`): OpenAI itself, vLLM
//! and other servers that speak the same protocol. `Authorization: Bearer <key>` when the model
//! names an `api_key_env` (a local vLLM server usually needs none). With an `output_schema` the
//! request asks for it through `response_format: json_schema`, else for `json_object`.

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::model::ModelSpec;
use runledger_orchestrator::provider::{
    Answer, BoxFuture, ModelProvider, ModelRequest, ModelResponse, Role,
};
use serde_json::{Value, json};

use super::{HttpModel, PreparedCall, ProviderError, headers, tokens};

pub struct OpenAiCompatible {
    http: HttpModel,
}

impl OpenAiCompatible {
    pub fn new(spec: ModelSpec) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpModel::new(spec)?,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.http.spec
    }

    /// The request body for one call.
    pub fn body(&self, request: &ModelRequest<'_>) -> Value {
        let spec = &self.http.spec;
        let mut messages =
            vec![json!({ "role": "system", "content": request.system_instruction() })];
        for m in request.messages() {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({ "role": role, "content": m.content }));
        }
        let mut body = json!({ "model": spec.model_id, "messages": messages });
        body["response_format"] = match request.output_schema() {
            Some(schema) => {
                json!({ "type": "json_schema", "json_schema": { "name": "output", "schema": schema } })
            }
            None => json!({ "type": "json_object" }),
        };
        let s = &spec.settings;
        if let Some(t) = s.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(n) = s.max_tokens {
            body["max_completion_tokens"] = json!(n);
        }
        if let Some(effort) = &s.reasoning_effort {
            body["reasoning_effort"] = json!(effort);
        }
        body
    }

    async fn call(&self, request: ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
        let credential = self.http.credential()?;
        let auth = credential
            .as_ref()
            .map(|c| c.header("authorization", "Bearer ", &self.http.spec.name))
            .transpose()?;
        let call = PreparedCall {
            url: format!("{}/chat/completions", self.http.spec.effective_base_url()),
            headers: headers(auth, &[]),
            body: self.body(&request),
        };
        let body = self
            .http
            .send(call, credential.as_ref(), request.deadline)
            .await?;
        self.answer(&body)
    }

    /// Reads `choices[0].message` and `usage` from a response body.
    pub fn answer(&self, body: &Value) -> Result<ModelResponse, ProviderError> {
        let message = body
            .pointer("/choices/0/message")
            .ok_or_else(|| self.http.bad_response("no choices[0].message"))?;
        let text = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            // Some servers send content parts.
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            _ => {
                return Err(match message.get("refusal").and_then(Value::as_str) {
                    Some(refusal) => self
                        .http
                        .refused(refusal.chars().take(300).collect::<String>()),
                    None => self.http.bad_response("choices[0].message has no content"),
                });
            }
        };
        Ok(ModelResponse {
            answer: Answer::from_text(&text),
            input_tokens: tokens(body, "/usage/prompt_tokens"),
            output_tokens: tokens(body, "/usage/completion_tokens"),
        })
    }
}

impl ModelProvider for OpenAiCompatible {
    fn name(&self) -> &str {
        "openai_compatible"
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
