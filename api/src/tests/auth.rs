use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{GREET, TestServer};
use crate::ApiConfig;

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_every_mutating_request_needs_it() {
    let token = "s3cret-token-value";
    let server = TestServer::with_config(ApiConfig {
        token: Some(token.into()),
        ..ApiConfig::default()
    })
    .await;
    let body = json!({ "definition": GREET });
    let before = server.event_count().await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", token)],
        vec![("authorization", "Basic czNjcmV0")],
    ] {
        let r = server
            .call(Method::POST, "/v1/runs", Some(body.clone()), &headers)
            .await;
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(
            !r.text.contains(token),
            "the token never appears in answers"
        );
    }
    // Other mutating methods too, even on routes that do not exist.
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        server
            .call(method, "/v1/runs", None, &[])
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(server.event_count().await, before);
    let bearer = format!("Bearer {token}");
    let ok = server
        .call(
            Method::POST,
            "/v1/runs",
            Some(body),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    // Reads need no token.
    assert_eq!(server.get("/v1/flowcharts").await.status, StatusCode::OK);
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    assert!(
        !format!("{:?}", server.state.config()).contains(token),
        "Debug hides the token"
    );
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_mutating_requests_are_open() {
    let server = TestServer::start().await;
    let r = server
        .post("/v1/runs", json!({ "definition": GREET }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = server
        .call(
            Method::POST,
            "/v1/flowcharts",
            Some(json!({ "definition": GREET })),
            &[("authorization", "Bearer anything")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    server.finish().await;
}
