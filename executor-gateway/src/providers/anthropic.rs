//! Anthropic Messages (`POST {base_url}/v1/messages`) with `x-api-key` and
//! `anthropic-version`. The Messages API has no JSON mode: the system prompt asks for JSON (and
//! names the schema), and the node's schema check does the rest. `max_tokens` is required by
//! the API (default 4096); `thinking_budget_tokens` turns on extended thinking. Tools go as
//! `tools: [{name, description, input_schema}]`; `tool_use` blocks of the answer come back as
//! calls, and their results go as `tool_result` blocks of the next user message.

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::model::{DEFAULT_ANTHROPIC_MAX_TOKENS, ModelSpec};
use runledger_orchestrator::provider::{
    Answer, BoxFuture, Message, ModelProvider, ModelRequest, ModelResponse, Role, ToolCallRequest,
};
use serde_json::{Value, json};

use super::{HttpModel, PreparedCall, ProviderError, headers, tokens};

/// The API version this adapter speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    http: HttpModel,
}

impl Anthropic {
    pub fn new(spec: ModelSpec) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpModel::new(spec)?,
        })
    }

    pub fn body(&self, request: &ModelRequest<'_>) -> Value {
        let spec = &self.http.spec;
        let s = &spec.settings;
        let messages: Vec<Value> = request
            .messages()
            .into_iter()
            .map(|m| match m {
                Message::Text { role, content } => {
                    let role = match role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    json!({ "role": role, "content": content })
                }
                Message::ToolCalls { text, calls } => {
                    let mut blocks = Vec::with_capacity(calls.len() + 1);
                    if !text.is_empty() {
                        blocks.push(json!({ "type": "text", "text": text }));
                    }
                    for c in calls {
                        blocks.push(json!({
                            "type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments,
                        }));
                    }
                    json!({ "role": "assistant", "content": blocks })
                }
                Message::ToolResults(results) => {
                    let blocks: Vec<Value> = results
                        .iter()
                        .map(|r| {
                            json!({
                                "type": "tool_result",
                                "tool_use_id": r.call_id,
                                "content": r.content.to_string(),
                                "is_error": r.is_error,
                            })
                        })
                        .collect();
                    json!({ "role": "user", "content": blocks })
                }
            })
            .collect();
        let mut body = json!({
            "model": spec.model_id,
            "max_tokens": s.max_tokens.unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS),
            "system": request.system_instruction(),
            "messages": messages,
        });
        if let Some(t) = s.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(budget) = s.thinking_budget_tokens {
            body["thinking"] = json!({ "type": "enabled", "budget_tokens": budget });
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    json!({ "name": t.name, "description": t.description, "input_schema": t.parameters })
                })
                .collect();
            body["tools"] = json!(tools);
        }
        body
    }

    async fn call(&self, request: ModelRequest<'_>) -> Result<ModelResponse, ProviderError> {
        let credential = self.http.credential()?;
        let auth = credential
            .as_ref()
            .map(|c| c.header("x-api-key", "", &self.http.spec.name))
            .transpose()?;
        let call = PreparedCall {
            url: format!("{}/v1/messages", self.http.spec.effective_base_url()),
            headers: headers(auth, &[("anthropic-version", ANTHROPIC_VERSION)]),
            body: self.body(&request),
        };
        let body = self
            .http
            .send(call, credential.as_ref(), request.deadline)
            .await?;
        self.answer(&body)
    }

    /// Joins the `text` blocks of `content` (thinking blocks are left out) and reads `usage`.
    pub fn answer(&self, body: &Value) -> Result<ModelResponse, ProviderError> {
        let blocks = body
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| self.http.bad_response("no content array"))?;
        if body.get("stop_reason").and_then(Value::as_str) == Some("refusal") {
            return Err(self.http.refused("stop_reason refusal"));
        }
        let text: String = blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        let mut calls = Vec::new();
        for b in blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
        {
            let (Some(id), Some(name)) = (
                b.get("id").and_then(Value::as_str),
                b.get("name").and_then(Value::as_str),
            ) else {
                return Err(self.http.bad_response("a tool_use block has no id or name"));
            };
            calls.push(ToolCallRequest {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments: b.get("input").cloned().unwrap_or_else(|| json!({})),
            });
        }
        if !calls.is_empty() {
            let mut response = ModelResponse::calls(text, calls);
            response.input_tokens = tokens(body, "/usage/input_tokens");
            response.output_tokens = tokens(body, "/usage/output_tokens");
            return Ok(response);
        }
        Ok(ModelResponse {
            answer: Answer::from_text(&text),
            tool_calls: Vec::new(),
            input_tokens: tokens(body, "/usage/input_tokens"),
            output_tokens: tokens(body, "/usage/output_tokens"),
        })
    }
}

impl ModelProvider for Anthropic {
    fn name(&self) -> &str {
        "anthropic"
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
