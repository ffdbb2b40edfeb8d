//! Each class of bad request: 4xx with the error envelope, and nothing written.

use reqwest::{Method, StatusCode};
use runledger_contracts::ids::RunId;
use serde_json::json;

use super::Backend;
use super::{GREET, TestServer};

async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> super::Reply {
    let mut request = server.client.request(method, server.url(path)).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    super::Reply::read(request.send().await.unwrap()).await
}

async fn every_error_class_is_an_envelope_and_writes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let run = server.start_inline(GREET, json!({})).await;
    server.wait(run).await;
    let before = server.event_count().await;
    let json_type = Some("application/json");

    // Malformed JSON.
    let r = raw(
        &server,
        Method::POST,
        "/v1/runs",
        json_type,
        b"{\"definition\": ".to_vec(),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "malformed_json");
    assert!(r.body["error"]["details"]["line"].is_number(), "{r:?}");
    // Unknown fields, at the top and in a control body.
    let r = server
        .post("/v1/runs", json!({ "definition": GREET, "colour": "red" }))
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "unknown_field");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{r:?}"
    );
    server
        .post(
            &format!("/v1/runs/{run}/pause"),
            json!({ "actor": "a", "why": "b" }),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unknown_field");
    // Wrong types.
    server
        .post("/v1/runs", json!({ "flowchart": 7 }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    // Not JSON at all.
    raw(
        &server,
        Method::POST,
        "/v1/runs",
        Some("text/plain"),
        b"hello".to_vec(),
    )
    .await
    .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    // Oversized: over the 4 MiB limit.
    let mut big = b"{\"definition\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 5 << 20));
    big.extend(b"\"}");
    // On a connection of its own: the server answers before reading the rest and closes it.
    let oversized = reqwest::Client::new()
        .post(server.url("/v1/runs"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    super::Reply::read(oversized)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Bad ids.
    server
        .get("/v1/runs/123")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    server
        .post("/v1/runs/nope/pause", json!({}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    server
        .get(&format!("/v1/runs/{run}/node-runs/xyz"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    server
        .get("/v1/artifacts/xyz")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    server
        .get("/v1/artifacts?run_id=xyz")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    // Unknown things.
    server
        .get(&format!("/v1/runs/{}", RunId::new_v7()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "run_not_found");
    server
        .post(&format!("/v1/runs/{}/pause", RunId::new_v7()), json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "run_not_found");
    // Unknown routes and methods.
    server
        .get("/v1/nothing-here")
        .await
        .assert_error(StatusCode::NOT_FOUND, "route_not_found");
    server
        .get("/v2/runs")
        .await
        .assert_error(StatusCode::NOT_FOUND, "route_not_found");
    let r = server.call(Method::DELETE, "/v1/runs", None, &[]).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // Invalid transitions: a completed run cannot be paused.
    server
        .post(&format!("/v1/runs/{run}/pause"), json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "run_not_running");
    // Bad headers.
    server
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "definition": GREET })),
            &[("x-request-id", "")],
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_header");
    let long = "x".repeat(129);
    server
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "definition": GREET })),
            &[("x-correlation-id", &long)],
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_header");
    // Bad query strings: one code, `details.parameter` naming the parameter.
    let r = server.get("/v1/runs?limit=100000").await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert_eq!(r.body["error"]["details"]["parameter"], json!("limit"));
    server
        .get("/v1/runs?status=sleeping")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    server
        .get("/v1/runs?started_after=yesterday")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    server
        .get("/v1/runs?cursor=garbage")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    server
        .get("/v1/runs?limit=100000")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    server
        .get("/v1/artifacts?node_type=robot")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");

    assert_eq!(
        server.event_count().await,
        before,
        "no bad request wrote anything"
    );
    server.finish().await;
}

async fn ids_are_echoed_on_errors_and_successes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let r = server
        .call(
            Method::GET,
            "/v1/nothing",
            None,
            &[("x-request-id", "req-9"), ("x-correlation-id", "corr-9")],
        )
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "route_not_found");
    assert_eq!(
        (r.header("x-request-id"), r.header("x-correlation-id")),
        (Some("req-9"), Some("corr-9"))
    );
    assert_eq!(r.body["error"]["request_id"], json!("req-9"));
    assert_eq!(r.body["correlation_id"], json!("corr-9"));
    let ok = server.get("/healthz").await;
    assert_eq!(ok.status, StatusCode::OK);
    let (a, b) = (
        ok.header("x-request-id").unwrap(),
        ok.header("x-correlation-id").unwrap(),
    );
    assert!(
        a.len() == 36 && b.len() == 36 && a != b,
        "generated: {a} {b}"
    );
    server.finish().await;
}

on_backends!(
    postgres: [],
    both: [every_error_class_is_an_envelope_and_writes_nothing, ids_are_echoed_on_errors_and_successes],
);
