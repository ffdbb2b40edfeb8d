use reqwest::{Method, StatusCode};
use serde_json::json;

use super::Backend;
use super::TestServer;

fn spec(name: &str, model_id: &str) -> serde_json::Value {
    json!({ "name": name, "provider": "openai_compatible", "model_id": model_id, "api_key_env": "OPENAI_API_KEY" })
}

async fn models_crud_with_versions_and_idempotent_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .call(
            Method::POST,
            "/v1/models",
            Some(json!({ "spec": spec("gpt", "gpt-4o-mini"), "actor": "ada" })),
            &[("x-request-id", "model-1")],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(
        created.body,
        json!({ "name": "gpt", "version": 1, "event_type": "ModelCreated", "deduplicated": false })
    );
    assert_eq!(
        created.header("x-correlation-id"),
        Some("model-1"),
        "the registry correlates by request id"
    );
    let events = server.event_count().await;
    let again = server
        .call(
            Method::POST,
            "/v1/models",
            Some(json!({ "spec": spec("gpt", "gpt-4o-mini"), "actor": "ada" })),
            &[("x-request-id", "model-1")],
        )
        .await;
    assert_eq!(
        (again.status, again.body["deduplicated"].clone()),
        (StatusCode::OK, json!(true)),
        "{again:?}"
    );
    assert_eq!(server.event_count().await, events);
    server
        .post("/v1/models", json!({ "spec": spec("gpt", "gpt-4o") }))
        .await
        .assert_error(StatusCode::CONFLICT, "model_exists");

    let got = server.get("/v1/models/gpt").await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(
        (
            got.body["version"].clone(),
            got.body["spec"]["model_id"].clone()
        ),
        (json!(1), json!("gpt-4o-mini"))
    );
    let list = server.get("/v1/models").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);

    let updated = server
        .call(
            Method::PUT,
            "/v1/models/gpt",
            Some(json!({ "spec": spec("gpt", "gpt-4o"), "expected_version": 1 })),
            &[],
        )
        .await;
    assert_eq!(
        (updated.status, updated.body["version"].clone()),
        (StatusCode::OK, json!(2)),
        "{updated:?}"
    );
    server
        .call(
            Method::PUT,
            "/v1/models/gpt",
            Some(json!({ "spec": spec("gpt", "gpt-5"), "expected_version": 1 })),
            &[],
        )
        .await
        .assert_error(StatusCode::CONFLICT, "version_conflict");
    let mut other_provider = spec("gpt", "claude");
    other_provider["provider"] = json!("anthropic");
    server
        .call(
            Method::PUT,
            "/v1/models/gpt",
            Some(json!({ "spec": other_provider })),
            &[],
        )
        .await
        .assert_error(StatusCode::CONFLICT, "provider_immutable");

    // Invalid specs name the field and write nothing.
    let before = server.event_count().await;
    let mut secret = spec("leaky", "gpt-4o");
    secret["base_url"] = json!("https://user:pass@example.com/v1");
    let r = server.post("/v1/models", json!({ "spec": secret })).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    assert_eq!(
        r.body["error"]["details"]["field"],
        json!("base_url"),
        "{r:?}"
    );
    assert!(
        !r.text.contains("pass@"),
        "no credentials echoed: {}",
        r.text
    );
    server
        .post("/v1/models", json!({ "spec": spec("scripted", "x") }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "reserved_name");
    server
        .post(
            "/v1/models",
            json!({ "spec": spec("gpt", "x"), "colour": 1 }),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unknown_field");
    assert_eq!(server.event_count().await, before);

    let deleted = server
        .call(
            Method::DELETE,
            "/v1/models/gpt?expected_version=2&actor=ops",
            None,
            &[],
        )
        .await;
    assert_eq!(
        (deleted.status, deleted.body["event_type"].clone()),
        (StatusCode::OK, json!("ModelDeleted")),
        "{deleted:?}"
    );
    server
        .get("/v1/models/gpt")
        .await
        .assert_error(StatusCode::NOT_FOUND, "model_not_found");
    server
        .call(Method::DELETE, "/v1/models/nothing", None, &[])
        .await
        .assert_error(StatusCode::NOT_FOUND, "model_not_found");
    assert!(
        server.get("/v1/models").await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    server.finish().await;
}

on_backends!(
    postgres: [],
    both: [models_crud_with_versions_and_idempotent_changes],
);
