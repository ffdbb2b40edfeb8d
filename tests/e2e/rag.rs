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

/// An agent task whose scripted model calls two `rag_*` tools, then answers.
const AGENT_FLOW: &str = r#"
name: rag-agent
nodes:
  - { id: start, type: start }
  - id: ask
    type: task
    model: scripted
    prompt: "How do I deploy?"
    tools: ["rag_*"]
    max_turns: 3
    scripted:
      - tool_calls:
          - { tool: rag_query, arguments: { collection: handbook, query: "deploy the service", top_k: 1 } }
          - { tool: rag_index_status, arguments: { collection: handbook } }
      - output: { answer: "run the deploy script" }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: ask }
  - { id: c2, from: ask, to: done }
"#;

/// The binary on the test's schema, with its RAG data under `data_dir`.
fn cli(schema: &str, data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(args)
        .current_dir(super::root())
        .env(
            "RUNLEDGER_DATABASE_URL",
            runledger_ledger::testing::test_database_url(),
        )
        .env("RUNLEDGER_DATABASE_SCHEMA", schema)
        .env("RUNLEDGER_RAG_DATA_DIR", data_dir)
        .output()
        .unwrap()
}

/// The last line of a successful command's output as JSON (`Null` when it is not JSON).
fn succeeded(args: &[&str], out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(out),
        stderr(out)
    );
    serde_json::from_str(stdout(out).lines().last().unwrap_or("")).unwrap_or(Value::Null)
}

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
    let run = |args: &[&str]| cli(&schema, &data_dir, args);
    let ok = |args: &[&str]| succeeded(args, &cli(&schema, &data_dir, args));
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

    // An agent task calls the rag tools; each call and its answer is a ToolCalled.
    let agent = docs.path("agent.yaml.tmp");
    std::fs::write(&agent, AGENT_FLOW).unwrap();
    let out = run(&["run", agent.to_str().unwrap(), "--wait", "--json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let run_id = json_lines(&stdout(&out)).last().unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let export = docs.path("agent.jsonl.tmp");
    ok(&["export", "--run", &run_id, "-o", export.to_str().unwrap()]);
    let calls: Vec<Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event_type"] == "ToolCalled")
        .map(|l| l["payload"].clone())
        .collect();
    let call = |tool: &str| {
        calls
            .iter()
            .find(|c| c["tool"] == tool)
            .cloned()
            .unwrap_or_else(|| panic!("no {tool} call in {calls:?}"))
    };
    let queried = call("rag_query");
    assert_eq!(queried["outcome"], "ok", "{queried}");
    assert_eq!(
        queried["output"]["hits"][0]["path"], "deploy.md",
        "{queried}"
    );
    assert_eq!(queried["output"]["index_version"], delta["index_version"]);
    let status = call("rag_index_status");
    assert_eq!(status["outcome"], "ok", "{status}");

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

/// A deterministic embedding: one dimension per concept (cats, dogs), so a query word no chunk
/// contains can still match, and a few hashed dimensions for every other word.
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 8];
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        match word.to_ascii_lowercase().as_str() {
            "" => {}
            "cat" | "cats" | "feline" | "kitten" => v[0] += 1.0,
            "dog" | "dogs" | "canine" | "puppy" => v[1] += 1.0,
            other => v[2 + other.len() % 6] += 0.05,
        }
    }
    v
}

/// An OpenAI-compatible `POST /v1/embeddings` stub on 127.0.0.1, one request per connection;
/// counts the texts it embedded.
fn embeddings_stub() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.trim().eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let texts: Vec<&str> = request["input"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            seen.fetch_add(texts.len(), Ordering::SeqCst);
            let data: Vec<Value> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| serde_json::json!({ "object": "embedding", "index": i, "embedding": embed(t) }))
                .collect();
            let reply =
                serde_json::json!({ "object": "list", "model": request["model"], "data": data })
                    .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (base, count)
}

fn git(repo: &TempDir, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo.0)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn commit(repo: &TempDir, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

#[tokio::test]
async fn a_git_source_with_dense_retrieval_fused_with_bm25() {
    use std::sync::atomic::Ordering;
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let (repo, data) = (TempDir::new(), TempDir::new());
    let data_dir = data.path("rag");
    let ok = |args: &[&str]| succeeded(args, &cli(&schema, &data_dir, args));
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.path("pets.md"),
        "# Pets\n\nThe cat sleeps on the mat all afternoon.\n",
    )
    .unwrap();
    std::fs::write(
        repo.path("tools.md"),
        "# Tools\n\nA hammer drives nails into wood.\n",
    )
    .unwrap();
    std::fs::write(repo.path("yard.md"), "# Yard\n\nA dog fetches the ball.\n").unwrap();
    let first = commit(&repo, "one");
    let (base_url, embedded) = embeddings_stub();
    ok(&[
        "models",
        "create",
        "embedder",
        "--provider",
        "openai_compatible",
        "--model-id",
        "stub-embed",
        "--base-url",
        &base_url,
        "--json",
    ]);
    ok(&[
        "rag",
        "sources",
        "create",
        "pets",
        "--git",
        repo.0.to_str().unwrap(),
        "--ref",
        "main",
        "--embedding-model",
        "embedder",
        "--json",
    ]);

    // Full: every file of the commit, every chunk embedded, the commit recorded.
    let full = ok(&["rag", "index", "pets", "--mode", "full", "--json"]);
    assert_eq!(full["files"]["added"], 3, "{full}");
    assert_eq!(full["commits"]["main"], first.as_str(), "{full}");
    assert_eq!(
        embedded.load(Ordering::SeqCst) as u64,
        full["chunks_total"].as_u64().unwrap()
    );
    // No chunk says "feline": BM25 alone finds nothing; the fused ranking finds the cat.
    let hits = ok(&["rag", "query", "pets", "feline", "--top-k", "1", "--json"]);
    assert_eq!(hits["hits"][0]["path"], "pets.md", "{hits}");
    // Both rankings agree on a word one chunk has: the fused score of two first places.
    let hits = ok(&["rag", "query", "pets", "hammer", "--top-k", "1", "--json"]);
    assert_eq!(hits["hits"][0]["path"], "tools.md", "{hits}");
    let fused = hits["hits"][0]["score"].as_f64().unwrap();
    assert!((fused - 2.0 / 61.0).abs() < 1e-6, "{hits}");

    // A new commit: the delta reads what the commit changed and embeds only its chunks;
    // an uncommitted edit is not indexed.
    std::fs::write(repo.path("yard.md"), "# Yard\n\nA puppy chases the ball.\n").unwrap();
    std::fs::write(repo.path("fish.md"), "# Fish\n\nA goldfish in a bowl.\n").unwrap();
    let second = commit(&repo, "two");
    std::fs::write(repo.path("tools.md"), "# Tools\n\nUncommitted saw.\n").unwrap();
    let before = embedded.load(Ordering::SeqCst);
    let delta = ok(&["rag", "index", "pets", "--json"]);
    let f = &delta["files"];
    assert_eq!(
        [&f["added"], &f["changed"], &f["unchanged"], &f["deleted"]].map(|v| v.as_u64().unwrap()),
        [1, 1, 2, 0],
        "{delta}"
    );
    assert_eq!(delta["commits"]["main"], second.as_str());
    assert_eq!(
        (embedded.load(Ordering::SeqCst) - before) as u64,
        delta["chunks_added"].as_u64().unwrap()
    );
    let hits = ok(&["rag", "query", "pets", "canine", "--top-k", "1", "--json"]);
    assert_eq!(hits["hits"][0]["path"], "yard.md", "{hits}");
    assert!(
        hits["hits"][0]["text"].as_str().unwrap().contains("puppy"),
        "{hits}"
    );
    let saw = ok(&["rag", "query", "pets", "saw", "--json"]);
    assert!(
        saw["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| !h["text"].as_str().unwrap_or("").contains("saw")),
        "{saw}"
    );
    ledger.drop_schema().await.unwrap();
}
