//! A run's workspace over NATS through the binary (issue 15): `runledger serve --dispatch nats`
//! with two `runledger executor` processes, each with a workspace root of its own (as on two
//! hosts). A flowchart's two workspace nodes in sequence run on one executor, the holder; an
//! executor SIGKILLed between two tool calls is replaced and the redelivered work does not
//! apply the call the ledger records.

use super::*;

/// `runledger serve --dispatch nats` on a free port, with short waits; and its base URL.
fn serve(schema: &str, ns: &str) -> (Command, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = runledger(
        schema,
        SHARED_NATS,
        ns,
        &[
            "serve",
            "--listen",
            &listen,
            "--dispatch",
            "nats",
            "--ack-wait-s",
            "2",
            "--dispatch-timeout-s",
            "30",
            "--poll-ms",
            "50",
            "--scan-ms",
            "100",
        ],
    );
    cmd.env_remove("RUNLEDGER_API_TOKEN")
        .env_remove("RUNLEDGER_API_LISTEN");
    (cmd, format!("http://{listen}"))
}

/// Starts a run of `yaml` through the serve's API (`POST /v1/runs`, inline), so the serve
/// drives it from its first step; retried until the serve listens.
async fn start(base: &str, yaml: &str) -> RunId {
    // reqwest is built with rustls but no default provider (the executor gateway's choice).
    runledger_executor_gateway::providers::install_crypto_provider();
    let client = reqwest::Client::new();
    let body =
        serde_json::to_vec(&serde_json::json!({ "definition": yaml, "inputs": {} })).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = client
            .post(format!("{base}/v1/runs"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                assert_eq!(status, 201, "{text}");
                let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
                return answer["run_id"].as_str().unwrap().parse().unwrap();
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "the serve never listened: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn ended(
    ledger: &TestLedger,
    run: RunId,
    within: Duration,
    logs: impl Fn() -> String,
) -> Vec<DomainEvent> {
    let deadline = Instant::now() + within;
    loop {
        let events = events(ledger, run).await;
        if events.iter().any(|e| {
            matches!(
                e,
                DomainEvent::RunCompleted(_)
                    | DomainEvent::RunFailed(_)
                    | DomainEvent::RunCanceled(_)
            )
        }) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} did not end: {events:#?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn executors_of(events: &[DomainEvent], node: &str) -> Vec<String> {
    let runs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeScheduled(s) if s.node_id == node => Some(s.node_run_id),
            _ => None,
        })
        .collect();
    events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeStarted(s) if runs.contains(&s.node_run_id) => {
                Some(s.executor.clone())
            }
            _ => None,
        })
        .collect()
}

fn logs_of(dir: &super::super::TempDir, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "--- {n}\n{}",
                std::fs::read_to_string(dir.path(&format!("{n}.log"))).unwrap_or_default()
            )
        })
        .collect()
}

const WRITE_THEN_READ: &str = r#"name: ws-seq
nodes:
  - { id: start, type: start }
  - id: write
    type: task
    model: scripted
    timeout_s: 60
    tools: [workspace_write]
    scripted:
      - tool_calls: [{ tool: workspace_write, arguments: { path: note.txt, content: "from write" } }]
      - output: { wrote: true }
  - id: read
    type: task
    model: scripted
    timeout_s: 60
    tools: [workspace_read]
    scripted:
      - tool_calls: [{ tool: workspace_read, arguments: { path: note.txt } }]
      - output: { read: true }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: write }
  - { id: c2, from: write, to: read }
  - { id: c3, from: read, to: done }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workspace_nodes_in_sequence_run_on_the_holder_among_two_executor_processes() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let ns = namespace();
    let dir = super::super::TempDir::new();
    let mut procs = Procs(Vec::new());
    let (mut server, base) = serve(&schema, &ns);
    procs.spawn(&mut server, dir.path("serve.log"));
    for id in ["x1", "x2"] {
        let root = dir.path(&format!("root-{id}"));
        procs.spawn(
            &mut executor(
                &schema,
                SHARED_NATS,
                &ns,
                id,
                &["--workspace-root", root.to_str().unwrap()],
            ),
            dir.path(&format!("{id}.log")),
        );
    }
    let logs = || logs_of(&dir, &["serve", "x1", "x2"]);
    // Six runs: unrouted, a `read` would land on the executor without the workspace about
    // half the time (and fail with workspace_elsewhere).
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(start(&base, WRITE_THEN_READ).await);
    }
    for run in runs {
        let events = ended(&ledger, run, Duration::from_secs(60), &logs).await;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, DomainEvent::RunCompleted(_))),
            "{events:#?}\n{}",
            logs()
        );
        assert_eq!(shape(&events)["read"], vec!["succeeded"]);
        let (write, read) = (
            executors_of(&events, "write"),
            executors_of(&events, "read"),
        );
        assert_eq!(write.len(), 1, "{events:#?}\n{}", logs());
        assert!(["x1", "x2"].contains(&write[0].as_str()), "{write:?}");
        assert_eq!(
            read, write,
            "the second workspace node ran on the workspace holder"
        );
        let read_call = events
            .iter()
            .find_map(|e| match e {
                DomainEvent::ToolCalled(c) if c.tool == "workspace_read" => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            read_call
                .output
                .as_ref()
                .and_then(|o| o["content"].as_str()),
            Some("from write"),
            "{read_call:#?}"
        );
    }
    drop(procs);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_killed_between_two_calls_is_replaced_without_applying_the_recorded_call_again()
{
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let ns = namespace();
    let dir = super::super::TempDir::new();
    // Call 0 appends a line (applied twice, the file has two); the executor is killed in call
    // 1; call 2 prints the file into the ledger.
    let flow = r#"name: redeliver
nodes:
  - { id: start, type: start }
  - id: work
    type: task
    model: scripted
    timeout_s: 120
    tools: [command_run]
    scripted:
      - tool_calls: [{ tool: command_run, arguments: { argv: [sh, -c, "echo once >> applied.txt"] } }]
      - tool_calls: [{ tool: command_run, arguments: { argv: [sleep, "4"] } }]
      - tool_calls: [{ tool: command_run, arguments: { argv: [cat, applied.txt] } }]
      - output: { done: true }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: work }
  - { id: c2, from: work, to: done }
"#;
    // One host: the replacement executor has the same workspace root and takes the workspace
    // back.
    let root = dir.path("root");
    let root_arg = ["--workspace-root", root.to_str().unwrap()];
    let mut procs = Procs(Vec::new());
    let (mut server, base) = serve(&schema, &ns);
    procs.spawn(&mut server, dir.path("serve.log"));
    let first = procs.spawn(
        &mut executor(&schema, SHARED_NATS, &ns, "first", &root_arg),
        dir.path("first.log"),
    );
    let logs = || logs_of(&dir, &["serve", "first", "second"]);
    let run = start(&base, flow).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = events(&ledger, run).await;
        if events.iter().any(|e| {
            matches!(e, DomainEvent::ToolCalled(c) if c.tool == "command_run" && c.agent.as_ref().is_some_and(|a| a.turn == 1))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "call 0 never recorded: {events:#?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    procs.kill(first);
    procs.spawn(
        executor(&schema, SHARED_NATS, &ns, "second", &root_arg)
            .env("RUNLEDGER_LOG", "runledger_executor_gateway::worker=info"),
        dir.path("second.log"),
    );
    let events = ended(&ledger, run, Duration::from_secs(60), &logs).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DomainEvent::RunCompleted(_))),
        "{events:#?}\n{}",
        logs()
    );
    assert_eq!(shape(&events)["work"], vec!["succeeded"]);
    // The first executor started the node run; the second ran the redelivered dispatch with
    // the calls the ledger recorded.
    assert_eq!(executors_of(&events, "work"), vec!["first".to_owned()]);
    let second = std::fs::read_to_string(dir.path("second.log")).unwrap_or_default();
    assert!(
        second.contains("redelivered work runs with the ledger's recorded calls"),
        "{}",
        logs()
    );
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::ToolCalled(c) if c.tool == "command_run" => Some(c),
            _ => None,
        })
        .collect();
    let keys: std::collections::BTreeSet<_> =
        calls.iter().map(|c| c.idempotency_key.clone()).collect();
    assert_eq!(
        keys.len(),
        calls.len(),
        "one record per call key: {calls:#?}"
    );
    let cat = calls
        .iter()
        .find(|c| c.agent.as_ref().is_some_and(|a| a.turn == 3))
        .unwrap();
    assert_eq!(
        cat.output.as_ref().and_then(|o| o["stdout"].as_str()),
        Some("once\n"),
        "the recorded append was applied once: {cat:#?}\n{}",
        logs()
    );
    drop(procs);
    ledger.drop_schema().await.unwrap();
}
