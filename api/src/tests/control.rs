use reqwest::{Method, StatusCode};
use runledger_contracts::ids::StreamId;
use runledger_ledger::EventStore;
use serde_json::json;

use super::Backend;
use super::{FLAKY, TestServer, slow};

async fn pause_resume_cancel_with_actor_reason_and_request_ids(backend: Backend) {
    let server = TestServer::start(backend).await;
    let run = server
        .start_inline(&slow("slow-pause", 600), json!({}))
        .await;

    let paused = server
        .call(
            Method::POST,
            &format!("/v1/runs/{run}/pause"),
            Some(json!({ "actor": "ops", "reason": "maintenance" })),
            &[("x-request-id", "pause-1")],
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{paused:?}");
    assert_eq!(paused.body["action"], json!("pause"));
    assert_eq!(paused.body["deduplicated"], json!(false));
    let event = &paused.body["events"][0];
    assert_eq!(event["event_type"], json!("RunPaused"));
    assert_eq!(
        event["payload"]["control"],
        json!({ "actor": "ops", "reason": "maintenance" })
    );
    assert_eq!(event["request_id"], json!("pause-1"));
    let start_correlation = server
        .state
        .store()
        .read_stream(&StreamId::for_run(run), 1, 1)
        .await
        .unwrap()[0]
        .correlation_id
        .to_string();
    assert_eq!(
        paused.header("x-correlation-id"),
        Some(start_correlation.as_str()),
        "control events keep the run's correlation id"
    );

    // The same request again: applied once.
    let events = server.event_count().await;
    let again = server
        .call(
            Method::POST,
            &format!("/v1/runs/{run}/pause"),
            Some(json!({ "actor": "ops", "reason": "maintenance" })),
            &[("x-request-id", "pause-1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["deduplicated"], json!(true));
    assert_eq!(server.event_count().await, events);
    // Pausing again with a new request id is an invalid transition.
    server
        .post(&format!("/v1/runs/{run}/pause"), json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "run_not_running");
    server
        .post(
            &format!("/v1/runs/{run}/resume"),
            json!({ "reason": "done" }),
        )
        .await;
    server
        .post(&format!("/v1/runs/{run}/resume"), json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "run_not_paused");

    // Forced cancel: the running node run is canceled now.
    let canceled = server
        .post(
            &format!("/v1/runs/{run}/cancel"),
            json!({ "force": true, "actor": "ops", "reason": "stop" }),
        )
        .await;
    assert_eq!(canceled.status, StatusCode::OK, "{canceled:?}");
    assert_eq!(canceled.body["action"], json!("cancel --force"));
    let types: Vec<&str> = canceled.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"RunCancelRequested") && types.contains(&"RunCanceled"),
        "{types:?}"
    );
    assert_eq!(server.wait(run).await, "canceled");
    server
        .post(&format!("/v1/runs/{run}/cancel"), json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "run_not_cancelable");
    // Controls may leave the body out.
    let r = server
        .client
        .post(server.url(&format!("/v1/runs/{run}/resume")))
        .send()
        .await
        .unwrap();
    super::Reply::read(r)
        .await
        .assert_error(StatusCode::CONFLICT, "run_not_paused");
    server.finish().await;
}

async fn node_retry_skip_and_rewind(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Retry: the node failed, the run failed; a retry reopens it and the second answer wins.
    let run = server.start_inline(FLAKY, json!({})).await;
    assert_eq!(server.wait(run).await, "failed");
    server
        .post(&format!("/v1/runs/{run}/nodes/done/retry"), json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "node_not_failed");
    server
        .post(&format!("/v1/runs/{run}/nodes/ghost/retry"), json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "unknown_node");
    let retried = server
        .post(
            &format!("/v1/runs/{run}/nodes/work/retry"),
            json!({ "actor": "ops", "reason": "transient" }),
        )
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{retried:?}");
    let types: Vec<&str> = retried.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"RunResumed"), "{types:?}");
    assert!(types.contains(&"NodeRetryScheduled"), "{types:?}");
    assert_eq!(server.wait(run).await, "completed");

    // Skip: end the failed node run with an operator's output; downstream continues with it.
    let run = server.start_inline(FLAKY, json!({})).await;
    assert_eq!(server.wait(run).await, "failed");
    server
        .post(&format!("/v1/runs/{run}/nodes/work/skip"), json!({}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let skipped = server
        .post(
            &format!("/v1/runs/{run}/nodes/work/skip"),
            json!({ "output": { "text": "by hand" }, "reason": "known issue" }),
        )
        .await;
    assert_eq!(skipped.status, StatusCode::OK, "{skipped:?}");
    assert_eq!(server.wait(run).await, "completed");
    let events = server
        .state
        .store()
        .read_stream(&StreamId::for_run(run), 1, 1000)
        .await
        .unwrap();
    let skip = events
        .iter()
        .find(|e| e.event_type == "NodeSkipped")
        .unwrap();
    assert_eq!(skip.payload["output"], json!({ "text": "by hand" }));
    assert_eq!(skip.payload["control"]["reason"], json!("known issue"));
    server
        .post(
            &format!("/v1/runs/{run}/nodes/start/skip"),
            json!({ "output": {} }),
        )
        .await
        .assert_error(StatusCode::CONFLICT, "node_not_skippable");

    // Rewind a node that never ran vs. one that did (on a failed run).
    let run = server.start_inline(FLAKY, json!({})).await;
    assert_eq!(server.wait(run).await, "failed");
    server
        .post(&format!("/v1/runs/{run}/nodes/done/rewind"), json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "node_never_ran");
    let rewound = server
        .post(
            &format!("/v1/runs/{run}/nodes/work/rewind"),
            json!({ "reason": "again" }),
        )
        .await;
    assert_eq!(rewound.status, StatusCode::OK, "{rewound:?}");
    assert!(
        rewound.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_type"] == json!("NodeRewound")),
        "{rewound:?}"
    );
    assert_eq!(server.wait(run).await, "completed");
    server.finish().await;
}

on_backends!(
    postgres: [],
    both: [pause_resume_cancel_with_actor_reason_and_request_ids, node_retry_skip_and_rewind],
);
