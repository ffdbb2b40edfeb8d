//! A run's workspace over NATS (issue 15): its workspace nodes go to the executor that holds
//! the workspace, a redelivered dispatch applies no recorded call twice, and executors hear
//! that a run ended. Real NATS, real PostgreSQL, the real workspace/git/command tools.

use std::path::{Path, PathBuf};

use super::*;
use runledger_orchestrator::agent::ToolRegistry;

/// An executor host of its own: providers with the workspace, git and command tools on a
/// workspace root no other worker sees (as on another machine).
async fn tool_providers(root: &Path, host: &str) -> Providers {
    let config = runledger_tools::ToolsConfig {
        workspace_root: root.to_path_buf(),
        mcp_registry: None,
        instance_id: host.into(),
        ..runledger_tools::ToolsConfig::default()
    };
    let domains = runledger_tools::domains(&config).await.unwrap();
    providers().with_tools(ToolRegistry::new(domains).unwrap())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rl-gw-{name}-{}", RunId::new_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Harness {
    /// A worker `id` with the agent tools on its own workspace root.
    async fn tool_worker(
        &self,
        id: &str,
        root: &Path,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<WorkerStats>) {
        self.tool_worker_on(id, root, id).await
    }

    /// A worker `id` on executor host `host` (its workspaces' owner) with workspace root `root`.
    async fn tool_worker_on(
        &self,
        id: &str,
        root: &Path,
        host: &str,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<WorkerStats>) {
        let (stop, stopped) = watch::channel(false);
        let config = WorkerConfig {
            executor_class: "frontier".into(),
            concurrency: 8,
            executor_id: id.into(),
            exit_when_idle: None,
        };
        let task = tokio::spawn(run_worker(
            self.js.clone(),
            self.topology.clone(),
            config,
            Arc::new(tool_providers(root, host).await),
            stopped,
        ));
        (
            stop,
            tokio::spawn(async move { task.await.unwrap().unwrap() }),
        )
    }
}

/// `write` puts a file in the run's workspace, `read` reads it back: two workspace nodes in
/// sequence, each a scripted agent.
fn write_then_read(write_extra: &str) -> Arc<Flowchart> {
    flowchart(&format!(
        r#"name: ws-seq
nodes:
  - {{ id: start, type: start }}
  - id: write
    type: task
    model: scripted
    timeout_s: 60
    tools: [workspace_write, command_run]
    scripted:
      - tool_calls: [{{ tool: workspace_write, arguments: {{ path: note.txt, content: "from write" }} }}]
{write_extra}      - output: {{ wrote: true }}
  - id: read
    type: task
    model: scripted
    timeout_s: 60
    tools: [workspace_read]
    scripted:
      - tool_calls: [{{ tool: workspace_read, arguments: {{ path: note.txt }} }}]
      - output: {{ read: true }}
  - {{ id: done, type: end }}
connectors:
  - {{ id: c1, from: start, to: write }}
  - {{ id: c2, from: write, to: read }}
  - {{ id: c3, from: read, to: done }}
"#
    ))
}

fn started_by(events: &[DomainEvent], node: &str) -> Vec<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_workspace_nodes_go_to_the_executor_holding_its_workspace() {
    let h = harness(20_000).await;
    let (root1, root2) = (scratch("w1"), scratch("w2"));
    let workers = [
        h.tool_worker("w1", &root1).await,
        h.tool_worker("w2", &root2).await,
    ];
    // Eight runs: with the dispatch not routed, a `read` lands on the other executor half the
    // time and fails with `workspace_elsewhere`.
    let mut runs = Vec::new();
    for _ in 0..8 {
        runs.push(h.start(write_then_read(""), json!({})).await);
    }
    let mut holders = std::collections::HashSet::new();
    for run in runs {
        let (summary, events) = h.wait(run).await;
        assert_eq!(summary.status, RunStatus::Completed, "{events:#?}");
        check(&events);
        let (write, read) = (started_by(&events, "write"), started_by(&events, "read"));
        assert_eq!(write.len(), 1, "{events:#?}");
        assert_eq!(read, write, "both workspace nodes ran on the holder");
        holders.insert(write[0].clone());
        // `read` saw what `write` wrote: the same workspace.
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
    for (stop, task) in workers {
        let _ = stop.send(true);
        task.await.unwrap();
    }
    tracing::debug!(?holders, "holders");
    let _ = std::fs::remove_dir_all(&root1);
    let _ = std::fs::remove_dir_all(&root2);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stopped_fails_the_next_workspace_node_with_a_typed_error_after_the_dispatch_timeout()
 {
    let h = harness(3_000).await;
    let (root1, root2) = (scratch("h1"), scratch("h2"));
    let (stop1, task1) = h.tool_worker("h1", &root1).await;
    // `write` runs a second long enough for the holder to be stopped while it runs.
    let run = h
        .start(
            write_then_read(
                "      - tool_calls: [{ tool: command_run, arguments: { argv: [sleep, \"1\"] } }]\n",
            ),
            json!({}),
        )
        .await;
    h.until(run, |events| !started_by(events, "write").is_empty())
        .await;
    // The holder drains (finishes `write`) and stops pulling; another executor is up.
    let _ = stop1.send(true);
    task1.await.unwrap();
    let (stop2, task2) = h.tool_worker("h2", &root2).await;
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Failed, "{events:#?}");
    check(&events);
    assert!(started_by(&events, "read").is_empty(), "{events:#?}");
    let timed_out = events
        .iter()
        .find_map(|e| match e {
            DomainEvent::NodeTimedOut(t) if t.node_id == "read" => Some(t),
            _ => None,
        })
        .unwrap();
    assert_eq!(timed_out.phase, TimeoutPhase::Dispatch);
    let artifact = events
        .iter()
        .find_map(|e| match e {
            DomainEvent::ArtifactPersisted(a) if a.node_run_id == timed_out.node_run_id => Some(a),
            _ => None,
        })
        .unwrap();
    assert_eq!(artifact.payload["workspace_holder"], "h1", "{artifact:#?}");
    let state = runledger_orchestrator::engine::load_run(&h.ledger.store, run)
        .await
        .unwrap()
        .state;
    let read = state
        .node_runs
        .iter()
        .find(|nr| nr.id == timed_out.node_run_id)
        .unwrap();
    let error = read.error.as_ref().unwrap();
    assert_eq!(error.code, "workspace_holder_unavailable");
    assert_eq!(error.details.as_ref().unwrap()["holder"], "h1");
    let _ = stop2.send(true);
    assert_eq!(
        task2.await.unwrap().ran,
        0,
        "the other executor never took it"
    );
    let _ = std::fs::remove_dir_all(&root1);
    let _ = std::fs::remove_dir_all(&root2);
    h.finish().await;
}

/// A worker in a runtime of its own, with its own NATS connection: shutting that runtime down
/// is an executor process dying (no ack, no heartbeat, no goodbye; its children killed).
fn doomed_worker(topology: Topology, id: &str, root: &Path, host: &str) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (id, root, host) = (id.to_owned(), root.to_path_buf(), host.to_owned());
    runtime.spawn(async move {
        let js = crate::connect(NATS).await.unwrap();
        let config = WorkerConfig {
            executor_class: "frontier".into(),
            concurrency: 4,
            executor_id: id,
            exit_when_idle: None,
        };
        let (_keep, stopped) = watch::channel(false);
        let providers = Arc::new(tool_providers(&root, &host).await);
        let _ = run_worker(js, topology, config, providers, stopped).await;
        drop(_keep);
    });
    runtime
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_dispatch_applies_no_call_the_ledger_records() {
    let h = harness(30_000).await;
    let root = scratch("redeliver");
    // Call 0 appends a line (applying it twice leaves two); the executor dies in call 1; the
    // last call prints the file into the ledger.
    let agent = flowchart(
        r#"name: redeliver
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
"#,
    );
    let first = doomed_worker(h.topology.clone(), "first", &root, "host-a");
    let run = h.start(agent, json!({})).await;
    // The first call (turn 1) is in the ledger: the executor is in the second. Kill it.
    h.until(run, |events| {
        events.iter().any(|e| {
            matches!(e, DomainEvent::ToolCalled(c) if c.tool == "command_run" && c.agent.as_ref().is_some_and(|a| a.turn == 1))
        })
    })
    .await;
    first.shutdown_background();
    // The same host's next executor (same workspace root and host) gets the redelivery.
    let (stop, task) = h.tool_worker_on("second", &root, "host-a").await;
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed, "{events:#?}");
    check(&events);
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::ToolCalled(c) if c.tool == "command_run" => Some(c),
            _ => None,
        })
        .collect();
    let mut keys: Vec<_> = calls.iter().map(|c| c.idempotency_key.clone()).collect();
    keys.dedup();
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
        "the recorded append was not applied again: {cat:#?}"
    );
    // Both executors started the node run: the second one ran the redelivery.
    let starts = started_by(&events, "work");
    assert_eq!(
        starts.first().map(String::as_str),
        Some("first"),
        "{starts:?}"
    );
    let _ = stop.send(true);
    assert_eq!(task.await.unwrap().ran, 1);
    let _ = std::fs::remove_dir_all(&root);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_stop_a_cancelled_runs_work_and_release_its_workspace() {
    let h = harness(20_000).await;
    let root = scratch("ended");
    let (stop, task) = h.tool_worker("e1", &root).await;
    // Run `plain` has no `workspace:` (an empty repository); run `kept` clones `plain`'s
    // and keeps its workspace when it fails.
    let sleeper = |workspace: &str| {
        flowchart(&format!(
            r#"name: ends
{workspace}
nodes:
  - {{ id: start, type: start }}
  - id: work
    type: task
    model: scripted
    timeout_s: 120
    tools: [command_run, workspace_write]
    scripted:
      - tool_calls: [{{ tool: workspace_write, arguments: {{ path: a.txt, content: x }} }}]
      - tool_calls: [{{ tool: command_run, arguments: {{ argv: [sleep, "60"] }} }}]
      - output: {{ done: true }}
  - {{ id: done, type: end }}
connectors:
  - {{ id: c1, from: start, to: work }}
  - {{ id: c2, from: work, to: done }}
"#
        ))
    };
    let written = |events: &[DomainEvent]| {
        events.iter().any(
            |e| matches!(e, DomainEvent::ToolCalled(c) if c.tool == "workspace_write" && c.outcome == runledger_contracts::events::ToolOutcome::Ok),
        )
    };
    let plain = h.start(sleeper(""), json!({})).await;
    h.until(plain, written).await;
    let plain_dir = root.join(plain.to_string());
    let kept = h
        .start(
            sleeper(&format!(
                "workspace: {{ repo: \"{}\", keep_on_failure: true }}",
                plain_dir.join("repo").display()
            )),
            json!({}),
        )
        .await;
    h.until(kept, written).await;
    let kept_dir = root.join(kept.to_string());
    let mut dirs = Vec::new();
    for (run, dir) in [(plain, plain_dir), (kept, kept_dir)] {
        assert!(dir.is_dir(), "the run's workspace exists while it runs");
        if run == kept {
            // The executor drains (SIGTERM) with `kept`'s node run in hand: it still hears the
            // run end, and the node run stops rather than sleep its full minute.
            let _ = stop.send(true);
        }
        let cancel = runledger_contracts::events::Control {
            actor: "test".into(),
            reason: "enough".into(),
        };
        h.engine
            .control(
                run,
                ControlAction::Cancel { force: true },
                cancel,
                RequestId::generate(),
            )
            .await
            .unwrap();
        let (summary, _) = h.wait(run).await;
        assert_eq!(summary.status, RunStatus::Canceled);
        dirs.push(dir);
    }
    // The executor heard both ends: the sleeping node runs stopped, the workspace of the
    // run without keep_on_failure removed, the other kept.
    for _ in 0..500 {
        if !dirs[0].exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!dirs[0].exists(), "workspace removed at the run's end");
    assert!(dirs[1].is_dir(), "workspace kept: keep_on_failure");
    let stats = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the stopped node runs do not hold up the drain")
        .unwrap();
    assert_eq!((stats.ran, stats.stopped), (0, 2), "{stats:?}");
    let _ = std::fs::remove_dir_all(&root);
    h.finish().await;
}
