//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`): OpenAI itself, vLLM
//! and other servers that speak the same protocol. `Authorization: Bearer <key>` when the model
//! names an `api_key_env` (a local vLLM server usually needs none). With an `output_schema` the
//! request asks for it through `response_format: json_schema`, else for `json_object`.
//! Tools go as `tools: [{type: function, function: {name, description, parameters}}]`; the
//! model's `tool_calls` (several for parallel calls, arguments as a JSON string) come back as
//! calls, and their results go as `role: tool` messages naming the call's id.

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::model::ModelSpec;
use runledger_orchestrator::provider::{
    Answer, BoxFuture, Message, ModelProvider, ModelRequest, ModelResponse, Role, ToolCallRequest,
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
            match m {
                Message::Text { role, content } => {
                    let role = match role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    messages.push(json!({ "role": role, "content": content }));
                }
                Message::ToolCalls { text, calls } => {
                    let calls: Vec<Value> = calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "type": "function",
                                "function": { "name": c.name, "arguments": c.arguments.to_string() },
                            })
                        })
                        .collect();
                    let content = if text.is_empty() {
                        Value::Null
                    } else {
                        json!(text)
                    };
                    messages.push(
                        json!({ "role": "assistant", "content": content, "tool_calls": calls }),
                    );
                }
                Message::ToolResults(results) => {
                    for r in results {
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": r.call_id,
                            "content": r.content.to_string(),
                        }));
                    }
                }
            }
        }
        let mut body = json!({ "model": spec.model_id, "messages": messages });
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        },
                    })
                })
                .collect();
            body["tools"] = json!(tools);
        }
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
        if let Some(Value::Array(calls)) = message.get("tool_calls")
            && !calls.is_empty()
        {
            let mut out = Vec::with_capacity(calls.len());
            for (i, call) in calls.iter().enumerate() {
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.http.bad_response("a tool call has no function.name"))?;
                let raw = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}");
                out.push(ToolCallRequest {
                    id: call
                        .get("id")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("call_{i}"), str::to_owned),
                    name: name.to_owned(),
                    // Arguments that are not JSON stay a string: schema validation refuses
                    // them and the model is told.
                    arguments: serde_json::from_str(raw)
                        .unwrap_or_else(|_| Value::String(raw.to_owned())),
                });
            }
            let text = message
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let mut response = ModelResponse::calls(text, out);
            response.input_tokens = tokens(body, "/usage/prompt_tokens");
            response.output_tokens = tokens(body, "/usage/completion_tokens");
            return Ok(response);
        }
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
            tool_calls: Vec::new(),
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
