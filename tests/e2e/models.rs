//! The model registry end to end: `runledger models create` registers a model served by a local
//! OpenAI-compatible stub, a flowchart's task node uses it through `runledger run --wait`, and
//! the ledger records each provider call (provider, model, tokens) and never the API key.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use runledger_contracts::events::DomainEvent;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::testing::{TestLedger, test_database_url};
use serde_json::{Value, json};

const KEY_VAR: &str = "RUNLEDGER_E2E_STUB_KEY";
const KEY: &str = "sk-e2e-stub-4b1d9f";

/// A request the stub saw: path, authorization header, JSON body.
type Seen = (String, Option<String>, Value);

/// An OpenAI-compatible chat-completions stub on 127.0.0.1: answers with `answers` in order
/// (the last repeats), one request per connection.
fn stub(answers: Vec<&'static str>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line
                .split(' ')
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let length: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.lock()
                .unwrap()
                .push((path, headers.get("authorization").cloned(), body));
            let content = answers[i.min(answers.len() - 1)];
            let reply = json!({
                "id": format!("chatcmpl-{i}"),
                "object": "chat.completion",
                "model": "stub-model",
                "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": content } }],
                "usage": { "prompt_tokens": 17, "completion_tokens": 4 + i, "total_tokens": 21 + i }
            })
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (base, seen)
}

fn runledger(schema: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(args)
        .current_dir(super::root())
        .env("RUNLEDGER_DATABASE_URL", test_database_url())
        .env("RUNLEDGER_DATABASE_SCHEMA", schema)
        .env(KEY_VAR, KEY)
        .output()
        .expect("run the runledger binary")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_model_runs_a_task_node_over_http_with_schema_repair() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    // The first answer misses the schema (`text` is a number), the repair call fixes it.
    let (base_url, seen) = stub(vec![
        r#"{"text": 42}"#,
        r#"{"text": "owls are silent flyers"}"#,
    ]);

    // Bad input names the field and writes nothing.
    let out = runledger(
        &schema,
        &[
            "models",
            "create",
            "stubgpt",
            "--provider",
            "openai_compatible",
            "--model-id",
            "stub-model",
            "--api-key-env",
            KEY,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = super::stderr(&out);
    assert!(
        err.contains("api_key_env") && err.contains("[invalid_value]") && !err.contains(KEY),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = runledger(
        &schema,
        &[
            "models",
            "create",
            "stubgpt",
            "--provider",
            "openai_compatible",
            "--model-id",
            "stub-model",
            "--base-url",
            &base_url,
            "--api-key-env",
            KEY_VAR,
            "--temperature",
            "0",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        super::stdout(&out),
        super::stderr(&out)
    );
    let created: Value = serde_json::from_str(super::stdout(&out).trim()).unwrap();
    assert_eq!(
        (
            created["version"].as_u64(),
            created["model"]["provider"].as_str()
        ),
        (Some(1), Some("openai_compatible"))
    );
    let out = runledger(
        &schema,
        &[
            "models",
            "create",
            "stubgpt",
            "--provider",
            "openai_compatible",
            "--model-id",
            "other",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let conflict: Value = serde_json::from_str(super::stdout(&out).trim()).unwrap();
    assert_eq!(conflict["error"]["code"], "model_exists");
    let out = runledger(&schema, &["models", "list", "--json"]);
    let listed: Value = serde_json::from_str(super::stdout(&out).trim()).unwrap();
    assert_eq!(listed["models"][0]["name"], "stubgpt");

    let dir = std::env::temp_dir().join(format!("runledger-e2e-models-{}", RunId::new_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let flow = dir.join("stub-flow.yaml");
    std::fs::write(
        &flow,
        "name: stub-flow\nnodes:\n  - { id: start, type: start }\n  - id: draft\n    type: task\n    model: stubgpt\n    prompt: \"Write about {{ inputs.topic }}\"\n    output_schema: { type: object, required: [text], properties: { text: { type: string } } }\n    schema_repair_attempts: 1\n  - { id: done, type: end }\nconnectors:\n  - { id: c1, from: start, to: draft }\n  - { id: c2, from: draft, to: done }\n",
    )
    .unwrap();
    let out = runledger(
        &schema,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            r#"{"topic":"owls"}"#,
            "--wait",
            "--json",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}{}",
        super::stdout(&out),
        super::stderr(&out)
    );
    let summary: Value = serde_json::from_str(super::stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "completed");
    assert_eq!(
        summary["output"],
        json!({ "text": "owls are silent flyers" })
    );

    // What the stub received: two calls, the key in the header, the repair turn in the second.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (path, auth, body) in &seen {
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(auth.as_deref(), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(body["model"], "stub-model");
        assert_eq!(body["temperature"], 0.0);
    }
    assert_eq!(seen[0].2["messages"][1]["content"], "Write about owls");
    assert_eq!(
        seen[1].2["messages"].as_array().unwrap().len(),
        4,
        "system, prompt, rejected answer, feedback"
    );

    // What the ledger holds: one ToolCalled per call, with provider, model and tokens.
    let run_id = summary["run_id"].as_str().unwrap();
    let stream = StreamId::new(format!("run-{run_id}")).unwrap();
    let events = ledger.store.read_stream(&stream, 1, 10_000).await.unwrap();
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e.decode().unwrap() {
            DomainEvent::ToolCalled(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls.len(),
        2,
        "one ToolCalled per provider call, the repair call included"
    );
    for (i, call) in calls.iter().enumerate() {
        let p = call.provider.as_ref().unwrap();
        assert_eq!(
            (p.provider.as_str(), p.model.as_str()),
            ("openai_compatible", "stubgpt")
        );
        assert_eq!(
            (p.input_tokens, p.output_tokens),
            (Some(17), Some(4 + i as u64))
        );
        assert!(
            call.idempotency_key
                .ends_with(&format!(":provider:{}", i + 1)),
            "{}",
            call.idempotency_key
        );
    }
    assert_eq!(
        calls[0].error.as_ref().unwrap().code,
        "output_schema_invalid"
    );
    assert!(calls[1].error.is_none());
    // Read by stream (not `read_all`, which lags behind other tests' open transactions).
    let model_stream = StreamId::new("model-stubgpt").unwrap();
    let model_events = ledger
        .store
        .read_stream(&model_stream, 1, 100)
        .await
        .unwrap();
    assert_eq!(model_events.len(), 1);
    let everything: Vec<String> = events
        .iter()
        .chain(&model_events)
        .map(|e| e.payload.to_string())
        .collect();
    assert!(
        everything.iter().any(|p| p.contains(KEY_VAR)),
        "the variable's name is recorded on ModelCreated"
    );
    assert!(
        everything.iter().all(|p| !p.contains(KEY)),
        "the key never reaches the ledger"
    );
    ledger.drop_schema().await.unwrap();
}

/// A model answering with U+0000 over HTTP: the node fails once with `invalid_output`, the run
/// ends, and the model is called exactly once (the ledger cannot store the answer; retrying
/// the append or the call could never help).
#[tokio::test(flavor = "multi_thread")]
async fn a_model_answer_holding_u0000_fails_the_node_once_through_the_binary() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let (base_url, seen) = stub(vec![r#"{"text": "owls\u0000"}"#]);
    let out = runledger(
        &schema,
        &[
            "models",
            "create",
            "nulgpt",
            "--provider",
            "openai_compatible",
            "--model-id",
            "stub-model",
            "--base-url",
            &base_url,
            "--api-key-env",
            KEY_VAR,
        ],
    );
    assert!(out.status.success(), "{}", super::stderr(&out));
    let dir = std::env::temp_dir().join(format!("runledger-e2e-nul-{}", RunId::new_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let flow = dir.join("nul-flow.yaml");
    std::fs::write(
        &flow,
        "name: nul-flow\nnodes:\n  - { id: start, type: start }\n  - id: draft\n    type: task\n    model: nulgpt\n    retry: { max_attempts: 3, backoff_ms: 10 }\n    output_schema: { type: object, required: [text], properties: { text: { type: string } } }\n  - { id: done, type: end }\nconnectors:\n  - { id: c1, from: start, to: draft }\n  - { id: c2, from: draft, to: done }\n",
    )
    .unwrap();
    let out = runledger(
        &schema,
        &["run", flow.to_str().unwrap(), "--wait", "--json"],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !out.status.success(),
        "{}{}",
        super::stdout(&out),
        super::stderr(&out)
    );
    let summary: Value = serde_json::from_str(super::stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "failed", "{summary}");
    let run_id = summary["run_id"].as_str().unwrap();
    let stream = StreamId::new(format!("run-{run_id}")).unwrap();
    let events = ledger.store.read_stream(&stream, 1, 10_000).await.unwrap();
    let failures: Vec<_> = events
        .iter()
        .filter_map(|e| match e.decode().unwrap() {
            DomainEvent::NodeFailed(f) => Some(f.error),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "invalid_output is not retried: {failures:?}"
    );
    assert_eq!(failures[0].code, "invalid_output");
    assert!(
        failures[0].message.contains("$.text"),
        "{}",
        failures[0].message
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "the model is called once");
    ledger.drop_schema().await.unwrap();
}
