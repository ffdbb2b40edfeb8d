//! Model providers: what a `task` node calls. This crate ships the `scripted` provider, which
//! answers from the flowchart (or a fixture file) so runs are offline and deterministic; HTTP
//! providers live in the executor gateway behind the same trait.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::flowchart::{Node, ScriptedResponse};
use runledger_contracts::ids::{NodeRunId, RunId};
use serde_json::Value;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One model call of one node run.
#[derive(Debug, Clone)]
pub struct ModelRequest<'a> {
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
    pub node: &'a Node,
    pub model: &'a str,
    /// The node's prompt with `{{ path }}` placeholders filled from the input context.
    pub prompt: String,
    pub input_context: &'a Value,
    /// How many node runs of this node came before this one in the run.
    pub ordinal: u32,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelResponse {
    pub output: Value,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// A model provider. Errors carry a stable code (`provider_unavailable`, ...) and whether a
/// retry may help; they never contain credentials.
pub trait ModelProvider: Send + Sync {
    /// The provider's name as recorded on tool-call events (`scripted`, `openai`, ...).
    fn name(&self) -> &str;
    fn complete<'a>(&'a self, request: ModelRequest<'a>) -> BoxFuture<'a, Result<ModelResponse, ErrorInfo>>;
}

/// Scripted responses per node id, read from a fixture file (YAML or JSON):
///
/// ```yaml
/// review:
///   - error: { code: provider_unavailable, message: "503", retryable: true }
///   - output: { score: 9 }
/// ```
pub type Script = HashMap<String, Vec<ScriptedResponse>>;

/// The built-in `scripted` model: node run number `ordinal` of a node gets response number
/// `ordinal` (the last one repeats), after its `delay_ms`.
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
    pub fn parse_fixture(text: &str) -> Result<Script, String> {
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let Value::Object(map) = value else {
            return Err("a script maps node ids to lists of responses".into());
        };
        let mut script = Script::new();
        for (node, responses) in map {
            if let Value::Array(items) = &responses {
                for (i, item) in items.iter().enumerate() {
                    let unknown = item
                        .as_object()
                        .and_then(|o| o.keys().find(|k| !matches!(k.as_str(), "output" | "error" | "delay_ms")));
                    if let Some(key) = unknown {
                        return Err(format!("{node}[{i}]: unknown key `{key}`"));
                    }
                }
            }
            let list: Vec<ScriptedResponse> = serde_json::from_value(responses)
                .map_err(|e| format!("{node}: {e}"))?;
            for (i, r) in list.iter().enumerate() {
                if r.output.is_some() == r.error.is_some() {
                    return Err(format!("{node}[{i}]: give exactly one of `output` and `error`"));
                }
            }
            if list.is_empty() {
                return Err(format!("{node}: at least one response is needed"));
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

    fn complete<'a>(&'a self, request: ModelRequest<'a>) -> BoxFuture<'a, Result<ModelResponse, ErrorInfo>> {
        Box::pin(async move {
            let responses = self
                .fixture
                .get(&request.node.id)
                .map(Vec::as_slice)
                .or(request.node.scripted.as_deref())
                .unwrap_or_default();
            let index = usize::try_from(request.ordinal).unwrap_or(usize::MAX).min(responses.len().saturating_sub(1));
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
            match (&response.error, &response.output) {
                (Some(error), _) => Err(ErrorInfo {
                    code: error.code.clone(),
                    message: error.message.clone(),
                    retryable: error.retryable,
                    details: None,
                }),
                (None, output) => Ok(ModelResponse {
                    output: output.clone().unwrap_or(Value::Null),
                    input_tokens: None,
                    output_tokens: None,
                }),
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
            render_prompt("About {{ inputs.topic }} x{{inputs.n}}; {{ context.review.output.notes }}.", &ctx),
            "About owls x3; ."
        );
        assert_eq!(render_prompt("keep {{ not a path }} and {{ open", &ctx), "keep {{ not a path }} and {{ open");
    }

    #[test]
    fn fixture_parsing_names_the_bad_entry() {
        let script = ScriptedProvider::parse_fixture("a:\n  - output: 1\n  - error: { code: x, message: y }\n").unwrap();
        assert_eq!(script["a"].len(), 2);
        let err = ScriptedProvider::parse_fixture("a:\n  - delay_ms: 5\n").unwrap_err();
        assert!(err.contains("a[0]"), "{err}");
        let err = ScriptedProvider::parse_fixture("a:\n  - output: 1\n    colour: red\n").unwrap_err();
        assert!(err.contains("a[0]: unknown key `colour`"), "{err}");
    }
}
