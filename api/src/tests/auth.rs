use reqwest::{Method, StatusCode};
use serde_json::json;

use super::Backend;
use super::{GREET, TestServer};
use crate::ApiConfig;

async fn with_a_token_every_mutating_request_needs_it(backend: Backend) {
    let token = "s3cret-token-value";
    let server = TestServer::with_config(
        backend,
        ApiConfig {
            token: Some(token.into()),
            ..ApiConfig::default()
        },
    )
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
    // Reads need it too; probes and the console's files do not.
    server
        .get("/v1/flowcharts")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let read = server
        .call(
            Method::GET,
            "/v1/flowcharts",
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(server.get("/").await.status, StatusCode::OK);
    assert!(
        !format!("{:?}", server.state.config()).contains(token),
        "Debug hides the token"
    );
    server.finish().await;
}

async fn without_a_token_mutating_requests_are_open(backend: Backend) {
    let server = TestServer::start(backend).await;
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

/// With a token, every read needs it (run details hold model outputs); the console's session
/// cookie stands in for it, its writes need the CSRF header, and `open_reads` opens reads.
async fn with_a_token_reads_need_it_and_the_session_cookie_stands_in(backend: Backend) {
    let token = "studio-read-token";
    let server = TestServer::with_config(
        backend,
        ApiConfig {
            token: Some(token.into()),
            ..ApiConfig::default()
        },
    )
    .await;
    for path in [
        "/v1/runs",
        "/v1/artifacts",
        "/v1/claims",
        "/v1/models",
        "/v1/events",
        "/metrics",
    ] {
        let r = server.get(path).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
    }
    let session = server.get("/v1/session").await;
    assert_eq!(session.status, StatusCode::OK);
    assert_eq!(session.body["token_required"], json!(true));
    assert_eq!(session.body["authenticated"], json!(false));

    // A wrong token gets no cookie.
    let wrong = server
        .post("/v1/session", json!({ "token": "guess" }))
        .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(wrong.header("set-cookie").is_none());
    let bad = server.post("/v1/session", json!({ "token": 5 })).await;
    bad.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");

    let login = server.post("/v1/session", json!({ "token": token })).await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    let set_cookie = login
        .header("set-cookie")
        .expect("a session cookie")
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains(token),
        "the cookie does not hold the token"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let read = server
        .call(Method::GET, "/v1/runs", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    let me = server
        .call(Method::GET, "/v1/session", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(me.body["authenticated"], json!(true));
    // A forged cookie is not a session.
    server
        .call(
            Method::GET,
            "/v1/runs",
            None,
            &[("cookie", "runledger_session=00ff")],
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Writes by cookie need the CSRF header; nothing is written without it.
    let before = server.event_count().await;
    let body = json!({ "definition": GREET });
    server
        .call(
            Method::POST,
            "/v1/runs",
            Some(body.clone()),
            &[("cookie", &cookie)],
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_header_missing");
    assert_eq!(server.event_count().await, before);
    let started = server
        .call(
            Method::POST,
            "/v1/runs",
            Some(body),
            &[("cookie", &cookie), ("x-runledger-csrf", "1")],
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{started:?}");

    let out = server.call(Method::DELETE, "/v1/session", None, &[]).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    server.finish().await;

    let open = TestServer::with_config(
        backend,
        ApiConfig {
            token: Some(token.into()),
            open_reads: true,
            ..ApiConfig::default()
        },
    )
    .await;
    assert_eq!(open.get("/v1/runs").await.status, StatusCode::OK);
    open.post("/v1/runs", json!({ "definition": GREET }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    open.finish().await;
}

on_backends!(
    postgres: [with_a_token_every_mutating_request_needs_it, without_a_token_mutating_requests_are_open, with_a_token_reads_need_it_and_the_session_cookie_stands_in],
    both: [],
);
