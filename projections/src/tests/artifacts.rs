//! artifact_history: filters, newest first, cursor pagination, full detail.

use std::collections::HashSet;

use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::NodeType;
use serde_json::json;

use super::{example, harness};
use crate::error::QueryError;
use crate::query::{ArtifactFilter, RunFilter, artifact, list_artifacts, list_runs};

#[tokio::test]
async fn artifacts_list_newest_first_filter_and_paginate() {
    let h = harness().await;
    let a = h
        .run(example("review-loop.yaml"), json!({ "topic": "owls" }))
        .await;
    let b = h
        .run(example("review-loop.yaml"), json!({ "topic": "bats" }))
        .await;
    let c = h
        .run(example("fallback-route.yaml"), json!({ "ticket": "?" }))
        .await;
    h.catch_up().await;
    let pool = h.pool();

    // What the ledger holds, newest first.
    let mut recorded = Vec::new();
    for run in [a, b, c] {
        for (event, domain) in h.events(run).await {
            if let DomainEvent::ArtifactPersisted(p) = domain {
                recorded.push((event.position.global, p, event.stream_version));
            }
        }
    }
    recorded.sort_by_key(|(position, _, _)| std::cmp::Reverse(*position));
    assert_eq!(recorded.len(), 9 + 9 + 5, "one artifact per node run");

    // Every page of 5, through the cursor, in order, nothing twice.
    let mut listed = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = list_artifacts(
            &pool,
            &ArtifactFilter {
                cursor: cursor.clone(),
                limit: Some(5),
                ..ArtifactFilter::default()
            },
        )
        .await
        .unwrap();
        pages += 1;
        listed.extend(page.items.iter().map(|r| r.artifact_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 5, "23 artifacts in pages of 5");
    assert_eq!(
        listed,
        recorded
            .iter()
            .map(|(_, p, _)| p.artifact_id)
            .collect::<Vec<_>>()
    );

    let ids = |page: &crate::query::Page<crate::query::ArtifactRow>| {
        page.items
            .iter()
            .map(|r| r.artifact_id)
            .collect::<HashSet<_>>()
    };
    let only = |f: &dyn Fn(&runledger_contracts::events::ArtifactPersisted) -> bool| {
        recorded
            .iter()
            .filter(|(_, p, _)| f(p))
            .map(|(_, p, _)| p.artifact_id)
            .collect::<HashSet<_>>()
    };
    let page = list_artifacts(
        &pool,
        &ArtifactFilter {
            run_id: Some(b),
            ..ArtifactFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&page), only(&|p| p.run_id == b));
    let page = list_artifacts(
        &pool,
        &ArtifactFilter {
            node_type: Some(NodeType::Decision),
            ..ArtifactFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&page), only(&|p| p.node_type == NodeType::Decision));
    assert!(page.items.iter().all(|r| r.artifact_type == "routing"));
    let page = list_artifacts(
        &pool,
        &ArtifactFilter {
            artifact_type: Some("failure".into()),
            ..ArtifactFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.items.len(), 2, "one failed review per review-loop run");
    let page = list_artifacts(
        &pool,
        &ArtifactFilter {
            run_id: Some(a),
            node_id: Some("draft".into()),
            artifact_type: Some("task_output".into()),
            ..ArtifactFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&page), only(&|p| p.run_id == a && p.node_id == "draft"));
    assert_eq!(page.items.len(), 2);
    let (_, one, version) = &recorded[3];
    let page = list_artifacts(
        &pool,
        &ArtifactFilter {
            node_run_id: Some(one.node_run_id),
            ..ArtifactFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        page.items.iter().map(|r| r.artifact_id).collect::<Vec<_>>(),
        [one.artifact_id]
    );

    // Detail: the payload and everything the event said about it.
    let detail = artifact(&pool, one.artifact_id).await.unwrap().unwrap();
    assert_eq!(detail.payload, one.payload);
    assert_eq!(detail.content_hash, one.content_hash.to_hex());
    assert_eq!(detail.idempotency_key, one.idempotency_key);
    assert_eq!(detail.request_id, one.request_id.to_string());
    assert_eq!(detail.correlation_id, one.correlation_id.to_string());
    assert_eq!(detail.contract_version, 1);
    assert_eq!(detail.stream_version, *version);
    assert!(
        artifact(&pool, runledger_contracts::ids::ArtifactId::new_v7())
            .await
            .unwrap()
            .is_none()
    );

    // Cursors are opaque and belong to their list.
    let runs_cursor = list_runs(
        &pool,
        &RunFilter {
            limit: Some(1),
            ..RunFilter::default()
        },
    )
    .await
    .unwrap()
    .next_cursor
    .unwrap();
    let bad = list_artifacts(
        &pool,
        &ArtifactFilter {
            cursor: Some(runs_cursor),
            ..ArtifactFilter::default()
        },
    )
    .await;
    assert!(
        matches!(bad, Err(QueryError::InvalidCursor { .. })),
        "{bad:?}"
    );
    let bad = list_artifacts(
        &pool,
        &ArtifactFilter {
            limit: Some(10_000),
            ..ArtifactFilter::default()
        },
    )
    .await;
    assert!(
        matches!(bad, Err(QueryError::InvalidLimit { limit: 10_000, .. })),
        "{bad:?}"
    );
    h.finish().await;
}
