//! The projection-backed reads: runs, node runs, artifacts, claims.

use reqwest::StatusCode;
use runledger_contracts::ids::RunId;
use runledger_contracts::time::Timestamp;
use serde_json::{Value, json};

use super::Backend;
use super::{FLAKY, GREET, Reply, TestServer};

fn ids(r: &Reply, key: &str) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{r:?}"))
        .iter()
        .map(|i| i[key].as_str().unwrap().to_owned())
        .collect()
}

async fn runs_list_with_filters_and_cursor_and_detail(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.create_flowchart(GREET).await;
    let mut runs: Vec<RunId> = Vec::new();
    for _ in 0..3 {
        let r = server
            .post(
                "/v1/runs",
                json!({ "flowchart": "greet", "inputs": { "name": "Ada" } }),
            )
            .await;
        runs.push(r.body["run_id"].as_str().unwrap().parse().unwrap());
    }
    let failed = server.start_inline(FLAKY, json!({})).await;
    for run in runs.iter().chain([&failed]) {
        server.wait(*run).await;
        server.projected(*run).await;
    }
    // The node run detail's artifacts come from artifact_history, another projector.
    server.caught_up().await;
    let newest_first: Vec<String> = [failed]
        .iter()
        .chain(runs.iter().rev())
        .map(|r| r.to_string())
        .collect();
    let all = server.get("/v1/runs").await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    assert_eq!(ids(&all, "run_id"), newest_first);

    // Pages of 2 through the cursor.
    let page1 = server.get("/v1/runs?limit=2").await;
    let cursor = page1.body["next_cursor"].as_str().unwrap().to_owned();
    let page2 = server
        .get(&format!("/v1/runs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(
        [ids(&page1, "run_id"), ids(&page2, "run_id")].concat(),
        newest_first
    );
    assert_eq!(page2.body["next_cursor"], Value::Null);
    // Filters.
    let by_status = server.get("/v1/runs?status=failed").await;
    assert_eq!(ids(&by_status, "run_id"), [failed.to_string()]);
    let by_flowchart = server
        .get("/v1/runs?flowchart=greet&status=completed")
        .await;
    assert_eq!(ids(&by_flowchart, "run_id").len(), 3);
    let first = server.get(&format!("/v1/runs/{}", runs[0])).await;
    let started: Timestamp =
        Timestamp::parse(first.body["run"]["started_at"].as_str().unwrap()).unwrap();
    let after = server
        .get(&format!(
            "/v1/runs?started_after={}",
            started.to_string().replace(':', "%3A")
        ))
        .await;
    assert_eq!(ids(&after, "run_id"), newest_first, "inclusive");
    let before = server
        .get(&format!(
            "/v1/runs?started_before={}",
            started.to_string().replace(':', "%3A")
        ))
        .await;
    assert!(ids(&before, "run_id").is_empty(), "{before:?}");

    // Detail.
    assert_eq!(first.body["run"]["status"], json!("completed"));
    assert_eq!(first.body["run"]["flowchart_name"], json!("greet"));
    assert_eq!(first.body["run"]["flowchart_version"], json!(1));
    assert_eq!(first.body["inputs"], json!({ "name": "Ada" }));
    let node_runs = first.body["node_runs"].as_array().unwrap();
    assert_eq!(
        node_runs
            .iter()
            .map(|n| n["node_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["start", "hello", "done"]
    );
    assert!(!first.body["timeline"].as_array().unwrap().is_empty());

    // Node run detail, with its one artifact.
    let hello = node_runs[1]["node_run_id"].as_str().unwrap();
    let nr = server
        .get(&format!("/v1/runs/{}/node-runs/{hello}", runs[0]))
        .await;
    assert_eq!(nr.status, StatusCode::OK, "{nr:?}");
    assert_eq!(nr.body["node_run"]["node_id"], json!("hello"));
    assert_eq!(nr.body["artifacts"].as_array().unwrap().len(), 1);
    assert_eq!(nr.body["tool_calls"].as_array().unwrap().len(), 1);
    server
        .get(&format!(
            "/v1/runs/{}/node-runs/{}",
            runs[0],
            RunId::new_v7()
        ))
        .await
        .assert_error(StatusCode::NOT_FOUND, "node_run_not_found");
    server.finish().await;
}

async fn artifacts_filter_and_page_newest_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = server.start_inline(GREET, json!({})).await;
    server.wait(a).await;
    let b = server.start_inline(FLAKY, json!({})).await;
    server.wait(b).await;
    server.caught_up().await;
    let all = server.get("/v1/artifacts").await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    let items = all.body["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        3 + 2,
        "one artifact per node run (greet: 3, flaky: start and the failed work)"
    );
    let positions: Vec<u64> = items
        .iter()
        .map(|i| i["global_position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "newest first: {positions:?}"
    );

    let of_a = server.get(&format!("/v1/artifacts?run_id={a}")).await;
    assert_eq!(of_a.body["items"].as_array().unwrap().len(), 3);
    let tasks = server.get("/v1/artifacts?node_type=task").await;
    assert_eq!(ids(&tasks, "node_id"), ["work", "hello"]);
    let failures = server.get("/v1/artifacts?artifact_type=failure").await;
    assert_eq!(ids(&failures, "run_id"), [b.to_string()]);
    let by_node = server
        .get(&format!("/v1/artifacts?run_id={a}&node_id=hello"))
        .await;
    let artifact_id = ids(&by_node, "artifact_id").pop().unwrap();
    let node_run = by_node.body["items"][0]["node_run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_node_run = server
        .get(&format!("/v1/artifacts?node_run_id={node_run}"))
        .await;
    assert_eq!(
        ids(&by_node_run, "artifact_id"),
        std::slice::from_ref(&artifact_id)
    );
    let page1 = server.get("/v1/artifacts?limit=2").await;
    let page2 = server
        .get(&format!(
            "/v1/artifacts?limit=2&cursor={}",
            page1.body["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        [ids(&page1, "artifact_id"), ids(&page2, "artifact_id")].concat(),
        ids(&all, "artifact_id")[..4].to_vec()
    );

    let detail = server.get(&format!("/v1/artifacts/{artifact_id}")).await;
    assert_eq!(detail.status, StatusCode::OK, "{detail:?}");
    assert_eq!(detail.body["artifact_type"], json!("task_output"));
    assert_eq!(detail.body["payload"]["output"], json!({ "text": "hi" }));
    for key in [
        "contract_version",
        "request_id",
        "correlation_id",
        "idempotency_key",
        "content_hash",
    ] {
        assert!(!detail.body[key].is_null(), "{key} in {}", detail.body);
    }
    server
        .get(&format!("/v1/artifacts/{}", RunId::new_v7()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "artifact_not_found");
    server.finish().await;
}

async fn claims_globally_and_per_run(backend: Backend) {
    let server = TestServer::start(backend).await;
    let run = server.start_inline(GREET, json!({})).await;
    server.wait(run).await;
    server.projected(run).await;
    // claim_evidence is its own projector: wait until it has caught up too.
    server.caught_up().await;
    let claims = server.get("/v1/claims").await;
    assert_eq!(claims.status, StatusCode::OK, "{claims:?}");
    let items = claims.body["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for claim in items {
        assert!(
            ["pass", "fail", "insufficient_evidence"].contains(&claim["status"].as_str().unwrap()),
            "{claim}"
        );
        assert_ne!(
            claim["status"],
            json!("fail"),
            "a clean run violates nothing: {claim}"
        );
    }
    assert!(
        items.iter().any(|c| c["status"] == json!("pass")),
        "{items:?}"
    );
    let of_run = server.get(&format!("/v1/runs/{run}/claims")).await;
    assert_eq!(of_run.status, StatusCode::OK);
    assert_eq!(of_run.body["items"].as_array().unwrap().len(), items.len());
    server
        .get(&format!("/v1/runs/{}/claims", RunId::new_v7()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "run_not_found");
    server.finish().await;
}

/// The run detail is cached by (run, version): a change shows at once, an unchanged run answers
/// 304 to its ETag.
async fn run_detail_etags_follow_the_run_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let run = server
        .start_inline(&super::slow("etag", 800), json!({}))
        .await;
    let first = server.projected(run).await;
    let r1 = server.get(&format!("/v1/runs/{run}")).await;
    let etag1 = r1.header("etag").unwrap().to_owned();
    assert_eq!(r1.body, first);
    assert_eq!(r1.body["run"]["status"], json!("running"));
    let same = server
        .call(
            reqwest::Method::GET,
            &format!("/v1/runs/{run}"),
            None,
            &[("if-none-match", &etag1)],
        )
        .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED, "{same:?}");
    assert_eq!(same.header("etag"), Some(etag1.as_str()));

    let paused = server
        .post(&format!("/v1/runs/{run}/pause"), json!({}))
        .await;
    assert_eq!(paused.status, StatusCode::OK);
    let version = paused.body["events"][0]["stream_version"].as_u64().unwrap();
    let r2 = server
        .get(&format!("/v1/runs/{run}?min_version={version}"))
        .await;
    assert_eq!(
        r2.body["run"]["status"],
        json!("paused"),
        "not the cached answer: {:?}",
        r2.body["run"]
    );
    let etag2 = r2.header("etag").unwrap().to_owned();
    assert_ne!(etag1, etag2);
    let old = server
        .call(
            reqwest::Method::GET,
            &format!("/v1/runs/{run}"),
            None,
            &[("if-none-match", &etag1)],
        )
        .await;
    assert_eq!(old.status, StatusCode::OK);
    assert_ne!(old.body["run"]["status"], json!("running"));
    server
        .post(&format!("/v1/runs/{run}/cancel"), json!({ "force": true }))
        .await;
    server.wait(run).await;
    server.finish().await;
}

on_backends!(
    postgres: [],
    both: [runs_list_with_filters_and_cursor_and_detail, artifacts_filter_and_page_newest_first, claims_globally_and_per_run, run_detail_etags_follow_the_run_version],
);
