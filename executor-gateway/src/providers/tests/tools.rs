//! Each adapter's wire format for tools, against its stub: the offered tools in the
//! provider's native form, two parallel calls parsed back from its answer (one with arguments
//! the tool's schema refuses), and both results sent back natively on the next turn.

use std::sync::Arc;

use runledger_contracts::agent_tool::{ToolCallContext, ToolDomain, ToolFuture, ToolSpec};
use runledger_contracts::events::ToolOutcome;
use runledger_orchestrator::agent::ToolRegistry;

use super::*;

/// `workspace_read` answers `{ "text": "hoot <path>" }`.
struct Reader;

impl ToolDomain for Reader {
    fn domain(&self) -> &str {
        "workspace"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "workspace_read".into(),
            description: "Read a file of the workspace.".into(),
            parameters: json!({
                "type": "object",
                "required": ["path"],
                "properties": { "path": { "type": "string" } },
            }),
            side_effects: false,
        }]
    }

    fn call<'a>(
        &'a self,
        _ctx: &'a ToolCallContext,
        _name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(async move {
            let path = arguments["path"].as_str().unwrap_or_default().to_owned();
            Ok(json!({ "text": format!("hoot {path}") }))
        })
    }
}

/// Runs an agent node offered `workspace_read` against `spec`'s stub.
async fn run_agent(spec: &ModelSpec) -> NodeResult {
    credentials();
    let scripted = ScriptedProvider::new();
    let registry = ToolRegistry::new(vec![Arc::new(Reader)]).unwrap();
    let mut providers = Providers::scripted(scripted.clone()).with_tools(registry);
    providers.insert(spec.name.clone(), provider_for(spec, &scripted).unwrap());
    let mut node = task(model_of(spec), Some(text_schema()), None);
    node.tools = Some(vec!["workspace_read".into()]);
    run_node(&providers, &work(node, None)).await
}

/// The calls of the node run: model, two tool calls (the second refused), model.
fn assert_calls(result: &NodeResult) {
    assert_eq!(output(result), &json!({ "text": "owls hoot" }));
    let tools: Vec<(&str, ToolOutcome)> = result
        .tool_calls
        .iter()
        .map(|c| (c.tool.as_str(), c.outcome))
        .collect();
    assert_eq!(
        tools,
        [
            ("provider", ToolOutcome::Ok),
            ("workspace_read", ToolOutcome::Ok),
            ("workspace_read", ToolOutcome::Error),
            ("provider", ToolOutcome::Ok),
        ]
    );
    assert_eq!(
        result.tool_calls[1].output,
        Some(json!({ "text": "hoot a.txt" }))
    );
    assert_eq!(
        result.tool_calls[2].error.as_ref().map(|e| e.code.as_str()),
        Some("invalid_arguments")
    );
    assert_no_key(result);
}

#[tokio::test]
async fn openai_sends_function_tools_and_reads_parallel_tool_calls() {
    let calls = json!({
        "id": "chatcmpl-0", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [
                { "id": "call_A", "type": "function", "function": { "name": "workspace_read", "arguments": "{\"path\":\"a.txt\"}" } },
                { "id": "call_B", "type": "function", "function": { "name": "workspace_read", "arguments": "{}" } }
            ]
        } }],
        "usage": { "prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29 }
    });
    let stub = Stub::start(vec![
        reply(200, calls),
        reply(200, openai_answer(r#"{"text": "owls hoot"}"#)),
    ])
    .await;
    let result = run_agent(&openai_spec(stub.url("/v1"))).await;
    assert_calls(&result);
    let seen = stub.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].body["tools"],
        json!([{ "type": "function", "function": {
            "name": "workspace_read",
            "description": "Read a file of the workspace.",
            "parameters": { "type": "object", "required": ["path"], "properties": { "path": { "type": "string" } } }
        } }])
    );
    let messages = &seen[1].body["messages"];
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_A");
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["arguments"],
        "{\"path\":\"a.txt\"}"
    );
    assert_eq!(
        messages[3],
        json!({ "role": "tool", "tool_call_id": "call_A", "content": "{\"text\":\"hoot a.txt\"}" })
    );
    assert_eq!(messages[4]["tool_call_id"], "call_B");
    assert!(
        messages[4]["content"]
            .as_str()
            .unwrap()
            .contains("invalid_arguments")
    );
}

#[tokio::test]
async fn anthropic_sends_tools_and_answers_tool_use_with_tool_result_blocks() {
    let calls = json!({
        "id": "msg_0", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            { "type": "text", "text": "Reading both." },
            { "type": "tool_use", "id": "toolu_1", "name": "workspace_read", "input": { "path": "a.txt" } },
            { "type": "tool_use", "id": "toolu_2", "name": "workspace_read", "input": {} }
        ],
        "stop_reason": "tool_use",
        "usage": { "input_tokens": 30, "output_tokens": 8 }
    });
    let stub = Stub::start(vec![
        reply(200, calls),
        reply(200, anthropic_answer(r#"{"text": "owls hoot"}"#)),
    ])
    .await;
    let result = run_agent(&anthropic_spec(stub.url(""))).await;
    assert_calls(&result);
    let seen = stub.requests();
    assert_eq!(
        seen[0].body["tools"],
        json!([{
            "name": "workspace_read",
            "description": "Read a file of the workspace.",
            "input_schema": { "type": "object", "required": ["path"], "properties": { "path": { "type": "string" } } }
        }])
    );
    let messages = &seen[1].body["messages"];
    assert_eq!(
        messages[1],
        json!({ "role": "assistant", "content": [
            { "type": "text", "text": "Reading both." },
            { "type": "tool_use", "id": "toolu_1", "name": "workspace_read", "input": { "path": "a.txt" } },
            { "type": "tool_use", "id": "toolu_2", "name": "workspace_read", "input": {} }
        ] })
    );
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(
        messages[2]["content"][0],
        json!({ "type": "tool_result", "tool_use_id": "toolu_1", "content": "{\"text\":\"hoot a.txt\"}", "is_error": false })
    );
    assert_eq!(messages[2]["content"][1]["tool_use_id"], "toolu_2");
    assert_eq!(messages[2]["content"][1]["is_error"], true);
}

#[tokio::test]
async fn gemini_sends_function_declarations_and_answers_function_calls() {
    let calls = json!({
        "candidates": [{ "content": { "role": "model", "parts": [
            { "functionCall": { "name": "workspace_read", "args": { "path": "a.txt" } } },
            { "functionCall": { "name": "workspace_read", "args": {} } }
        ] }, "finishReason": "STOP" }],
        "usageMetadata": { "promptTokenCount": 12, "candidatesTokenCount": 4, "totalTokenCount": 16 }
    });
    let stub = Stub::start(vec![
        reply(200, calls),
        reply(200, gemini_answer(r#"{"text": "owls hoot"}"#)),
    ])
    .await;
    let result = run_agent(&gemini_spec(stub.url(""))).await;
    assert_calls(&result);
    let seen = stub.requests();
    assert_eq!(
        seen[0].body["tools"],
        json!([{ "functionDeclarations": [{
            "name": "workspace_read",
            "description": "Read a file of the workspace.",
            "parameters": { "type": "object", "required": ["path"], "properties": { "path": { "type": "string" } } }
        }] }])
    );
    assert!(
        seen[0].body["generationConfig"]
            .get("responseMimeType")
            .is_none(),
        "no JSON response type with function calling"
    );
    let contents = &seen[1].body["contents"];
    assert_eq!(
        contents[1],
        json!({ "role": "model", "parts": [
            { "functionCall": { "name": "workspace_read", "args": { "path": "a.txt" } } },
            { "functionCall": { "name": "workspace_read", "args": {} } }
        ] })
    );
    assert_eq!(
        contents[2]["parts"][0],
        json!({ "functionResponse": { "name": "workspace_read", "response": { "content": { "text": "hoot a.txt" } } } })
    );
    assert!(
        contents[2]["parts"][1]["functionResponse"]["response"]["content"]["error"]["code"]
            == "invalid_arguments"
    );
}
