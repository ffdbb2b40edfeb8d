//! Agent tasks through the binary, on the SQLite ledger of a temporary directory: a scripted
//! model calls tools, every call is a `ToolCalled` (v2) in the export, and the runs replay with
//! no divergence. `code_change` runs examples/code-change.yaml against a local repository;
//! `mcp` calls a stdio MCP server written for the test; `pr_create` opens a pull request on
//! the stub forge of the tools crate's tests.

#[path = "agents/code_change.rs"]
mod code_change;
// Shared with the tools crate's tests, which use its error answers too.
#[allow(dead_code)]
#[path = "../../tools/tests/tools/forge_stub.rs"]
mod forge_stub;
#[path = "agents/mcp.rs"]
mod mcp;
#[path = "agents/pr_create.rs"]
mod pr_create;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::{TempDir, root, stderr, stdout};

fn bare(cwd: &Path, args: &[&str]) -> Output {
    bare_with(cwd, args, &[])
}

/// The binary in `cwd` with no database URL (so the ledger is `cwd`'s SQLite file) and `env`.
fn bare_with(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env_remove("RUNLEDGER_DATABASE_SCHEMA")
        .env_remove("RUNLEDGER_NATS_URL");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("run the runledger binary")
}

/// `run FLOW --input INPUTS --wait --json` in `cwd`: the last line, the run's summary.
fn run_flow(cwd: &Path, flow: &Path, inputs: &Value, env: &[(&str, &Path)]) -> Value {
    let inputs = inputs.to_string();
    let out = bare_with(
        cwd,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            &inputs,
            "--wait",
            "--json",
        ],
        env,
    );
    completed(&out)
}

/// The summary `run --wait --json` printed last, of a run that completed.
fn completed(out: &Output) -> Value {
    let summary: Value = stdout(out)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary: {} {}", stdout(out), stderr(out)));
    assert_eq!(summary["status"], "completed", "{summary} {}", stderr(out));
    summary
}

/// The run's export, verified offline, and its replay with no divergence; the export's lines.
fn export_verified(cwd: &Path, run_id: &str) -> Vec<Value> {
    let file = cwd.join(format!("{run_id}.jsonl"));
    let out = bare(
        cwd,
        &["export", "--run", run_id, "-o", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bare(cwd, &["verify", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = bare(cwd, &["replay", "--run", run_id]);
    assert!(
        stdout(&out).starts_with(&format!("ok: run {run_id} replays with 0 divergence")),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The payloads of the export's `ToolCalled` events, in ledger order.
fn tool_calls(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["event_type"] == "ToolCalled")
        .map(|l| &l["payload"])
        .collect()
}

#[test]
fn an_agent_task_records_every_tool_call_in_the_export() {
    let dir = TempDir::new();
    let cwd = dir.0.clone();
    let flow = root().join("examples/agent-tool-call.yaml");
    let out = bare(
        &cwd,
        &[
            "run",
            flow.to_str().unwrap(),
            "--input",
            r#"{"path":"src/lib.rs"}"#,
            "--wait",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "completed", "{summary}");
    let run_id = summary["run_id"].as_str().unwrap().to_owned();

    let file = cwd.join("run.jsonl");
    let out = bare(
        &cwd,
        &["export", "--run", &run_id, "-o", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event_type"] == "ToolCalled")
        .collect();
    let tools: Vec<&str> = calls
        .iter()
        .map(|c| c["payload"]["tool"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        ["provider", "workspace_read", "git_status", "provider"]
    );
    for call in &calls {
        assert_eq!(call["schema_version"], 2);
        assert!(
            call["request_id"]
                .as_str()
                .unwrap()
                .starts_with("toolcall-"),
            "each call is a step of its own: {call}"
        );
    }
    let read = &calls[1]["payload"];
    assert_eq!(read["agent"]["turn"], 1);
    assert_eq!(read["agent"]["call_index"], 0);
    assert_eq!(read["agent"]["arguments"]["path"], "README.md");
    // The run has no `workspace:` source, so its workspace is an empty repository: the read is
    // answered `not_found` (a result the model sees, not a failure of the node) ...
    assert_eq!(read["outcome"], "error", "{read}");
    assert_eq!(read["error"]["code"], "not_found", "{read}");
    // ... and git_status, served by the same workspace, succeeds.
    let status = &calls[2]["payload"];
    assert_eq!(status["agent"]["call_index"], 1);
    assert_ne!(status["outcome"], "error", "{status}");
    let artifact = lines
        .iter()
        .find(|l| l["event_type"] == "ArtifactPersisted" && l["payload"]["node_id"] == "fix")
        .unwrap();
    assert_eq!(artifact["payload"]["payload"]["agent"]["turns"], 2);
    assert_eq!(
        artifact["payload"]["payload"]["agent"]["tools_used"],
        serde_json::json!(["git_status", "workspace_read"])
    );

    let out = bare(&cwd, &["verify", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = bare(&cwd, &["replay", "--run", &run_id]);
    assert!(
        stdout(&out).starts_with(&format!("ok: run {run_id} replays with 0 divergence")),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
}

/// A tool result larger than 16 KiB is kept in the blob table: its `ToolCalled` names the blob
/// instead of holding it, and the export carries the blob, which verification hashes.
#[test]
fn a_large_tool_result_goes_to_a_blob_that_the_export_carries() {
    let dir = TempDir::new();
    let cwd = dir.0.clone();
    let flow = cwd.join("large-result.yaml");
    std::fs::write(
        &flow,
        r#"
name: large-result
nodes:
  - { id: start, type: start }
  - id: print
    type: task
    model: scripted
    prompt: Print a lot.
    tools: [command_run]
    scripted:
      - tool_calls:
          - { tool: command_run, arguments: { argv: [sh, -c, "head -c 20000 /dev/zero | tr '\\0' a"] } }
      - output: { printed: true }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: print }
  - { id: c2, from: print, to: done }
"#,
    )
    .unwrap();
    let summary = run_flow(&cwd, &flow, &serde_json::json!({}), &[]);
    let lines = export_verified(&cwd, summary["run_id"].as_str().unwrap());
    let calls = tool_calls(&lines);
    let printed = calls.iter().find(|c| c["tool"] == "command_run").unwrap();
    assert_eq!(printed["outcome"], "ok", "{printed}");
    assert!(printed.get("output").is_none(), "{printed}");
    let blob = &printed["agent"]["result_blob"];
    assert!(blob["size"].as_u64().unwrap() > 20_000, "{blob}");
    let carried = lines
        .iter()
        .find(|l| l["kind"] == "blob" && l["hash"] == blob["hash"])
        .unwrap_or_else(|| panic!("the export lacks blob {blob}"));
    assert_eq!(carried["media_type"], "application/json");
}
