//! The embedded default through the binary: with no database URL every command uses the SQLite
//! file `./.runledger/ledger.db`; `sqlite://PATH` names another; exports do not depend on the
//! backend; one engine per file; PostgreSQL-only features say so.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use runledger_ledger::testing::TestLedger;
use serde_json::Value;

use super::{TempDir, root, runledger, stderr, stdout};

/// The binary run in `cwd` with no database URL in its environment (and none of the
/// PostgreSQL settings), as on a laptop with nothing installed.
fn bare(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env_remove("RUNLEDGER_DATABASE_SCHEMA")
        .env_remove("RUNLEDGER_NATS_URL");
    cmd
}

fn bare_output(cwd: &Path, args: &[&str]) -> Output {
    bare(cwd, args).output().expect("run the runledger binary")
}

fn example(name: &str) -> String {
    root()
        .join("examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

fn last_json(out: &Output) -> Value {
    serde_json::from_str(stdout(out).lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn a_flowchart_runs_exports_verifies_and_replays_on_the_default_file() {
    let dir = TempDir::new();
    let cwd = dir.0.clone();
    let flow = example("review-loop.yaml");
    let out = bare_output(
        &cwd,
        &[
            "run",
            &flow,
            "--input",
            r#"{"topic":"owls"}"#,
            "--wait",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = last_json(&out);
    assert_eq!(summary["status"], "completed", "{summary}");
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    assert!(
        cwd.join(".runledger/ledger.db").is_file(),
        "the default ledger file was created"
    );
    // Human output names the file.
    let human = bare_output(
        &cwd,
        &["run", &flow, "--input", r#"{"topic":"bats"}"#, "--wait"],
    );
    assert!(human.status.success(), "{}", stderr(&human));
    assert!(
        stderr(&human).contains("ledger file .runledger/ledger.db"),
        "{}",
        stderr(&human)
    );

    let show = bare_output(&cwd, &["runs", "show", &run_id, "--json"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let shown: Value = serde_json::from_str(stdout(&show).trim()).unwrap();
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["node_runs"], summary["node_runs"]);

    let file = cwd.join("run.jsonl");
    let out = bare_output(
        &cwd,
        &["export", "--run", &run_id, "-o", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bare_output(&cwd, &["verify", file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = bare_output(&cwd, &["replay", "--run", &run_id]);
    assert!(
        stdout(&out).starts_with(&format!("ok: run {run_id} replays with 0 divergence")),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    // The read models on the file: caught up by `check`, rebuilt, and their status.
    let out = bare_output(&cwd, &["check", "--run", &run_id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let check: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    assert!(
        check["claims"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"] == "pass" && c["checked"].as_u64() > Some(0)),
        "{check}"
    );
    let out = bare_output(&cwd, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("run_detail: rebuilt from position zero"),
        "{}",
        stdout(&out)
    );
    let out = bare_output(&cwd, &["projections", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lags: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let lags = lags.as_array().unwrap();
    assert_eq!(lags.len(), 3, "{lags:?}");
    for lag in lags {
        assert_eq!(lag["events_behind"], 0, "{lag}");
        assert!(
            lag["events_applied"].as_u64() > Some(40),
            "two runs rebuilt: {lag}"
        );
    }

    // A control on an ended run is refused by the decider, and says which run.
    let out = bare_output(
        &cwd,
        &["runs", "control", &run_id, "pause", "--reason", "late"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains(&run_id), "{}", stderr(&out));
}

/// A run recorded on SQLite, imported into PostgreSQL, exports to the same bytes there; a
/// PostgreSQL fixture imported into SQLite too.
#[tokio::test]
async fn exports_are_byte_identical_across_the_backends() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let dir = TempDir::new();
    let db = dir.path("ledger.db");
    let url = format!("sqlite://{}", db.display());
    let out = runledger(
        &[
            "--database-url",
            &url,
            "run",
            "examples/fan-in.yaml",
            "--wait",
            "--json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(db.is_file());
    let from_sqlite = dir.path("sqlite.jsonl");
    let out = runledger(
        &[
            "--database-url",
            &url,
            "export",
            "--all",
            "-o",
            from_sqlite.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = runledger(&["import", from_sqlite.to_str().unwrap()], Some(&schema));
    assert!(out.status.success(), "{}", stderr(&out));
    let from_pg = dir.path("pg.jsonl");
    let out = runledger(
        &["export", "--all", "-o", from_pg.to_str().unwrap()],
        Some(&schema),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&from_pg).unwrap(),
        std::fs::read(&from_sqlite).unwrap(),
        "a SQLite run exports from PostgreSQL byte for byte"
    );

    // The other way: a fixture recorded on PostgreSQL, into a fresh SQLite file, twice.
    let fixture = root().join("replay-fixtures/subflow.completed.jsonl");
    let other = format!("sqlite://{}", dir.path("other.db").display());
    for written in ["26 event(s) written", "0 event(s) written"] {
        let out = runledger(
            &[
                "--database-url",
                &other,
                "import",
                fixture.to_str().unwrap(),
            ],
            None,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(written), "{}", stdout(&out));
    }
    let again = dir.path("again.jsonl");
    let out = runledger(
        &[
            "--database-url",
            &other,
            "export",
            "--all",
            "-o",
            again.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&fixture).unwrap(),
        "a PostgreSQL export imports into SQLite and exports to the same bytes"
    );
    ledger.drop_schema().await.unwrap();
}

const SLOW_FLOW: &str = "name: slow\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ output: { v: 1 }, delay_ms: 2500 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: end }\n";

/// One engine per file: while one `run --wait` drives runs, a second is refused and writes
/// nothing, so no run is ever driven twice; the first still completes, and once it has ended
/// the file takes the next engine.
#[test]
fn a_second_engine_on_the_same_file_is_refused_and_writes_nothing() {
    let dir = TempDir::new();
    let flow = dir.path("slow.yaml");
    std::fs::write(&flow, SLOW_FLOW).unwrap();
    let flow = flow.to_str().unwrap().to_owned();
    let first = bare(&dir.0, &["run", &flow, "--wait", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first engine has started its run (the file and its run exist).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = bare_output(&dir.0, &["export", "--all"]);
        if stdout(&out).contains("RunStarted") {
            break;
        }
        assert!(Instant::now() < deadline, "the first run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = bare_output(&dir.0, &["run", &flow, "--wait", "--json"]);
    assert_eq!(second.status.code(), Some(1));
    let err: Value = serde_json::from_str(stdout(&second).trim()).unwrap();
    assert_eq!(err["error"]["code"], "ledger_in_use", "{err}");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let out = bare_output(&dir.0, &["export", "--all"]);
    let manifest: Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(
        manifest["streams"].as_array().unwrap().len(),
        1,
        "the refused engine started no run: {manifest}"
    );
    let third = bare_output(&dir.0, &["run", &flow, "--wait", "--json"]);
    assert!(third.status.success(), "{}", stderr(&third));
}

#[test]
fn postgresql_features_say_so_on_sqlite_and_bad_urls_name_the_flag() {
    let dir = TempDir::new();
    let flow = example("review-loop.yaml");
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", &flow, "--wait", "--dispatch", "nats"],
        vec!["serve"],
        vec!["dev", "--dispatch", "nats"],
        vec!["executor", "--class", "frontier"],
    ];
    for args in cases {
        let out = bare_output(&dir.0, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("PostgreSQL") && err.contains("[needs_postgres]"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !dir.0.join(".runledger/ledger.db").exists(),
        "a refused command created no ledger"
    );
    let out = bare_output(&dir.0, &["export", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no ledger file at .runledger/ledger.db"),
        "{}",
        stderr(&out)
    );
    let out = bare_output(
        &dir.0,
        &[
            "--database-url",
            "mysql://x@y/z",
            "runs",
            "show",
            "0190c3c2-0000-7000-8000-000000000000",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--database-url") && stderr(&out).contains("sqlite://"),
        "{}",
        stderr(&out)
    );
}
