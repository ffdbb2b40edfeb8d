//! Crash and contention tests of `runledger serve`: engines killed with SIGKILL mid-run, and two
//! engines driving one run at once. Whatever happens to the processes, the run's stream must
//! stay linear: every node run ends once, has one artifact, and the run completes once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::DomainEvent;
use runledger_contracts::ids::{NodeRunId, RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::testing::{TestLedger, test_database_url};
use runledger_orchestrator::{RunState, RunStatus};
use serde_json::Value;

/// A command of the binary against the test's schema (flags, not environment).
fn runledger(schema: &str, args: &[&str]) -> Command {
    runledger_at(&test_database_url(), schema, args)
}

/// [`runledger`] against another database URL (the same database under another
/// `application_name`, say).
fn runledger_at(database_url: &str, schema: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.args(args)
        .args(["--database-url", database_url, "--database-schema", schema])
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env_remove("RUNLEDGER_DATABASE_SCHEMA")
        .env_remove("RUNLEDGER_LOG");
    cmd
}

fn output(schema: &str, args: &[&str]) -> Output {
    runledger(schema, args)
        .output()
        .expect("run the runledger binary")
}

/// A temporary directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("runledger-crash-{}", RunId::new_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `runledger serve` processes; every one still running is killed when this is dropped, so a
/// failed assertion never leaves an engine behind.
struct Serves {
    schema: String,
    database_url: String,
    logs: PathBuf,
    running: Vec<Child>,
    started: usize,
    /// Processes that had exited on their own by the time they were to be killed.
    exited_early: Vec<String>,
}

impl Serves {
    fn new(schema: &str, logs: &Path) -> Self {
        Self {
            schema: schema.to_owned(),
            database_url: test_database_url(),
            logs: logs.to_path_buf(),
            running: Vec::new(),
            started: 0,
            exited_early: Vec::new(),
        }
    }

    fn log(&self, n: usize) -> PathBuf {
        self.logs.join(format!("serve-{n}.log"))
    }

    fn start(&mut self) {
        let log = File::create(self.log(self.started)).unwrap();
        // Short leases: each restarted engine takes the run over once the killed one's lease
        // runs out.
        let child = runledger_at(
            &self.database_url,
            &self.schema,
            &[
                "serve",
                "--poll-ms",
                "50",
                "--scan-ms",
                "100",
                "--lease-ttl-ms",
                "600",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start runledger serve");
        self.running.push(child);
        self.started += 1;
    }

    /// SIGKILL (`Child::kill` on Unix) every running serve and reap it.
    fn kill_all(&mut self) {
        for mut child in self.running.drain(..) {
            if let Ok(Some(status)) = child.try_wait() {
                self.exited_early
                    .push(format!("pid {} exited on its own: {status}", child.id()));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every serve log, for failure messages and the final checks.
    fn all_logs(&self) -> String {
        let mut text = String::new();
        for n in 0..self.started {
            let body = std::fs::read_to_string(self.log(n)).unwrap_or_default();
            if !body.trim().is_empty() {
                text.push_str(&format!("--- serve-{n}.log\n{body}"));
            }
        }
        text
    }

    /// After the engines are stopped: none exited by itself and none panicked.
    fn assert_healthy(&self) {
        let logs = self.all_logs();
        assert!(
            self.exited_early.is_empty(),
            "{:?}\n{logs}",
            self.exited_early
        );
        assert!(
            !logs.contains("panicked"),
            "a serve process panicked:\n{logs}"
        );
    }
}

impl Drop for Serves {
    fn drop(&mut self) {
        for child in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// splitmix64: enough randomness for kill timing, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// A chain start -> t1 .. tN -> end of scripted tasks; returns the YAML and every node id.
fn chain(name: &str, tasks: usize) -> (String, Vec<String>) {
    let mut ids = vec!["start".to_owned()];
    ids.extend((1..=tasks).map(|i| format!("t{i}")));
    ids.push("end".to_owned());
    let mut yaml = format!("name: {name}\nnodes:\n  - {{id: start, type: start}}\n");
    for i in 1..=tasks {
        yaml.push_str(&format!(
            "  - {{id: t{i}, type: task, model: scripted, scripted: [{{delay_ms: 5, output: {{n: {i}}}}}]}}\n"
        ));
    }
    yaml.push_str("  - {id: end, type: end}\nconnectors:\n");
    for (i, pair) in ids.windows(2).enumerate() {
        yaml.push_str(&format!(
            "  - {{id: c{i}, from: {}, to: {}}}\n",
            pair[0], pair[1]
        ));
    }
    (yaml, ids)
}

/// `runledger run FLOW --run-id RUN` without `--wait`: returns once RunStarted is written.
fn start_run(schema: &str, flow: &Path, run: RunId) {
    let run_id = run.to_string();
    let out = output(
        schema,
        &["run", flow.to_str().unwrap(), "--run-id", &run_id],
    );
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("started"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `status` of `runledger runs show RUN --json`.
fn shown_status(schema: &str, run: RunId) -> Result<String, String> {
    let out = output(schema, &["runs", "show", &run.to_string(), "--json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["status"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no status in {v}"))
}

/// Polls `runs show` until the run is completed; fails at once on another terminal status and
/// after `timeout` with the engines' logs.
async fn wait_completed(schema: &str, run: RunId, timeout: Duration, serves: &Serves) {
    let clock = Instant::now();
    let mut last = String::new();
    while clock.elapsed() < timeout {
        match shown_status(schema, run) {
            Ok(status) if status == "completed" => return,
            Ok(status) if status == "failed" || status == "canceled" => {
                panic!("run {run} ended {status}\n{}", serves.all_logs());
            }
            Ok(status) => last = status,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "run {run} not completed after {timeout:?} (last seen: {last})\n{}",
        serves.all_logs()
    );
}

async fn head_version(ledger: &TestLedger, run: RunId) -> u64 {
    ledger
        .store
        .stream_head(&StreamId::for_run(run))
        .await
        .unwrap()
        .map_or(0, |h| h.version)
}

/// What the checks counted.
#[derive(Debug)]
struct Tally {
    events: usize,
    node_runs: usize,
    ignored: usize,
}

/// The invariants every run must keep, however its engines died or raced:
/// - versions are 1..=N without gaps;
/// - exactly one RunCompleted, and replaying the stream gives a completed run;
/// - every scheduled node run has exactly one terminal event and exactly one artifact;
/// - no terminal event, artifact or ignored result names a node run that was never scheduled;
/// - every node of `nodes` has exactly one succeeded node run among its non-canceled ones, and
///   nothing failed or timed out; in a chain each node is scheduled exactly once.
fn check_run(recorded: &[RecordedEvent], nodes: &[String]) -> Tally {
    for (i, event) in recorded.iter().enumerate() {
        assert_eq!(
            event.stream_version,
            i as u64 + 1,
            "versions must be 1..=N without gaps"
        );
    }
    let events: Vec<DomainEvent> = recorded.iter().map(|e| e.decode().unwrap()).collect();

    let mut scheduled: HashMap<NodeRunId, String> = HashMap::new();
    let mut terminal: HashMap<NodeRunId, Vec<&'static str>> = HashMap::new();
    let mut artifacts: HashMap<NodeRunId, usize> = HashMap::new();
    let mut ignored: Vec<NodeRunId> = Vec::new();
    let mut completed = 0;
    for event in &events {
        let ended = match event {
            DomainEvent::NodeScheduled(e) => {
                assert!(
                    scheduled.insert(e.node_run_id, e.node_id.clone()).is_none(),
                    "node run {} scheduled twice",
                    e.node_run_id
                );
                None
            }
            DomainEvent::NodeSucceeded(e) => Some((e.node_run_id, "NodeSucceeded")),
            DomainEvent::NodeFailed(e) => Some((e.node_run_id, "NodeFailed")),
            DomainEvent::NodeTimedOut(e) => Some((e.node_run_id, "NodeTimedOut")),
            DomainEvent::NodeSkipped(e) => Some((e.node_run_id, "NodeSkipped")),
            DomainEvent::NodeCanceled(e) => Some((e.node_run_id, "NodeCanceled")),
            DomainEvent::ArtifactPersisted(e) => {
                *artifacts.entry(e.node_run_id).or_default() += 1;
                None
            }
            DomainEvent::NodeResultIgnored(e) => {
                ignored.push(e.node_run_id);
                None
            }
            DomainEvent::RunCompleted(_) => {
                completed += 1;
                None
            }
            _ => None,
        };
        if let Some((id, kind)) = ended {
            terminal.entry(id).or_default().push(kind);
        }
    }
    assert_eq!(completed, 1, "the run completes exactly once");
    for id in terminal.keys().chain(artifacts.keys()).chain(&ignored) {
        assert!(
            scheduled.contains_key(id),
            "node run {id} was never scheduled"
        );
    }
    for (id, node) in &scheduled {
        let ends = terminal.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            ends.len(),
            1,
            "node run {id} of `{node}` must end exactly once, ended {ends:?}"
        );
        assert_eq!(
            artifacts.get(id).copied().unwrap_or(0),
            1,
            "node run {id} of `{node}` must have one artifact"
        );
        assert!(
            matches!(ends[0], "NodeSucceeded" | "NodeCanceled"),
            "node run {id} of `{node}` ended {}: nothing in this flowchart fails",
            ends[0]
        );
    }
    let mut succeeded_per_node: HashMap<&str, usize> = HashMap::new();
    let mut runs_per_node: HashMap<&str, usize> = HashMap::new();
    for (id, node) in &scheduled {
        *runs_per_node.entry(node.as_str()).or_default() += 1;
        if terminal[id][0] == "NodeSucceeded" {
            *succeeded_per_node.entry(node.as_str()).or_default() += 1;
        }
    }
    let known: HashSet<&str> = nodes.iter().map(String::as_str).collect();
    for node in runs_per_node.keys() {
        assert!(known.contains(node), "node run of unknown node `{node}`");
    }
    for node in nodes {
        let succeeded = succeeded_per_node.get(node.as_str()).copied().unwrap_or(0);
        assert_eq!(
            succeeded, 1,
            "node `{node}` must have exactly one succeeded node run (lost or duplicated)"
        );
        let runs = runs_per_node.get(node.as_str()).copied().unwrap_or(0);
        assert_eq!(
            runs, 1,
            "node `{node}` of a chain is scheduled exactly once, was {runs} times"
        );
    }

    let state = RunState::replay(&events).expect("the stream replays");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.node_runs.len(), scheduled.len());
    Tally {
        events: events.len(),
        node_runs: scheduled.len(),
        ignored: ignored.len(),
    }
}

async fn read_run(ledger: &TestLedger, run: RunId) -> Vec<RecordedEvent> {
    ledger
        .store
        .read_stream(&StreamId::for_run(run), 1, usize::MAX)
        .await
        .unwrap()
}

/// How many times the engine is killed, and the seed of the kill timing
/// (`RUNLEDGER_CRASH_SEED` overrides it to replay another schedule).
const KILLS: usize = 12;
const DEFAULT_SEED: u64 = 0x5eed_c4a5_11ed_2024;

#[tokio::test]
async fn serve_survives_sigkill_mid_run() {
    let clock = Instant::now();
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let scratch = Scratch::new();
    let (yaml, nodes) = chain("crash-chain", 198);
    assert_eq!(nodes.len(), 200);
    let flow = scratch.path("crash-chain.yaml");
    std::fs::write(&flow, yaml).unwrap();

    let seed = std::env::var("RUNLEDGER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = Rng(seed);
    let mut serves = Serves::new(&schema, &scratch.0);
    serves.start();
    let run = RunId::new_v7();
    start_run(&schema, &flow, run);

    let mut kills = 0;
    let mut kills_mid_run = 0;
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.between(20, 300))).await;
        serves.kill_all();
        kills += 1;
        let version = head_version(&ledger, run).await;
        let running = !read_run(&ledger, run)
            .await
            .iter()
            .any(|e| e.event_type == "RunCompleted");
        if running {
            kills_mid_run += 1;
        }
        progress.push(version);
        serves.start();
    }
    wait_completed(&schema, run, Duration::from_secs(120), &serves).await;
    serves.kill_all();
    serves.assert_healthy();

    let recorded = read_run(&ledger, run).await;
    let tally = check_run(&recorded, &nodes);
    println!(
        "serve_survives_sigkill_mid_run: seed {seed:#x}, {kills} SIGKILLs ({kills_mid_run} before the run completed), \
         {} serve processes, stream version at each kill {progress:?}; {} events, {} node runs, {} ignored results; {:.1}s",
        serves.started,
        tally.events,
        tally.node_runs,
        tally.ignored,
        clock.elapsed().as_secs_f64()
    );
    drop(serves);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn two_engines_keep_one_run_linear() {
    let clock = Instant::now();
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let scratch = Scratch::new();
    let (yaml, nodes) = chain("race-chain", 48);
    assert_eq!(nodes.len(), 50);
    let flow = scratch.path("race-chain.yaml");
    std::fs::write(&flow, yaml).unwrap();

    let mut serves = Serves::new(&schema, &scratch.0);
    serves.start();
    serves.start();
    let run = RunId::new_v7();
    start_run(&schema, &flow, run);
    wait_completed(&schema, run, Duration::from_secs(60), &serves).await;
    // Give the losing engine a moment to record its late results, then stop both.
    tokio::time::sleep(Duration::from_millis(300)).await;
    serves.kill_all();
    serves.assert_healthy();

    let recorded = read_run(&ledger, run).await;
    let tally = check_run(&recorded, &nodes);
    println!(
        "two_engines_keep_one_run_linear: {} events, {} node runs, {} results recorded as ignored; {:.1}s",
        tally.events,
        tally.node_runs,
        tally.ignored,
        clock.elapsed().as_secs_f64()
    );
    drop(serves);
    ledger.drop_schema().await.unwrap();
}

/// How many times the engine's database connections are cut in
/// `serve_survives_database_connections_cut_mid_run`.
const CUTS: usize = 10;

/// A database failover or a flaky network cuts every connection of an engine, again and again,
/// while it drives a run. The engine must neither exit nor lose, repeat or stall work: the run
/// completes with every node run ended once, and the engine is still up at the end.
#[tokio::test]
async fn serve_survives_database_connections_cut_mid_run() {
    let clock = Instant::now();
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let scratch = Scratch::new();
    let (yaml, nodes) = chain("cut-chain", 98);
    let flow = scratch.path("cut-chain.yaml");
    std::fs::write(&flow, yaml).unwrap();

    // The engine's connections carry a name of their own, so the test cuts exactly those.
    let application = format!("cut-{}", std::process::id());
    let base = test_database_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut serves = Serves::new(&schema, &scratch.0);
    serves.database_url = format!("{base}{separator}application_name={application}");
    serves.start();
    let run = RunId::new_v7();
    start_run(&schema, &flow, run);

    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    let mut rng = Rng(DEFAULT_SEED);
    let mut cut_connections = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..CUTS {
        tokio::time::sleep(Duration::from_millis(rng.between(50, 150))).await;
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&application)
        .fetch_all(&admin)
        .await
        .unwrap();
        cut_connections.push(cut.len());
        progress.push(head_version(&ledger, run).await);
    }
    admin.close().await;
    let mid_run = recorded_until_completion(&read_run(&ledger, run).await, &progress);
    assert!(
        mid_run >= CUTS / 2,
        "only {mid_run} of {CUTS} cuts fell before the run completed: {progress:?}"
    );
    assert!(
        cut_connections.iter().any(|&n| n > 0),
        "no connection of the engine was found to cut: {cut_connections:?}"
    );
    wait_completed(&schema, run, Duration::from_secs(120), &serves).await;
    serves.kill_all();
    serves.assert_healthy();

    let recorded = read_run(&ledger, run).await;
    let tally = check_run(&recorded, &nodes);
    println!(
        "serve_survives_database_connections_cut_mid_run: {CUTS} cuts ({mid_run} before the run \
         completed), connections cut each time {cut_connections:?}, stream version at each cut \
         {progress:?}; {} events, {} node runs, {} ignored results; {:.1}s",
        tally.events,
        tally.node_runs,
        tally.ignored,
        clock.elapsed().as_secs_f64()
    );
    drop(serves);
    ledger.drop_schema().await.unwrap();
}

/// How many of the stream versions seen at each cut lie before the run's `RunCompleted`.
fn recorded_until_completion(recorded: &[RecordedEvent], progress: &[u64]) -> usize {
    let completed_at = recorded
        .iter()
        .find(|e| e.event_type == "RunCompleted")
        .map_or(u64::MAX, |e| e.stream_version);
    progress.iter().filter(|&&v| v < completed_at).count()
}

/// A retry's backoff timer lives in the ledger: an engine killed while the timer runs is
/// replaced by one that fires it, no earlier than recorded.
#[tokio::test]
async fn a_retry_timer_survives_a_restart() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let scratch = Scratch::new();
    let flow = scratch.path("timer.yaml");
    std::fs::write(
        &flow,
        "name: timer\nnodes:\n  - { id: start, type: start }\n  - id: t\n    type: task\n    model: scripted\n    retry: { max_attempts: 2, backoff_ms: 1500 }\n    scripted: [{ error: { code: flaky, message: once, retryable: true } }, { output: { ok: true } }]\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n",
    )
    .unwrap();
    let mut serves = Serves::new(&schema, &scratch.0);
    serves.start();
    let run = RunId::new_v7();
    start_run(&schema, &flow, run);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read_run(&ledger, run)
        .await
        .iter()
        .any(|e| e.event_type == "NodeRetryScheduled")
    {
        assert!(
            Instant::now() < deadline,
            "no retry was scheduled:\n{}",
            serves.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serves.kill_all();
    serves.start();
    wait_completed(&schema, run, Duration::from_secs(30), &serves).await;
    serves.kill_all();
    serves.assert_healthy();
    let recorded = read_run(&ledger, run).await;
    let decoded: Vec<DomainEvent> = recorded.iter().map(|e| e.decode().unwrap()).collect();
    let retry_at = decoded
        .iter()
        .find_map(|e| match e {
            DomainEvent::NodeRetryScheduled(r) => Some(r.retry_at),
            _ => None,
        })
        .unwrap();
    let second = recorded
        .iter()
        .zip(&decoded)
        .find(|(_, e)| matches!(e, DomainEvent::NodeScheduled(s) if s.node_id == "t" && s.attempt == 2))
        .map(|(r, _)| r.recorded_at)
        .expect("attempt 2 was scheduled");
    assert!(
        second >= retry_at,
        "attempt 2 at {second}, timer at {retry_at}"
    );
    assert_eq!(serves.started, 2);
    drop(serves);
    ledger.drop_schema().await.unwrap();
}

/// An agent node's engine killed between two tool calls: the restarted engine runs the node's
/// attempt again with the calls the ledger records, so the first call (a command appending a
/// line to a file outside the ledger) is not applied again, and each call is recorded once.
#[tokio::test]
async fn an_agent_tool_call_recorded_before_a_sigkill_is_not_applied_again() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let scratch = Scratch::new();
    let applied = scratch.path("applied.log");
    let append = |line: &str| {
        format!(
            "{{ tool: command_run, arguments: {{ argv: [sh, -c, \"echo {line} >> {}\"] }} }}",
            applied.display()
        )
    };
    // The second model turn takes 4 s: the engine is killed in it, after call 1 is recorded.
    let yaml = format!(
        "name: agent-crash
nodes:
  - {{ id: start, type: start }}
  - id: work
    type: task
    model: scripted
    prompt: Append two lines.
    tools: [command_run]
    scripted:
      - tool_calls: [{one}]
      - {{ delay_ms: 4000, tool_calls: [{two}] }}
      - output: {{ done: true }}
  - {{ id: end, type: end }}
connectors:
  - {{ id: c1, from: start, to: work }}
  - {{ id: c2, from: work, to: end }}
",
        one = append("one"),
        two = append("two"),
    );
    let flow = scratch.path("agent-crash.yaml");
    std::fs::write(&flow, yaml).unwrap();
    let mut serves = Serves::new(&schema, &scratch.0);
    serves.start();
    let run = RunId::new_v7();
    start_run(&schema, &flow, run);

    let first_call_recorded = |events: &[RecordedEvent]| {
        events.iter().any(|e| {
            e.event_type == "ToolCalled"
                && e.payload["idempotency_key"]
                    .as_str()
                    .is_some_and(|k| k.ends_with(":1:0"))
        })
    };
    let clock = Instant::now();
    while !first_call_recorded(&read_run(&ledger, run).await) {
        assert!(
            clock.elapsed() < Duration::from_secs(60),
            "call 1 never recorded\n{}",
            serves.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serves.kill_all();
    assert_eq!(std::fs::read_to_string(&applied).unwrap(), "one\n");
    let recorded = read_run(&ledger, run).await;
    assert!(
        !recorded
            .iter()
            .any(|e| e.event_type == "NodeSucceeded" && e.payload["node_id"] == "work"),
        "killed before the node ended"
    );

    serves.start();
    wait_completed(&schema, run, Duration::from_secs(120), &serves).await;
    serves.kill_all();
    serves.assert_healthy();
    assert_eq!(
        std::fs::read_to_string(&applied).unwrap(),
        "one\ntwo\n",
        "each call applied once"
    );
    let recorded = read_run(&ledger, run).await;
    let calls: Vec<String> = recorded
        .iter()
        .filter(|e| e.event_type == "ToolCalled" && e.payload["tool"] == "command_run")
        .map(|e| {
            let key = e.payload["idempotency_key"].as_str().unwrap();
            key.split_once(':').unwrap().1.to_owned()
        })
        .collect();
    assert_eq!(calls, ["1:0", "2:0"], "each call recorded once");
    drop(serves);
    ledger.drop_schema().await.unwrap();
}
