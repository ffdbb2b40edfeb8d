//! Several `runledger serve` processes on one ledger: each run is driven by one instance at a
//! time (its lease), so every model call is made once; a killed instance's runs are taken over
//! once its leases expire; a drained one (SIGTERM) hands its runs back at once; `run --wait`
//! beside a serve drives its run alone. Model calls are counted by a local OpenAI-compatible
//! stub, per prompt (`<run tag>/<node>`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runledger_contracts::events::DomainEvent;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::testing::{TestLedger, test_database_url};
use serde_json::{Value, json};

const KEY_VAR: &str = "RUNLEDGER_E2E_LEASE_KEY";
const NODES: [&str; 3] = ["t1", "t2", "t3"];

type Calls = Arc<Mutex<HashMap<String, usize>>>;

/// An OpenAI-compatible stub that counts calls per prompt and answers after `delay`.
fn counting_stub(delay: Duration) -> (String, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let mut length = 0;
                reader.read_line(&mut line).unwrap_or_default();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let prompt = body["messages"]
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                *seen.lock().unwrap().entry(prompt).or_default() += 1;
                std::thread::sleep(delay);
                let reply = json!({
                    "id": "chatcmpl-lease",
                    "object": "chat.completion",
                    "model": "stub-model",
                    "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": "{\"ok\": true}" } }],
                    "usage": { "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6 }
                })
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            });
        }
    });
    (base, calls)
}

fn runledger(schema: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.args(args)
        .args([
            "--database-url",
            &test_database_url(),
            "--database-schema",
            schema,
        ])
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env_remove("RUNLEDGER_DATABASE_SCHEMA")
        .env_remove("RUNLEDGER_NATS_URL")
        .env_remove("RUNLEDGER_LOG")
        .env(KEY_VAR, "sk-lease-stub");
    cmd
}

fn output(schema: &str, args: &[&str]) -> Output {
    runledger(schema, args)
        .output()
        .expect("run the runledger binary")
}

/// One `serve` process, killed when dropped.
struct Serve {
    child: Child,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(schema: &str, instance: &str, lease_ttl_ms: u64) -> Self {
        let log = std::env::temp_dir().join(format!("runledger-lease-{schema}-{instance}.log"));
        let child = runledger(
            schema,
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--dispatch",
                "inprocess",
                "--poll-ms",
                "50",
                "--scan-ms",
                "200",
                "--instance-id",
                instance,
                "--lease-ttl-ms",
                &lease_ttl_ms.to_string(),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start runledger serve");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit by itself; its exit code.
    fn wait_exit(&mut self, patience: Duration) -> Option<i32> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A ledger with the stub registered as model `stubgpt` and a 3-task chain flowchart file.
struct Setup {
    ledger: TestLedger,
    schema: String,
    calls: Calls,
    flow: std::path::PathBuf,
}

async fn setup(delay: Duration) -> Setup {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let (base_url, calls) = counting_stub(delay);
    let out = output(
        &schema,
        &[
            "models",
            "create",
            "stubgpt",
            "--provider",
            "openai_compatible",
            "--model-id",
            "stub-model",
            "--base-url",
            &base_url,
            "--api-key-env",
            KEY_VAR,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut yaml = String::from("name: leased-chain\nnodes:\n  - { id: start, type: start }\n");
    for node in NODES {
        yaml.push_str(&format!("  - {{ id: {node}, type: task, model: stubgpt, prompt: \"{{{{ inputs.tag }}}}/{node}\" }}\n"));
    }
    yaml.push_str("  - { id: end, type: end }\nconnectors:\n  - { id: c0, from: start, to: t1 }\n  - { id: c1, from: t1, to: t2 }\n  - { id: c2, from: t2, to: t3 }\n  - { id: c3, from: t3, to: end }\n");
    let flow = std::env::temp_dir().join(format!("runledger-lease-{schema}.yaml"));
    std::fs::write(&flow, yaml).unwrap();
    Setup {
        ledger,
        schema,
        calls,
        flow,
    }
}

impl Setup {
    /// `run` without `--wait`, tagged `tag`.
    fn start_detached(&self, tag: &str) -> (RunId, String) {
        let run = RunId::new_v7();
        let out = output(
            &self.schema,
            &[
                "run",
                self.flow.to_str().unwrap(),
                "--run-id",
                &run.to_string(),
                "--input",
                &json!({ "tag": tag }).to_string(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (run, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    async fn events(&self, run: RunId) -> Vec<DomainEvent> {
        let recorded = self
            .ledger
            .store
            .read_stream(&StreamId::for_run(run), 1, usize::MAX)
            .await
            .unwrap();
        recorded.iter().map(|e| e.decode().unwrap()).collect()
    }

    async fn wait_completed(&self, runs: &[RunId], patience: Duration, logs: &dyn Fn() -> String) {
        let deadline = Instant::now() + patience;
        for &run in runs {
            loop {
                let events = self.events(run).await;
                if events
                    .iter()
                    .any(|e| matches!(e, DomainEvent::RunCompleted(_)))
                {
                    break;
                }
                assert!(
                    !events
                        .iter()
                        .any(|e| matches!(e, DomainEvent::RunFailed(_))),
                    "run {run} failed: {events:?}\n{}",
                    logs()
                );
                assert!(
                    Instant::now() < deadline,
                    "run {run} did not complete\n{}",
                    logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn calls_of(&self, tag: &str) -> Vec<usize> {
        let calls = self.calls.lock().unwrap();
        NODES
            .iter()
            .map(|n| calls.get(&format!("{tag}/{n}")).copied().unwrap_or(0))
            .collect()
    }

    async fn takeovers(&self, run: RunId) -> Vec<(String, u64, Option<String>)> {
        self.events(run)
            .await
            .into_iter()
            .filter_map(|e| match e {
                DomainEvent::RunTakenOver(t) => {
                    Some((t.instance_id, t.epoch, t.previous_instance_id))
                }
                _ => None,
            })
            .collect()
    }

    async fn finish(self) {
        let _ = std::fs::remove_file(&self.flow);
        self.ledger.drop_schema().await.unwrap();
    }
}

fn logs_of(serves: &[&Serve]) -> String {
    serves
        .iter()
        .map(|s| s.log())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_then_three_serves_call_each_model_once() {
    let s = setup(Duration::from_millis(20)).await;
    let a = Serve::start(&s.schema, "serve-a", 2000);
    let b = Serve::start(&s.schema, "serve-b", 2000);
    let mut runs = Vec::new();
    for i in 0..12 {
        runs.push((s.start_detached(&format!("two-{i}")).0, format!("two-{i}")));
    }
    let ids: Vec<RunId> = runs.iter().map(|r| r.0).collect();
    s.wait_completed(&ids, Duration::from_secs(90), &|| logs_of(&[&a, &b]))
        .await;
    let c = Serve::start(&s.schema, "serve-c", 2000);
    for i in 0..12 {
        runs.push((
            s.start_detached(&format!("three-{i}")).0,
            format!("three-{i}"),
        ));
    }
    let ids: Vec<RunId> = runs.iter().map(|r| r.0).collect();
    s.wait_completed(&ids, Duration::from_secs(90), &|| logs_of(&[&a, &b, &c]))
        .await;
    let mut drivers: HashMap<String, usize> = HashMap::new();
    for (run, tag) in &runs {
        assert_eq!(
            s.calls_of(tag),
            vec![1, 1, 1],
            "run {run} ({tag}): model calls per node"
        );
        // Left by `run`, taken by exactly one instance, which is named.
        let takeovers = s.takeovers(*run).await;
        assert_eq!(takeovers.len(), 1, "{takeovers:?}");
        assert_eq!((takeovers[0].1, takeovers[0].2.as_deref()), (1, None));
        *drivers.entry(takeovers[0].0.clone()).or_default() += 1;
    }
    assert!(
        drivers
            .keys()
            .all(|d| ["serve-a", "serve-b", "serve-c"].contains(&d.as_str())),
        "{drivers:?}"
    );
    println!("two_then_three_serves_call_each_model_once: runs per instance {drivers:?}");
    drop((a, b, c));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_serve_is_taken_over_and_a_drained_one_hands_back_at_once() {
    let s = setup(Duration::from_millis(400)).await;
    // SIGKILL: the runs wait for the lease to expire (1 s), then another instance takes them.
    let mut a = Serve::start(&s.schema, "serve-a", 1000);
    let mut killed = Vec::new();
    for i in 0..4 {
        killed.push(s.start_detached(&format!("kill-{i}")));
    }
    let first = killed[0].0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s
        .events(first)
        .await
        .iter()
        .any(|e| matches!(e, DomainEvent::NodeSucceeded(n) if n.node_id == "t1"))
    {
        assert!(Instant::now() < deadline, "t1 never finished\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let killed_at = Instant::now();
    let b = Serve::start(&s.schema, "serve-b", 1000);
    let ids: Vec<RunId> = killed.iter().map(|r| r.0).collect();
    s.wait_completed(&ids, Duration::from_secs(60), &|| logs_of(&[&a, &b]))
        .await;
    println!(
        "a killed serve's runs completed {:.1}s after the kill (lease 1 s)",
        killed_at.elapsed().as_secs_f64()
    );
    for (i, (run, _)) in killed.iter().enumerate() {
        // serve-a took it (epoch 1), then serve-b once serve-a's lease expired (epoch 2); a run
        // serve-a had not picked up yet is simply taken by serve-b.
        let takeovers = s.takeovers(*run).await;
        let last = takeovers.last().unwrap();
        match takeovers.as_slice() {
            [first, _] => {
                assert_eq!(first.0, "serve-a", "{takeovers:?}");
                assert_eq!(
                    (last.0.as_str(), last.1, last.2.as_deref()),
                    ("serve-b", 2, Some("serve-a")),
                    "{takeovers:?}"
                );
            }
            [_] => assert_eq!((last.0.as_str(), last.1), ("serve-b", 1), "{takeovers:?}"),
            _ => panic!("{takeovers:?}"),
        }
        assert!(
            i > 0 || takeovers.len() == 2,
            "serve-a drove the first run before the kill: {takeovers:?}"
        );
        // Work in flight at the kill may be called again; nothing else is.
        let calls = s.calls_of(&format!("kill-{i}"));
        assert!(calls.iter().all(|&n| (1..=2).contains(&n)), "{calls:?}");
        assert!(
            calls.iter().filter(|&&n| n == 2).count() <= 1,
            "only the node in flight is repeated: {calls:?}"
        );
    }

    drop(b);
    // SIGTERM: the instance finishes the calls it made, hands its leases back and exits; the
    // other takes the runs without waiting for any lease to expire (10 s here).
    let mut c = Serve::start(&s.schema, "serve-c", 10_000);
    let mut drained = Vec::new();
    for i in 0..4 {
        drained.push(s.start_detached(&format!("drain-{i}")));
    }
    let first = drained[0].0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.takeovers(first).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "serve-c never took the run\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.sigterm();
    assert_eq!(c.wait_exit(Duration::from_secs(20)), Some(0), "{}", c.log());
    assert!(c.log().contains("handed back"), "{}", c.log());
    let handed_at = Instant::now();
    let d = Serve::start(&s.schema, "serve-d", 10_000);
    let ids: Vec<RunId> = drained.iter().map(|r| r.0).collect();
    s.wait_completed(&ids, Duration::from_secs(8), &|| logs_of(&[&c, &d]))
        .await;
    println!(
        "a drained serve's runs completed {:.1}s after it exited (lease 10 s)",
        handed_at.elapsed().as_secs_f64()
    );
    for (i, (run, _)) in drained.iter().enumerate() {
        assert_eq!(
            s.calls_of(&format!("drain-{i}")),
            vec![1, 1, 1],
            "a drain repeats no call"
        );
        let takeovers = s.takeovers(*run).await;
        let owners: Vec<&str> = takeovers.iter().map(|t| t.0.as_str()).collect();
        assert!(
            owners.iter().all(|o| ["serve-c", "serve-d"].contains(o)),
            "{owners:?}"
        );
    }
    drop((a, c, d));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_wait_beside_a_serve_drives_its_run_alone() {
    let s = setup(Duration::from_millis(50)).await;
    let serve = Serve::start(&s.schema, "serve-a", 2000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = output(
        &s.schema,
        &[
            "run",
            s.flow.to_str().unwrap(),
            "--wait",
            "--json",
            "--input",
            r#"{"tag":"waited"}"#,
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve.log()
    );
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "completed");
    let run: RunId = summary["run_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(s.calls_of("waited"), vec![1, 1, 1]);
    assert!(
        s.takeovers(run).await.is_empty(),
        "the serve never took the run over"
    );

    // With a serve running, `run` says nothing about a missing one.
    let (_, stderr) = s.start_detached("detached");
    assert!(!stderr.contains("no `runledger serve`"), "{stderr}");
    drop(serve);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_serve_run_and_controls_say_that_nothing_drives_the_run() {
    let s = setup(Duration::from_millis(1)).await;
    let (run, stderr) = s.start_detached("alone");
    assert!(
        stderr.contains("no `runledger serve` is running"),
        "{stderr}"
    );
    // Nothing ran: `run` only records the start.
    assert_eq!(s.calls_of("alone"), vec![0, 0, 0]);
    let out = output(&s.schema, &["runs", "control", &run.to_string(), "pause"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no engine drives run") && stderr.contains("runledger serve"),
        "{stderr}"
    );
    // Bad lease settings are refused before anything is written.
    let out = output(
        &s.schema,
        &["run", s.flow.to_str().unwrap(), "--lease-ttl-ms", "0"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--lease-ttl-ms"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output(&s.schema, &["serve", "--instance-id", "bad\u{1}id"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--instance-id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.finish().await;
}

/// An idle serve over thousands of finished runs: the statements it runs do not grow with them.
/// Counted from the serve's own statement log on a database of its own: a short and a long
/// life of the same serve differ only by the idle time.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_serve_over_thousands_of_finished_runs_runs_few_statements() {
    let database = format!(
        "leases_idle_{}",
        RunId::new_v7().to_string().replace('-', "")
    );
    let base = test_database_url();
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let config = runledger_ledger::DatabaseConfig::new(&url);
    let store = runledger_ledger::PgEventStore::connect(&config)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    finished_runs(store, 3000).await;
    // Autovacuum would otherwise analyze the fresh tables during the measurement (its
    // transactions count in the database's statistics too).
    let vacuum = runledger_ledger::PgEventStore::connect(&config)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE")
        .execute(vacuum.pool())
        .await
        .unwrap();
    vacuum.pool().close().await;
    // The read models catch up first, so that both lives below are idle.
    let out = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["projections", "catch-up", "--database-url", &url])
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env_remove("RUNLEDGER_DATABASE_SCHEMA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The statements the serve itself sends, as sqlx logs each one at debug level (the
    // database's own counters also count autovacuum, which other tests' load sets off).
    let mut lifetimes = Vec::new();
    for seconds in [3u64, 23] {
        let log = std::env::temp_dir().join(format!("{database}-{seconds}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--dispatch",
                "inprocess",
                "--database-url",
                &url,
            ])
            .env_remove("RUNLEDGER_DATABASE_URL")
            .env_remove("RUNLEDGER_DATABASE_SCHEMA")
            .env_remove("RUNLEDGER_NATS_URL")
            .env("RUNLEDGER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        lifetimes.push(text.lines().filter(|l| l.contains("db.statement")).count());
    }
    let idle = (lifetimes[1] as f64 - lifetimes[0] as f64) / 20.0;
    println!(
        "idle serve over 3000 finished runs: {lifetimes:?} statements in 3 s / 23 s lives: {idle:.2}/s"
    );
    assert!(
        lifetimes[0] > 0,
        "the statement log is empty: is sqlx still logging statements at debug?"
    );
    assert!(
        idle < 5.0,
        "idle serve runs {idle:.2} statements/s over 3000 finished runs ({lifetimes:?})"
    );
    let admin =
        runledger_ledger::PgEventStore::connect(&runledger_ledger::DatabaseConfig::new(base))
            .await
            .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{database}\" WITH (FORCE)"
    )))
    .execute(admin.pool())
    .await
    .unwrap();
}

/// `n` finished runs of a start -> end flowchart, written through the engine (one append each).
async fn finished_runs(store: runledger_ledger::PgEventStore, n: usize) {
    use runledger_contracts::flowchart::{SourceFormat, load};
    use runledger_contracts::ids::{CorrelationId, RequestId};
    use runledger_orchestrator::engine::{Engine, EngineConfig, NoFlowcharts};
    use runledger_orchestrator::executor::{InProcessPool, Providers};
    use runledger_orchestrator::provider::ScriptedProvider;
    let flowchart = Arc::new(
        load("name: instant\nnodes:\n  - { id: start, type: start }\n  - { id: end, type: end }\nconnectors:\n  - { id: c, from: start, to: end }\n", SourceFormat::Yaml)
            .unwrap(),
    );
    let pool = InProcessPool::new(
        Providers::scripted(ScriptedProvider::with_fixture(Default::default())),
        4,
    );
    let engine = Engine::new(
        store,
        Arc::new(pool),
        Arc::new(NoFlowcharts),
        EngineConfig::default(),
    );
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..n {
        if pending.len() >= 16 {
            pending.join_next().await.unwrap().unwrap();
        }
        let engine = engine.clone();
        let flowchart = Arc::clone(&flowchart);
        pending.spawn(async move {
            let start = runledger_orchestrator::StartRun {
                run_id: RunId::new_v7(),
                flowchart,
                version: None,
                inputs: json!({}),
                parent: None,
                actor: "bulk".into(),
            };
            let run = engine
                .start(start, RequestId::generate(), CorrelationId::generate())
                .await
                .unwrap();
            assert!(engine.wait(run).await.unwrap().status.is_terminal());
        });
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
    }
    engine.store().pool().close().await;
}
