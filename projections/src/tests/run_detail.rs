//! run_detail over real runs of the engine.

use std::collections::BTreeMap;

use runledger_contracts::events::{Control, DomainEvent};
use runledger_contracts::ids::RequestId;
use runledger_contracts::time::Timestamp;
use runledger_orchestrator::ControlAction;
use serde_json::json;

use super::{TWO_STEP, example, flowchart, harness};
use crate::error::QueryError;
use crate::query::{RunFilter, list_runs, node_run_detail, run_detail};

#[tokio::test]
async fn review_loop_detail_has_status_node_runs_routing_retries_and_timeline() {
    let h = harness().await;
    let run = h
        .run(example("review-loop.yaml"), json!({ "topic": "owls" }))
        .await;
    h.catch_up().await;
    let detail = run_detail(&h.pool(), run)
        .await
        .unwrap()
        .expect("the run is projected");

    assert_eq!(detail.run.status, "completed");
    assert_eq!(detail.run.flowchart_name, "review-loop");
    assert_eq!(detail.inputs, json!({ "topic": "owls" }));
    assert_eq!(detail.output, Some(json!({ "score": 9, "notes": "good" })));
    assert_eq!(detail.run.node_run_count, 9);
    assert_eq!(
        detail.run.node_run_counts,
        BTreeMap::from([("failed".to_owned(), 1), ("succeeded".to_owned(), 8)])
    );
    let ended = detail.run.ended_at.expect("ended");
    assert_eq!(
        detail.run.duration_ms,
        Some(detail.run.started_at.millis_until(ended))
    );
    assert!(
        detail.deadline.is_some(),
        "limits.max_runtime_s becomes a deadline"
    );

    let nodes: Vec<&str> = detail
        .node_runs
        .iter()
        .map(|n| n.node_id.as_str())
        .collect();
    assert_eq!(
        nodes,
        [
            "start", "draft", "review", "review", "gate", "draft", "review", "gate", "done"
        ]
    );
    assert_eq!(
        detail
            .node_runs
            .iter()
            .map(|n| n.ordinal)
            .collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );

    // The retried review: attempt 1 failed, attempt 2 retries it.
    let (first, second) = (&detail.node_runs[2], &detail.node_runs[3]);
    assert_eq!((first.status.as_str(), first.attempt), ("failed", 1));
    assert_eq!(
        first.error.as_ref().map(|e| e.code.as_str()),
        Some("provider_unavailable")
    );
    assert_eq!(
        first.retry.as_ref().map(|r| (r.next_attempt, r.backoff_ms)),
        Some((2, 100))
    );
    assert_eq!(
        (second.attempt, second.retry_of),
        (2, Some(first.node_run_id))
    );
    assert_eq!(second.status, "succeeded");
    assert_eq!(second.executor.as_deref(), Some("inprocess"));
    assert!(
        second.started_at.is_some() && second.finished_at.is_some() && second.duration_ms.is_some()
    );

    // Routing of both gate runs, with evaluations.
    let gates: Vec<_> = detail
        .node_runs
        .iter()
        .filter(|n| n.node_id == "gate")
        .collect();
    let routing = |i: usize| {
        gates[i]
            .routing
            .as_ref()
            .expect("a decision records its routing")
    };
    assert_eq!(routing(0).matched_connectors, ["revise"]);
    assert_eq!(routing(1).matched_connectors, ["approve"]);
    assert_eq!(routing(1).evaluations.len(), 2);
    assert!(gates.iter().all(|g| !g.degraded));
    assert_eq!(
        detail.node_runs[5].execution_index, 1,
        "the second draft is the loop's second round"
    );

    // Each node run names exactly the artifact the ledger recorded for it.
    let events = h.events(run).await;
    for n in &detail.node_runs {
        let recorded: Vec<_> = events
            .iter()
            .filter_map(|(_, d)| match d {
                DomainEvent::ArtifactPersisted(a) if a.node_run_id == n.node_run_id => {
                    Some(a.artifact_id)
                }
                _ => None,
            })
            .collect();
        assert_eq!(n.artifact_ids, recorded, "{}", n.node_id);
        assert_eq!(n.artifact_ids.len(), 1);
    }

    // Timeline: run transitions, operator actions and node runs that did not simply succeed,
    // in stream order; routine node transitions are the node runs' timestamps.
    let timeline: Vec<(u64, &str)> = detail
        .timeline
        .iter()
        .map(|t| (t.stream_version, t.event_type.as_str()))
        .collect();
    let expected: Vec<(u64, &str)> = events
        .iter()
        .filter(|(e, _)| {
            matches!(
                e.event_type.as_str(),
                "RunStarted" | "RunCompleted" | "NodeFailed" | "NodeRetryScheduled"
            )
        })
        .map(|(e, _)| (e.stream_version, e.event_type.as_str()))
        .collect();
    assert_eq!(timeline, expected);
    assert_eq!(timeline.len(), 4);
    assert_eq!(
        detail.timeline.first().map(|t| t.event_type.as_str()),
        Some("RunStarted")
    );
    assert_eq!(
        detail.timeline.last().map(|t| t.event_type.as_str()),
        Some("RunCompleted")
    );
    let retry = detail
        .timeline
        .iter()
        .find(|t| t.event_type == "NodeRetryScheduled")
        .unwrap();
    assert_eq!(
        (retry.category.as_str(), retry.node_id.as_deref()),
        ("node", Some("review"))
    );
    assert!(retry.detail.contains("attempt 2"), "{}", retry.detail);

    // Node run detail: its tool call (through the scripted model), its one artifact.
    let detail = node_run_detail(&h.pool(), run, first.node_run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.tool_calls.len(), 1);
    assert_eq!(detail.tool_calls[0].provider.as_deref(), Some("scripted"));
    assert_eq!(detail.tool_calls[0].outcome, "error");
    assert_eq!(detail.artifacts.len(), 1);
    assert_eq!(detail.artifacts[0].artifact_type, "failure");
    assert!(detail.timeline.iter().any(|t| t.event_type == "NodeFailed"));
    assert!(
        node_run_detail(
            &h.pool(),
            runledger_contracts::ids::RunId::new_v7(),
            first.node_run_id
        )
        .await
        .unwrap()
        .is_none()
    );
    h.finish().await;
}

#[tokio::test]
async fn fallback_routing_marks_the_decision_degraded() {
    let h = harness().await;
    let run = h
        .run(example("fallback-route.yaml"), json!({ "ticket": "?" }))
        .await;
    h.catch_up().await;
    let detail = run_detail(&h.pool(), run).await.unwrap().unwrap();
    let route = detail
        .node_runs
        .iter()
        .find(|n| n.node_id == "route")
        .unwrap();
    let routing = route.routing.as_ref().unwrap();
    assert!(routing.no_match);
    assert_eq!(routing.fallback_connector.as_deref(), Some("to_triage"));
    assert!(route.degraded, "a fallback route is a degraded decision");
    assert!(
        detail
            .node_runs
            .iter()
            .filter(|n| n.node_id != "route")
            .all(|n| !n.degraded)
    );
    let fallback: Vec<_> = detail
        .timeline
        .iter()
        .filter(|t| t.event_type == "RoutingDecided")
        .collect();
    assert_eq!(fallback.len(), 1, "a fallback route is on the timeline");
    assert_eq!(fallback[0].node_run_id, Some(route.node_run_id));
    assert!(
        fallback[0].detail.contains("`to_triage`"),
        "{}",
        fallback[0].detail
    );
    h.finish().await;
}

#[tokio::test]
async fn operator_actions_are_on_the_timeline_with_actor_and_reason() {
    let h = harness().await;
    let flow = flowchart(
        "name: ops\nnodes:\n  - { id: start, type: start }\n  - { id: b, type: task, model: scripted, scripted: [{ error: { code: bad, message: broken } }, { output: { v: 2 } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: b }\n  - { id: c2, from: b, to: end }\n",
    );
    let run = h.run(flow, json!({})).await;
    h.catch_up().await;
    let failed = run_detail(&h.pool(), run).await.unwrap().unwrap();
    assert_eq!(failed.run.status, "failed");
    assert_eq!(failed.error.as_ref().map(|e| e.code.as_str()), Some("bad"));
    assert!(failed.run.ended_at.is_some());

    let control = Control {
        actor: "alice".into(),
        reason: "transient".into(),
    };
    h.engine
        .control(
            run,
            ControlAction::RetryNode { node: "b".into() },
            control,
            RequestId::generate(),
        )
        .await
        .unwrap();
    let summary = h.wait(run).await;
    assert_eq!(summary.status.as_str(), "completed");
    h.catch_up().await;
    let detail = run_detail(&h.pool(), run).await.unwrap().unwrap();
    assert_eq!(detail.run.status, "completed");
    assert_eq!(
        detail.error, None,
        "a reopened run that completes has no error"
    );
    let operator: Vec<_> = detail
        .timeline
        .iter()
        .filter(|t| t.category == "operator")
        .collect();
    assert_eq!(
        operator
            .iter()
            .map(|t| t.event_type.as_str())
            .collect::<Vec<_>>(),
        ["RunResumed", "NodeRetryScheduled"]
    );
    for t in &operator {
        assert_eq!(
            (t.actor.as_deref(), t.reason.as_deref()),
            (Some("alice"), Some("transient"))
        );
    }
    assert_eq!(operator[0].detail, "reopened the failed run");
    let b: Vec<_> = detail
        .node_runs
        .iter()
        .filter(|n| n.node_id == "b")
        .collect();
    assert_eq!(
        b.iter().map(|n| n.status.as_str()).collect::<Vec<_>>(),
        ["failed", "succeeded"]
    );
    assert_eq!(
        b[0].retry
            .as_ref()
            .and_then(|r| r.control.as_ref())
            .map(|c| c.actor.as_str()),
        Some("alice")
    );
    h.finish().await;
}

#[tokio::test]
async fn runs_list_newest_first_with_filters_and_cursor_pagination() {
    let h = harness().await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(h.run(flowchart(TWO_STEP), json!({})).await);
    }
    let between = Timestamp::now();
    let failing = flowchart(
        "name: fails\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ error: { code: boom, message: no } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: end }\n",
    );
    runs.push(h.run(failing, json!({})).await);
    h.catch_up().await;
    let pool = h.pool();

    // Pages of 2, newest first, through the cursor.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list_runs(
            &pool,
            &RunFilter {
                cursor: cursor.clone(),
                limit: Some(2),
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|r| r.run_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut newest_first = runs.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let failed = list_runs(
        &pool,
        &RunFilter {
            status: Some("failed".into()),
            ..RunFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        failed.items.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        [runs[3]]
    );
    assert_eq!(failed.items[0].node_run_counts.get("failed"), Some(&1));
    let by_name = list_runs(
        &pool,
        &RunFilter {
            flowchart: Some("two-step".into()),
            ..RunFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(by_name.items.len(), 3);
    assert!(
        by_name
            .items
            .iter()
            .all(|r| r.status == "completed" && r.node_run_count == 3)
    );
    let after = list_runs(
        &pool,
        &RunFilter {
            started_after: Some(between),
            ..RunFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        after.items.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        [runs[3]]
    );
    let before = list_runs(
        &pool,
        &RunFilter {
            started_before: Some(between),
            ..RunFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(before.items.len(), 3);
    // Search: a case-insensitive part of the flowchart name, a run id's prefix; `%` is text.
    let search = |text: &str| RunFilter {
        search: Some(text.into()),
        ..RunFilter::default()
    };
    let found = list_runs(&pool, &search("WO-ST")).await.unwrap();
    assert_eq!(found.items.len(), 3);
    let prefix = runs[3].to_string()[..30].to_owned();
    let found = list_runs(&pool, &search(&prefix)).await.unwrap();
    assert_eq!(
        found.items.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        [runs[3]]
    );
    assert!(
        list_runs(&pool, &search("%"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let bad = list_runs(
        &pool,
        &RunFilter {
            status: Some("exploded".into()),
            ..RunFilter::default()
        },
    )
    .await;
    assert!(
        matches!(
            bad,
            Err(QueryError::InvalidFilter {
                field: "status",
                ..
            })
        ),
        "{bad:?}"
    );
    let bad = list_runs(
        &pool,
        &RunFilter {
            cursor: Some("nonsense".into()),
            ..RunFilter::default()
        },
    )
    .await;
    assert!(
        matches!(bad, Err(QueryError::InvalidCursor { .. })),
        "{bad:?}"
    );
    let bad = list_runs(
        &pool,
        &RunFilter {
            limit: Some(0),
            ..RunFilter::default()
        },
    )
    .await;
    assert_eq!(bad.unwrap_err().code(), "invalid_limit");
    assert!(
        run_detail(&pool, runledger_contracts::ids::RunId::new_v7())
            .await
            .unwrap()
            .is_none()
    );
    h.finish().await;
}
