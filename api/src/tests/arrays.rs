//! Arrays where objects are meant, at any depth (issue 10 item 10). serde reads a struct from
//! an array by position, so `{"spec": ["m", "scripted", "x"]}` registered a model. Like a
//! schemathesis negative run, each object of a valid body (found by walking it) is replaced by
//! the array of its values, exactly what serde would have taken; every such body must be a
//! 4xx envelope naming the field, and must write nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Backend;
use super::TestServer;

/// Every object in `body` (the body itself included) with its path as the API names it
/// (`spec.settings`, `definition.nodes[1]`), skipping paths under `free` (fields of any JSON
/// type, where an array is a fine value).
fn objects(body: &Value, path: &str, free: &[&str], out: &mut Vec<String>) {
    if free.contains(&path) {
        return;
    }
    match body {
        Value::Object(map) => {
            out.push(path.to_owned());
            for (key, value) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                objects(value, &child, free, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                objects(item, &format!("{path}[{i}]"), free, out);
            }
        }
        _ => {}
    }
}

/// `body` with the object at `path` replaced by the array of its values, in order.
fn positional(body: &Value, path: &str) -> Value {
    let mut body = body.clone();
    let mut at = &mut body;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        at = &mut at[key];
        for index in indexes
            .trim_end_matches(']')
            .split("][")
            .filter(|i| !i.is_empty())
        {
            at = &mut at[index.parse::<usize>().unwrap()];
        }
    }
    let values: Vec<Value> = at.as_object().unwrap().values().cloned().collect();
    *at = Value::Array(values);
    body
}

/// Sends the valid body (which must succeed with `ok`), then every positional variant, each
/// of which must be refused, naming the field, with nothing written.
async fn refuses_every_array_for_an_object(
    server: &TestServer,
    method: Method,
    route: &str,
    body: Value,
    free: &[&str],
    ok: StatusCode,
) -> usize {
    let mut paths = Vec::new();
    objects(&body, "", free, &mut paths);
    let before = server.event_count().await;
    for path in &paths {
        let mutated = positional(&body, path);
        let reply = server
            .call(method.clone(), route, Some(mutated.clone()), &[])
            .await;
        if route.ends_with("/validate") && path.starts_with("definition") {
            // `/validate` answers a flowchart that does not validate with 200 and its problems.
            let inner = path.strip_prefix("definition").unwrap_or(path);
            let inner = inner.strip_prefix('.').unwrap_or(inner);
            assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
            assert_eq!(reply.body["valid"], json!(false), "{path}: {reply:?}");
            assert!(
                reply.body["errors"]
                    .as_array()
                    .is_some_and(|errors| errors.iter().any(|e| e["path"] == json!(inner))),
                "{route}: the problems name `{inner}`: {reply:?}"
            );
            continue;
        }
        assert!(
            reply.status == StatusCode::BAD_REQUEST
                || reply.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{route} with {path} as an array: {reply:?}\n{mutated}"
        );
        let code = reply.body["error"]["code"].as_str().unwrap_or_default();
        reply.assert_error(reply.status, code);
        let named = match code {
            // The flowchart loader's problems carry their own paths, under `definition`.
            "invalid_flowchart" => {
                let inner = path.strip_prefix("definition").unwrap_or(path);
                let inner = inner.strip_prefix('.').unwrap_or(inner);
                reply.body["error"]["details"]["errors"]
                    .as_array()
                    .is_some_and(|errors| errors.iter().any(|e| e["path"] == json!(inner)))
            }
            "invalid_body" if path.is_empty() => true,
            "invalid_body" => {
                reply.body["error"]["details"]["field"] == json!(path)
                    && reply.body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(path.as_str()))
            }
            other => panic!("{route} with {path} as an array: unexpected code {other}: {reply:?}"),
        };
        assert!(named, "{route}: the refusal names `{path}`: {reply:?}");
        assert_eq!(
            server.event_count().await,
            before,
            "{route} with {path} as an array wrote something"
        );
    }
    let reply = server.call(method, route, Some(body), &[]).await;
    assert_eq!(reply.status, ok, "the valid body is taken: {reply:?}");
    paths.len()
}

fn definition(name: &str) -> Value {
    json!({
        "name": name,
        "limits": { "max_node_executions": 50 },
        "nodes": [
            { "id": "start", "type": "start" },
            {
                "id": "draft",
                "type": "task",
                "model": "scripted",
                "retry": { "max_attempts": 2 },
                "output_schema": { "type": "object" },
                "scripted": [{ "output": { "text": "hi" } }]
            },
            { "id": "done", "type": "end" }
        ],
        "connectors": [
            { "id": "a", "from": "start", "to": "draft" },
            { "id": "b", "from": "draft", "to": "done" }
        ]
    })
}

async fn an_array_where_an_object_is_meant_is_refused_at_every_depth(backend: Backend) {
    let server = TestServer::start(backend).await;
    let spec = json!({
        "name": "gpt",
        "provider": "openai_compatible",
        "model_id": "gpt-4o-mini",
        "api_key_env": "OPENAI_API_KEY",
        "settings": { "temperature": 0.5, "max_tokens": 100 }
    });
    let mut tried = 0;
    tried += refuses_every_array_for_an_object(
        &server,
        Method::POST,
        "/v1/models",
        json!({ "spec": spec, "actor": "ada" }),
        &[],
        StatusCode::CREATED,
    )
    .await;
    let mut update = spec.clone();
    update["settings"]["temperature"] = json!(0.25);
    tried += refuses_every_array_for_an_object(
        &server,
        Method::PUT,
        "/v1/models/gpt",
        json!({ "spec": update, "expected_version": 1 }),
        &[],
        StatusCode::OK,
    )
    .await;
    tried += refuses_every_array_for_an_object(
        &server,
        Method::POST,
        "/v1/flowcharts/validate",
        json!({ "definition": definition("checked") }),
        // What the scripted model answers is any JSON value.
        &["definition.nodes[1].scripted[0].output"],
        StatusCode::OK,
    )
    .await;
    tried += refuses_every_array_for_an_object(
        &server,
        Method::POST,
        "/v1/flowcharts",
        json!({ "definition": definition("stored"), "actor": "ada" }),
        &["definition.nodes[1].scripted[0].output"],
        StatusCode::CREATED,
    )
    .await;
    tried += refuses_every_array_for_an_object(
        &server,
        Method::POST,
        "/v1/runs",
        json!({ "definition": definition("started"), "inputs": { "topic": ["owls"] }, "actor": "ada" }),
        // Inputs are any JSON value (api.md), and so is a scripted answer.
        &["inputs", "definition.nodes[1].scripted[0].output"],
        StatusCode::CREATED,
    )
    .await;
    assert!(tried >= 30, "only {tried} objects were tried");
    server.finish().await;
}

async fn control_bodies_refuse_an_array(backend: Backend) {
    let server = TestServer::start(backend).await;
    let run = server.start_inline(super::GREET, json!({})).await;
    // Ended, so nothing else writes while the refusals are counted.
    server.wait(run).await;
    for action in ["pause", "resume", "cancel"] {
        let before = server.event_count().await;
        server
            .call(
                Method::POST,
                &format!("/v1/runs/{run}/{action}"),
                Some(json!(["ada", "because"])),
                &[],
            )
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        assert_eq!(server.event_count().await, before, "{action}");
    }
    server.finish().await;
}

on_backends!(
    postgres: [an_array_where_an_object_is_meant_is_refused_at_every_depth, control_bodies_refuse_an_array],
    both: [],
);
