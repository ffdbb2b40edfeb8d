//! End-to-end tests of the `runledger` binary against real PostgreSQL (and NATS for `status`).
//! Each test works in its own database schema.

#[path = "e2e/agents.rs"]
mod agents;
#[path = "e2e/api.rs"]
mod api;
#[path = "e2e/check.rs"]
mod check;
#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/fork.rs"]
mod fork;
#[path = "e2e/gateway.rs"]
mod gateway;
#[path = "e2e/leases.rs"]
mod leases;
#[path = "e2e/models.rs"]
mod models;
#[path = "e2e/rag.rs"]
mod rag;
#[path = "e2e/replay.rs"]
mod replay;
#[path = "e2e/sqlite.rs"]
mod sqlite;
#[path = "e2e/sqlite_dev.rs"]
mod sqlite_dev;
#[path = "e2e/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runledger_contracts::envelope::NewEvent;
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::testing::{TestLedger, test_database_url};
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn runledger(args: &[&str], schema: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.args(args)
        .current_dir(root())
        .env("RUNLEDGER_DATABASE_URL", test_database_url())
        .env_remove("RUNLEDGER_DATABASE_SCHEMA");
    if let Some(schema) = schema {
        cmd.env("RUNLEDGER_DATABASE_SCHEMA", schema);
    }
    cmd.output().expect("run the runledger binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("runledger-e2e-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    RunId::new_v7().to_string()
}

#[test]
fn every_example_flowchart_validates() {
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let out = runledger(&["validate", path.to_str().unwrap()], None);
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        assert!(stdout(&out).contains("valid flowchart"), "{}", stdout(&out));
        let out = runledger(&["validate", "--json", path.to_str().unwrap()], None);
        assert_eq!(
            stdout(&out).trim(),
            r#"{"errors":[],"valid":true}"#,
            "FLOWCHART-FORMAT.md's shape, keys sorted as in the API"
        );
        seen += 1;
    }
    assert!(seen >= 3, "examples/ holds the three documented flowcharts");
}

#[test]
fn validate_reports_every_problem_with_code_and_path() {
    let dir = TempDir::new();
    let path = dir.path("broken.yaml");
    std::fs::write(
        &path,
        "name: broken\nnodes:\n  - {id: start, type: start}\n  - {id: gate, type: decision, colour: red,\n     conditions: [{connector: nowhere, when: \"score >>= 3\"}]}\n  - {id: done, type: end}\nconnectors:\n  - {id: c1, from: start, to: gate}\n  - {id: c2, from: done, to: gate}\n",
    )
    .unwrap();
    let out = runledger(&["validate", "--json", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["valid"], json!(false));
    let codes: Vec<(String, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            (
                e["code"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("unknown_key", "nodes[1].colour"),
        ("end_has_outgoing", "connectors[1].from"),
        (
            "condition_unknown_connector",
            "nodes[1].conditions[0].connector",
        ),
        ("condition_syntax", "nodes[1].conditions[0].when"),
    ] {
        assert!(
            codes
                .iter()
                .any(|(c, p)| c == expected.0 && p == expected.1),
            "{expected:?} not in {codes:?}"
        );
    }
    // Human output: one problem per line, then a summary.
    let out = runledger(&["validate", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("nodes[1].colour") && err.contains("[unknown_key]"),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with("the flowchart is not valid"),
        "{err}"
    );
}

#[test]
fn validate_names_a_missing_file_in_one_line() {
    let out = runledger(&["validate", "no/such/flow.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("runledger: error: cannot read no/such/flow.yaml"),
        "{err}"
    );
}

#[tokio::test]
async fn migrate_applies_once_then_reports_up_to_date() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = format!("{}_m", ledger.schema());
    let first = runledger(&["migrate"], Some(&schema));
    assert!(first.status.success(), "{}", stderr(&first));
    let files = std::fs::read_dir(root().join("migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(
        stdout(&first).trim(),
        format!("applied {files} migration(s)")
    );
    let second = runledger(&["migrate"], Some(&schema));
    assert_eq!(stdout(&second).trim(), "ledger schema is up to date");
    ledger.drop_other_schema(&schema).await.unwrap();
    ledger.drop_schema().await.unwrap();
}

async fn seeded_run(ledger: &TestLedger) -> RunId {
    let run = RunId::new_v7();
    let stream = StreamId::for_run(run);
    let events = vec![
        NewEvent {
            event_type: "RunStarted".into(),
            schema_version: 1,
            payload: json!({"run_id": run, "inputs": {"topic": "audits"}}),
            blob_refs: vec![],
        },
        NewEvent {
            event_type: "RunCompleted".into(),
            schema_version: 1,
            payload: json!({"run_id": run, "node_runs": 0}),
            blob_refs: vec![],
        },
    ];
    let request = AppendRequest::new(
        RequestId::new("seed").unwrap(),
        CorrelationId::new("e2e").unwrap(),
        events,
    );
    ledger
        .store
        .append(&stream, ExpectedVersion::NoStream, request)
        .await
        .unwrap();
    run
}

#[tokio::test]
async fn export_is_deterministic_and_verify_catches_tampering() {
    let ledger = TestLedger::new().await.unwrap();
    let run = seeded_run(&ledger).await.to_string();
    let dir = TempDir::new();
    let a = dir.path("a.jsonl");
    let b = dir.path("b.jsonl");
    for file in [&a, &b] {
        let out = runledger(
            &["export", "--run", &run, "-o", file.to_str().unwrap()],
            Some(ledger.schema()),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("exported 2 event(s) in 1 stream(s)"),
            "{}",
            stderr(&out)
        );
    }
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(&b).unwrap(),
        "two exports are byte-identical"
    );
    assert!(
        !Path::new(&a.with_extension("jsonl.tmp")).exists(),
        "no temporary file left behind"
    );

    let out = runledger(&["verify", a.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("ok: 2 event(s) in 1 stream(s)"),
        "{}",
        stdout(&out)
    );
    let out = runledger(&["verify", "--json", a.to_str().unwrap()], None);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (v["valid"].clone(), v["events"].clone()),
        (json!(true), json!(2))
    );

    // Change one byte of the last event's payload: verify names that event.
    let text = String::from_utf8(bytes).unwrap();
    let tampered = text.replacen("\"node_runs\":0", "\"node_runs\":1", 1);
    assert_ne!(tampered, text);
    std::fs::write(&b, tampered).unwrap();
    let out = runledger(&["verify", b.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "line 3 (run-{run}#2 RunCompleted): hash recomputes to"
        )),
        "{err}"
    );
    let out = runledger(&["verify", "--json", b.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["error"]["code"], json!("hash_mismatch"));
    assert_eq!(v["error"]["line"], json!(3));

    // `--all` to stdout: same event lines, a manifest whose scope says `all`.
    let out = runledger(&["export", "--all"], Some(ledger.schema()));
    assert!(out.status.success(), "{}", stderr(&out));
    let all = stdout(&out);
    assert_eq!(
        all.lines().skip(1).collect::<Vec<_>>(),
        text.lines().skip(1).collect::<Vec<_>>()
    );
    assert!(all.lines().next().unwrap().contains("\"scope\":\"all\""));
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn export_of_an_unknown_run_fails_in_one_line() {
    let ledger = TestLedger::new().await.unwrap();
    let run = uuid_like();
    let out = runledger(&["export", "--run", &run], Some(ledger.schema()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim_end(),
        format!("runledger: error: stream `run-{run}` does not exist [stream_not_found]")
    );
    ledger.drop_schema().await.unwrap();
    let out = runledger(&["export", "--run", "not-a-uuid"], None);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&out).contains("not a valid run id"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_database_is_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args([
            "migrate",
            "--database-url",
            "postgres://postgres:secret@127.0.0.1:1/x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "runledger: error: cannot open the ledger at postgres://postgres:***@127.0.0.1:1/x"
        ),
        "{err}"
    );
    assert!(!err.contains("secret"), "passwords never reach output");
}

#[test]
fn status_reports_both_services() {
    let out = runledger(&["status", "--json"], None);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["database"]["reachable"], json!(true), "{v}");
    assert_eq!(v["nats"]["reachable"], json!(true), "{v}");
    assert_eq!(v["nats"]["jetstream"], json!(true), "{v}");
    assert!(out.status.success());
    let out = runledger(
        &["status", "--json", "--nats-url", "nats://127.0.0.1:1"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["nats"]["reachable"], json!(false));
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn run_wait_json_prints_transitions_then_a_summary_and_exits_by_status() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = Some(ledger.schema());
    let out = runledger(
        &[
            "run",
            "examples/review-loop.yaml",
            "--input",
            r#"{"topic":"owls"}"#,
            "--wait",
            "--json",
        ],
        schema,
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let lines = json_lines(&stdout(&out));
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["status"], "completed");
    assert_eq!(
        summary["node_runs"], 9,
        "start, draft x2, review x3 (one retry), gate x2, done"
    );
    assert_eq!(summary["output"], json!({ "score": 9, "notes": "good" }));
    let events: Vec<&str> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"RunStarted"));
    assert_eq!(events.last(), Some(&"RunCompleted"));
    assert!(events.contains(&"NodeRetryScheduled") && events.contains(&"RoutingDecided"));
    let versions: Vec<u64> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["version"].as_u64().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "transitions in ledger order: {versions:?}"
    );

    // The run's export verifies offline.
    let dir = TempDir::new();
    let file = dir.path("run.jsonl");
    let run_id = summary["run_id"].as_str().unwrap();
    let out = runledger(
        &["export", "--run", run_id, "-o", file.to_str().unwrap()],
        schema,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        runledger(&["verify", file.to_str().unwrap()], None)
            .status
            .success()
    );

    // A failing run exits 1 and says why on its summary line.
    let flow = dir.path("fails.yaml");
    std::fs::write(&flow, "name: fails\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ error: { code: boom, message: it broke } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: end }\n").unwrap();
    let out = runledger(&["run", flow.to_str().unwrap(), "--wait"], schema);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("failed") && stdout(&out).contains("it broke [boom]"),
        "{}",
        stdout(&out)
    );
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn run_rejects_bad_input_in_one_line_and_writes_nothing() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = Some(ledger.schema());
    let out = runledger(
        &[
            "run",
            "examples/fan-in.yaml",
            "--input",
            "{not json",
            "--wait",
        ],
        schema,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("runledger: error: --input: not JSON"),
        "{}",
        stderr(&out)
    );
    let dir = TempDir::new();
    let bad = dir.path("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nnodes:\n  - { id: start, type: start, colour: red }\n",
    )
    .unwrap();
    let out = runledger(&["run", bad.to_str().unwrap()], schema);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nodes[0].colour"), "{}", stderr(&out));
    let script = dir.path("script.yaml");
    std::fs::write(&script, "draft:\n  - delay_ms: 5\n").unwrap();
    let out = runledger(
        &[
            "run",
            "examples/review-loop.yaml",
            "--script",
            script.to_str().unwrap(),
        ],
        schema,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("draft[0]: give exactly one of `output`, `error` and `tool_calls`"),
        "{}",
        stderr(&out)
    );
    assert!(
        ledger.store.list_streams("run-").await.unwrap().is_empty(),
        "nothing written"
    );
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn operators_control_runs_from_the_cli() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = Some(ledger.schema());
    let dir = TempDir::new();
    let flow = dir.path("flow.yaml");
    std::fs::write(&flow, "name: ops\nnodes:\n  - { id: start, type: start }\n  - { id: a, type: task, model: scripted, scripted: [{ output: { v: 1 } }] }\n  - { id: b, type: task, model: scripted, scripted: [{ error: { code: bad, message: broken } }, { output: { v: 2 } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: a }\n  - { id: c2, from: a, to: b }\n  - { id: c3, from: b, to: end }\n").unwrap();
    let run_id = RunId::new_v7().to_string();
    let out = runledger(
        &["run", flow.to_str().unwrap(), "--run-id", &run_id, "--wait"],
        schema,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "b fails first: {}",
        stdout(&out)
    );

    // A control that does not apply: one line with its code, nothing written.
    let out = runledger(&["runs", "control", &run_id, "resume"], schema);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot resume: the run is failed [run_not_paused]"),
        "{}",
        stderr(&out)
    );
    let out = runledger(&["runs", "control", &run_id, "pause", "--json"], schema);
    let envelope: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (envelope["ok"].clone(), envelope["error"]["code"].clone()),
        (json!(false), json!("run_not_running"))
    );
    let out = runledger(&["runs", "node", &run_id, "nope", "retry"], schema);
    assert!(
        stderr(&out).contains("the flowchart has no node `nope` [unknown_node]"),
        "{}",
        stderr(&out)
    );
    let out = runledger(&["runs", "node", &run_id, "b", "skip"], schema);
    assert_eq!(out.status.code(), Some(2), "--output is required with skip");

    // Retry b: the control reopens the run; an engine (`run --wait` on the same run) finishes it.
    let out = runledger(
        &[
            "runs",
            "node",
            &run_id,
            "b",
            "retry",
            "--request-id",
            "retry-b",
            "--json",
        ],
        schema,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let applied: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(applied["deduplicated"], false);
    let again = runledger(
        &[
            "runs",
            "node",
            &run_id,
            "b",
            "retry",
            "--request-id",
            "retry-b",
            "--json",
        ],
        schema,
    );
    let again: Value = serde_json::from_str(stdout(&again).trim()).unwrap();
    assert_eq!(again["deduplicated"], true);
    let out = runledger(
        &["run", flow.to_str().unwrap(), "--run-id", &run_id, "--wait"],
        schema,
    );
    assert!(
        out.status.success(),
        "a repeated start drives the existing run: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = runledger(&["runs", "show", &run_id, "--json"], schema);
    let shown: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["output"], json!({ "v": 2 }));
    assert_eq!(shown["node_run_statuses"]["failed"], 1);
    ledger.drop_schema().await.unwrap();
}
