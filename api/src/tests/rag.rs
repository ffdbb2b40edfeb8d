//! `/v1/rag/collections`: create, list, get, index (full, delta, idempotent), status, query,
//! delete, and the typed errors, against real files and a real ledger.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::Backend;
use super::TestServer;

struct Dir(std::path::PathBuf);

impl Dir {
    fn new() -> Dir {
        let path =
            std::env::temp_dir().join(format!("rl-api-rag-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn collections_index_runs_and_queries_over_http(backend: Backend) {
    let (docs, data) = (Dir::new(), Dir::new());
    let server = TestServer::with_config(
        backend,
        crate::ApiConfig {
            rag_data_dir: data.0.clone(),
            run_projections: false,
            ..crate::ApiConfig::default()
        },
    )
    .await;
    docs.write(
        "guide.md",
        "# Guide\n\n## Ownership\n\nThe zebrafish rule of owners.\n",
    );
    docs.write("notes.txt", "plain notes about the quokka\n");
    let spec = json!({ "name": "handbook", "sources": [{ "name": "main", "kind": "directory", "path": docs.path(), "include": ["**/*"] }] });

    let created = server
        .call(
            Method::POST,
            "/v1/rag/collections",
            Some(json!({ "spec": spec, "actor": "ada" })),
            &[("x-request-id", "rag-1")],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(
        created.body,
        json!({ "name": "handbook", "version": 1, "event_type": "RagCollectionCreated", "deduplicated": false })
    );
    let again = server
        .call(
            Method::POST,
            "/v1/rag/collections",
            Some(json!({ "spec": spec, "actor": "ada" })),
            &[("x-request-id", "rag-1")],
        )
        .await;
    assert_eq!(
        (again.status, again.body["deduplicated"].clone()),
        (StatusCode::OK, json!(true))
    );
    server
        .post("/v1/rag/collections", json!({ "spec": spec }))
        .await
        .assert_error(StatusCode::CONFLICT, "collection_exists");
    let bad = json!({ "spec": { "name": "bad", "sources": [{ "name": "m", "kind": "directory", "path": "relative" }] } });
    let r = server.post("/v1/rag/collections", bad).await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    assert_eq!(r.body["error"]["details"]["field"], "sources[0].path");

    // Never indexed: the status says so and a query is refused with a typed error.
    let status = server.get("/v1/rag/collections/handbook/index").await;
    assert_eq!(
        (status.status, status.body["indexed"].clone()),
        (StatusCode::OK, json!(false))
    );
    server
        .post(
            "/v1/rag/collections/handbook/query",
            json!({ "query": "zebrafish" }),
        )
        .await
        .assert_error(StatusCode::CONFLICT, "collection_not_indexed");

    let full = server
        .call(
            Method::POST,
            "/v1/rag/collections/handbook/index",
            Some(json!({ "mode": "full" })),
            &[("x-request-id", "idx-1")],
        )
        .await;
    assert_eq!(full.status, StatusCode::CREATED, "{full:?}");
    assert_eq!(
        (
            full.body["files"]["added"].clone(),
            full.body["mode"].clone()
        ),
        (json!(2), json!("full"))
    );
    let version = full.body["index_version"].clone();
    // The same request id again: the recorded run, nothing read or written.
    let events = server.event_count().await;
    let repeat = server
        .call(
            Method::POST,
            "/v1/rag/collections/handbook/index",
            Some(json!({ "mode": "full" })),
            &[("x-request-id", "idx-1")],
        )
        .await;
    assert_eq!(
        (
            repeat.status,
            repeat.body["deduplicated"].clone(),
            repeat.body["index_version"].clone()
        ),
        (StatusCode::OK, json!(true), version.clone())
    );
    assert_eq!(server.event_count().await, events);
    // The same request id asking for something else: another mode, or the id of the
    // collection's create. Before, the first answered the full run as `deduplicated` and the
    // second ran a new index.
    for (mode, request_id) in [("delta", "idx-1"), ("full", "rag-1")] {
        server
            .call(
                Method::POST,
                "/v1/rag/collections/handbook/index",
                Some(json!({ "mode": mode })),
                &[("x-request-id", request_id)],
            )
            .await
            .assert_error(StatusCode::CONFLICT, "request_id_reused");
    }
    assert_eq!(server.event_count().await, events);

    docs.write("new.md", "# New\n\nThe axolotl chapter.\n");
    let delta = server
        .post("/v1/rag/collections/handbook/index", json!({}))
        .await;
    assert_eq!(delta.status, StatusCode::CREATED, "{delta:?}");
    assert_eq!(
        (
            delta.body["mode"].clone(),
            delta.body["files"]["added"].clone(),
            delta.body["files"]["read"].clone()
        ),
        (json!("delta"), json!(1), json!(1))
    );

    let got = server.get("/v1/rag/collections/handbook").await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(
        got.body["status"]["last_completed"]["index_version"],
        delta.body["index_version"]
    );
    assert_eq!(got.body["spec"]["sources"][0]["name"], "main");
    let list = server.get("/v1/rag/collections").await;
    assert_eq!(
        list.body["items"].as_array().map(Vec::len),
        Some(1),
        "{list:?}"
    );

    let hits = server
        .post(
            "/v1/rag/collections/handbook/query",
            json!({ "query": "axolotl", "top_k": 3 }),
        )
        .await;
    assert_eq!(hits.status, StatusCode::OK, "{hits:?}");
    assert_eq!(hits.body["hits"][0]["path"], "new.md");
    assert_eq!(hits.body["index_version"], delta.body["index_version"]);
    for (body, code) in [
        (json!({ "query": "x", "top_k": 0 }), "invalid_value"),
        (
            json!({ "query": "x", "path_glob": "[bad" }),
            "invalid_value",
        ),
        (
            json!({ "query": "x", "sources": ["nope"] }),
            "unknown_source",
        ),
    ] {
        server
            .post("/v1/rag/collections/handbook/query", body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, code);
    }
    server
        .post("/v1/rag/collections/ghost/query", json!({ "query": "x" }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "collection_not_found");
    server
        .post("/v1/rag/collections/ghost/index", json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "collection_not_found");

    let current = got.body["version"].as_u64().unwrap();
    server
        .call(
            Method::DELETE,
            &format!(
                "/v1/rag/collections/handbook?expected_version={}",
                current - 1
            ),
            None,
            &[],
        )
        .await
        .assert_error(StatusCode::CONFLICT, "version_conflict");
    let deleted = server
        .call(
            Method::DELETE,
            &format!("/v1/rag/collections/handbook?expected_version={current}"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (deleted.status, deleted.body["event_type"].clone()),
        (StatusCode::OK, json!("RagCollectionDeleted")),
        "{deleted:?}"
    );
    server
        .get("/v1/rag/collections/handbook")
        .await
        .assert_error(StatusCode::NOT_FOUND, "collection_not_found");
    server.finish().await;
}

on_backends!(
    postgres: [],
    both: [collections_index_runs_and_queries_over_http],
);
