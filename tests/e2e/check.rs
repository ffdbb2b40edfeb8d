//! `runledger check` and `runledger projections` through the binary: a clean ledger passes, a
//! ledger broken on purpose (a node run that ends without its artifact, written straight to the
//! store) fails the gate and names the node run.

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::events::{
    ConsumedToken, DomainEvent, FlowchartRef, NodeScheduled, NodeStarted, NodeSucceeded, RunStarted,
};
use runledger_contracts::flowchart::{NodeType, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion};
use serde_json::{Value, json};

use super::{runledger, stderr, stdout};

const FLOW: &str = "name: broken\nnodes:\n  - { id: start, type: start }\n  - { id: work, type: task, model: scripted, scripted: [{ output: 1 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: work }\n  - { id: c2, from: work, to: end }\n";

/// A run whose `work` node run is scheduled, starts and succeeds, and never gets its
/// ArtifactPersisted. The `start` node run is in order.
async fn broken_run(ledger: &TestLedger) -> (RunId, NodeRunId) {
    let run = RunId::new_v7();
    let (start, work) = (NodeRunId::new_v7(), NodeRunId::new_v7());
    let flowchart = load(FLOW, SourceFormat::Yaml).unwrap();
    let definition = serde_json::to_value(flowchart.doc()).unwrap();
    let definition_hash = Digest::of(&canonical::to_canonical_vec(&definition).unwrap());
    let output = json!({ "output": {}, "warnings": [], "fallback_used": false });
    let artifact = json!({
        "run_id": run, "node_id": "start", "node_run_id": start, "node_type": "start",
        "artifact_id": RunId::new_v7(), "artifact_type": "run_input", "contract_version": 1,
        "status": "succeeded", "payload": output,
        "content_hash": Digest::of(&canonical::to_canonical_vec(&output).unwrap()),
        "idempotency_key": format!("{start}:artifact"), "request_id": "seed", "correlation_id": "e2e",
    });
    let scheduled = |node: &str, node_type, id, consumed_tokens| -> DomainEvent {
        NodeScheduled {
            run_id: run,
            node_id: node.into(),
            node_run_id: id,
            node_type,
            attempt: 1,
            execution_index: 0,
            input_context_hash: Digest::of(b"{}"),
            consumed_tokens,
            retry_of: None,
        }
        .into()
    };
    let events: Vec<DomainEvent> = vec![
        RunStarted {
            run_id: run,
            flowchart: FlowchartRef {
                name: "broken".into(),
                version: None,
                definition_hash,
            },
            definition,
            inputs: json!({}),
            parent: None,
            deadline: None,
            actor: "e2e".into(),
        }
        .into(),
        scheduled("start", NodeType::Start, start, vec![]),
        NodeSucceeded {
            run_id: run,
            node_id: "start".into(),
            node_run_id: start,
            attempt: 1,
            output: json!({}),
            warnings: vec![],
            fallback_used: false,
        }
        .into(),
    ];
    let mut new: Vec<NewEvent> = events
        .iter()
        .map(|e| NewEvent::from_domain(e).unwrap())
        .collect();
    new.push(NewEvent {
        event_type: "ArtifactPersisted".into(),
        schema_version: 1,
        payload: artifact,
        blob_refs: vec![],
    });
    new.extend(
        [
            scheduled(
                "work",
                NodeType::Task,
                work,
                vec![ConsumedToken {
                    connector_id: "c1".into(),
                    from_node_run_id: start,
                }],
            ),
            NodeStarted {
                run_id: run,
                node_id: "work".into(),
                node_run_id: work,
                attempt: 1,
                executor: "e2e".into(),
                deadline: None,
            }
            .into(),
            NodeSucceeded {
                run_id: run,
                node_id: "work".into(),
                node_run_id: work,
                attempt: 1,
                output: json!(1),
                warnings: vec![],
                fallback_used: false,
            }
            .into(),
        ]
        .iter()
        .map(|e| NewEvent::from_domain(e).unwrap()),
    );
    let request = AppendRequest::new(
        RequestId::new("seed").unwrap(),
        CorrelationId::new("e2e").unwrap(),
        new,
    );
    ledger
        .store
        .append(&StreamId::for_run(run), ExpectedVersion::NoStream, request)
        .await
        .unwrap();
    (run, work)
}

#[tokio::test]
async fn check_fails_on_a_node_run_without_artifact_and_names_it() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = Some(ledger.schema());

    // A clean run first: the gate passes.
    let out = runledger(
        &[
            "run",
            "examples/review-loop.yaml",
            "--input",
            r#"{"topic":"owls"}"#,
            "--wait",
        ],
        schema,
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = runledger(&["check"], schema);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("CLAIM"), "{table}");
    assert!(
        table.contains("node-run-has-one-artifact") && table.contains("pass"),
        "{table}"
    );
    assert!(
        table.contains("insufficient_evidence"),
        "no frontier node runs here: {table}"
    );
    assert!(
        table.trim_end().ends_with("failing at or above high: none"),
        "{table}"
    );

    let (run, work) = broken_run(&ledger).await;
    let out = runledger(&["check"], schema);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let table = stdout(&out);
    let line = table
        .lines()
        .find(|l| l.starts_with("node-run-has-one-artifact"))
        .unwrap();
    assert!(line.contains("critical") && line.contains("fail"), "{line}");
    assert!(
        line.contains(&work.to_string()) && line.contains("NodeSucceeded"),
        "the row names the node run: {line}"
    );
    assert!(
        table
            .trim_end()
            .ends_with("failing at or above high: node-run-has-one-artifact"),
        "{table}"
    );

    let out = runledger(&["check", "--json", "--run", &run.to_string()], schema);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (v["scope"].clone(), v["ok"].clone(), v["fail_on"].clone()),
        (json!(run.to_string()), json!(false), json!("high"))
    );
    let claim = v["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "node-run-has-one-artifact")
        .unwrap();
    assert_eq!(
        (
            claim["status"].clone(),
            claim["checked"].clone(),
            claim["violations"].clone()
        ),
        (json!("fail"), json!(2), json!(1))
    );
    let evidence = &claim["evidence"]["violating"][0];
    assert_eq!(evidence["node_run_id"], json!(work.to_string()));
    assert_eq!(
        (
            evidence["event_type"].clone(),
            evidence["stream_version"].clone()
        ),
        (json!("NodeSucceeded"), json!(7))
    );

    // Reporting only; thresholds below the failure; bad flags in one line.
    assert!(
        runledger(&["check", "--fail-on", "none"], schema)
            .status
            .success()
    );
    assert_eq!(
        runledger(&["check", "--fail-on", "medium,low"], schema)
            .status
            .code(),
        Some(1)
    );
    let out = runledger(&["check", "--fail-on", "hgh"], schema);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("runledger: error: --fail-on: `hgh` is not a severity"),
        "{}",
        stderr(&out)
    );
    let out = runledger(&["check", "--run", "nope"], schema);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("runledger: error: --run: `nope` is not a run id"),
        "{}",
        stderr(&out)
    );
    let out = runledger(&["check", "--run", &RunId::new_v7().to_string()], schema);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--run: no run"), "{}", stderr(&out));

    // Rebuild from zero reports its rate; status shows every projector caught up.
    let out = runledger(&["projections", "rebuild", "claim_evidence"], schema);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    assert!(
        line.starts_with("claim_evidence: rebuilt from position zero: ")
            && line.contains(" event(s) in "),
        "{line}"
    );
    let out = runledger(&["projections", "rebuild", "nope"], schema);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown projector `nope`"),
        "{}",
        stderr(&out)
    );
    // run_detail applies the broken run too: a node run without artifacts is a fact it can show.
    assert!(
        runledger(&["projections", "catch-up"], schema)
            .status
            .success()
    );
    let out = runledger(&["projections", "status", "--json"], schema);
    assert!(out.status.success(), "{}", stderr(&out));
    let lags: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let names: Vec<&str> = lags
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["run_detail", "artifact_history", "claim_evidence"]);
    assert!(
        lags.as_array()
            .unwrap()
            .iter()
            .all(|l| l["events_behind"] == json!(0) && l["error"].is_null()),
        "{lags}"
    );
    ledger.drop_schema().await.unwrap();
}

/// A report line: `<projector>: rebuilt from position zero: <n> event(s) in <s>s[ (<r> events/s)]`.
fn report_line(line: &str) -> (u64, f64, Option<f64>) {
    let rest = line
        .split_once(": rebuilt from position zero: ")
        .unwrap_or_else(|| panic!("not a report line: {line}"))
        .1;
    let (events, rest) = rest.split_once(" event(s) in ").unwrap();
    let (secs, rest) = rest.split_once('s').unwrap();
    let rate = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(" events/s)"))
        .map(|r| r.parse::<f64>().unwrap());
    (events.parse().unwrap(), secs.parse().unwrap(), rate)
}

/// Issue 10 item 21: `projections rebuild` printed impossible rates (494,271,686 events/s
/// beside a final 1,510/s). Each line's rate must be its events over its printed time, and
/// none is printed for a rebuild shorter than a tenth of a second (`0.00s` beside a rate is
/// a figure nobody can check); progress lines (stderr) never claim more events than exist
/// over less than a tenth of a second.
#[tokio::test]
async fn projections_rebuild_prints_rates_consistent_with_its_events_and_time() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = Some(ledger.schema());
    for _ in 0..3 {
        let out = runledger(&["run", "examples/fan-in.yaml", "--wait"], schema);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(ledger.store.pool())
        .await
        .unwrap();
    let total = u64::try_from(total).unwrap();
    // The default batch (a tiny, fast rebuild), then one event per batch (a commit each), which
    // takes long enough for a rate on most machines.
    let mut rates = 0;
    for args in [
        &["projections", "rebuild"][..],
        &["projections", "rebuild", "--batch-size", "1"][..],
    ] {
        let out = runledger(args, schema);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "one line per projector: {text}");
        for line in lines {
            let (events, secs, rate) = report_line(line);
            assert_eq!(events, total, "every event replayed: {line}");
            match rate {
                None => assert!(secs <= 0.10, "a rebuild of {secs} s has a rate: {line}"),
                Some(rate) => {
                    rates += 1;
                    // The time is printed to 1/100 s: the rate lies between the events over
                    // the longest and the shortest time that prints so.
                    assert!(secs >= 0.10, "a rate under a tenth of a second: {line}");
                    let (low, high) = (
                        events as f64 / (secs + 0.005),
                        events as f64 / (secs - 0.005),
                    );
                    assert!(
                        rate >= low.floor() && rate <= high.ceil(),
                        "{rate} events/s is not {events} events over {secs} s: {line}"
                    );
                }
            }
        }
        for progress in stderr(&out).lines().filter(|l| l.contains("events/s")) {
            let rate: f64 = progress
                .rsplit_once(", ")
                .and_then(|(_, r)| r.strip_suffix(" events/s"))
                .unwrap_or_else(|| panic!("{progress}"))
                .parse()
                .unwrap();
            assert!(
                rate <= total as f64 / 0.1,
                "more events per second than {total} events over 0.1 s: {progress}"
            );
        }
    }
    eprintln!("rebuild lines with a rate: {rates} of 6");
    ledger.drop_schema().await.unwrap();
}
