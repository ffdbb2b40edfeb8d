//! An MCP server called from a node through the binary: tests/e2e/mcp_server.py (a stdio
//! server written for this test) is registered with `runledger mcp add`, a node lists it in
//! `mcp_servers:`, and its scripted model calls `mcp__lexicon__define` and
//! `mcp__lexicon__fail`. Each call is a `ToolCalled`; a call whose arguments the tool's schema
//! refuses never reaches the server.

use serde_json::{Value, json};

use super::{TempDir, bare_with, export_verified, root, run_flow, stderr, stdout, tool_calls};

const FLOW: &str = r#"
name: mcp-lookup
nodes:
  - { id: start, type: start }
  - id: look
    type: task
    model: scripted
    prompt: "Define owl."
    mcp_servers: [lexicon]
    scripted:
      - tool_calls:
          - { tool: mcp__lexicon__define, arguments: { word: owl } }
          - { tool: mcp__lexicon__fail, arguments: {} }
          - { tool: mcp__lexicon__define, arguments: { term: owl } }
      - output: { summary: "owl defined" }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: look }
  - { id: c2, from: look, to: done }
"#;

#[test]
fn a_stdio_mcp_server_is_called_from_a_node_and_every_call_recorded() {
    let dir = TempDir::new();
    let cwd = dir.0.clone();
    let server = root().join("tests/e2e/mcp_server.py");
    let log = cwd.join("server-calls.jsonl");
    // The registry is where RUNLEDGER_MCP_REGISTRY says, for `mcp` and `run` alike.
    let registry = cwd.join("config/mcp.json");
    let env: &[(&str, &std::path::Path)] = &[("RUNLEDGER_MCP_REGISTRY", &registry)];
    let out = bare_with(
        &cwd,
        &[
            "mcp",
            "add",
            "lexicon",
            "--json",
            "--command",
            "python3",
            server.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
        env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(registry.is_file());
    let out = bare_with(&cwd, &["mcp", "tools", "lexicon", "--json"], env);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<(&str, bool)> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["side_effects"] == true))
        .collect();
    assert_eq!(
        names,
        [
            ("mcp__lexicon__define", false),
            ("mcp__lexicon__fail", true)
        ]
    );
    // `mcp tools` lists without calling.
    assert!(!log.exists());

    let flow = cwd.join("mcp-lookup.yaml");
    std::fs::write(&flow, FLOW).unwrap();
    let summary = run_flow(&cwd, &flow, &json!({}), env);
    let lines = export_verified(&cwd, summary["run_id"].as_str().unwrap());
    let calls = tool_calls(&lines);
    let seen: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c["tool"].as_str().unwrap(), c["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("provider", "ok"),
            ("mcp__lexicon__define", "ok"),
            ("mcp__lexicon__fail", "error"),
            ("mcp__lexicon__define", "error"),
            ("provider", "ok"),
        ]
    );
    assert_eq!(
        calls[1]["output"]["text"],
        "owl: a word the test server knows"
    );
    assert_eq!(calls[1]["agent"]["arguments"], json!({ "word": "owl" }));
    assert_eq!(calls[2]["error"]["code"], "mcp_tool_error");
    assert!(
        calls[2]["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("fail always fails"),
        "{}",
        calls[2]
    );
    assert_eq!(calls[3]["error"]["code"], "invalid_arguments");
    // The server saw the two valid calls, once each.
    let served: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        served,
        [
            json!({ "name": "define", "arguments": { "word": "owl" } }),
            json!({ "name": "fail", "arguments": {} }),
        ]
    );
}
