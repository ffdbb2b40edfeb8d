use reqwest::{Method, StatusCode};
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::export::{ExportScope, export};
use serde_json::{Value, json};

use super::Backend;
use super::{GREET, TestServer, chain};

async fn start_by_name_writes_the_request_ids_and_keeps_the_correlation(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.create_flowchart(GREET).await;
    server
        .create_flowchart(&GREET.replace("Say hello.", "v2"))
        .await;
    let r = server
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "flowchart": "greet", "version": 1, "inputs": { "name": "Ada" }, "actor": "ada" })),
            &[("x-request-id", "start-req-1"), ("x-correlation-id", "corr-42")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.header("x-request-id"), Some("start-req-1"));
    assert_eq!(r.header("x-correlation-id"), Some("corr-42"));
    assert_eq!(
        r.body["flowchart"],
        json!({ "name": "greet", "version": 1, "definition_hash": r.body["flowchart"]["definition_hash"] })
    );
    assert_eq!(r.body["replayed"], json!(false));
    let run: RunId = r.body["run_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/runs/{run}").as_str())
    );
    let v1 = server.get("/v1/flowcharts/greet/versions/1").await;
    assert_eq!(
        r.body["flowchart"]["definition_hash"], v1.body["definition_hash"],
        "the run executes the stored version"
    );
    assert_eq!(server.wait(run).await, "completed");

    let events = server
        .state
        .store()
        .read_stream(&StreamId::for_run(run), 1, 1000)
        .await
        .unwrap();
    assert_eq!(events[0].event_type, "RunStarted");
    assert_eq!(events[0].payload["actor"], json!("ada"));
    assert_eq!(events[0].payload["inputs"], json!({ "name": "Ada" }));
    let started: Vec<_> = events
        .iter()
        .filter(|e| e.request_id.as_str() == "start-req-1")
        .collect();
    assert!(
        started.len() >= 2,
        "the start append holds RunStarted and what followed at once"
    );
    assert!(
        events
            .iter()
            .all(|e| e.correlation_id.as_str() == "corr-42"),
        "every event of the run keeps the correlation id"
    );

    // Without a version: the latest.
    let latest = server
        .post("/v1/runs", json!({ "flowchart": "greet" }))
        .await;
    assert_eq!(latest.body["flowchart"]["version"], json!(2), "{latest:?}");
    // Generated ids when none are sent.
    let generated = latest.header("x-request-id").unwrap();
    assert_eq!(generated.len(), 36);
    assert_eq!(latest.body["request_id"].as_str(), Some(generated));
    server.finish().await;
}

async fn start_refuses_bad_requests_and_writes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.create_flowchart(GREET).await;
    let before = server.event_count().await;
    server
        .post("/v1/runs", json!({ "flowchart": "nope" }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "flowchart_not_found");
    server
        .post("/v1/runs", json!({ "flowchart": "greet", "version": 9 }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "flowchart_version_not_found");
    server
        .post("/v1/runs", json!({}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    server
        .post(
            "/v1/runs",
            json!({ "flowchart": "greet", "definition": GREET }),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    server
        .post("/v1/runs", json!({ "definition": GREET, "version": 1 }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    server
        .post("/v1/runs", json!({ "definition": "name: x\nnodes: []\n" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_flowchart");
    server
        .post(
            "/v1/runs",
            json!({ "definition": GREET, "inputs": { "big": 9007199254740993u64 } }),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_inputs");
    assert_eq!(server.event_count().await, before);
    server.finish().await;
}

async fn idempotency_key_returns_the_same_run_and_refuses_another_body(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({ "definition": GREET, "inputs": { "name": "Ada" } });
    let key = [("idempotency-key", "order-7")];
    let first = server
        .call(Method::POST, "/v1/runs", Some(body.clone()), &key)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let run: RunId = first.body["run_id"].as_str().unwrap().parse().unwrap();
    server.wait(run).await;
    let events = server.event_count().await;
    let runs = server
        .state
        .store()
        .list_streams("run-")
        .await
        .unwrap()
        .len();

    // Same key, same body (another request id): the same run, nothing written.
    let again = server
        .call(
            Method::POST,
            "/v1/runs",
            Some(body.clone()),
            &[key[0], ("x-request-id", "retry-2")],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["run_id"], first.body["run_id"]);
    assert_eq!(again.body["replayed"], json!(true));
    assert_eq!(again.body["status"], json!("completed"));
    assert_eq!(again.body["correlation_id"], first.body["correlation_id"]);
    assert_eq!(
        again.header("x-correlation-id"),
        first.header("x-correlation-id"),
        "the run's correlation id"
    );
    // Same key, same request id: also the same run.
    let request_id = first.header("x-request-id").unwrap().to_owned();
    let third = server
        .call(
            Method::POST,
            "/v1/runs",
            Some(body.clone()),
            &[key[0], ("x-request-id", &request_id)],
        )
        .await;
    assert_eq!(
        (third.status, third.body["run_id"].clone()),
        (StatusCode::OK, first.body["run_id"].clone()),
        "{third:?}"
    );
    // Field order and whitespace do not matter: the body is compared canonically.
    let reordered = r#"{ "inputs": {"name": "Ada"}, "definition": DEF }"#
        .replace("DEF", &serde_json::to_string(GREET).unwrap());
    let fourth = server
        .client
        .post(server.url("/v1/runs"))
        .header("idempotency-key", "order-7")
        .header("content-type", "application/json")
        .body(reordered)
        .send()
        .await
        .unwrap();
    let fourth = super::Reply::read(fourth).await;
    assert_eq!(
        (fourth.status, fourth.body["run_id"].clone()),
        (StatusCode::OK, first.body["run_id"].clone()),
        "{fourth:?}"
    );
    assert_eq!(server.event_count().await, events);
    assert_eq!(
        server
            .state
            .store()
            .list_streams("run-")
            .await
            .unwrap()
            .len(),
        runs
    );

    // Same key, another body: 409, nothing written.
    let other = server
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "definition": GREET, "inputs": { "name": "Bob" } })),
            &key,
        )
        .await;
    other.assert_error(StatusCode::CONFLICT, "idempotency_key_reused");
    assert_eq!(
        other.body["error"]["details"]["run_id"],
        first.body["run_id"]
    );
    assert_eq!(server.event_count().await, events);
    // A malformed key.
    server
        .call(
            Method::POST,
            "/v1/runs",
            Some(body),
            &[("idempotency-key", "has space")],
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_header");
    assert_eq!(server.event_count().await, events);
    server.finish().await;
}

async fn the_ledger_pages_and_the_export_is_the_canonical_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let run = server
        .start_inline(&chain("ledger-pages", 5), json!({}))
        .await;
    assert_eq!(server.wait(run).await, "completed");
    let stream = StreamId::for_run(run);
    let head = server
        .state
        .store()
        .stream_head(&stream)
        .await
        .unwrap()
        .unwrap()
        .version;
    let mut seen = Vec::new();
    let mut from = Some(1u64);
    while let Some(f) = from {
        let page = server
            .get(&format!("/v1/runs/{run}/events?from_version={f}&limit=7"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        assert_eq!(page.body["head_version"], json!(head));
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(items.iter().map(|e| e["stream_version"].as_u64().unwrap()));
        from = page.body["next_from_version"].as_u64();
    }
    assert_eq!(
        seen,
        (1..=head).collect::<Vec<_>>(),
        "every version once, in order"
    );
    let first = server.get(&format!("/v1/runs/{run}/events?limit=1")).await;
    let e = &first.body["items"][0];
    assert_eq!(e["event_type"], json!("RunStarted"));
    assert!(
        e["hash"].as_str().is_some_and(|h| h.len() == 64)
            && e["global_position"].as_u64().is_some(),
        "{e}"
    );

    let r = server
        .client
        .get(server.url(&format!("/v1/runs/{run}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let bytes = r.bytes().await.unwrap().to_vec();
    let mut expected = Vec::new();
    export(
        server.state.store(),
        &ExportScope::Stream(stream),
        &mut expected,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(bytes, expected, "byte for byte the ledger's export");
    let verified = runledger_ledger::verify::verify(std::io::Cursor::new(bytes.clone()));
    assert!(verified.is_ok(), "{verified:?}");
    let manifest: Value =
        serde_json::from_str(std::str::from_utf8(&bytes).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(manifest["counts"]["events"], json!(head));

    let unknown = RunId::new_v7();
    server
        .get(&format!("/v1/runs/{unknown}/events"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "run_not_found");
    server
        .get(&format!("/v1/runs/{unknown}/export"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "run_not_found");
    server
        .get("/v1/runs/not-a-uuid/events")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    server
        .get(&format!("/v1/runs/{run}/events?limit=5000"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    server.finish().await;
}

async fn sub_flows_resolve_from_the_registry_by_name_and_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.create_flowchart(GREET).await;
    server
        .create_flowchart(&GREET.replace("text: \"hi\"", "text: \"hi v2\""))
        .await;
    let parent = "name: parent\nnodes:\n  - { id: start, type: start }\n  - { id: sub, type: flowchart, flowchart: greet, version: 1 }\n  - { id: done, type: end }\nconnectors:\n  - { id: c1, from: start, to: sub }\n  - { id: c2, from: sub, to: done }\n";
    let run = server.start_inline(parent, json!({ "name": "Ada" })).await;
    assert_eq!(server.wait(run).await, "completed");
    let events = server
        .state
        .store()
        .read_stream(&StreamId::for_run(run), 1, 1000)
        .await
        .unwrap();
    let child: RunId = events
        .iter()
        .find(|e| e.event_type == "ChildRunStarted")
        .map(|e| e.payload["child_run_id"].as_str().unwrap().parse().unwrap())
        .expect("a child run");
    let child_events = server
        .state
        .store()
        .read_stream(&StreamId::for_run(child), 1, 1000)
        .await
        .unwrap();
    assert_eq!(
        child_events[0].payload["flowchart"]["version"],
        json!(1),
        "the pinned version"
    );
    let output = child_events
        .iter()
        .find(|e| e.event_type == "RunCompleted")
        .unwrap();
    assert_eq!(
        output.payload["output"]["text"],
        json!("hi"),
        "{}",
        output.payload
    );
    server.finish().await;
}

on_backends!(
    postgres: [],
    both: [start_by_name_writes_the_request_ids_and_keeps_the_correlation, start_refuses_bad_requests_and_writes_nothing, idempotency_key_returns_the_same_run_and_refuses_another_body, the_ledger_pages_and_the_export_is_the_canonical_one, sub_flows_resolve_from_the_registry_by_name_and_version],
);
