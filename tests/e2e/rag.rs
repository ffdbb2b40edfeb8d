//! `runledger rag`: collections, full and delta index runs, queries, and a `rag` node feeding
//! a task node in a flowchart, all through the binary against real PostgreSQL.

use serde_json::Value;

use super::{TempDir, TestLedger, json_lines, runledger, stderr, stdout};

const FLOW: &str = r#"
name: rag-answer
nodes:
  - { id: start, type: start }
  - id: retrieve
    type: rag
    rag: { collection: handbook, query: "how do I {{ inputs.question }}", top_k: 2 }
  - id: gate
    type: decision
    conditions:
      - { connector: found, when: "latest_upstream.output.hits.0.path == \"deploy.md\"" }
    no_match: { policy: fail }
  - id: answer
    type: task
    model: scripted
    prompt: "Answer from: {{ upstream.gate.output }}"
    scripted:
      - output: { answer: "run the deploy script" }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: retrieve }
  - { id: c2, from: retrieve, to: gate }
  - { id: found, from: gate, to: answer }
  - { id: c4, from: answer, to: done }
  - { id: ctx, from: retrieve, to: answer, mode: dotted }
"#;

fn json(args: &[&str], schema: &str) -> Value {
    let out = runledger(args, Some(schema));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

#[tokio::test]
async fn index_query_and_a_rag_node_feeding_a_task_node() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let docs = TempDir::new();
    let data = TempDir::new();
    let data_dir = data.path("rag");
    let env = [("RUNLEDGER_RAG_DATA_DIR", data_dir.to_str().unwrap())];
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"));
        cmd.args(args)
            .current_dir(super::root())
            .env(
                "RUNLEDGER_DATABASE_URL",
                runledger_ledger::testing::test_database_url(),
            )
            .env("RUNLEDGER_DATABASE_SCHEMA", &schema);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let ok = |args: &[&str]| -> Value {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).unwrap_or(Value::Null)
    };
    std::fs::write(
        docs.path("deploy.md"),
        "# Deploy\n\nTo deploy the service, run the deploy script from the ops folder.\n",
    )
    .unwrap();
    std::fs::write(docs.path("style.md"), "# Style\n\nWrite short sentences.\n").unwrap();
    std::fs::write(
        docs.path("index.html"),
        "<html><body><h1>Welcome</h1><p>Handbook home page.</p></body></html>",
    )
    .unwrap();
    let dir = docs.0.to_str().unwrap();

    // Never indexed: a query fails with a typed error; so does a node.
    let created = ok(&[
        "rag",
        "sources",
        "create",
        "handbook",
        "--dir",
        dir,
        "--exclude",
        "*.tmp",
        "--json",
    ]);
    assert_eq!(
        (created["version"].as_u64(), created["event_type"].as_str()),
        (Some(1), Some("RagCollectionCreated"))
    );
    let out = run(&["rag", "query", "handbook", "deploy", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let envelope: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(envelope["error"]["code"], "collection_not_indexed");
    let flow = docs.path("flow.yaml.tmp");
    std::fs::write(&flow, FLOW).unwrap();
    let out = run(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        r#"{"question":"deploy"}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let failed = json_lines(&stdout(&out))
        .into_iter()
        .find(|l| l["event"] == "NodeFailed")
        .unwrap();
    assert_eq!(
        failed["error"]["code"], "collection_not_indexed",
        "{failed}"
    );

    // Full index, then a query whose answer is in one known chunk.
    let full = ok(&["rag", "index", "handbook", "--mode", "full", "--json"]);
    assert_eq!(full["files"]["scanned"], 3, "{full}");
    assert_eq!(full["files"]["added"], 3);
    let hits = ok(&[
        "rag",
        "query",
        "handbook",
        "how to deploy the service",
        "--top-k",
        "1",
        "--json",
    ]);
    assert_eq!(hits["hits"][0]["path"], "deploy.md", "{hits}");
    assert_eq!(
        (
            hits["hits"][0]["start_line"].as_u64(),
            hits["hits"][0]["end_line"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert_eq!(hits["index_version"], full["index_version"]);
    let out = run(&[
        "rag",
        "query",
        "handbook",
        "deploy",
        "--path-glob",
        "main/style*",
    ]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("0 hit(s)"), "{}", stdout(&out));

    // Delta after adding, changing and deleting files.
    std::fs::write(docs.path("new.md"), "# New\n\nOn-call rota.\n").unwrap();
    std::fs::write(
        docs.path("style.md"),
        "# Style\n\nWrite short, plain sentences.\n",
    )
    .unwrap();
    std::fs::remove_file(docs.path("index.html")).unwrap();
    let delta = ok(&["rag", "index", "handbook", "--json"]);
    let f = &delta["files"];
    assert_eq!(
        [
            &f["added"],
            &f["changed"],
            &f["deleted"],
            &f["unchanged"],
            &f["read"]
        ]
        .map(|v| v.as_u64().unwrap()),
        [1, 1, 1, 1, 2],
        "{delta}"
    );
    let status = ok(&["rag", "status", "handbook", "--json"]);
    assert_eq!(status["index_version"], delta["index_version"]);
    assert_eq!(status["index_runs"], 2);
    let out = run(&["rag", "status", "handbook"]);
    assert!(stdout(&out).contains("index version"), "{}", stdout(&out));

    // The flowchart: the rag node's hits route the decision and reach the task node.
    let out = run(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        r#"{"question":"deploy"}"#,
        "--wait",
        "--json",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let run_id = json_lines(&stdout(&out)).last().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = json(&["runs", "show", &run_id, "--json"], &schema);
    let node = |id: &str| {
        shown["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == id)
            .cloned()
            .unwrap()
    };
    let retrieved = node("retrieve")["output"].clone();
    assert_eq!(retrieved["query"], "how do I deploy");
    assert_eq!(retrieved["index_version"], delta["index_version"]);
    assert_eq!(retrieved["hits"][0]["path"], "deploy.md");
    assert!(
        retrieved["hits"][0]["text"]
            .as_str()
            .unwrap()
            .contains("deploy script")
    );
    assert!(
        retrieved["hits"][0]["chunk_digest"]
            .as_str()
            .is_some_and(|d| d.len() == 64)
    );
    assert_eq!(node("answer")["output"]["answer"], "run the deploy script");

    // Bad input: a rag node without `query` fails validation with its path.
    let bad = docs.path("bad.yaml.tmp");
    std::fs::write(
        &bad,
        FLOW.replace(
            "query: \"how do I {{ inputs.question }}\", ",
            "mode: full, ",
        ),
    )
    .unwrap();
    let out = run(&["validate", bad.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let paths: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"nodes[1].rag.query") && paths.contains(&"nodes[1].rag.mode"),
        "{v}"
    );

    // Deleting the collection: queries then say it does not exist.
    ok(&["rag", "sources", "delete", "handbook", "--json"]);
    let out = run(&["rag", "query", "handbook", "deploy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).trim_end().ends_with("[collection_not_found]"),
        "{}",
        stderr(&out)
    );
    let listed = ok(&["rag", "sources", "list", "--json"]);
    assert_eq!(listed["collections"].as_array().map(Vec::len), Some(0));
    ledger.drop_schema().await.unwrap();
}
