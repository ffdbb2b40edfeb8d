//! Each adapter against a stub of its provider on 127.0.0.1 that checks the request (path,
//! headers, body) and answers in that provider's wire format; task node runs end to end through
//! `run_node` (schema repair included); and the guardrail that keeps process spawning out of
//! this crate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use runledger_contracts::events::{ErrorInfo, ToolCalled, ToolOutcome};
use runledger_contracts::flowchart::{Node, NodeType};
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::model::{ModelSpec, ProviderKind, VertexSettings};
use runledger_contracts::time::Timestamp;
use runledger_orchestrator::NodeOutcome;
use runledger_orchestrator::decide::NodeResult;
use runledger_orchestrator::executor::{NodeWork, Providers, run_node};
use runledger_orchestrator::provider::ScriptedProvider;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::provider_for;

mod tools;

// ---- the stub -----------------------------------------------------------------------------

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Lower-cased names.
    headers: HashMap<String, String>,
    body: Value,
}

/// A canned answer: status, body, and how long to wait before sending it.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that answers with `replies` in order (the last repeats)
/// and records every request. One request per connection (`Connection: close`).
struct Stub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    async fn start(replies: Vec<Reply>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut served = 0usize;
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let r = replies[served.min(replies.len() - 1)].clone();
                served += 1;
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    log.lock().unwrap().push(request);
                    tokio::time::sleep(r.delay).await;
                    let head = format!(
                        "HTTP/1.1 {} Stub\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        r.status,
                        r.body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(r.body.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Stub { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[header_end..]).unwrap_or(Value::Null);
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

// ---- fixtures -----------------------------------------------------------------------------

const OPENAI_KEY: &str = "sk-test-openai-5f2c9d";
const ANTHROPIC_KEY: &str = "sk-ant-test-77aa01";
const GEMINI_KEY: &str = "AIzaTestGemini0042";
const VERTEX_TOKEN: &str = "ya29.test-vertex-token";
const KEYS: [&str; 4] = [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, VERTEX_TOKEN];

/// Sets the test credentials once, before any test goes on (so no test reads the environment
/// while another writes it).
fn credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: every test calls this first, and `Once` makes the others wait until it is done,
        // so nothing reads the environment concurrently.
        unsafe {
            std::env::set_var("RUNLEDGER_TEST_OPENAI_KEY", OPENAI_KEY);
            std::env::set_var("RUNLEDGER_TEST_ANTHROPIC_KEY", ANTHROPIC_KEY);
            std::env::set_var("RUNLEDGER_TEST_GEMINI_KEY", GEMINI_KEY);
            std::env::set_var("RUNLEDGER_TEST_VERTEX_TOKEN", VERTEX_TOKEN);
        }
    });
}

fn openai_spec(base_url: String) -> ModelSpec {
    let mut s = ModelSpec::new("gpt", ProviderKind::OpenaiCompatible, "gpt-4o-mini");
    s.base_url = Some(base_url);
    s.api_key_env = Some("RUNLEDGER_TEST_OPENAI_KEY".into());
    s.settings.temperature = Some(0.2);
    s.settings.reasoning_effort = Some("low".into());
    s.settings.max_tokens = Some(500);
    s
}

fn anthropic_spec(base_url: String) -> ModelSpec {
    let mut s = ModelSpec::new("claude", ProviderKind::Anthropic, "claude-sonnet-4-5");
    s.base_url = Some(base_url);
    s.api_key_env = Some("RUNLEDGER_TEST_ANTHROPIC_KEY".into());
    s.settings.max_tokens = Some(3000);
    s.settings.thinking_budget_tokens = Some(1024);
    s
}

fn gemini_spec(base_url: String) -> ModelSpec {
    let mut s = ModelSpec::new("gem", ProviderKind::Gemini, "gemini-2.5-flash");
    s.base_url = Some(base_url);
    s.api_key_env = Some("RUNLEDGER_TEST_GEMINI_KEY".into());
    s.settings.thinking_budget_tokens = Some(0);
    s
}

fn openai_answer(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": content } }],
        "usage": { "prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38 }
    })
}

fn anthropic_answer(text: &str) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{ "type": "thinking", "thinking": "hmm", "signature": "x" }, { "type": "text", "text": text }],
        "stop_reason": "end_turn",
        "usage": { "input_tokens": 40, "output_tokens": 12 }
    })
}

fn gemini_answer(text: &str) -> Value {
    json!({
        "candidates": [{ "content": { "role": "model", "parts": [{ "text": "thinking...", "thought": true }, { "text": text }] }, "finishReason": "STOP" }],
        "usageMetadata": { "promptTokenCount": 22, "candidatesTokenCount": 5, "thoughtsTokenCount": 3, "totalTokenCount": 30 },
        "modelVersion": "gemini-2.5-flash"
    })
}

fn task(model: &str, schema: Option<Value>, repairs: Option<u32>) -> Node {
    let mut node = Node::new("draft", NodeType::Task);
    node.model = Some(model.to_owned());
    node.prompt = Some("Write about {{ inputs.topic }}.".into());
    node.output_schema = schema.map(|s| s.as_object().unwrap().clone());
    node.schema_repair_attempts = repairs;
    node
}

fn text_schema() -> Value {
    json!({ "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } })
}

fn work(node: Node, deadline: Option<Timestamp>) -> NodeWork {
    NodeWork {
        run_id: RunId::new_v7(),
        node_run_id: NodeRunId::new_v7(),
        attempt: 1,
        ordinal: 0,
        deadline,
        input_context: json!({ "inputs": { "topic": "owls" } }),
        node: Arc::new(node),
        workspace: None,
        git_policy: None,
        recorded_calls: Vec::new(),
        workspace_holder: None,
    }
}

async fn run(spec: &ModelSpec, node: Node) -> NodeResult {
    run_with_deadline(spec, node, None).await
}

async fn run_with_deadline(
    spec: &ModelSpec,
    node: Node,
    deadline: Option<Timestamp>,
) -> NodeResult {
    credentials();
    let scripted = ScriptedProvider::new();
    let mut providers = Providers::scripted(scripted.clone());
    providers.insert(spec.name.clone(), provider_for(spec, &scripted).unwrap());
    run_node(&providers, &work(node, deadline)).await
}

fn failure(result: &NodeResult) -> &ErrorInfo {
    match &result.outcome {
        NodeOutcome::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn output(result: &NodeResult) -> &Value {
    match &result.outcome {
        NodeOutcome::Succeeded { output, .. } => output,
        other => panic!("expected success, got {other:?}"),
    }
}

/// No credential anywhere in what reaches the ledger: tool calls and the outcome.
fn assert_no_key(result: &NodeResult) {
    let recorded = serde_json::to_string(&(&result.tool_calls, &result.outcome)).unwrap();
    for key in KEYS {
        assert!(
            !recorded.contains(key),
            "a credential reached the record: {recorded}"
        );
    }
}

fn only_call(result: &NodeResult) -> &ToolCalled {
    assert_eq!(result.tool_calls.len(), 1, "{:?}", result.tool_calls);
    &result.tool_calls[0]
}

// ---- OpenAI-compatible ----------------------------------------------------------------------

#[tokio::test]
async fn openai_success_records_tokens_and_sends_the_documented_request() {
    let stub = Stub::start(vec![reply(200, openai_answer(r#"{"text": "owls hoot"}"#))]).await;
    let spec = openai_spec(stub.url("/v1"));
    let result = run(&spec, task("gpt", Some(text_schema()), None)).await;
    assert_eq!(output(&result), &json!({ "text": "owls hoot" }));

    let call = only_call(&result);
    assert_eq!(
        (call.tool.as_str(), call.outcome),
        ("provider", ToolOutcome::Ok)
    );
    assert_eq!(
        call.idempotency_key,
        format!("{}:provider:1", result.node_run_id)
    );
    let p = call.provider.as_ref().unwrap();
    assert_eq!(
        (p.provider.as_str(), p.model.as_str()),
        ("openai_compatible", "gpt")
    );
    assert_eq!((p.input_tokens, p.output_tokens), (Some(31), Some(7)));
    assert_no_key(&result);

    let seen = stub.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(r.headers["authorization"], format!("Bearer {OPENAI_KEY}"));
    assert_eq!(r.body["model"], "gpt-4o-mini");
    assert_eq!(r.body["messages"][0]["role"], "system");
    assert!(
        r.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("\"required\":[\"text\"]"),
        "the schema is in the system prompt"
    );
    assert_eq!(
        r.body["messages"][1],
        json!({ "role": "user", "content": "Write about owls." })
    );
    assert_eq!(r.body["response_format"]["type"], "json_schema");
    assert_eq!(
        r.body["response_format"]["json_schema"]["schema"],
        text_schema()
    );
    assert_eq!(
        (
            r.body["temperature"].as_f64(),
            r.body["reasoning_effort"].as_str()
        ),
        (Some(0.2), Some("low"))
    );
    assert_eq!(r.body["max_completion_tokens"], 500);
}

#[tokio::test]
async fn openai_without_schema_asks_for_a_json_object_and_needs_no_key() {
    let stub = Stub::start(vec![reply(200, openai_answer("```json\n[1, 2]\n```"))]).await;
    let mut spec = openai_spec(stub.url("/v1"));
    spec.api_key_env = None;
    spec.settings = Default::default();
    let result = run(&spec, task("gpt", None, None)).await;
    assert_eq!(
        output(&result),
        &json!([1, 2]),
        "one Markdown fence is tolerated"
    );
    let r = &stub.requests()[0];
    assert_eq!(r.body["response_format"], json!({ "type": "json_object" }));
    assert!(!r.headers.contains_key("authorization"));
    assert!(r.body.get("temperature").is_none() && r.body.get("reasoning_effort").is_none());
}

// ---- Anthropic ------------------------------------------------------------------------------

#[tokio::test]
async fn anthropic_success_records_tokens_and_sends_the_documented_request() {
    let stub = Stub::start(vec![reply(
        200,
        anthropic_answer(r#"{"text": "owls hunt"}"#),
    )])
    .await;
    let spec = anthropic_spec(stub.url(""));
    let result = run(&spec, task("claude", Some(text_schema()), None)).await;
    assert_eq!(
        output(&result),
        &json!({ "text": "owls hunt" }),
        "thinking blocks are left out"
    );
    let p = only_call(&result).provider.clone().unwrap();
    assert_eq!(
        (
            p.provider.as_str(),
            p.model.as_str(),
            p.input_tokens,
            p.output_tokens
        ),
        ("anthropic", "claude", Some(40), Some(12))
    );
    assert_no_key(&result);

    let r = &stub.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(r.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert!(!r.headers.contains_key("authorization"));
    assert_eq!(r.body["model"], "claude-sonnet-4-5");
    assert_eq!(r.body["max_tokens"], 3000);
    assert_eq!(
        r.body["thinking"],
        json!({ "type": "enabled", "budget_tokens": 1024 })
    );
    assert!(r.body["system"].as_str().unwrap().contains("JSON Schema"));
    assert_eq!(
        r.body["messages"],
        json!([{ "role": "user", "content": "Write about owls." }])
    );
}

// ---- Gemini -----------------------------------------------------------------------------------

#[tokio::test]
async fn gemini_developer_api_success_records_tokens_and_sends_the_documented_request() {
    let stub = Stub::start(vec![reply(200, gemini_answer(r#"{"text": "owls see"}"#))]).await;
    let spec = gemini_spec(stub.url(""));
    let result = run(&spec, task("gem", Some(text_schema()), None)).await;
    assert_eq!(
        output(&result),
        &json!({ "text": "owls see" }),
        "thought parts are left out"
    );
    let p = only_call(&result).provider.clone().unwrap();
    assert_eq!(
        (p.provider.as_str(), p.input_tokens, p.output_tokens),
        ("gemini", Some(22), Some(8)),
        "output = candidates + thoughts"
    );
    assert_no_key(&result);

    let r = &stub.requests()[0];
    assert_eq!(r.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(r.headers["x-goog-api-key"], GEMINI_KEY);
    assert!(!r.headers.contains_key("authorization"));
    assert_eq!(
        r.body["contents"],
        json!([{ "role": "user", "parts": [{ "text": "Write about owls." }] }])
    );
    assert_eq!(
        r.body["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(
        r.body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        0
    );
    assert!(
        r.body["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
}

#[tokio::test]
async fn gemini_on_vertex_uses_the_project_path_and_a_bearer_token() {
    let stub = Stub::start(vec![reply(200, gemini_answer(r#"{"text": "ok"}"#))]).await;
    let mut spec = gemini_spec(stub.url(""));
    spec.api_key_env = Some("RUNLEDGER_TEST_VERTEX_TOKEN".into());
    spec.settings.vertex = Some(VertexSettings {
        project: "acme-research".into(),
        location: "europe-west4".into(),
    });
    spec.validate().unwrap();
    let result = run(&spec, task("gem", None, None)).await;
    assert_eq!(output(&result), &json!({ "text": "ok" }));
    assert_no_key(&result);
    let r = &stub.requests()[0];
    assert_eq!(
        r.path,
        "/v1/projects/acme-research/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(r.headers["authorization"], format!("Bearer {VERTEX_TOKEN}"));
    assert!(!r.headers.contains_key("x-goog-api-key"));
}

// ---- failures, every adapter ------------------------------------------------------------------

fn all_specs(base: &str) -> Vec<ModelSpec> {
    vec![
        openai_spec(format!("{base}/v1")),
        anthropic_spec(base.to_owned()),
        gemini_spec(base.to_owned()),
    ]
}

fn model_of(spec: &ModelSpec) -> &str {
    &spec.name
}

#[tokio::test]
async fn a_5xx_fails_the_node_at_once_as_retryable_provider_unavailable() {
    let stub = Stub::start(vec![reply(
        503,
        json!({ "error": { "message": "overloaded, try later" } }),
    )])
    .await;
    for spec in all_specs(&stub.url("")) {
        let result = run(&spec, task(model_of(&spec), Some(text_schema()), Some(3))).await;
        let e = failure(&result);
        assert_eq!(
            (e.code.as_str(), e.retryable),
            ("provider_unavailable", true),
            "{spec:?}: {e:?}"
        );
        assert!(
            e.message.contains("HTTP 503") && e.message.contains("overloaded"),
            "{}",
            e.message
        );
        assert_eq!(e.details.as_ref().unwrap()["status"], 503);
        let call = only_call(&result);
        assert_eq!(
            call.outcome,
            ToolOutcome::Error,
            "one call, no repair and no fallback after a provider error"
        );
        assert_eq!(call.error.as_ref().unwrap().code, "provider_unavailable");
        assert_no_key(&result);
    }
    assert_eq!(stub.requests().len(), 3, "exactly one request per adapter");
}

#[tokio::test]
async fn connection_refused_is_provider_unavailable() {
    let addr = closed_port().await;
    for spec in all_specs(&format!("http://{addr}")) {
        let result = run(&spec, task(model_of(&spec), None, None)).await;
        let e = failure(&result);
        assert_eq!(
            (e.code.as_str(), e.retryable),
            ("provider_unavailable", true),
            "{e:?}"
        );
        assert!(
            e.message.contains(&addr.to_string()),
            "names the endpoint: {}",
            e.message
        );
        assert_eq!(only_call(&result).outcome, ToolOutcome::Error);
    }
}

#[tokio::test]
async fn a_401_is_provider_auth_failed_and_the_echoed_key_is_not_kept() {
    let echo = format!("Incorrect API key provided: {OPENAI_KEY} {ANTHROPIC_KEY} {GEMINI_KEY}");
    let stub = Stub::start(vec![reply(401, json!({ "error": { "message": echo } }))]).await;
    for spec in all_specs(&stub.url("")) {
        let result = run(&spec, task(model_of(&spec), None, None)).await;
        let e = failure(&result);
        assert_eq!(
            (e.code.as_str(), e.retryable),
            ("provider_auth_failed", false),
            "{e:?}"
        );
        assert!(
            e.message.contains(spec.api_key_env.as_deref().unwrap()),
            "names the variable: {}",
            e.message
        );
        assert_no_key(&result);
    }
}

#[tokio::test]
async fn other_4xx_are_rejected_with_the_provider_message_scrubbed() {
    let stub = Stub::start(vec![reply(
        400,
        json!({ "error": { "message": format!("bad field; your key {OPENAI_KEY}") } }),
    )])
    .await;
    let spec = openai_spec(stub.url("/v1"));
    let result = run(&spec, task("gpt", None, None)).await;
    let e = failure(&result);
    assert_eq!((e.code.as_str(), e.retryable), ("provider_rejected", false));
    assert!(
        e.message.contains("bad field") && e.message.contains("[redacted]"),
        "{}",
        e.message
    );
    assert_no_key(&result);
}

#[tokio::test]
async fn a_429_is_retryable_and_a_refusal_or_malformed_body_is_not() {
    let stub = Stub::start(vec![
        reply(429, json!({ "error": { "message": "slow down" } })),
        reply(200, json!({ "choices": [{ "message": { "role": "assistant", "content": null, "refusal": "I can't help with that." } }] })),
        reply(200, json!({ "unexpected": true })),
    ])
    .await;
    let spec = openai_spec(stub.url("/v1"));
    let mut codes = Vec::new();
    for _ in 0..3 {
        let result = run(&spec, task("gpt", None, None)).await;
        let e = failure(&result);
        codes.push((e.code.clone(), e.retryable));
    }
    let expected = [
        ("provider_rate_limited", true),
        ("provider_refused", false),
        ("provider_bad_response", false),
    ];
    assert_eq!(codes, expected.map(|(c, r)| (c.to_owned(), r)));
}

#[tokio::test]
async fn a_missing_key_variable_is_a_typed_error_naming_it() {
    let mut spec = openai_spec("http://127.0.0.1:9/v1".into());
    spec.api_key_env = Some("RUNLEDGER_TEST_NEVER_SET".into());
    let result = run(&spec, task("gpt", None, None)).await;
    let e = failure(&result);
    assert_eq!(
        (e.code.as_str(), e.retryable),
        ("provider_credentials_missing", false)
    );
    assert!(
        e.message.contains("RUNLEDGER_TEST_NEVER_SET"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_request_past_the_node_deadline_times_out() {
    let slow = Reply {
        status: 200,
        body: openai_answer("{}").to_string(),
        delay: Duration::from_secs(5),
    };
    let stub = Stub::start(vec![slow]).await;
    let spec = openai_spec(stub.url("/v1"));
    let deadline = Timestamp::from_unix_micros(Timestamp::now().unix_micros() + 300_000);
    let clock = std::time::Instant::now();
    let result = run_with_deadline(&spec, task("gpt", None, None), deadline).await;
    assert!(
        clock.elapsed() < Duration::from_secs(3),
        "stopped at the deadline, not the stub's delay"
    );
    let e = failure(&result);
    assert_eq!(
        (e.code.as_str(), e.retryable),
        ("provider_timeout", true),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_non_json_answer_without_schema_is_invalid_output() {
    let stub = Stub::start(vec![reply(200, anthropic_answer("Sure! Owls are birds."))]).await;
    let spec = anthropic_spec(stub.url(""));
    let result = run(&spec, task("claude", None, None)).await;
    let e = failure(&result);
    assert_eq!(
        (e.code.as_str(), e.retryable),
        ("invalid_output", false),
        "{e:?}"
    );
    let call = only_call(&result);
    assert_eq!(call.outcome, ToolOutcome::Error);
    assert_eq!(
        call.provider.as_ref().unwrap().output_tokens,
        Some(12),
        "tokens are recorded for rejected answers too"
    );
    assert_eq!(stub.requests().len(), 1, "no repair without a schema");
}

// ---- schema repair, end to end ----------------------------------------------------------------

#[tokio::test]
async fn schema_repair_feeds_the_errors_back_and_records_every_call() {
    let stub = Stub::start(vec![
        reply(200, openai_answer("Here you go: text = owls")),
        reply(200, openai_answer(r#"{"text": 42}"#)),
        reply(200, openai_answer(r#"{"text": "owls, fixed"}"#)),
    ])
    .await;
    let spec = openai_spec(stub.url("/v1"));
    let result = run(&spec, task("gpt", Some(text_schema()), Some(2))).await;
    assert_eq!(output(&result), &json!({ "text": "owls, fixed" }));

    let keys: Vec<&str> = result
        .tool_calls
        .iter()
        .map(|c| c.idempotency_key.as_str())
        .collect();
    let id = result.node_run_id;
    assert_eq!(
        keys,
        [
            format!("{id}:provider:1"),
            format!("{id}:provider:2"),
            format!("{id}:provider:3")
        ]
    );
    let outcomes: Vec<ToolOutcome> = result.tool_calls.iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [ToolOutcome::Error, ToolOutcome::Error, ToolOutcome::Ok]
    );
    let second = result.tool_calls[1].error.as_ref().unwrap();
    assert_eq!(second.code, "output_schema_invalid");
    assert_eq!(
        second.details.as_ref().unwrap()["violations"][0]["path"],
        "/text"
    );
    assert!(
        result
            .tool_calls
            .iter()
            .all(|c| c.provider.as_ref().unwrap().input_tokens == Some(31))
    );
    let hashes: std::collections::HashSet<_> =
        result.tool_calls.iter().map(|c| c.input_hash).collect();
    assert_eq!(
        hashes.len(),
        3,
        "each call's input differs (the repairs are part of it)"
    );
    assert_no_key(&result);

    let seen = stub.requests();
    assert_eq!(seen.len(), 3);
    let turns = seen[2].body["messages"].as_array().unwrap();
    let roles: Vec<&str> = turns.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "user"]
    );
    assert_eq!(turns[2]["content"], "Here you go: text = owls");
    assert!(
        turns[3]["content"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{}",
        turns[3]
    );
    assert_eq!(turns[4]["content"], r#"{"text":42}"#);
    let feedback = turns[5]["content"].as_str().unwrap();
    assert!(
        feedback.contains("/text") && feedback.contains("string"),
        "{feedback}"
    );
}

#[tokio::test]
async fn exhausted_repairs_fail_with_the_violations_in_the_error() {
    let stub = Stub::start(vec![reply(200, gemini_answer(r#"{"title": "no text"}"#))]).await;
    let spec = gemini_spec(stub.url(""));
    let result = run(&spec, task("gem", Some(text_schema()), Some(1))).await;
    let e = failure(&result);
    assert_eq!(
        (e.code.as_str(), e.retryable),
        ("output_schema_invalid", false)
    );
    let details = e.details.as_ref().unwrap();
    assert_eq!(details["repair_attempts"], 1);
    assert_eq!(details["provider_calls"], 2);
    assert!(
        details["violations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("text"),
        "{details}"
    );
    assert_eq!(result.tool_calls.len(), 2);
    assert_eq!(stub.requests().len(), 2, "the first call and one repair");
    // The second request carries the first answer and the feedback.
    let contents = stub.requests()[1].body["contents"]
        .as_array()
        .unwrap()
        .clone();
    let roles: Vec<&str> = contents
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "model", "user"]);
}

// ---- guardrail ----------------------------------------------------------------------------------

/// Ways to start a process, split so this file does not match itself.
const SPAWN_PATTERNS: [&str; 10] = [
    concat!("std::pro", "cess::Command"),
    concat!("proc", "ess::Command"),
    concat!("tokio::pro", "cess"),
    concat!("Comm", "and::new("),
    concat!("proc", "ess::Stdio"),
    concat!("use std::pro", "cess"),
    concat!(".spa", "wn()"),
    concat!("exe", "cvp("),
    concat!("posix_", "spawn"),
    concat!("libc::", "fork"),
];

/// `file:line: pattern` for every line of `text` that matches a spawn pattern.
fn spawn_sites(name: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for pattern in SPAWN_PATTERNS {
            if line.contains(pattern) {
                found.push(format!("{name}:{}: `{pattern}`", n + 1));
            }
        }
    }
    found
}

/// Every `.rs` file under `root`.
fn rust_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The only files of the codebase that may start a process: the command tool's spawner, the
/// git runner and the stdio MCP transport, all in `runledger-tools` (docs/tools.md).
const SPAWN_ALLOWED: [&str; 3] = [
    "tools/src/command/spawn.rs",
    "tools/src/git/runner.rs",
    "tools/src/mcp/stdio.rs",
];

/// Executors call providers over HTTP only, and the engine never starts a process. This fails
/// when any source file of the gateway (the providers included), the orchestrator or the tools
/// crate gains a way to start a process, except the files of [`SPAWN_ALLOWED`].
#[test]
fn no_source_file_of_the_gateway_spawns_a_process() {
    // The scan itself catches what it should.
    let sample = [
        "let out = std::pro",
        "cess::Comm",
        "and::new(\"claude\").spa",
        "wn();",
    ]
    .concat();
    assert_eq!(
        spawn_sites("sample.rs", &sample).len(),
        4,
        "{:?}",
        spawn_sites("sample.rs", &sample)
    );
    assert!(
        spawn_sites(
            "ok.rs",
            "tokio::spawn(async move { client.post(url).send().await });"
        )
        .is_empty()
    );

    let workspace = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let mut files = Vec::new();
    for krate in ["executor-gateway", "orchestrator", "tools"] {
        files.extend(rust_files(&workspace.join(krate).join("src")));
    }
    for covered in [
        "executor-gateway/src/providers/mod.rs",
        "executor-gateway/src/providers/openai.rs",
        "executor-gateway/src/providers/anthropic.rs",
        "executor-gateway/src/providers/gemini.rs",
        "orchestrator/src/engine.rs",
        "orchestrator/src/provider.rs",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(covered)),
            "the scan covers {covered}"
        );
    }
    let mut found = Vec::new();
    for file in &files {
        let name = file.strip_prefix(&workspace).unwrap().display().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let sites = spawn_sites(&name, &text);
        if SPAWN_ALLOWED.contains(&name.as_str()) {
            assert!(
                !sites.is_empty(),
                "{name} is allowed to spawn but no longer does: update SPAWN_ALLOWED"
            );
        } else {
            found.extend(sites);
        }
    }
    assert!(
        found.is_empty(),
        "process spawning outside {SPAWN_ALLOWED:?} (providers are HTTP only; the engine never spawns):\n{}",
        found.join("\n")
    );
}
