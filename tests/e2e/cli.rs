//! The CLI as a user and a script meet it: closed pipes, broken streams, what `runs show` and
//! `run --wait --json` say about node runs, one-line errors with their causes and codes, help
//! and usage text, logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use runledger_contracts::ids::RunId;
use runledger_ledger::testing::{TestLedger, test_database_url};
use serde_json::{Value, json};

use super::{TempDir, json_lines, root, runledger, seeded_run, stderr, stdout};

fn command(args: &[&str], schema: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.args(args)
        .current_dir(root())
        .env("RUNLEDGER_DATABASE_URL", test_database_url())
        .env("RUNLEDGER_DATABASE_SCHEMA", schema);
    cmd
}

/// Reads `lines` lines of the command's stdout, then closes it (what `| head -N` does) and
/// returns the exit code and stderr.
fn read_then_close(mut cmd: Command, lines: usize) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runledger");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "the command printed fewer than {lines} line(s)"
        );
    }
    drop(out);
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const FAILING_FLOW: &str = "name: retried\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, retry: { max_attempts: 2, backoff_ms: 1 }, scripted: [{ error: { code: boom, message: it broke, retryable: true } }, { output: { v: 1 } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: end }\n";

#[tokio::test]
async fn a_closed_pipe_ends_the_command_quietly() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    // `run --wait --json | head -1`: the reader goes after the first transition. No panic; the
    // exit status is 1 because the run was not seen to complete.
    let (code, err) = read_then_close(
        command(
            &[
                "run",
                "examples/review-loop.yaml",
                "--input",
                r#"{"topic":"owls"}"#,
                "--wait",
                "--json",
            ],
            &schema,
        ),
        1,
    );
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_eq!(code, Some(1), "{err}");

    let out = runledger(
        &[
            "run",
            "examples/review-loop.yaml",
            "--input",
            r#"{"topic":"owls"}"#,
            "--wait",
            "--json",
        ],
        Some(&schema),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = json_lines(&stdout(&out)).last().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // `runs show RUN | head -1` and `export --all | head -1`: quiet, exit 0 like ripgrep.
    for args in [
        vec!["runs", "show", run_id.as_str()],
        vec!["export", "--all"],
    ] {
        let (code, err) = read_then_close(command(&args, &schema), 1);
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {err}"
        );
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn runs_show_reports_a_stream_with_a_missing_version_as_corrupt() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let out = runledger(
        &["run", "examples/fan-in.yaml", "--wait", "--json"],
        Some(&schema),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = json_lines(&stdout(&out)).last().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = runledger(&["runs", "show", &run_id, "--json"], Some(&schema));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&before)).unwrap()["status"],
        "completed"
    );

    // Tampering the append-only trigger forbids: delete one event in the middle of the stream.
    // The test's pool has the test's schema as its search_path.
    let pool = ledger.store.pool();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(pool)
        .await
        .unwrap();
    let deleted = sqlx::query("DELETE FROM events WHERE stream_id = $1 AND stream_version = 5")
        .bind(format!("run-{run_id}"))
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1);

    let out = runledger(&["runs", "show", &run_id], Some(&schema));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).is_empty(),
        "a broken stream is not shown as a run: {}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("version 5 is missing") && err.trim_end().ends_with("[run_corrupt]"),
        "{err}"
    );
    let out = runledger(&["runs", "show", &run_id, "--json"], Some(&schema));
    let envelope: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(envelope["error"]["code"], "run_corrupt", "{envelope}");
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn runs_show_and_run_json_say_what_each_node_run_did() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let dir = TempDir::new();
    let flow = dir.path("retried.yaml");
    std::fs::write(&flow, FAILING_FLOW).unwrap();
    let out = runledger(
        &["run", flow.to_str().unwrap(), "--wait", "--json"],
        Some(&schema),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let lines = json_lines(&stdout(&out));
    let failed = lines
        .iter()
        .find(|l| l["event"] == "NodeFailed")
        .expect("a NodeFailed transition");
    assert_eq!(
        failed["error"],
        json!({ "code": "boom", "message": "it broke", "retryable": true })
    );
    assert_eq!(
        failed["detail"], "boom: it broke",
        "the documented keys stay"
    );
    let run_id = lines.last().unwrap()["run_id"].as_str().unwrap().to_owned();

    let out = runledger(&["runs", "show", &run_id], Some(&schema));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("#0.1") && text.contains("#0.2"),
        "execution index and attempt: {text}"
    );
    assert!(text.contains("error: it broke [boom]"), "{text}");
    assert!(text.contains(r#"output: {"v":1}"#), "{text}");
    let shown: Value = serde_json::from_str(&stdout(&runledger(
        &["runs", "show", &run_id, "--json"],
        Some(&schema),
    )))
    .unwrap();
    let t: Vec<&Value> = shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["node_id"] == "t")
        .collect();
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0]["error"]["code"].clone(), t[1]["output"].clone()),
        (json!("boom"), json!({ "v": 1 }))
    );
    assert_eq!(
        t[1]["execution_index"], t[0]["execution_index"],
        "a retry is the same execution"
    );
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn errors_are_one_line_with_their_cause_and_code_or_a_json_object() {
    // A file that is not there: the OS's words after ours, and the code.
    let out = runledger(&["validate", "no/such/flow.yaml"], None);
    assert_eq!(
        stderr(&out).trim_end(),
        "runledger: error: cannot read no/such/flow.yaml: No such file or directory (os error 2) [file_unreadable]"
    );
    let out = runledger(&["validate", "no/such/flow.yaml", "--json"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let envelope: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (envelope["ok"].clone(), envelope["error"]["code"].clone()),
        (json!(false), json!("file_unreadable"))
    );
    assert_eq!(
        envelope["error"]["details"]["causes"],
        json!(["No such file or directory (os error 2)"])
    );

    // An unreachable database: the driver's cause is on the same line.
    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args([
            "runs",
            "show",
            &RunId::new_v7().to_string(),
            "--database-url",
            "postgres://postgres:secret@127.0.0.1:1/x",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("127.0.0.1:1/x: ") && err.trim_end().ends_with("[database_unavailable]"),
        "{err}"
    );
    assert!(!err.contains("secret"));

    // Codes on errors that had none.
    let ledger = TestLedger::new().await.unwrap();
    let run = seeded_run(&ledger).await;
    let missing = RunId::new_v7();
    let out = runledger(
        &["export", "--run", &missing.to_string()],
        Some(ledger.schema()),
    );
    assert!(
        stderr(&out).trim_end().ends_with("[stream_not_found]"),
        "{}",
        stderr(&out)
    );
    let out = runledger(
        &["runs", "show", &missing.to_string(), "--json"],
        Some(ledger.schema()),
    );
    let envelope: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(envelope["error"]["code"], "run_not_found");
    let out = runledger(
        &[
            "runs",
            "control",
            &run.to_string(),
            "pause",
            "--request-id",
            "\u{1}",
        ],
        Some(ledger.schema()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("runledger: error: --request-id: ")
            && stderr(&out).trim_end().ends_with("[invalid_argument]"),
        "{}",
        stderr(&out)
    );
    ledger.drop_schema().await.unwrap();
}

#[test]
fn usage_and_help_do_not_mistake_the_environment_for_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["runs", "show"])
        .env("RUNLEDGER_DATABASE_SCHEMA", "somewhere")
        .env("RUNLEDGER_NATS_URL", "nats://user:pw@example.org:4222")
        .env("USER", "someone")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("Usage: runledger runs show <RUN>\n"),
        "no option of the environment in the usage line: {err}"
    );
    assert!(!err.contains("pw@"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["runs", "control", "--help"])
        .env_remove("RUNLEDGER_DATABASE_SCHEMA")
        .env("RUNLEDGER_NATS_URL", "nats://user:pw@example.org:4222")
        .output()
        .unwrap();
    let help = stdout(&out);
    assert!(
        !help.contains("=]") && !help.contains("pw@"),
        "no empty or secret environment values: {help}"
    );
    assert!(
        help.contains("The run's id") && help.contains("A paused run schedules again"),
        "{help}"
    );
}

#[test]
fn every_argument_and_subcommand_has_a_description() {
    let commands: &[&[&str]] = &[
        &[],
        &["migrate"],
        &["validate"],
        &["export"],
        &["verify"],
        &["run"],
        &["runs"],
        &["runs", "control"],
        &["runs", "node"],
        &["runs", "show"],
        &["serve"],
        &["executor"],
        &["projections"],
        &["projections", "rebuild"],
        &["projections", "catch-up"],
        &["projections", "status"],
        &["check"],
        &["models"],
        &["models", "create"],
        &["models", "list"],
        &["models", "get"],
        &["models", "update"],
        &["models", "delete"],
        &["memory", "list"],
        &["memory", "get"],
        &["memory", "scopes"],
        &["plans", "list"],
        &["plans", "get"],
        &["milestones", "list"],
        &["milestones", "get"],
        &["status"],
    ];
    for args in commands {
        let mut all = args.to_vec();
        all.push("--help");
        let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args(&all)
            .output()
            .unwrap();
        assert!(out.status.success(), "{all:?}: {}", stderr(&out));
        let help = stdout(&out);
        // clap's long help puts an entry's description on the lines after it; an entry followed
        // by a blank line or by the next entry has none.
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let entry = line.starts_with("  ")
                && !line.starts_with("          ")
                && (line.trim_start().starts_with('-') || line.trim_start().starts_with('<'));
            if !entry
                || line.contains("  ")
                    && line
                        .trim_start()
                        .split_once("  ")
                        .is_some_and(|(_, d)| !d.trim().is_empty())
            {
                continue;
            }
            let next = lines.get(i + 1).copied().unwrap_or_default();
            assert!(
                next.starts_with("          ") && !next.trim().is_empty(),
                "{all:?}: `{}` has no description:\n{help}",
                line.trim()
            );
        }
    }
}

#[tokio::test]
async fn logs_follow_per_module_filters_and_have_no_colour_codes_off_a_terminal() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let out = command(&["run", "examples/fan-in.yaml", "--wait"], &schema)
        .env("RUNLEDGER_LOG", "runledger_orchestrator=debug,warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI escapes when stderr is a pipe: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("DEBUG") && l.contains("runledger_orchestrator")),
        "orchestrator debug lines: {err}"
    );
    assert!(
        !err.lines()
            .any(|l| l.contains("DEBUG") && !l.contains("runledger_orchestrator")),
        "others stay at warn: {err}"
    );
    let out = command(&["validate", "examples/fan-in.yaml"], &schema)
        .env("RUNLEDGER_LOG", "=bogus=")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("RUNLEDGER_LOG"),
        "a bad filter is reported: {}",
        stderr(&out)
    );
    ledger.drop_schema().await.unwrap();
}

/// A local OTLP/HTTP collector stub: answers every request `200 {}` and keeps the bodies it
/// received on `/v1/traces`.
struct CollectorStub {
    endpoint: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl CollectorStub {
    fn start() -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                if request_line.starts_with("POST /v1/traces ") {
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
            }
        });
        Self { endpoint, bodies }
    }
}

#[tokio::test]
async fn spans_go_to_an_otlp_collector_when_one_is_configured() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let collector = CollectorStub::start();
    let out = command(
        &["run", "examples/fan-in.yaml", "--wait", "--json"],
        &schema,
    )
    .env("RUNLEDGER_OTLP_ENDPOINT", &collector.endpoint)
    .env_remove("RUNLEDGER_LOG")
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = json_lines(&stdout(&out)).last().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bodies = collector.bodies.lock().unwrap().clone();
    let received = bodies.join("\n");
    // OTLP JSON: resourceSpans[].scopeSpans[].spans[] with `name` and `attributes`.
    let spans: Vec<Value> = bodies
        .iter()
        .filter_map(|body| serde_json::from_str::<Value>(body).ok())
        .flat_map(|doc| {
            let resource_spans = doc["resourceSpans"].as_array().cloned().unwrap_or_default();
            resource_spans
                .into_iter()
                .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        })
        .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
        .collect();
    let attribute = |span: &Value, key: &str| {
        span["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == key)
            .map(|a| a["value"]["stringValue"].clone())
    };
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    let run = spans
        .iter()
        .find(|s| s["name"] == "run")
        .unwrap_or_else(|| panic!("no `run` span in {names:?}: {received}"));
    assert_eq!(attribute(run, "run_id"), Some(json!(run_id)));
    assert!(
        names.contains(&"node_run") && names.contains(&"append"),
        "{names:?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "node_run" && attribute(s, "node_id").is_some()),
        "{names:?}"
    );
    ledger.drop_schema().await.unwrap();
}

/// Read commands on a schema nothing has written yet answer for an empty ledger (the run does
/// not exist) instead of the database's `relation "events" does not exist [database_error]`.
#[tokio::test]
async fn read_commands_on_a_fresh_schema_answer_for_an_empty_ledger() {
    let schema = format!("e2e_fresh_{}", RunId::new_v7().to_string().replace('-', ""));
    let run = RunId::new_v7().to_string();
    for (args, code) in [
        (vec!["export", "--run", run.as_str()], "[stream_not_found]"),
        (vec!["runs", "show", run.as_str()], "[run_not_found]"),
        (vec!["replay", "--run", run.as_str()], "[stream_not_found]"),
    ] {
        let out = runledger(&args, Some(&schema));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let line = stderr(&out);
        assert!(
            line.trim_end().ends_with(code) && !line.contains("does not exist at line"),
            "{args:?}: {line}"
        );
    }
    let pool = sqlx::PgPool::connect(&test_database_url()).await.unwrap();
    // The schema name is ours (letters, digits, underscores).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
}
