//! Claims: pass on the engine's runs, fail (naming the events) on ledgers broken on purpose.

use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    Control, DomainEvent, NodeDispatched, NodeStarted, ProviderCall, RoutingDecided, RunCompleted,
    ToolCalled, ToolOutcome,
};
use runledger_contracts::flowchart::NodeType;
use runledger_contracts::ids::{CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_orchestrator::ControlAction;
use serde_json::json;

use super::{
    TWO_STEP, append, append_as, artifact, example, flowchart, harness, run_started, scheduled,
    succeeded,
};
use crate::claims::{Registry, RegistryError, Severity};
use crate::query::{ClaimResult, ClaimStatus, claims};

fn by_id<'a>(results: &'a [ClaimResult], id: &str) -> &'a ClaimResult {
    results
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no claim {id}"))
}

#[tokio::test]
async fn claims_pass_on_the_engines_runs() {
    let h = harness().await;
    let mut runs = vec![
        h.run(example("review-loop.yaml"), json!({ "topic": "owls" }))
            .await,
        h.run(example("fan-in.yaml"), json!({ "topic": "owls" }))
            .await,
        h.run(example("fallback-route.yaml"), json!({ "ticket": "?" }))
            .await,
    ];
    // A failure reopened by an operator; a forced cancel.
    let flaky = flowchart(
        "name: ops\nnodes:\n  - { id: start, type: start }\n  - { id: a, type: task, model: scripted, scripted: [{ output: 1 }] }\n  - { id: b, type: task, model: scripted, scripted: [{ error: { code: bad, message: broken } }, { output: 2 }, { output: 3 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: a }\n  - { id: c2, from: a, to: b }\n  - { id: c3, from: b, to: end }\n",
    );
    let reopened = h.run(flaky, json!({})).await;
    let control = Control {
        actor: "alice".into(),
        reason: "transient".into(),
    };
    h.engine
        .control(
            reopened,
            ControlAction::RetryNode { node: "b".into() },
            control.clone(),
            RequestId::generate(),
        )
        .await
        .unwrap();
    h.wait(reopened).await;
    runs.push(reopened);
    let slow = flowchart(
        "name: slow\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ delay_ms: 1000, output: 1 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n",
    );
    let canceled = h.start(slow, json!({})).await;
    h.engine
        .control(
            canceled,
            ControlAction::Cancel { force: true },
            control,
            RequestId::generate(),
        )
        .await
        .unwrap();
    h.wait(canceled).await;
    runs.push(canceled);
    h.catch_up().await;

    let global = claims(&h.pool(), None).await.unwrap();
    assert_eq!(global.len(), 7);
    for claim in &global {
        let expected = if claim.checker == "frontier_runs_use_http_provider" {
            ClaimStatus::InsufficientEvidence
        } else {
            ClaimStatus::Pass
        };
        assert_eq!(claim.status, expected, "{claim:#?}");
        assert_eq!(claim.violations, 0);
        if expected == ClaimStatus::Pass {
            assert!(
                claim.checked > 0 && !claim.evidence.supporting.is_empty(),
                "{claim:#?}"
            );
            assert!(claim.evidence.supporting.len() <= 3);
        }
    }
    let artifacts = by_id(&global, "node-run-has-one-artifact");
    let node_runs: u64 = {
        let mut n = 0;
        for run in &runs {
            n += crate::query::run_detail(&h.pool(), *run)
                .await
                .unwrap()
                .unwrap()
                .run
                .node_run_count as u64;
        }
        n
    };
    assert_eq!(
        artifacts.checked, node_runs,
        "every node run was judged once"
    );
    // Every event the projector applied was judged once.
    let applied = crate::lag(&h.pool())
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.name == "claim_evidence")
        .unwrap();
    assert_eq!(
        by_id(&global, "events-carry-request-and-correlation-ids").checked,
        applied.events_applied
    );

    // Per run: the same verdicts, counted for that run only.
    let one = claims(&h.pool(), Some(runs[0])).await.unwrap();
    let artifacts = by_id(&one, "node-run-has-one-artifact");
    assert_eq!(
        (artifacts.status, artifacts.checked),
        (ClaimStatus::Pass, 9)
    );
    assert!(
        artifacts
            .evidence
            .supporting
            .iter()
            .all(|e| e.run_id == Some(runs[0]) && e.event_type == "ArtifactPersisted")
    );
    assert_eq!(by_id(&one, "routing-names-only-node-connectors").checked, 2);
    // The canceled node run still answers; let it land before the schema goes.
    h.until_result_ignored(canceled).await;
    h.finish().await;
}

#[tokio::test]
async fn a_node_run_without_an_artifact_fails_its_claim_naming_it() {
    let h = harness().await;
    let run = RunId::new_v7();
    let stream = StreamId::for_run(run);
    let chart = flowchart(TWO_STEP);
    let (start, work) = (NodeRunId::new_v7(), NodeRunId::new_v7());
    append(&h.ledger.store, &stream, vec![run_started(run, &chart)]).await;
    append_as(
        &h.ledger.store,
        &stream,
        vec![
            scheduled(run, "start", NodeType::Start, start, vec![]),
            succeeded(run, "start", start, json!({})),
            artifact(
                run,
                "start",
                NodeType::Start,
                start,
                json!({}),
                "r1",
                "broken",
            ),
            scheduled(run, "work", NodeType::Task, work, vec![("c1", start)]),
            NodeStarted {
                run_id: run,
                node_id: "work".into(),
                node_run_id: work,
                attempt: 1,
                executor: "x".into(),
                deadline: None,
            }
            .into(),
        ],
        RequestId::new("r1").unwrap(),
        CorrelationId::new("broken").unwrap(),
    )
    .await;
    // The node run ends, and no artifact follows.
    append(
        &h.ledger.store,
        &stream,
        vec![succeeded(run, "work", work, json!({ "ok": true }))],
    )
    .await;
    h.catch_up().await;

    for scope in [None, Some(run)] {
        let results = claims(&h.pool(), scope).await.unwrap();
        let claim = by_id(&results, "node-run-has-one-artifact");
        assert_eq!(claim.status, ClaimStatus::Fail);
        assert_eq!(claim.severity, Severity::Critical);
        assert_eq!((claim.checked, claim.violations), (2, 1));
        let evidence = &claim.evidence.violating[0];
        assert_eq!(evidence.node_run_id, Some(work));
        assert_eq!(
            (
                evidence.event_type.as_str(),
                evidence.stream_id.as_str(),
                evidence.stream_version
            ),
            ("NodeSucceeded", stream.as_str(), 7)
        );
        assert!(
            evidence.message.contains(&work.to_string())
                && evidence.message.contains("no ArtifactPersisted"),
            "{}",
            evidence.message
        );
        assert_eq!(
            claim.evidence.supporting.len(),
            1,
            "the start node run is fine"
        );
        // The rest of this ledger is sound.
        assert_eq!(
            by_id(&results, "fan-in-satisfied-before-scheduling").status,
            ClaimStatus::Pass
        );
        assert_eq!(
            by_id(&results, "artifact-payload-matches-contract").status,
            ClaimStatus::Pass
        );
    }

    // A run that ends with a node run still open is a violation too.
    append(
        &h.ledger.store,
        &stream,
        vec![scheduled(
            run,
            "end",
            NodeType::End,
            NodeRunId::new_v7(),
            vec![("c2", work)],
        )],
    )
    .await;
    append(
        &h.ledger.store,
        &stream,
        vec![
            RunCompleted {
                run_id: run,
                node_runs: 3,
                output: None,
            }
            .into(),
        ],
    )
    .await;
    h.catch_up().await;
    let results = claims(&h.pool(), Some(run)).await.unwrap();
    let claim = by_id(&results, "node-run-has-one-artifact");
    assert_eq!(claim.violations, 2);
    assert!(
        claim.evidence.violating[1].message.contains("never ended"),
        "{:?}",
        claim.evidence.violating
    );
    assert_eq!(claim.evidence.violating[1].event_type, "NodeScheduled");
    h.finish().await;
}

#[tokio::test]
async fn broken_routing_scheduling_fan_in_ids_and_contracts_fail_their_claims() {
    let h = harness().await;
    let chart = flowchart(
        "name: gate\nnodes:\n  - { id: start, type: start }\n  - { id: a, type: task, model: scripted, scripted: [{ output: 1 }] }\n  - { id: b, type: task, model: scripted, scripted: [{ output: 1 }] }\n  - { id: join, type: task, model: scripted, scripted: [{ output: 1 }] }\n  - id: gate\n    type: decision\n    conditions: [{ connector: yes, when: 'latest_upstream.output == 1' }]\n  - { id: end, type: end, fan_in: any }\nconnectors:\n  - { id: sa, from: start, to: a }\n  - { id: sb, from: start, to: b }\n  - { id: aj, from: a, to: join }\n  - { id: bj, from: b, to: join }\n  - { id: jg, from: join, to: gate }\n  - { id: yes, from: gate, to: end }\n  - { id: ae, from: a, to: end }\n",
    );
    let run = RunId::new_v7();
    let stream = StreamId::for_run(run);
    let ids = ["start", "a", "b", "join", "gate"].map(|_| NodeRunId::new_v7());
    let [start, a, b, join, gate] = ids;
    append(&h.ledger.store, &stream, vec![run_started(run, &chart)]).await;
    let ok =
        |node: &str, t: NodeType, id: NodeRunId, tokens: Vec<(&str, NodeRunId)>, request: &str| {
            vec![
                scheduled(run, node, t, id, tokens),
                succeeded(run, node, id, json!(1)),
                artifact(run, node, t, id, json!(1), request, "broken"),
            ]
        };
    let mut events = ok("start", NodeType::Start, start, vec![], "r1");
    events.extend(ok("a", NodeType::Task, a, vec![("sa", start)], "r1"));
    // b is scheduled but has not finished when join runs on `aj` alone (fan_in: all needs both).
    events.push(scheduled(run, "b", NodeType::Task, b, vec![("sb", start)]));
    events.extend(ok(
        "join",
        NodeType::Task,
        join,
        vec![("aj", a), ("bj", b)],
        "r1",
    ));
    append_as(
        &h.ledger.store,
        &stream,
        events,
        RequestId::new("r1").unwrap(),
        CorrelationId::new("broken").unwrap(),
    )
    .await;
    // The decision names `ae`, a connector of `a`, not of the gate.
    let routing = RoutingDecided {
        run_id: run,
        node_id: "gate".into(),
        node_run_id: gate,
        evaluations: vec![],
        route_key: None,
        route_key_matched: false,
        matched_connectors: vec!["yes".into(), "ae".into()],
        no_match: false,
        fallback_connector: None,
    };
    // An artifact whose hash does not match and whose request id is not its append's.
    let mut bad_artifact = match artifact(
        run,
        "gate",
        NodeType::Decision,
        gate,
        json!(1),
        "someone-else",
        "broken",
    ) {
        DomainEvent::ArtifactPersisted(a) => a,
        _ => unreachable!(),
    };
    bad_artifact.artifact_type = "routing".into();
    bad_artifact.content_hash = Digest::of(b"not the payload");
    append_as(
        &h.ledger.store,
        &stream,
        vec![
            scheduled(run, "gate", NodeType::Decision, gate, vec![("jg", join)]),
            routing.into(),
            succeeded(run, "gate", gate, json!(1)),
            DomainEvent::ArtifactPersisted(bad_artifact.clone()),
        ],
        RequestId::new("r2").unwrap(),
        CorrelationId::new("broken").unwrap(),
    )
    .await;
    // The run completes, then something is scheduled anyway.
    append(
        &h.ledger.store,
        &stream,
        vec![
            RunCompleted {
                run_id: run,
                node_runs: 5,
                output: None,
            }
            .into(),
        ],
    )
    .await;
    let late = NodeRunId::new_v7();
    append(
        &h.ledger.store,
        &stream,
        vec![scheduled(
            run,
            "end",
            NodeType::End,
            late,
            vec![("yes", gate)],
        )],
    )
    .await;
    h.catch_up().await;

    let results = claims(&h.pool(), Some(run)).await.unwrap();
    let failing = |id: &str, needle: &str| {
        let claim = by_id(&results, id);
        assert_eq!(claim.status, ClaimStatus::Fail, "{claim:#?}");
        assert!(
            claim
                .evidence
                .violating
                .iter()
                .any(|v| v.message.contains(needle)),
            "{id}: no violation mentions {needle:?}: {:#?}",
            claim.evidence.violating
        );
        claim.clone()
    };
    let fan_in = failing("fan-in-satisfied-before-scheduling", "had not succeeded");
    assert_eq!(
        fan_in.violations, 1,
        "only join: the late end node run had a valid token"
    );
    assert_eq!(fan_in.evidence.violating[0].node_run_id, Some(join));
    failing("routing-names-only-node-connectors", "`ae`");
    let late_claim = failing(
        "nothing-scheduled-after-run-end",
        "after the run's RunCompleted",
    );
    assert_eq!(late_claim.evidence.violating[0].node_run_id, Some(late));
    failing("artifact-payload-matches-contract", "content_hash");
    failing("events-carry-request-and-correlation-ids", "someone-else");
    assert_eq!(
        by_id(&results, "frontier-runs-use-http-provider").status,
        ClaimStatus::InsufficientEvidence
    );
    h.finish().await;
}

#[tokio::test]
async fn frontier_node_runs_must_call_an_http_provider() {
    let h = harness().await;
    let chart = flowchart(TWO_STEP);
    let mut verdicts = Vec::new();
    for provider in ["scripted", "openai"] {
        let run = RunId::new_v7();
        let stream = StreamId::for_run(run);
        let (start, work) = (NodeRunId::new_v7(), NodeRunId::new_v7());
        append(&h.ledger.store, &stream, vec![run_started(run, &chart)]).await;
        let request = format!("r-{provider}");
        let events = vec![
            scheduled(run, "start", NodeType::Start, start, vec![]),
            succeeded(run, "start", start, json!({})),
            artifact(
                run,
                "start",
                NodeType::Start,
                start,
                json!({}),
                &request,
                "c",
            ),
            scheduled(run, "work", NodeType::Task, work, vec![("c1", start)]),
            NodeDispatched {
                run_id: run,
                node_id: "work".into(),
                node_run_id: work,
                attempt: 1,
                executor_class: "frontier".into(),
                message_id: format!("{run}:{work}:1"),
                stream_sequence: None,
                dispatch_deadline: None,
            }
            .into(),
            ToolCalled {
                run_id: run,
                node_id: "work".into(),
                node_run_id: work,
                tool: "provider".into(),
                operation: "complete".into(),
                idempotency_key: format!("{work}:provider:1"),
                input_hash: Digest::of(b"prompt"),
                outcome: ToolOutcome::Ok,
                attempts: vec![],
                duration_ms: 5,
                provider: Some(ProviderCall {
                    provider: provider.into(),
                    model: "m".into(),
                    latency_ms: 5,
                    input_tokens: None,
                    output_tokens: None,
                }),
                output: None,
                error: None,
                agent: None,
            }
            .into(),
            succeeded(run, "work", work, json!(1)),
            artifact(run, "work", NodeType::Task, work, json!(1), &request, "c"),
        ];
        append_as(
            &h.ledger.store,
            &stream,
            events,
            RequestId::new(request).unwrap(),
            CorrelationId::new("c").unwrap(),
        )
        .await;
        h.catch_up().await;
        let results = claims(&h.pool(), Some(run)).await.unwrap();
        let claim = by_id(&results, "frontier-runs-use-http-provider").clone();
        assert_eq!(claim.checked, 1);
        verdicts.push(claim);
        let others = results
            .iter()
            .filter(|c| c.checker != "frontier_runs_use_http_provider");
        assert!(
            others.clone().all(|c| c.status != ClaimStatus::Fail),
            "{results:#?}"
        );
    }
    assert_eq!(verdicts[0].status, ClaimStatus::Fail);
    assert!(
        verdicts[0].evidence.violating[0]
            .message
            .contains("called the scripted model 1 time(s)")
    );
    assert_eq!(verdicts[1].status, ClaimStatus::Pass);
    h.finish().await;
}

#[test]
fn the_registry_embeds_every_claim_file_and_names_the_file_of_a_bad_one() {
    let registry = Registry::builtin().unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contracts/claims");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let embedded: Vec<&str> = crate::claims::registry::EMBEDDED
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        on_disk, embedded,
        "add new files under contracts/claims/ to EMBEDDED"
    );
    assert_eq!(Registry::from_dir(&dir).unwrap(), registry);
    for claim in registry.claims() {
        assert!(
            on_disk.contains(&format!("{}.yaml", claim.id)),
            "{}: files are named after their claim",
            claim.id
        );
    }
    assert_eq!(
        registry.checkers().len(),
        crate::claims::checkers::CHECKERS.len(),
        "every checker has a claim"
    );

    let file = |text: &str| vec![("x.yaml".to_owned(), text.to_owned())];
    let err =
        Registry::parse(file("id: a\nstatement: s\nseverity: high\nchecker: nope\n")).unwrap_err();
    assert!(
        matches!(&err, RegistryError::UnknownChecker { file, checker, .. } if file == "x.yaml" && checker == "nope"),
        "{err}"
    );
    let err = Registry::parse(file(
        "id: a\nstatement: s\nseverity: severe\nchecker: node_run_has_one_artifact\n",
    ))
    .unwrap_err();
    assert_eq!(err.code(), "invalid_claim");
    assert!(err.to_string().starts_with("x.yaml: "), "{err}");
    let err = Registry::parse(file(
        "id: A B\nstatement: s\nseverity: low\nchecker: node_run_has_one_artifact\n",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("a-z 0-9 -"), "{err}");
    let two = vec![
        (
            "x.yaml".to_owned(),
            "id: a\nstatement: s\nseverity: low\nchecker: node_run_has_one_artifact\n".to_owned(),
        ),
        (
            "y.yaml".to_owned(),
            "id: a\nstatement: t\nseverity: low\nchecker: node_run_has_one_artifact\n".to_owned(),
        ),
    ];
    assert!(matches!(
        Registry::parse(two).unwrap_err(),
        RegistryError::DuplicateId { .. }
    ));
    let extra =
        file("id: a\nstatement: s\nseverity: low\nchecker: node_run_has_one_artifact\nowner: me\n");
    assert!(
        Registry::parse(extra)
            .unwrap_err()
            .to_string()
            .contains("owner")
    );
}
