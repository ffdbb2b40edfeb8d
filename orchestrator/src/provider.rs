//! Model providers: what a `task` node calls. This crate ships the `scripted` provider, which
//! answers from the flowchart (or a fixture file) so runs are offline and deterministic; HTTP
//! providers live in the executor gateway behind the same trait.
//!
//! A node run's conversation with its model is one prompt, then its [`Turn`]s: tool calls the
//! model asked for and their results (the agent loop, `crate::agent`), and, when an answer does
//! not satisfy the node's `output_schema`, one repair turn per rejected answer: the answer and
//! feedback naming what was wrong ([`RepairTurn`]). Every provider sees the same turns through
//! [`ModelRequest::messages`] and the same [`ModelRequest::system_instruction`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use runledger_contracts::agent_tool::ToolSpec;
use runledger_contracts::events::ErrorInfo;
use runledger_contracts::flowchart::{Node, ScriptedResponse};
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Repair calls a node with an `output_schema` gets when it sets no `schema_repair_attempts`.
pub const DEFAULT_SCHEMA_REPAIR_ATTEMPTS: u32 = 1;
/// Most schema violations reported per answer (to the model and in error details).
pub const MAX_REPORTED_VIOLATIONS: usize = 20;

/// One model call of one node run.
#[derive(Debug, Clone)]
pub struct ModelRequest<'a> {
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
    pub node: &'a Node,
    pub model: &'a str,
    /// The user prompt: the node's prompt with `{{ path }}` placeholders filled from the input
    /// context, then its `additional_prompt` (see `crate::agent::prompt`).
    pub prompt: String,
    /// The agent's system prompt, role and skills composed, when the node has an `agent:`
    /// block; it comes before [`ModelRequest::system_instruction`]'s own text.
    pub agent_system: Option<&'a str>,
    pub input_context: &'a Value,
    /// How many node runs of this node came before this one in the run.
    pub ordinal: u32,
    pub attempt: u32,
    /// What happened in this node run since the prompt: tool-call turns with their results,
    /// and rejected answers with their feedback; empty on the first call.
    pub turns: &'a [Turn],
    /// The tools the model may call (empty: it must answer).
    pub tools: &'a [ToolSpec],
    /// When the node run's execution timeout fires; a provider stops waiting by then.
    pub deadline: Option<Timestamp>,
}

/// A rejected answer and what the model is told about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairTurn {
    /// The answer as the model gave it (JSON answers re-serialized compactly).
    pub answer: String,
    pub feedback: String,
}

/// One tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallRequest {
    /// The provider's id of the call (OpenAI `call_...`, Anthropic `toolu_...`); providers
    /// that give none (Gemini, `scripted`) get `call_<turn>_<index>`.
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// What a tool call gave back to the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolResultTurn {
    /// The [`ToolCallRequest::id`] it answers.
    pub call_id: String,
    pub name: String,
    /// The result, or `{ "error": { "code", "message" } }`.
    pub content: Value,
    pub is_error: bool,
}

/// One step of a node run's conversation after the prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Turn {
    /// The model asked for tools (its accompanying text, if any, kept).
    ToolCalls {
        text: String,
        calls: Vec<ToolCallRequest>,
    },
    /// The results of the calls of the turn before, in call order.
    ToolResults { results: Vec<ToolResultTurn> },
    /// A final answer rejected by the output schema, and the feedback.
    Repair(RepairTurn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation, in provider-neutral form; each provider writes these in
/// its native shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    Text {
        role: Role,
        content: &'a str,
    },
    ToolCalls {
        text: &'a str,
        calls: &'a [ToolCallRequest],
    },
    ToolResults(&'a [ToolResultTurn]),
}

impl ModelRequest<'_> {
    /// The node's `output_schema`, if it has one.
    pub fn output_schema(&self) -> Option<&Map<String, Value>> {
        self.node.output_schema.as_ref()
    }

    /// How many model calls of this node run came before this one (tool-call turns and
    /// rejected answers): 0 on the first call.
    pub fn model_calls_before(&self) -> u32 {
        let n = self
            .turns
            .iter()
            .filter(|t| matches!(t, Turn::ToolCalls { .. } | Turn::Repair(_)))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The prompt, then every turn: tool calls (assistant), their results, and each rejected
    /// answer (assistant) with its feedback (user).
    pub fn messages(&self) -> Vec<Message<'_>> {
        let mut out = Vec::with_capacity(1 + 2 * self.turns.len());
        out.push(Message::Text {
            role: Role::User,
            content: &self.prompt,
        });
        for turn in self.turns {
            match turn {
                Turn::ToolCalls { text, calls } => out.push(Message::ToolCalls { text, calls }),
                Turn::ToolResults { results } => out.push(Message::ToolResults(results)),
                Turn::Repair(r) => {
                    out.push(Message::Text {
                        role: Role::Assistant,
                        content: &r.answer,
                    });
                    out.push(Message::Text {
                        role: Role::User,
                        content: &r.feedback,
                    });
                }
            }
        }
        out
    }

    /// What every provider is told besides the prompt: the agent's system prompt when there
    /// is one, then answer with JSON only, and the schema the answer must satisfy when the
    /// node has one.
    pub fn system_instruction(&self) -> String {
        let mut text = String::new();
        if let Some(agent) = self.agent_system {
            text.push_str(agent);
            text.push_str("\n\n");
        }
        if !self.tools.is_empty() {
            text.push_str("Call the tools you need. When you are done, a");
        } else {
            text.push('A');
        }
        text.push_str(
            "nswer with exactly one JSON value and nothing else: no prose, no Markdown code fences.",
        );
        if let Some(schema) = self.output_schema() {
            text.push_str(" The value must satisfy this JSON Schema:\n");
            text.push_str(&Value::Object(schema.clone()).to_string());
        }
        text
    }
}

/// What the model said: JSON, or text that does not parse as JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Json(Value),
    NotJson {
        text: String,
        /// The parse error (line and column).
        error: String,
    },
}

impl Answer {
    /// Parses a model's text answer. Surrounding whitespace and one Markdown code fence
    /// (```` ```json ... ``` ````) are tolerated, since models add them even when told not to.
    pub fn from_text(text: &str) -> Answer {
        match serde_json::from_str::<Value>(strip_code_fence(text.trim())) {
            Ok(value) => Answer::Json(value),
            Err(e) => Answer::NotJson {
                text: text.to_owned(),
                error: e.to_string(),
            },
        }
    }

    /// The answer as text, for a repair turn.
    pub fn text(&self) -> String {
        match self {
            Answer::Json(value) => value.to_string(),
            Answer::NotJson { text, .. } => text.clone(),
        }
    }
}

/// What one model call returned: a final answer, or (when `tool_calls` is not empty) a turn
/// asking for tools, several at once for parallel calls, whose `answer` is only the text that
/// came with them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelResponse {
    pub answer: Answer,
    pub tool_calls: Vec<ToolCallRequest>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

impl ModelResponse {
    pub fn json(output: Value) -> Self {
        Self {
            answer: Answer::Json(output),
            tool_calls: Vec::new(),
            input_tokens: None,
            output_tokens: None,
        }
    }

    /// A turn that asks for `calls`.
    pub fn calls(text: String, calls: Vec<ToolCallRequest>) -> Self {
        Self {
            answer: Answer::NotJson {
                text,
                error: "tool calls are not an answer".into(),
            },
            tool_calls: calls,
            input_tokens: None,
            output_tokens: None,
        }
    }

    /// The text that came with a tool-call turn.
    pub fn text(&self) -> String {
        match &self.answer {
            Answer::Json(v) => v.to_string(),
            Answer::NotJson { text, .. } => text.clone(),
        }
    }
}

/// A model provider. Errors carry a stable code (`provider_unavailable`, ...) and whether a
/// retry may help; they never contain credentials.
pub trait ModelProvider: Send + Sync {
    /// The provider's name as recorded on tool-call events (`scripted`, `openai_compatible`, ...).
    fn name(&self) -> &str;
    fn complete<'a>(
        &'a self,
        request: ModelRequest<'a>,
    ) -> BoxFuture<'a, Result<ModelResponse, ErrorInfo>>;
}

/// Why an `output_schema` does not compile; the message is cut to 300 bytes (it is recorded
/// in the node's failure), the full error is the source.
#[derive(Debug, thiserror::Error)]
#[error("{}", truncate(&.0.to_string(), 300))]
pub struct SchemaCompileError(#[source] jsonschema::ValidationError<'static>);

/// A node's `output_schema`, compiled once per node run.
pub struct OutputSchema(jsonschema::Validator);

/// One way an answer fails the schema: where (a JSON Pointer into the answer) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaViolation {
    pub path: String,
    pub message: String,
}

impl OutputSchema {
    /// Compiles the schema. Remote `$ref`s are not fetched (no network from here), so a schema
    /// that needs one does not compile.
    pub fn compile(schema: &Map<String, Value>) -> Result<Self, SchemaCompileError> {
        jsonschema::validator_for(&Value::Object(schema.clone()))
            .map(OutputSchema)
            .map_err(SchemaCompileError)
    }

    /// Every violation of `output`, at most [`MAX_REPORTED_VIOLATIONS`]; empty when it is valid.
    pub fn violations(&self, output: &Value) -> Vec<SchemaViolation> {
        self.0
            .iter_errors(output)
            .take(MAX_REPORTED_VIOLATIONS)
            .map(|e| SchemaViolation {
                path: e.instance_path().to_string(),
                message: truncate(&e.to_string(), 300),
            })
            .collect()
    }
}

/// What the model is told about a rejected answer.
pub fn repair_feedback(answer: &Answer, violations: &[SchemaViolation]) -> String {
    match answer {
        Answer::NotJson { error, .. } => format!(
            "Your answer is not valid JSON ({error}). Answer again with only the JSON value."
        ),
        Answer::Json(_) => {
            let mut text = String::from("Your answer does not satisfy the required JSON Schema:\n");
            for v in violations {
                let at = if v.path.is_empty() {
                    "(root)"
                } else {
                    v.path.as_str()
                };
                text.push_str(&format!("- at {at}: {}\n", v.message));
            }
            text.push_str("Answer again with only the corrected JSON value.");
            text
        }
    }
}

/// ```` ```lang\nBODY\n``` ```` → `BODY`; anything else unchanged.
fn strip_code_fence(text: &str) -> &str {
    let Some(inner) = text
        .strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
    else {
        return text;
    };
    match inner.split_once('\n') {
        Some((lang, body)) if lang.trim().bytes().all(|b| b.is_ascii_alphanumeric()) => body,
        _ => inner,
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

/// Scripted responses per node id, read from a fixture file (YAML or JSON):
///
/// ```yaml
/// review:
///   - error: { code: provider_unavailable, message: "503", retryable: true }
///   - output: { score: 9 }
/// ```
pub type Script = HashMap<String, Vec<ScriptedResponse>>;

/// Why a `--script` fixture was refused; the message names the node and response.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{0}")]
    Yaml(#[source] serde_yaml_ng::Error),
    #[error("a script maps node ids to lists of responses")]
    NotAMap,
    #[error("{node}[{index}]: unknown key `{key}`")]
    UnknownKey {
        node: String,
        index: usize,
        key: String,
    },
    #[error("{node}: {source}")]
    Response {
        node: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{node}[{index}]: give exactly one of `output`, `error` and `tool_calls`")]
    OutputOrError { node: String, index: usize },
    #[error("{node}: at least one response is needed")]
    Empty { node: String },
}

/// The built-in `scripted` model: node run number `ordinal` of a node gets response number
/// `ordinal`, and its n-th further model call (after a tool-call turn or a rejected answer) the
/// response n after that (`ordinal + n`); when the list runs out the last one repeats. A
/// response with `tool_calls` asks for those calls (ids `call_<turn>_<index>`). Each answer comes after its `delay_ms`.
#[derive(Debug, Clone, Default)]
pub struct ScriptedProvider {
    fixture: Script,
}

impl ScriptedProvider {
    /// Answers from each node's `scripted` list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers from `fixture` for the nodes it names, from the flowchart for the others.
    pub fn with_fixture(fixture: Script) -> Self {
        Self { fixture }
    }

    /// Parses a fixture file. Errors name the offending key.
    pub fn parse_fixture(text: &str) -> Result<Script, ScriptError> {
        let value: Value = serde_yaml_ng::from_str(text).map_err(ScriptError::Yaml)?;
        let Value::Object(map) = value else {
            return Err(ScriptError::NotAMap);
        };
        let mut script = Script::new();
        for (node, responses) in map {
            if let Value::Array(items) = &responses {
                for (i, item) in items.iter().enumerate() {
                    let unknown = item.as_object().and_then(|o| {
                        o.keys().find(|k| {
                            !matches!(k.as_str(), "output" | "error" | "tool_calls" | "delay_ms")
                        })
                    });
                    if let Some(key) = unknown {
                        return Err(ScriptError::UnknownKey {
                            node: node.clone(),
                            index: i,
                            key: key.clone(),
                        });
                    }
                }
            }
            let list: Vec<ScriptedResponse> = match serde_json::from_value(responses) {
                Ok(list) => list,
                Err(source) => return Err(ScriptError::Response { node, source }),
            };
            if let Some(index) = list.iter().position(|r| r.kinds() != 1) {
                return Err(ScriptError::OutputOrError { node, index });
            }
            if list.is_empty() {
                return Err(ScriptError::Empty { node });
            }
            script.insert(node, list);
        }
        Ok(script)
    }

    pub fn fixture(&self) -> &Script {
        &self.fixture
    }
}

impl ModelProvider for ScriptedProvider {
    fn name(&self) -> &str {
        runledger_contracts::flowchart::SCRIPTED_MODEL
    }

    fn complete<'a>(
        &'a self,
        request: ModelRequest<'a>,
    ) -> BoxFuture<'a, Result<ModelResponse, ErrorInfo>> {
        Box::pin(async move {
            let responses = self
                .fixture
                .get(&request.node.id)
                .map(Vec::as_slice)
                .or(request.node.scripted.as_deref())
                .unwrap_or_default();
            let index =
                usize::try_from(request.ordinal.saturating_add(request.model_calls_before()))
                    .unwrap_or(usize::MAX)
                    .min(responses.len().saturating_sub(1));
            let Some(response) = responses.get(index) else {
                return Err(ErrorInfo {
                    code: "script_missing".into(),
                    message: format!("node `{}` has no scripted responses", request.node.id),
                    retryable: false,
                    details: None,
                });
            };
            if let Some(ms) = response.delay_ms.filter(|&ms| ms > 0) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Some(calls) = &response.tool_calls {
                let turn = request.model_calls_before() + 1;
                let calls = calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ToolCallRequest {
                        id: format!("call_{turn}_{i}"),
                        name: c.tool.clone(),
                        arguments: c.arguments.clone(),
                    })
                    .collect();
                return Ok(ModelResponse::calls(String::new(), calls));
            }
            match (&response.error, &response.output) {
                (Some(error), _) => Err(ErrorInfo {
                    code: error.code.clone(),
                    message: error.message.clone(),
                    retryable: error.retryable,
                    details: None,
                }),
                (None, output) => Ok(ModelResponse::json(output.clone().unwrap_or(Value::Null))),
            }
        })
    }
}

/// Fills `{{ path }}` placeholders from the input context: strings as they are, other values
/// as compact JSON, missing paths as nothing. Text that is not a valid placeholder stays as is.
pub fn render_prompt(template: &str, context: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = after[..close].trim();
        match runledger_contracts::condition::parse_path(inner) {
            Ok(path) => match path.resolve(context) {
                Some(Value::String(text)) => out.push_str(text),
                Some(Value::Null) | None => {}
                Some(other) => out.push_str(&other.to_string()),
            },
            Err(_) => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_placeholders_are_filled_from_the_context() {
        let ctx = json!({ "inputs": { "topic": "owls", "n": 3 }, "context": {} });
        assert_eq!(
            render_prompt(
                "About {{ inputs.topic }} x{{inputs.n}}; {{ context.review.output.notes }}.",
                &ctx
            ),
            "About owls x3; ."
        );
        assert_eq!(
            render_prompt("keep {{ not a path }} and {{ open", &ctx),
            "keep {{ not a path }} and {{ open"
        );
    }

    #[test]
    fn answers_parse_as_json_with_one_fence_tolerated() {
        assert_eq!(
            Answer::from_text(" {\"a\": 1}\n"),
            Answer::Json(json!({ "a": 1 }))
        );
        assert_eq!(
            Answer::from_text("```json\n{\"a\": 2}\n```"),
            Answer::Json(json!({ "a": 2 }))
        );
        assert_eq!(Answer::from_text("```\n[3]\n```"), Answer::Json(json!([3])));
        let Answer::NotJson { text, error } = Answer::from_text("Sure: {\"a\": 1}") else {
            panic!("not JSON")
        };
        assert_eq!(text, "Sure: {\"a\": 1}");
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn schema_violations_name_the_path() {
        let schema = json!({ "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } });
        let schema = OutputSchema::compile(schema.as_object().unwrap()).unwrap();
        assert!(schema.violations(&json!({ "text": "ok" })).is_empty());
        let v = schema.violations(&json!({ "text": 5 }));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "/text");
        let feedback = repair_feedback(&Answer::Json(json!({ "text": 5 })), &v);
        assert!(
            feedback.contains("at /text:") && feedback.contains("string"),
            "{feedback}"
        );
        assert!(OutputSchema::compile(json!({ "type": 12 }).as_object().unwrap()).is_err());
    }

    mod task {
        use std::sync::Arc;

        use runledger_contracts::events::ToolOutcome;
        use runledger_contracts::flowchart::{NodeType, ScriptedError};

        use super::*;
        use crate::decide::{NodeOutcome, NodeResult};
        use crate::executor::{NodeWork, Providers, run_node};

        fn scripted(outputs: &[Value]) -> Vec<ScriptedResponse> {
            outputs
                .iter()
                .map(|o| ScriptedResponse {
                    tool_calls: None,
                    output: Some(o.clone()),
                    error: None,
                    delay_ms: None,
                })
                .collect()
        }

        async fn run(
            schema: Option<Value>,
            repairs: Option<u32>,
            responses: Vec<ScriptedResponse>,
            ordinal: u32,
        ) -> NodeResult {
            let mut node = Node::new("draft", NodeType::Task);
            node.model = Some("scripted".into());
            node.output_schema = schema.map(|s| s.as_object().cloned().unwrap_or_default());
            node.schema_repair_attempts = repairs;
            node.scripted = Some(responses);
            let work = NodeWork {
                run_id: RunId::new_v7(),
                node_run_id: NodeRunId::new_v7(),
                attempt: 1,
                ordinal,
                deadline: None,
                input_context: json!({}),
                node: Arc::new(node),
                workspace: None,
                git_policy: None,
                recorded_calls: Vec::new(),
                workspace_holder: None,
            };
            run_node(&Providers::scripted(ScriptedProvider::new()), &work).await
        }

        fn text_schema() -> Option<Value> {
            Some(
                json!({ "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } }),
            )
        }

        #[tokio::test]
        async fn a_repair_call_takes_the_next_scripted_response() {
            let responses = scripted(&[
                json!({ "text": 1 }),
                json!({ "text": "fixed" }),
                json!({ "text": "later" }),
            ]);
            let result = run(text_schema(), None, responses.clone(), 0).await;
            assert_eq!(
                result.outcome,
                NodeOutcome::Succeeded {
                    output: json!({ "text": "fixed" }),
                    warnings: vec![],
                    fallback_used: false,
                    agent: None,
                }
            );
            let keys: Vec<String> = result
                .tool_calls
                .iter()
                .map(|c| c.idempotency_key.clone())
                .collect();
            assert_eq!(
                keys,
                [
                    format!("{}:provider:1", result.node_run_id),
                    format!("{}:provider:2", result.node_run_id)
                ]
            );
            assert_eq!(result.tool_calls[0].outcome, ToolOutcome::Error);
            assert_eq!(
                result.tool_calls[0].error.as_ref().unwrap().code,
                "output_schema_invalid"
            );
            assert_eq!(result.tool_calls[1].outcome, ToolOutcome::Ok);
            // Node run number 1 starts at response 1, which is already valid.
            let result = run(text_schema(), None, responses, 1).await;
            assert_eq!(result.tool_calls.len(), 1);
        }

        #[tokio::test]
        async fn without_repairs_left_the_node_fails_with_the_violations() {
            let result = run(
                text_schema(),
                Some(0),
                scripted(&[json!({ "title": "x" }), json!({ "text": "never asked" })]),
                0,
            )
            .await;
            let NodeOutcome::Failed(e) = &result.outcome else {
                panic!("{:?}", result.outcome)
            };
            assert_eq!(
                (e.code.as_str(), e.retryable),
                ("output_schema_invalid", false)
            );
            let details = e.details.as_ref().unwrap();
            assert_eq!(
                (
                    details["repair_attempts"].as_u64(),
                    details["provider_calls"].as_u64()
                ),
                (Some(0), Some(1))
            );
            assert!(
                details["violations"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("text"),
                "{details}"
            );
            assert_eq!(result.tool_calls.len(), 1);
        }

        #[tokio::test]
        async fn outputs_without_a_schema_and_provider_errors_are_not_repaired() {
            let result = run(None, Some(3), scripted(&[json!(5)]), 0).await;
            assert!(matches!(result.outcome, NodeOutcome::Succeeded { .. }));
            let failing = vec![ScriptedResponse {
                tool_calls: None,
                output: None,
                error: Some(ScriptedError {
                    code: "provider_unavailable".into(),
                    message: "503".into(),
                    retryable: true,
                }),
                delay_ms: None,
            }];
            let result = run(text_schema(), Some(3), failing, 0).await;
            let NodeOutcome::Failed(e) = &result.outcome else {
                panic!("{:?}", result.outcome)
            };
            assert_eq!(
                (e.code.as_str(), e.retryable),
                ("provider_unavailable", true)
            );
            assert_eq!(result.tool_calls.len(), 1);
        }

        #[tokio::test]
        async fn an_unusable_output_schema_fails_before_any_call() {
            let result = run(
                Some(json!({ "type": "nonsense" })),
                None,
                scripted(&[json!({})]),
                0,
            )
            .await;
            let NodeOutcome::Failed(e) = &result.outcome else {
                panic!("{:?}", result.outcome)
            };
            assert_eq!(e.code, "invalid_output_schema");
            assert!(result.tool_calls.is_empty());
        }
    }

    #[test]
    fn fixture_parsing_names_the_bad_entry() {
        let script = ScriptedProvider::parse_fixture(
            "a:\n  - output: 1\n  - error: { code: x, message: y }\n",
        )
        .unwrap();
        assert_eq!(script["a"].len(), 2);
        let err = ScriptedProvider::parse_fixture("a:\n  - delay_ms: 5\n").unwrap_err();
        assert!(
            matches!(err, ScriptError::OutputOrError { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("a[0]"), "{err}");
        let err = ScriptedProvider::parse_fixture("a: [{ output: 1, delay_ms: -1 }]").unwrap_err();
        assert!(
            std::error::Error::source(&err).is_some(),
            "the serde error is kept: {err:?}"
        );
        let err =
            ScriptedProvider::parse_fixture("a:\n  - output: 1\n    colour: red\n").unwrap_err();
        assert!(
            err.to_string().contains("a[0]: unknown key `colour`"),
            "{err}"
        );
    }
}
