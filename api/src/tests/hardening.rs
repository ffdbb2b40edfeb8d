//! The API contract under attack (issue 10 items 7 to 11): each refusal is a 4xx envelope and
//! writes nothing.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Backend;
use super::{GREET, TestServer, slow};
use crate::ApiConfig;
use crate::request_head;
use runledger_contracts::error::ErrorEnvelope;

async fn a_control_reusing_another_requests_id_is_refused_and_applies_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
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

async fn a_refused_start_neither_records_nor_burns_its_idempotency_key(backend: Backend) {
    let server = TestServer::start(backend).await;
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

async fn nul_bytes_unknown_parameters_and_unreachable_versions_are_client_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
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

async fn if_none_match_takes_weak_tags_lists_and_the_star(backend: Backend) {
    let server = TestServer::start(backend).await;
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

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let token = "case-token";
    let server = TestServer::with_config(
        backend,
        ApiConfig {
            token: Some(token.into()),
            ..ApiConfig::default()
        },
    )
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

async fn slow_clients_are_disconnected_and_the_server_keeps_answering(backend: Backend) {
    let server = TestServer::with_config(
        backend,
        ApiConfig {
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            max_connections: 16,
            ..ApiConfig::default()
        },
    )
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
    // A head that starts and never ends: 408 with the envelope.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let sent = read_until_closed(&mut stream).await;
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.contains("\"request_timeout\""), "{sent}");
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    server.finish().await;
}

/// Sends `bytes` on a new connection; the status line and the envelope of what came back.
async fn raw_exchange(addr: &str, bytes: &[u8]) -> (String, ErrorEnvelope) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before all of a large head is written.
    let _ = stream.write_all(bytes).await;
    let sent = read_until_closed(&mut stream).await;
    let (head, body) = sent.split_once("\r\n\r\n").unwrap_or((&sent, ""));
    let envelope = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {head}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (head.lines().next().unwrap_or("").to_owned(), envelope)
}

async fn requests_hyper_cannot_parse_are_answered_with_the_envelope(backend: Backend) {
    let server = TestServer::start(backend).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(request_head::MAX_HEAD_BYTES)
    );
    let long_target = format!(
        "GET /v1/runs?flowchart={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(request_head::MAX_TARGET_BYTES)
    );
    let mut many_headers = "GET /healthz HTTP/1.1\r\n".to_owned();
    for i in 0..=request_head::MAX_HEADERS {
        many_headers.push_str(&format!("X-H{i}: y\r\n"));
    }
    many_headers.push_str("\r\n");
    let cases: [(&[u8], &str, &str); 7] = [
        (b"NOT A REQUEST\r\n\r\n", "HTTP/1.1 400", "malformed_request"),
        (b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n", "HTTP/1.1 400", "malformed_request"),
        (b"GET /healthz HTTP/2.0\r\n\r\n", "HTTP/1.1 400", "malformed_request"),
        (
            b"POST /v1/flowcharts HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            "HTTP/1.1 400",
            "malformed_request",
        ),
        (big_header.as_bytes(), "HTTP/1.1 431", "request_header_too_large"),
        (many_headers.as_bytes(), "HTTP/1.1 431", "request_header_too_large"),
        (long_target.as_bytes(), "HTTP/1.1 414", "uri_too_long"),
    ];
    let before = server.event_count().await;
    for (bytes, status, code) in cases {
        let (line, envelope) = raw_exchange(&addr, bytes).await;
        assert!(!line.is_empty(), "no answer for {code}");
        assert!(line.starts_with(status), "{line} for {code}");
        assert_eq!(envelope.error.code, code);
        assert!(envelope.error.request_id.is_some(), "{envelope:?}");
    }
    assert_eq!(server.event_count().await, before);
    // A good head is handed to hyper with everything read after it: a body in the same
    // packet, then a second request on the same connection.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = serde_json::to_string(&json!({ "definition": GREET })).unwrap();
    let request = format!(
        "POST /v1/flowcharts/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let sent = read_until_closed(&mut stream).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert!(sent.contains("\"valid\":true"), "{sent}");
    assert_eq!(sent.matches("HTTP/1.1 200").count(), 2, "{sent}");
    server.finish().await;
}

/// The status lines of the responses in what a connection received, in order.
/// (A response's body, when it has no line end, runs into the next status line.)
fn status_lines(sent: &str) -> Vec<&str> {
    sent.match_indices("HTTP/1.1 ")
        .map(|(at, _)| {
            let line = &sent[at..];
            &line[..line.find("\r\n").unwrap_or(line.len())]
        })
        .collect()
}

/// The envelope in the body of the last response a connection received.
fn last_envelope(sent: &str) -> ErrorEnvelope {
    let body = sent.rsplit("\r\n\r\n").next().unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {sent}"))
}

/// Reads one whole response with a `Content-Length` body from a connection left open.
async fn read_one_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk));
        match read.await {
            Ok(Ok(0)) => panic!("the server closed the connection: {text}"),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => panic!("{e}: {text}"),
            Err(_) => panic!("no whole response: {text}"),
        }
    }
}

async fn every_request_head_of_a_keep_alive_connection_is_checked(backend: Backend) {
    let server = TestServer::with_config(
        backend,
        ApiConfig {
            header_read_timeout: Duration::from_millis(500),
            ..ApiConfig::default()
        },
    )
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let before = server.event_count().await;
    let bad_head = "GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n";
    let exchange = |bytes: String| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let _ = stream.write_all(bytes.as_bytes()).await;
            read_until_closed(&mut stream).await
        }
    };

    // A good request answered, then a bad head on the same connection: before, hyper's bare
    // `400` with an empty body.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_one_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    stream.write_all(bad_head.as_bytes()).await.unwrap();
    let sent = read_until_closed(&mut stream).await;
    assert!(sent.starts_with("HTTP/1.1 400"), "{sent}");
    let envelope = last_envelope(&sent);
    assert_eq!(envelope.error.code, "malformed_request");
    assert!(envelope.error.request_id.is_some(), "{envelope:?}");

    // Pipelined: the good request's answer first, then the refusal of the bad head.
    let sent = exchange(format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{bad_head}"
    ))
    .await;
    assert_eq!(
        status_lines(&sent),
        ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"],
        "{sent}"
    );
    assert_eq!(last_envelope(&sent).error.code, "malformed_request");

    // A good pipelined series is served whole, `HEAD` (a length and no body) included.
    let sent = exchange(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_owned(),
    )
    .await;
    assert_eq!(status_lines(&sent), ["HTTP/1.1 200 OK"; 3], "{sent}");
    // `HEAD`, whose answer has a length but no body, then a bad head.
    let sent = exchange(format!(
        "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n{bad_head}"
    ))
    .await;
    assert_eq!(
        status_lines(&sent),
        ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"],
        "{sent}"
    );

    // A chunked body (an extension, chunks split anywhere, a trailer), then a bad head.
    let body = serde_json::to_string(&json!({ "definition": GREET })).unwrap();
    let (a, b) = body.split_at(body.len() / 3);
    let sent = exchange(format!(
        "POST /v1/flowcharts/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: y\r\n\r\n\
         {bad_head}",
        a.len(),
        b.len()
    ))
    .await;
    assert_eq!(
        status_lines(&sent),
        ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"],
        "{sent}"
    );
    assert!(sent.contains("\"valid\":true"), "{sent}");
    assert_eq!(last_envelope(&sent).error.code, "malformed_request");

    // A `Content-Length` body, then a head with too many headers, then one with a long target.
    let mut many_headers = "GET /healthz HTTP/1.1\r\n".to_owned();
    for i in 0..=request_head::MAX_HEADERS {
        many_headers.push_str(&format!("X-H{i}: y\r\n"));
    }
    many_headers.push_str("\r\n");
    let sent = exchange(format!(
        "POST /v1/flowcharts/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}{many_headers}",
        body.len()
    ))
    .await;
    assert_eq!(
        status_lines(&sent),
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 431 Request Header Fields Too Large"
        ],
        "{sent}"
    );
    assert_eq!(last_envelope(&sent).error.code, "request_header_too_large");
    let long_target = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/runs?flowchart={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(request_head::MAX_TARGET_BYTES)
    );
    let sent = exchange(long_target).await;
    assert_eq!(
        status_lines(&sent),
        ["HTTP/1.1 200 OK", "HTTP/1.1 414 URI Too Long"],
        "{sent}"
    );
    assert_eq!(last_envelope(&sent).error.code, "uri_too_long");

    // A later head that starts and never ends: `408` with the envelope after the answer.
    let sent =
        exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n".to_owned())
            .await;
    assert_eq!(
        status_lines(&sent),
        ["HTTP/1.1 200 OK", "HTTP/1.1 408 Request Timeout"],
        "{sent}"
    );
    assert_eq!(last_envelope(&sent).error.code, "request_timeout");
    // An idle keep-alive connection is closed after the timeout without an answer.
    let sent = exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_owned()).await;
    assert_eq!(status_lines(&sent), ["HTTP/1.1 200 OK"], "{sent}");

    assert_eq!(server.event_count().await, before);
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    server.finish().await;
}

on_backends!(
    postgres: [nul_bytes_unknown_parameters_and_unreachable_versions_are_client_errors, if_none_match_takes_weak_tags_lists_and_the_star, the_bearer_scheme_is_case_insensitive, slow_clients_are_disconnected_and_the_server_keeps_answering, requests_hyper_cannot_parse_are_answered_with_the_envelope, every_request_head_of_a_keep_alive_connection_is_checked],
    both: [a_control_reusing_another_requests_id_is_refused_and_applies_nothing, a_refused_start_neither_records_nor_burns_its_idempotency_key],
);
