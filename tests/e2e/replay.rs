//! `runledger replay` on the recorded fixtures, on an edited decision, and on a run in the store.

use std::path::PathBuf;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::chain_hash;
use runledger_ledger::testing::TestLedger;
use serde_json::{Map, Value, json};

use super::{TempDir, root, runledger, stderr, stdout};

/// Recorded before the engine recorded each step's clock reading as its `recorded_at`: their
/// deadlines came from clock readings the ledger does not hold, so they cannot be replayed
/// exactly. They stay for the decode-and-evolve test (orchestrator/src/tests/fixtures.rs).
const BEFORE_THE_STEP_CLOCK: &[&str] = &[
    "canceled.canceled.jsonl",
    "fallback-route.completed.jsonl",
    "fan-in.completed.jsonl",
    "operator-retry.completed.jsonl",
    "project-tools.completed.jsonl",
    "review-loop-nats.completed.jsonl",
    "review-loop.completed.jsonl",
];

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("replay-fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

fn replay_json(args: &[&str]) -> (Option<i32>, Value) {
    let out = runledger(args, None);
    let json = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    (out.status.code(), json)
}

#[test]
fn every_fixture_replays_through_the_binary_with_no_divergence() {
    let mut replayed = 0;
    for file in fixtures() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if BEFORE_THE_STEP_CLOCK.contains(&name.as_str()) {
            continue;
        }
        let (code, report) = replay_json(&["replay", file.to_str().unwrap(), "--json"]);
        assert_eq!(code, Some(0), "{name}: {report}");
        assert_eq!(report["diverged"], json!(false), "{name}: {report}");
        let runs = report["runs"].as_array().unwrap();
        assert!(!runs.is_empty(), "{name}: no run replayed");
        for run in runs {
            assert_eq!(run["result"], "matched", "{name}: {run}");
            assert!(
                run["events_compared"].as_u64().unwrap() > 0,
                "{name}: {run}"
            );
            let status = run["status"].as_str().unwrap();
            assert!(
                name.contains(&format!(".{status}.")) || runs.len() > 1,
                "{name} ends {status}"
            );
        }
        replayed += 1;
    }
    assert!(replayed >= 15, "only {replayed} fixtures replay");
}

/// Rewrites one event's payload and recomputes the chain after it and the manifest's head, as
/// someone with the whole file could: the file verifies, but the decider did not decide that.
fn edit_event(
    file: &str,
    pick: impl Fn(&Map<String, Value>) -> bool,
    edit: impl Fn(&mut Map<String, Value>),
) -> (String, u64) {
    let text = std::fs::read_to_string(root().join("replay-fixtures").join(file)).unwrap();
    let mut lines: Vec<Map<String, Value>> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = lines
        .iter()
        .position(|l| l.get("kind") == Some(&json!("event")) && pick(l))
        .unwrap();
    let version = lines[at]["stream_version"].as_u64().unwrap();
    let stream = lines[at]["stream_id"].clone();
    edit(lines[at]["payload"].as_object_mut().unwrap());
    let mut prev = Digest::parse_hex(lines[at]["prev_hash"].as_str().unwrap()).unwrap();
    let old_head = lines[0]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream_id"] == stream)
        .unwrap()["head_hash"]
        .clone();
    for line in lines
        .iter_mut()
        .skip(at)
        .filter(|l| l["kind"] == "event" && l["stream_id"] == stream)
    {
        line.insert("prev_hash".into(), json!(prev.to_hex()));
        let mut body = line.clone();
        body.remove("kind");
        body.remove("hash");
        prev = chain_hash(&prev, &body).unwrap();
        line.insert("hash".into(), json!(prev.to_hex()));
    }
    let manifest = serde_json::to_string(&lines[0])
        .unwrap()
        .replace(old_head.as_str().unwrap(), &prev.to_hex());
    lines[0] = serde_json::from_str(&manifest).unwrap();
    let mut out = String::new();
    for line in &lines {
        out.push_str(std::str::from_utf8(&canonical::canonicalize(line).unwrap()).unwrap());
        out.push('\n');
    }
    (out, version)
}

#[test]
fn replay_names_a_decision_that_was_changed() {
    let dir = TempDir::new();
    let (edited, version) = edit_event(
        "multi-match.completed.jsonl",
        |l| l["event_type"] == "RoutingDecided",
        |payload| {
            payload.insert("matched_connectors".into(), json!(["high"]));
        },
    );
    let path = dir.path("edited.jsonl");
    std::fs::write(&path, edited).unwrap();
    let verified = runledger(&["verify", path.to_str().unwrap()], None);
    assert!(
        verified.status.success(),
        "the edited file's chain was recomputed: {}",
        stderr(&verified)
    );

    let (code, report) = replay_json(&["replay", path.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["diverged"], json!(true));
    let divergence = &report["runs"][0];
    assert_eq!(divergence["result"], "diverged");
    assert_eq!(divergence["stream_version"], json!(version), "{divergence}");
    assert_eq!(
        divergence["path"], "$.payload.matched_connectors[1]",
        "{divergence}"
    );
    assert_eq!(divergence["recorded"]["event_type"], "RoutingDecided");
    assert_eq!(
        divergence["recorded"]["payload"]["matched_connectors"],
        json!(["high"])
    );
    assert_eq!(
        divergence["replayed"]["payload"]["matched_connectors"],
        json!(["high", "even"])
    );

    let text = runledger(&["replay", path.to_str().unwrap()], None);
    assert_eq!(text.status.code(), Some(1));
    let first = stdout(&text);
    assert!(
        first.contains(&format!("diverges at stream version {version}"))
            && first.contains("$.payload.matched_connectors[1]"),
        "{first}"
    );
}

#[test]
fn replay_feeds_a_recorded_result_and_compares_what_follows_from_it() {
    // An executor's result is an input: replay feeds the recorded output to the decider, so an
    // output changed in the file shows up in the first decided event that carries it.
    let dir = TempDir::new();
    let (edited, version) = edit_event(
        "route-key.completed.jsonl",
        |l| l["event_type"] == "NodeSucceeded" && l["payload"]["node_id"] == "score",
        |payload| {
            payload.insert("output".into(), json!({"v": 7}));
        },
    );
    let path = dir.path("fed.jsonl");
    std::fs::write(&path, edited).unwrap();
    let (code, report) = replay_json(&["replay", path.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(1), "{report}");
    let divergence = &report["runs"][0];
    assert_eq!(
        divergence["stream_version"],
        json!(version + 1),
        "{divergence}"
    );
    assert_eq!(
        divergence["recorded"]["event_type"], "ArtifactPersisted",
        "{divergence}"
    );
    assert_eq!(
        divergence["replayed"]["payload"]["payload"]["output"],
        json!({"v": 7}),
        "{divergence}"
    );
}

#[test]
fn replay_of_a_run_in_the_store_and_bad_input() {
    let ledger = futures_block(TestLedger::new()).unwrap();
    let schema = ledger.schema().to_owned();
    let run = runledger(
        &[
            "run",
            "examples/review-loop.yaml",
            "--input",
            "{\"topic\":\"owls\"}",
            "--wait",
            "--json",
        ],
        Some(&schema),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let summary: Value = serde_json::from_str(stdout(&run).lines().last().unwrap()).unwrap();
    let run_id = summary["run_id"].as_str().unwrap();
    let out = runledger(&["replay", "--run", run_id], Some(&schema));
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("ok: run {run_id} replays with 0 divergence")),
        "{}",
        stdout(&out)
    );

    let missing = runledger(
        &["replay", "--run", "0190c3c2-0000-7000-8000-000000000000"],
        Some(&schema),
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );
    let not_a_file = runledger(&["replay", "no-such-file.jsonl"], None);
    assert_eq!(not_a_file.status.code(), Some(1));
    // One line: the context, the OS's cause (kept as the error's source) and the code.
    assert!(
        stderr(&not_a_file).trim_end().starts_with(
            "runledger: error: cannot read no-such-file.jsonl: No such file or directory"
        ) && stderr(&not_a_file)
            .trim_end()
            .ends_with("[file_unreadable]")
            && stderr(&not_a_file).trim_end().lines().count() == 1,
        "{}",
        stderr(&not_a_file)
    );
    let garbage = TempDir::new();
    let path = garbage.path("garbage.jsonl");
    std::fs::write(&path, "not an export\n").unwrap();
    for command in ["replay", "import"] {
        let out = runledger(&[command, path.to_str().unwrap()], Some(&schema));
        assert_eq!(out.status.code(), Some(1), "{command}: {}", stderr(&out));
        let line = stderr(&out);
        assert!(
            line.trim_end().lines().count() == 1
                && line.trim_end().ends_with(']')
                && !line.contains("[failed]"),
            "{command}: one line with a code: {line}"
        );
    }
    futures_block(ledger.drop_schema()).unwrap();
}

/// Runs `f` on this test thread's one runtime: a pooled connection belongs to the runtime
/// that opened it, so the schema a test creates must be dropped on the same runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

#[test]
fn import_through_the_binary_is_idempotent_and_exports_the_same_bytes() {
    let ledger = futures_block(TestLedger::new()).unwrap();
    let schema = ledger.schema().to_owned();
    let dir = TempDir::new();
    let fixture = root().join("replay-fixtures/subflow.completed.jsonl");
    let fixture_str = fixture.to_str().unwrap();
    let first = runledger(&["import", fixture_str], Some(&schema));
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("2 stream(s), 26 event(s) written"),
        "{}",
        stdout(&first)
    );
    let backfill = dir.path("backfill");
    std::fs::create_dir_all(&backfill).unwrap();
    for name in ["subflow.completed.jsonl", "node-skip.completed.jsonl"] {
        std::fs::copy(
            root().join("replay-fixtures").join(name),
            backfill.join(name),
        )
        .unwrap();
    }
    let again = runledger(
        &["import", "--dir", backfill.to_str().unwrap()],
        Some(&schema),
    );
    assert!(
        again.status.success(),
        "{} {}",
        stdout(&again),
        stderr(&again)
    );
    assert!(
        stdout(&again).contains("node-skip.completed.jsonl: 1 stream(s), 18 event(s) written"),
        "{}",
        stdout(&again)
    );
    assert!(
        stdout(&again).contains(
            "subflow.completed.jsonl: 2 stream(s), 0 event(s) written, 2 stream(s) already there"
        ),
        "{}",
        stdout(&again)
    );

    let all = dir.path("all.jsonl");
    let out = runledger(
        &["export", "--all", "-o", all.to_str().unwrap()],
        Some(&schema),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let head: Value = serde_json::from_str(
        std::fs::read_to_string(&fixture)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    for stream in head["streams"].as_array().unwrap() {
        let id = stream["stream_id"].as_str().unwrap();
        let one = dir.path("one.jsonl");
        let out = runledger(
            &["export", "--stream", id, "-o", one.to_str().unwrap()],
            Some(&schema),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let replayed = runledger(&["replay", one.to_str().unwrap()], None);
        assert!(replayed.status.success(), "{id}: {}", stdout(&replayed));
    }
    let exported = std::fs::read(&all).unwrap();
    let imported_again = futures_block(TestLedger::new()).unwrap();
    let other = imported_again.schema().to_owned();
    let out = runledger(&["import", all.to_str().unwrap()], Some(&other));
    assert!(out.status.success(), "{}", stderr(&out));
    let all2 = dir.path("all2.jsonl");
    let out = runledger(
        &["export", "--all", "-o", all2.to_str().unwrap()],
        Some(&other),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&all2).unwrap(),
        exported,
        "an --all export imports and exports to the same bytes"
    );
    futures_block(imported_again.drop_schema()).unwrap();
    futures_block(ledger.drop_schema()).unwrap();
}
