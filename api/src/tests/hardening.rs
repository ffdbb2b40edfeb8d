//! The API contract under attack (issue 10 items 7 to 11): each refusal is a 4xx envelope and
//! writes nothing.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{GREET, TestServer, slow};
use crate::ApiConfig;

#[tokio::test(flavor = "multi_thread")]
async fn a_control_reusing_another_requests_id_is_refused_and_applies_nothing() {
    let server = TestServer::start().await;
    let started = server
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "definition": slow("reuse", 2_000) })),
            &[("x-request-id", "start-req")],
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{started:?}");
    let run = started.body["run_id"].as_str().unwrap().to_owned();
    let before = server.event_count().await;
    // The start's request id on a cancel: before, a 200 `deduplicated` that canceled nothing.
    server
        .call(
            Method::POST,
            &format!("/v1/runs/{run}/cancel"),
            None,
            &[("x-request-id", "start-req")],
        )
        .await
        .assert_error(StatusCode::CONFLICT, "request_id_reused");
    assert_eq!(server.event_count().await, before);

    let pause = |reason: &'static str| {
        let path = format!("/v1/runs/{run}/pause");
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    &path,
                    Some(json!({ "reason": reason })),
                    &[("x-request-id", "pause-req")],
                )
                .await
        }
    };
    let first = pause("maintenance").await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let repeat = pause("maintenance").await;
    assert_eq!(repeat.status, StatusCode::OK, "{repeat:?}");
    assert_eq!(repeat.body["deduplicated"], json!(true));
    let after_pause = server.event_count().await;
    // The same id with other content: another reason, or another action.
    pause("something else")
        .await
        .assert_error(StatusCode::CONFLICT, "request_id_reused");
    server
        .call(
            Method::POST,
            &format!("/v1/runs/{run}/resume"),
            None,
            &[("x-request-id", "pause-req")],
        )
        .await
        .assert_error(StatusCode::CONFLICT, "request_id_reused");
    assert_eq!(server.event_count().await, after_pause);
    let canceled = server
        .call(
            Method::POST,
            &format!("/v1/runs/{run}/cancel"),
            Some(json!({ "force": true })),
            &[],
        )
        .await;
    assert_eq!(canceled.status, StatusCode::OK, "{canceled:?}");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_start_neither_records_nor_burns_its_idempotency_key() {
    let server = TestServer::start().await;
    let before = server.event_count().await;
    let key = [("idempotency-key", "key-refused-first")];
    let refused = [
        (
            json!({ "definition": GREET, "inputs": { "name": "nul\u{0}byte" } }),
            "invalid_inputs",
        ),
        (json!({ "definition": GREET, "actor": "" }), "invalid_body"),
        (
            json!({ "definition": GREET, "actor": "   " }),
            "invalid_body",
        ),
        (
            json!({ "definition": GREET, "actor": "x".repeat(201) }),
            "invalid_body",
        ),
        (
            json!({ "definition": GREET, "actor": "a\u{0}b" }),
            "invalid_body",
        ),
    ];
    for (body, code) in refused {
        server
            .call(Method::POST, "/v1/runs", Some(body), &key)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    // A JSON array where an object is expected (serde would read the struct from it).
    server
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!([null, null, GREET])),
            &key,
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert_eq!(server.event_count().await, before, "nothing written");
    // The key is still free: the first valid start under it starts a run.
    let ok = server
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "definition": GREET, "actor": "x".repeat(200) })),
            &key,
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_bytes_unknown_parameters_and_unreachable_versions_are_client_errors() {
    let server = TestServer::start().await;
    let run = server.start_inline(GREET, json!({ "name": "ada" })).await;
    server.wait(run).await;
    let before = server.event_count().await;
    for path in [
        "/v1/runs?flowchart=%00",
        "/v1/runs?status=running%00",
        "/v1/artifacts?node_id=%00",
        "/v1/artifacts?artifact_type=a%00b",
        "/v1/models?x=1",
        "/v1/claims?verbose=true",
        "/v1/flowcharts/greet?x=1",
        "/v1/runs?limit=0",
        "/v1/runs?limit=99999999999999",
        "/v1/runs?cursor=nonsense",
        "/healthz?x=1",
        "/readyz?x=1",
        "/openapi.json?x=1",
    ] {
        server
            .get(path)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
    for path in ["/v1/models/%00", "/v1/flowcharts/a%00"] {
        server
            .get(path)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    }
    // Beyond the run's head the projection can never get there: answered at once.
    let r = server
        .get(&format!("/v1/runs/{run}?min_version=18446744073709551615"))
        .await;
    r.assert_error(StatusCode::CONFLICT, "version_not_reached");
    assert!(
        r.body["error"]["details"]["head_version"]
            .as_u64()
            .is_some(),
        "{r:?}"
    );
    assert_eq!(server.event_count().await, before);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn if_none_match_takes_weak_tags_lists_and_the_star() {
    let server = TestServer::start().await;
    let run = server.start_inline(GREET, json!({ "name": "ada" })).await;
    server.wait(run).await;
    let detail = server.projected(run).await;
    assert!(detail.is_object());
    let path = format!("/v1/runs/{run}");
    let etag = server.get(&path).await.header("etag").unwrap().to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {weak}");
    for presented in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        let r = server
            .call(Method::GET, &path, None, &[("if-none-match", presented)])
            .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{presented}: {r:?}");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = server
        .call(Method::GET, &path, None, &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_is_case_insensitive() {
    let token = "case-token";
    let server = TestServer::with_config(ApiConfig {
        token: Some(token.into()),
        ..ApiConfig::default()
    })
    .await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let authorization = format!("{scheme} {token}");
        let r = server
            .call(
                Method::POST,
                "/v1/flowcharts/validate",
                Some(json!({ "definition": GREET })),
                &[("authorization", &authorization)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}: {r:?}");
    }
    server
        .call(
            Method::POST,
            "/v1/flowcharts/validate",
            Some(json!({ "definition": GREET })),
            &[("authorization", "Bearer-case-token")],
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    server.finish().await;
}

/// Reads until the server closes the connection; what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received));
    match read.await {
        Ok(_) => String::from_utf8_lossy(&received).into_owned(),
        Err(_) => panic!("the server kept the connection open"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_disconnected_and_the_server_keeps_answering() {
    let server = TestServer::with_config(ApiConfig {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        max_connections: 16,
        ..ApiConfig::default()
    })
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    // Headers that never end (slowloris), on a few connections.
    let mut loris = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        loris.push(stream);
    }
    // Meanwhile the server answers others.
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    for mut stream in loris {
        let sent = read_until_closed(&mut stream).await;
        assert!(!sent.contains("200 OK"), "{sent}");
    }
    // A body that never arrives whole: 408 with the envelope, then the connection ends.
    let before = server.event_count().await;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/flowcharts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"defin",
        )
        .await
        .unwrap();
    let sent = read_until_closed(&mut stream).await;
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.contains("\"request_timeout\""), "{sent}");
    assert_eq!(server.event_count().await, before);
    // A request line hyper cannot parse: hyper answers 400 itself, without an envelope.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"NOT A REQUEST\r\n\r\n").await.unwrap();
    let sent = read_until_closed(&mut stream).await;
    assert!(sent.starts_with("HTTP/1.1 400"), "{sent}");
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    server.finish().await;
}
