use reqwest::StatusCode;
use runledger_contracts::flowchart::{SourceFormat, load};
use runledger_contracts::ids::StreamId;
use runledger_ledger::EventStore;
use serde_json::{Value, json};

use super::Backend;
use super::{GREET, TestServer};

const BROKEN: &str = "name: broken\nnodes:\n  - {id: start, type: start}\n  - {id: gate, type: decision, colour: red,\n     conditions: [{connector: nowhere, when: \"score >>= 3\"}]}\n  - {id: done, type: end}\nconnectors:\n  - {id: c1, from: start, to: gate}\n  - {id: c2, from: done, to: gate}\n";

async fn validate_answers_what_validate_json_prints(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ok = server
        .post("/v1/flowcharts/validate", json!({ "definition": GREET }))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.text, r#"{"errors":[],"valid":true}"#,
        "the CLI's shape and key order (sorted, as in the invalid_flowchart details)"
    );

    let bad = server
        .post("/v1/flowcharts/validate", json!({ "definition": BROKEN }))
        .await;
    assert_eq!(bad.status, StatusCode::OK);
    assert_eq!(bad.body["valid"], json!(false));
    // Exactly the problems `runledger validate --json` reports (same loader, same order).
    let expected: Vec<Value> = load(BROKEN, SourceFormat::Auto)
        .err()
        .unwrap()
        .iter()
        .map(|e| json!({ "code": e.code.as_str(), "path": e.path, "message": e.message }))
        .collect();
    assert_eq!(bad.body["errors"], Value::Array(expected.clone()));
    let codes: Vec<(&str, &str)> = expected
        .iter()
        .map(|e| (e["code"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    assert!(
        codes.contains(&("unknown_key", "nodes[1].colour")),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("condition_syntax", "nodes[1].conditions[0].when")),
        "{codes:?}"
    );

    // A JSON object is read as the same document as its text.
    let doc: Value = serde_yaml_like(GREET);
    let ok = server
        .post("/v1/flowcharts/validate", json!({ "definition": doc }))
        .await;
    assert_eq!(ok.body["valid"], json!(true), "{ok:?}");
    let mut unknown = serde_yaml_like(GREET);
    unknown["nodes"][1]["colour"] = json!("red");
    let r = server
        .post("/v1/flowcharts/validate", json!({ "definition": unknown }))
        .await;
    assert_eq!(r.body["errors"][0]["code"], json!("unknown_key"), "{r:?}");
    assert_eq!(
        r.body["errors"][0]["path"],
        json!("nodes[1].colour"),
        "{r:?}"
    );
    let r = server
        .post("/v1/flowcharts/validate", json!({ "definition": 42 }))
        .await;
    assert_eq!(r.body["valid"], json!(false), "{r:?}");
    assert_eq!(server.event_count().await, 0, "validation writes nothing");
    server.finish().await;
}

/// The flowchart as JSON, the way a UI would send it.
fn serde_yaml_like(yaml: &str) -> Value {
    let flowchart = load(yaml, SourceFormat::Yaml).unwrap();
    serde_json::to_value(flowchart.doc()).unwrap()
}

async fn create_is_immutable_versions_and_idempotent_for_the_same_content(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first = server
        .call(
            reqwest::Method::POST,
            "/v1/flowcharts",
            Some(json!({ "definition": GREET, "actor": "ada" })),
            &[("x-request-id", "create-1")],
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(
        (first.body["name"].clone(), first.body["version"].clone()),
        (json!("greet"), json!(1))
    );
    assert_eq!(first.body["created"], json!(true));
    assert_eq!(first.body["actor"], json!("ada"));
    assert_eq!(first.body["request_id"], json!("create-1"));
    assert_eq!(first.body["nodes"], json!(3));
    assert_eq!(first.header("location"), None);

    // Same content again: the same version, nothing written.
    let events = server.event_count().await;
    let again = server
        .post("/v1/flowcharts", json!({ "definition": GREET }))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["version"], json!(1));
    assert_eq!(again.body["created"], json!(false));
    assert_eq!(again.body["definition_hash"], first.body["definition_hash"]);
    assert_eq!(server.event_count().await, events);

    // Other content: version 2; version 1 is unchanged.
    let changed = GREET.replace("Say hello.", "Say hello twice.");
    let second = server
        .post("/v1/flowcharts", json!({ "definition": changed }))
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body["version"], json!(2));
    let v1 = server.get("/v1/flowcharts/greet/versions/1").await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.body["description"], json!("Say hello."));
    assert_eq!(v1.body["definition_hash"], first.body["definition_hash"]);
    assert!(v1.body["definition"]["nodes"].is_array());
    let latest = server.get("/v1/flowcharts/greet").await;
    assert_eq!(
        (
            latest.body["version"].clone(),
            latest.body["description"].clone()
        ),
        (json!(2), json!("Say hello twice."))
    );
    let versions = server.get("/v1/flowcharts/greet/versions").await;
    let listed: Vec<u64> = versions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [1, 2]);
    assert!(
        versions.body["items"][0].get("definition").is_none(),
        "lists leave definitions out"
    );

    // The stored event is FlowchartVersionCreated in flowchart-greet, one per version.
    let stream = StreamId::new("flowchart-greet").unwrap();
    let stored = server
        .state
        .store()
        .read_stream(&stream, 1, 10)
        .await
        .unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["FlowchartVersionCreated"; 2]
    );
    assert_eq!(stored[0].request_id.as_str(), "create-1");
    assert_eq!(stored[1].payload["version"], json!(2));

    // Errors.
    server
        .get("/v1/flowcharts/greet/versions/3")
        .await
        .assert_error(StatusCode::NOT_FOUND, "flowchart_version_not_found");
    server
        .get("/v1/flowcharts/nope")
        .await
        .assert_error(StatusCode::NOT_FOUND, "flowchart_not_found");
    server
        .get("/v1/flowcharts/greet/versions/zero")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    server
        .get("/v1/flowcharts/greet/versions/0")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    let before = server.event_count().await;
    let invalid = server
        .post("/v1/flowcharts", json!({ "definition": BROKEN }))
        .await;
    invalid.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_flowchart");
    assert!(
        invalid.body["error"]["details"]["errors"]
            .as_array()
            .is_some_and(|e| e.len() >= 4),
        "{invalid:?}"
    );
    let spaced = GREET.replace("name: greet", "name: \"two words\"");
    server
        .post("/v1/flowcharts", json!({ "definition": spaced }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_flowchart_name");
    assert_eq!(
        server.event_count().await,
        before,
        "rejected creates write nothing"
    );
    server.finish().await;
}

async fn list_pages_by_name(backend: Backend) {
    let server = TestServer::start(backend).await;
    for name in ["alpha", "bravo", "charlie"] {
        server
            .create_flowchart(&GREET.replace("name: greet", &format!("name: {name}")))
            .await;
    }
    let page1 = server.get("/v1/flowcharts?limit=2").await;
    assert_eq!(page1.status, StatusCode::OK, "{page1:?}");
    let names = |r: &super::Reply| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page1), ["alpha", "bravo"]);
    let cursor = page1.body["next_cursor"].as_str().unwrap().to_owned();
    let page2 = server
        .get(&format!("/v1/flowcharts?limit=2&after={cursor}"))
        .await;
    assert_eq!(names(&page2), ["charlie"]);
    assert_eq!(page2.body["next_cursor"], Value::Null);
    server
        .get("/v1/flowcharts?limit=0")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    server
        .get("/v1/flowcharts?colour=red")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    server.finish().await;
}

on_backends!(
    postgres: [validate_answers_what_validate_json_prints],
    both: [create_is_immutable_versions_and_idempotent_for_the_same_content, list_pages_by_name],
);
