//! `runledger runs fork` and `POST /v1/runs/{run_id}/fork`: a new run from a node of a finished
//! decision loop, driven by `serve`; upstream results kept (no model call repeated), the source
//! unchanged but for its link events, both replayed with no divergence.

use std::time::{Duration, Instant};

use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::testing::TestLedger;
use serde_json::{Value, json};

use super::api::{Serve, json_of};
use super::{TempDir, runledger, stderr, stdout};

/// A review loop whose gate can also escalate to `human`, a node this run never reaches.
const FLOW: &str = r#"name: fork-loop
limits: { max_node_executions: 40 }
nodes:
  - { id: start, type: start }
  - id: draft
    type: task
    model: scripted
    scripted: [{ output: { text: d1 } }, { output: { text: d2 } }, { output: { text: d3 } }]
  - id: review
    type: task
    model: scripted
    scripted: [{ output: { score: 3 } }, { output: { score: 9 } }, { output: { score: 9 } }]
  - id: gate
    type: decision
    conditions:
      - { connector: approve, when: "latest_upstream.output.score >= 8" }
      - { connector: revise, when: "latest_upstream.output.score < 8 and latest_upstream.output.score >= 0" }
      - { connector: escalate, when: "latest_upstream.output.score < 0" }
    no_match: { policy: fail }
  - { id: human, type: task, model: scripted, scripted: [{ output: { score: 8 } }] }
  - { id: done, type: end, fan_in: any }
connectors:
  - { id: c1, from: start, to: draft }
  - { id: c2, from: draft, to: review }
  - { id: c3, from: review, to: gate }
  - { id: approve, from: gate, to: done }
  - { id: revise, from: gate, to: draft }
  - { id: escalate, from: gate, to: human }
  - { id: c4, from: human, to: done }
"#;

async fn events_of(ledger: &TestLedger, run: &str) -> Vec<RecordedEvent> {
    let run: RunId = run.parse().unwrap();
    ledger
        .store
        .read_stream(&StreamId::for_run(run), 1, 10_000)
        .await
        .unwrap()
}

fn show(run: &str, schema: Option<&str>) -> Value {
    let out = runledger(&["runs", "show", run, "--json"], schema);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

fn wait_for_end(run: &str, schema: Option<&str>, serve: &Serve) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = show(run, schema);
        if ["completed", "failed", "canceled"].contains(&shown["status"].as_str().unwrap()) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not finish {run}: {shown}\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Model calls (`ToolCalled` of the provider) recorded on a run's own stream, per node.
fn model_calls(events: &[RecordedEvent], node: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            e.event_type == "ToolCalled"
                && e.payload["tool"] == "provider"
                && e.payload["node_id"] == node
        })
        .count()
}

fn fork_json(args: &[&str], schema: Option<&str>) -> (Option<i32>, Value) {
    let mut all = vec!["runs", "fork"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = runledger(&all, schema);
    let json = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    (out.status.code(), json)
}

fn replays(run: &str, schema: Option<&str>) {
    let out = runledger(&["replay", "--run", run, "--json"], schema);
    let report: Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["diverged"], json!(false), "{report}");
    assert_eq!(report["runs"][0]["result"], "matched", "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_reruns_from_its_node_keeps_upstream_results_and_links_both_ways() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = Some(ledger.schema());
    let dir = TempDir::new();
    let flow = dir.path("flow.yaml");
    std::fs::write(&flow, FLOW).unwrap();
    let source = RunId::new_v7().to_string();
    let out = runledger(
        &["run", flow.to_str().unwrap(), "--run-id", &source, "--wait"],
        schema,
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let before = events_of(&ledger, &source).await;
    assert_eq!(model_calls(&before, "draft"), 2);
    assert_eq!(model_calls(&before, "review"), 2);

    // Fork from the decision: only the gate and what follows run again.
    let (code, forked) = fork_json(
        &[&source, "--from", "gate", "--request-id", "fork-b"],
        schema,
    );
    assert_eq!(code, Some(0), "{forked}");
    assert_eq!(forked["deduplicated"], false);
    assert_eq!(forked["source_version"], json!(before.len()));
    assert_eq!(
        forked["source_head_hash"],
        json!(before.last().unwrap().hash.to_hex())
    );
    let fork_b = forked["run_id"].as_str().unwrap().to_owned();
    let (_, again) = fork_json(
        &[&source, "--from", "gate", "--request-id", "fork-b"],
        schema,
    );
    assert_eq!(
        (again["run_id"].as_str(), again["deduplicated"].clone()),
        (Some(fork_b.as_str()), json!(true))
    );
    let (code, reused) = fork_json(
        &[&source, "--from", "review", "--request-id", "fork-b"],
        schema,
    );
    assert_eq!(code, Some(1));
    assert_eq!(reused["error"]["code"], "request_id_reused", "{reused}");

    // Refusals: each one names its reason and writes nothing.
    let head = events_of(&ledger, &source).await.len();
    for (args, code) in [
        (
            vec![fork_b.as_str(), "--from", "gate"],
            "source_not_finished",
        ),
        (vec![source.as_str(), "--from", "nope"], "unknown_node"),
        (vec![source.as_str(), "--from", "human"], "node_not_reached"),
        (
            vec![source.as_str(), "--from", "gate", "--output", "{}"],
            "node_not_skippable",
        ),
        (
            vec![source.as_str(), "--from", "review", "--output", "{oops"],
            "invalid_argument",
        ),
    ] {
        let (exit, refused) = fork_json(&args, schema);
        assert_eq!(exit, Some(1), "{args:?}: {refused}");
        assert_eq!(refused["error"]["code"], code, "{args:?}: {refused}");
    }
    let unknown = RunId::new_v7().to_string();
    let out = runledger(&["runs", "fork", &unknown, "--from", "gate"], schema);
    assert!(
        stderr(&out).contains(&format!("run {unknown} does not exist [run_not_found]")),
        "{}",
        stderr(&out)
    );
    assert_eq!(events_of(&ledger, &source).await.len(), head);
    assert_eq!(events_of(&ledger, &fork_b).await.len(), 1, "only RunForked");

    // `serve` finds the forks through the run index and drives them.
    let serve = Serve::start(ledger.schema());
    let shown_b = wait_for_end(&fork_b, schema, &serve);
    assert_eq!(shown_b["status"], "completed", "{shown_b}");
    assert_eq!(shown_b["output"], json!({ "score": 9 }));
    assert_eq!(shown_b["forked_from"]["run_id"], json!(source));
    let b_events = events_of(&ledger, &fork_b).await;
    assert_eq!(b_events[0].event_type, "RunForked");
    assert_eq!(
        model_calls(&b_events, "draft") + model_calls(&b_events, "review"),
        0,
        "no model is called again upstream of the gate"
    );
    let rerun: Vec<&str> = b_events
        .iter()
        .filter(|e| e.event_type == "NodeScheduled")
        .map(|e| e.payload["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(rerun, ["gate", "done"]);
    let kept = shown_b["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kept_from_source"] == json!(true))
        .count();
    assert_eq!(
        kept, 6,
        "start, draft, review, gate, draft, review: {shown_b}"
    );

    // Fork from `review` with an operator output: review is skipped with it, the gate sends
    // the loop round once more, draft runs with its third scripted answer.
    let (code, forked) = fork_json(
        &[&source, "--from", "review", "--output", r#"{"score": 1}"#],
        schema,
    );
    assert_eq!(code, Some(0), "{forked}");
    let fork_a = forked["run_id"].as_str().unwrap().to_owned();
    let shown_a = wait_for_end(&fork_a, schema, &serve);
    assert_eq!(shown_a["status"], "completed", "{shown_a}");
    let a_events = events_of(&ledger, &fork_a).await;
    assert_eq!(model_calls(&a_events, "draft"), 1);
    assert_eq!(model_calls(&a_events, "review"), 1);
    let skipped: Vec<&Value> = a_events
        .iter()
        .filter(|e| e.event_type == "NodeSkipped")
        .map(|e| &e.payload["output"])
        .collect();
    assert_eq!(skipped, [&json!({ "score": 1 })]);
    let drafts: Vec<&Value> = a_events
        .iter()
        .filter(|e| e.event_type == "NodeSucceeded" && e.payload["node_id"] == "draft")
        .map(|e| &e.payload["output"])
        .collect();
    assert_eq!(drafts, [&json!({ "text": "d3" })]);

    // The API: same request id and body -> the same fork; another body -> 409.
    runledger_executor_gateway::providers::install_crypto_provider();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", serve.base);
    let post = |request_id: &'static str, body: Value| {
        client
            .post(url(&format!("/v1/runs/{source}/fork")))
            .header("x-request-id", request_id)
            .json(&body)
            .send()
    };
    let (status, created) = json_of(
        post("api-fork", json!({ "from_node": "gate" }))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let fork_c = created["run_id"].as_str().unwrap().to_owned();
    let (status, repeated) = json_of(
        post("api-fork", json!({ "from_node": "gate" }))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{repeated}");
    assert_eq!(
        (
            repeated["run_id"].as_str(),
            repeated["deduplicated"].clone()
        ),
        (Some(fork_c.as_str()), json!(true))
    );
    let (status, mismatch) = json_of(
        post(
            "api-fork",
            json!({ "from_node": "review", "output": { "score": 2 } }),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 409, "{mismatch}");
    assert_eq!(mismatch["error"]["code"], "request_id_reused");
    let (status, unknown) = json_of(
        post("api-fork-2", json!({ "from_node": "nope" }))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{unknown}");
    assert_eq!(unknown["error"]["code"], "unknown_node");
    wait_for_end(&fork_c, schema, &serve);

    // Run detail shows the link both ways once the projection has caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, detail) = json_of(
            client
                .get(url(&format!("/v1/runs/{source}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let (_, fork_detail) = json_of(
            client
                .get(url(&format!("/v1/runs/{fork_c}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let forks: Vec<&str> = detail["forks"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["run_id"].as_str()).collect())
            .unwrap_or_default();
        if forks.len() == 3 && fork_detail["run"]["status"] == "completed" {
            assert_eq!(forks, [fork_b.as_str(), fork_a.as_str(), fork_c.as_str()]);
            assert_eq!(detail["run"]["status"], "completed");
            assert_eq!(fork_detail["forked_from"]["run_id"], json!(source));
            assert_eq!(fork_detail["forked_from"]["from_node"], "gate");
            break;
        }
        assert!(Instant::now() < deadline, "{detail}\n{fork_detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(serve);

    // The source: its history is unchanged, it only gained one link per fork, and it is still
    // completed.
    let after = events_of(&ledger, &source).await;
    assert_eq!(after.len(), before.len() + 3);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.hash, new.hash);
    }
    assert!(
        after[before.len()..]
            .iter()
            .all(|e| e.event_type == "RunForkedTo")
    );
    let shown = show(&source, schema);
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["forks"].as_array().unwrap().len(), 3);

    for run in [&source, &fork_a, &fork_b, &fork_c] {
        replays(run, schema);
    }
    // The claims (every node run has one artifact, ...) hold over a ledger with forks.
    let out = runledger(&["check"], schema);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    ledger.drop_schema().await.unwrap();
}
