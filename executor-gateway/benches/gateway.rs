//! Gateway benchmark: the run-engine scenarios of `orchestrator/benches/engine.rs`, with every
//! `task` node run going out over NATS JetStream to separate executor processes, timed from
//! `engine.start` to the end of `engine.wait`.
//!
//! Scenarios (see docs/benchmarks.md):
//! - `linear-100`, `linear-1000`: start -> N chained task nodes -> end, one run.
//! - `fanout-100`: start -> 100 parallel task nodes -> one task node (`fan_in: all`) -> end.
//! - `concurrent-200x5`: 200 runs of start -> 3 chained task nodes -> end, all spawned at once
//!   (each task starts its run, then waits for it), timed until the last one ends.
//! - per-node cost: chains of 100, 1,000 and 10,000 task nodes, each run as many times as it
//!   takes to make 10,000 node runs.
//!
//! Production shape: the engine is built as `run --dispatch nats` / `serve` build it
//! (`NatsDispatcher` in front of an in-process pool for the node types that stay local,
//! `run_intake` feeding `engine.reports()`, `Settings { executor: "nats", remote: .. }`), and the
//! executors are `run_worker` in child processes of this binary (it re-executes itself with
//! `RUNLEDGER_BENCH_WORKER=<namespace>`), one per core, 16 node runs at once each (the
//! `runledger executor` default). Every scenario gets its own ledger schema and its own
//! JetStream namespace (both deleted afterwards), its own executor processes (stopped
//! afterwards, killed if anything fails) and one unmeasured warm-up.
//!
//! Baseline: each main scenario also runs in-process (the engine bench's `InProcessPool`)
//! right before its NATS pass, and the main scenarios run in several rounds, so that on a
//! shared machine NATS and in-process are compared under the same conditions.
//!
//! What is measured besides wall time, to split it into commit, NATS round trip and engine:
//! - the engine's store is the ledger behind a wrapper that logs when each append starts and
//!   how long it takes;
//! - the engine's executor is the `NatsDispatcher` behind a wrapper that notes when each node
//!   run is submitted, and every report (the dispatcher's `Dispatched`, intake's `Started` and
//!   `Finished`) passes through a tap that notes when it arrives before forwarding it to the
//!   engine (one extra channel hop per report);
//! - before each measured pass: 200 one-event appends (the commit floor of the moment) and 200
//!   sequential pings straight through the scenario's streams and executor processes (publish a
//!   dispatch, wait for the executor's `Finished` report on the results stream): the NATS
//!   round-trip floor of the moment, with no engine and no ledger;
//! - CPU time of this process, the executor processes, `nats-server`, every `postgres`
//!   process and the whole machine, from `/proc`.
//!
//! Run: `cargo bench -p runledger-executor-gateway --bench gateway`. `RUNLEDGER_BENCH_SCALE`
//! (default 1.0) scales node and run counts; `RUNLEDGER_BENCH_ROUNDS` (default 3) sets the
//! rounds of the main scenarios. Uses `RUNLEDGER_TEST_DATABASE_URL` (default: the
//! local `runledger_test` database) and `RUNLEDGER_NATS_URL` (default `nats://127.0.0.1:4222`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{NewEvent, Position, RecordedEvent};
use runledger_contracts::flowchart::{Flowchart, Node, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_contracts::time::Timestamp;
use runledger_executor_gateway::dispatcher::{NatsDispatcher, frontier_for_all};
use runledger_executor_gateway::intake::{IntakeSink, run_intake};
use runledger_executor_gateway::messages::{
    DispatchMessage, ReportMessage, WIRE_VERSION, dispatch_message_id, publish,
};
use runledger_executor_gateway::metrics::GatewayMetrics;
use runledger_executor_gateway::topology::Topology;
use runledger_executor_gateway::worker::{WorkerConfig, run_worker};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{
    AppendOutcome, AppendRequest, Blob, DatabaseConfig, EventStore, ExpectedVersion, GlobalPage,
    PgEventStore, StoreError, StreamAppend, StreamHead,
};
use runledger_orchestrator::decide::{RemoteDispatch, Settings, StartRun, add_ms};
use runledger_orchestrator::engine::{Engine, EngineConfig, NoFlowcharts};
use runledger_orchestrator::executor::{
    Delivery, InProcessPool, NodeExecutor, NodeWork, Providers, Report, ResultSender, remote_work,
};
use runledger_orchestrator::provider::ScriptedProvider;
use runledger_orchestrator::state::RunStatus;
use serde_json::json;
use tokio::sync::{mpsc, watch};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Set in the environment of the executor processes this binary starts: the namespace.
const WORKER_ENV: &str = "RUNLEDGER_BENCH_WORKER";
/// Set next to [`WORKER_ENV`]: the executor's number, for its executor id.
const WORKER_ID_ENV: &str = "RUNLEDGER_BENCH_WORKER_ID";
/// Node runs each executor process runs at once (the `runledger executor` default).
const EXECUTOR_CONCURRENCY: usize = 16;
const CLASS: &str = "frontier";
/// Long enough that no node run of the bench ever times out waiting for an executor.
const DISPATCH_TIMEOUT_MS: u64 = 120_000;
/// Node runs the per-node-cost scenario makes at each chain length.
const PER_NODE_WORK: f64 = 10_000.0;
/// One-event appends that measure the commit floor before each scenario.
const FLOOR_APPENDS: u64 = 200;
/// Round trips through NATS and an executor that measure the NATS floor, after a few unmeasured.
const PINGS: usize = 200;
const PING_WARMUP: usize = 20;

fn nats_url() -> String {
    std::env::var("RUNLEDGER_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

// ---- flowcharts ------------------------------------------------------------------------------

const TASK: &str = "    type: task\n    model: scripted\n    scripted: [{output: {ok: true}}]\n";

fn parse(text: &str) -> BenchResult<Arc<Flowchart>> {
    load(text, SourceFormat::Yaml)
        .map(Arc::new)
        .map_err(|errors| {
            let first = errors
                .first()
                .map(|e| format!("{}: {}", e.path, e.message))
                .unwrap_or_default();
            format!(
                "bench flowchart is invalid ({} errors; first: {first})",
                errors.len()
            )
            .into()
        })
}

/// start -> t1 -> ... -> tN -> end.
fn linear(n: usize) -> BenchResult<Arc<Flowchart>> {
    let mut text = format!("name: bench-linear-{n}\nnodes:\n  - id: start\n    type: start\n");
    for i in 1..=n {
        write!(text, "  - id: t{i}\n{TASK}")?;
    }
    text.push_str("  - id: end\n    type: end\nconnectors:\n");
    let mut from = "start".to_owned();
    for i in 1..=n {
        writeln!(text, "  - {{ id: c{i}, from: {from}, to: t{i} }}")?;
        from = format!("t{i}");
    }
    writeln!(text, "  - {{ id: c_end, from: {from}, to: end }}")?;
    parse(&text)
}

/// start -> p1..pN (parallel) -> join (`fan_in: all`, the default) -> end.
fn fanout(n: usize) -> BenchResult<Arc<Flowchart>> {
    let mut text = format!("name: bench-fanout-{n}\nnodes:\n  - id: start\n    type: start\n");
    for i in 1..=n {
        write!(text, "  - id: p{i}\n{TASK}")?;
    }
    write!(
        text,
        "  - id: join\n{TASK}  - id: end\n    type: end\nconnectors:\n"
    )?;
    for i in 1..=n {
        writeln!(text, "  - {{ id: out{i}, from: start, to: p{i} }}")?;
        writeln!(text, "  - {{ id: in{i}, from: p{i}, to: join }}")?;
    }
    text.push_str("  - { id: c_end, from: join, to: end }\n");
    parse(&text)
}

// ---- executor processes ----------------------------------------------------------------------

/// The child side: one `run_worker` on the namespace in `RUNLEDGER_BENCH_WORKER`, until stdin
/// closes (the parent stopped it, or died). Prints its stats on stdout.
fn executor_process(namespace: &str) -> BenchResult<()> {
    let id = std::env::var(WORKER_ID_ENV).unwrap_or_else(|_| "0".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let topology = Topology::in_namespace(namespace)?;
        let js = runledger_executor_gateway::connect(&nats_url()).await?;
        topology.ensure_streams(&js).await?;
        let (stop, stopped) = watch::channel(false);
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
            let _ = stop.send(true);
        });
        let config = WorkerConfig {
            executor_class: CLASS.into(),
            concurrency: EXECUTOR_CONCURRENCY,
            executor_id: format!("bench-executor-{id}"),
            exit_when_idle: None,
        };
        let providers = Arc::new(Providers::scripted(ScriptedProvider::new()));
        let stats = run_worker(js, topology, config, providers, stopped).await?;
        println!(
            "ran {}, expired {}, rejected {}",
            stats.ran, stats.expired, stats.rejected
        );
        BenchResult::Ok(())
    })
}

/// Executor processes of one scenario. Dropping them kills them (the error path); [`stop`]
/// drains them.
///
/// [`stop`]: Executors::stop
struct Executors {
    children: Vec<Child>,
}

impl Executors {
    fn spawn(namespace: &str, count: usize) -> BenchResult<Self> {
        let exe = std::env::current_exe()?;
        let mut executors = Executors {
            children: Vec::new(),
        };
        for i in 0..count {
            let child = Command::new(&exe)
                .env(WORKER_ENV, namespace)
                .env(WORKER_ID_ENV, (i + 1).to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            executors.children.push(child);
        }
        Ok(executors)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Closes their stdin (they drain and exit), waits up to 10 s each, returns what they printed.
    async fn stop(&mut self) -> BenchResult<Vec<String>> {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        let mut said = Vec::new();
        for mut child in std::mem::take(&mut self.children) {
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break child.wait()?;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                stdout.read_to_string(&mut out)?;
            }
            if !status.success() {
                return Err(format!("an executor process ended {status}: {}", out.trim()).into());
            }
            said.push(out.trim().to_owned());
        }
        Ok(said)
    }
}

impl Drop for Executors {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---- a ledger that logs its appends ----------------------------------------------------------

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    events: AtomicU64,
    append_ns: AtomicU64,
    reads: AtomicU64,
    /// Every append: its (first) stream, when it started and how long it took.
    log: Mutex<Vec<(StreamId, Instant, Duration)>>,
}

impl Counters {
    fn reset(&self) {
        for c in [&self.appends, &self.events, &self.append_ns, &self.reads] {
            c.store(0, Ordering::Relaxed);
        }
        if let Ok(mut log) = self.log.lock() {
            log.clear();
        }
    }

    fn record(&self, stream: &StreamId, start: Instant, events: usize) {
        let took = start.elapsed();
        self.append_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        if let Ok(mut log) = self.log.lock() {
            log.push((stream.clone(), start, took));
        }
    }
}

/// The PostgreSQL ledger, with every append logged and every read counted.
struct Metered {
    inner: PgEventStore,
    counters: Arc<Counters>,
}

impl EventStore for Metered {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let events = request.events.len();
        let start = Instant::now();
        let outcome = self.inner.append(stream, expected, request).await;
        self.counters.record(stream, start, events);
        outcome
    }

    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let events = items.iter().map(|i| i.request.events.len()).sum();
        // A run's step that also writes tool streams: book it to the run.
        let stream = items
            .iter()
            .find(|i| i.stream.as_str().starts_with("run-"))
            .or(items.first())
            .map(|i| i.stream.clone());
        let start = Instant::now();
        let outcome = self.inner.append_many(items).await;
        if let Some(stream) = stream {
            self.counters.record(&stream, start, events);
        }
        outcome
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<GlobalPage, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_all(after, limit).await
    }

    async fn stream_head(&self, stream: &StreamId) -> Result<Option<StreamHead>, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.stream_head(stream).await
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<StreamHead>, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.list_streams(prefix).await
    }

    async fn put_blob(&self, blob: Blob) -> Result<Digest, StoreError> {
        self.inner.put_blob(blob).await
    }

    async fn get_blob(&self, hash: &Digest) -> Result<Option<Blob>, StoreError> {
        self.inner.get_blob(hash).await
    }
}

// ---- a dispatcher that notes when work leaves and reports come back ---------------------------

/// When one remote node run was submitted and when each of its reports reached the engine.
#[derive(Default, Clone, Copy)]
struct Marks {
    run_id: Option<RunId>,
    submitted: Option<Instant>,
    dispatched: Option<Instant>,
    started: Option<Instant>,
    finished: Option<Instant>,
}

#[derive(Default)]
struct Trace {
    marks: Mutex<HashMap<NodeRunId, Marks>>,
    /// Each run of the measured pass: from just before `engine.start` to the return of `wait`.
    runs: Mutex<Vec<(RunId, Instant, Instant)>>,
}

impl Trace {
    fn mark(&self, node_run_id: NodeRunId, set: impl FnOnce(&mut Marks)) {
        if let Ok(mut marks) = self.marks.lock() {
            set(marks.entry(node_run_id).or_default());
        }
    }

    fn take(&self) -> (Vec<Marks>, Vec<(RunId, Instant, Instant)>) {
        let marks = self
            .marks
            .lock()
            .map(|mut m| m.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        let runs = self
            .runs
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        (marks, runs)
    }
}

/// The NATS dispatcher, with submissions noted and its reports sent through the tap.
struct Traced {
    inner: NatsDispatcher,
    trace: Arc<Trace>,
    tap: ResultSender,
}

impl NodeExecutor for Traced {
    fn submit(&self, work: NodeWork, _results: ResultSender) {
        if remote_work(work.node.node_type) {
            let now = Instant::now();
            let run_id = work.run_id;
            self.trace.mark(work.node_run_id, |m| {
                m.run_id = Some(run_id);
                m.submitted = Some(now);
            });
        }
        self.inner.submit(work, self.tap.clone());
    }
}

/// Notes each report's arrival, then hands it to the engine.
async fn tap(
    trace: Arc<Trace>,
    mut reports: mpsc::UnboundedReceiver<Delivery>,
    engine: ResultSender,
) {
    while let Some(delivery) = reports.recv().await {
        let now = Instant::now();
        trace.mark(delivery.report.node_run_id(), |m| match &delivery.report {
            Report::Dispatched { .. } => m.dispatched = Some(now),
            Report::Started { .. } => m.started = Some(now),
            Report::Finished(_) => m.finished = Some(now),
            Report::Ran { .. } => {
                m.started = Some(now);
                m.finished = Some(now);
            }
            // Agent tool calls: not a step of the node's dispatch timeline.
            Report::ToolCall(_) => {}
        });
        if engine.send(delivery).is_err() {
            return;
        }
    }
}

// ---- CPU accounting from /proc (Linux; absent elsewhere) -------------------------------------

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;
/// Fewer ticks than this make a CPU figure too coarse to print.
const MIN_TICKS: u64 = 20;

/// User + system CPU time of a process, in ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The machine's CPU ticks: (busy, total) summed over all cores.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let (idle, iowait) = (*v.get(3)?, *v.get(4)?);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle - iowait, total))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Whose CPU time a process's is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    /// This process: engine, dispatcher, intake, ledger client.
    Engine,
    Executors,
    Nats,
    /// Every `postgres` process (server and backends).
    Postgres,
}

/// CPU counters at one moment: the machine's and those of each process that counts.
struct CpuSnapshot {
    busy: u64,
    total: u64,
    processes: HashMap<String, (Who, u64)>,
}

/// Reads the counters to subtract later with [`CpuUse::between`].
fn cpu_now(executors: &[u32]) -> Option<CpuSnapshot> {
    let (busy, total) = machine_ticks()?;
    let me = std::process::id().to_string();
    let executors: Vec<String> = executors.iter().map(u32::to_string).collect();
    let mut processes = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().into_string() else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let who = if pid == me {
            Who::Engine
        } else if executors.contains(&pid) {
            Who::Executors
        } else {
            match std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .as_deref()
                .map(str::trim)
            {
                Some("nats-server") => Who::Nats,
                Some("postgres") => Who::Postgres,
                _ => continue,
            }
        };
        if let Some(ticks) = process_ticks(&pid) {
            processes.insert(pid, (who, ticks));
        }
    }
    Some(CpuSnapshot {
        busy,
        total,
        processes,
    })
}

/// CPU ticks spent over an interval.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    engine: u64,
    executors: u64,
    nats: u64,
    postgres: u64,
    /// All cores, busy (user, system, interrupts).
    busy: u64,
    /// All cores, everything including idle.
    total: u64,
}

impl CpuUse {
    /// Processes present at both moments count; one that came or went in between does not.
    fn between(before: &CpuSnapshot, after: &CpuSnapshot) -> CpuUse {
        let mut used = CpuUse {
            busy: after.busy.saturating_sub(before.busy),
            total: after.total.saturating_sub(before.total),
            ..CpuUse::default()
        };
        for (pid, (who, ticks)) in &after.processes {
            let Some((_, earlier)) = before.processes.get(pid) else {
                continue;
            };
            let spent = ticks.saturating_sub(*earlier);
            match who {
                Who::Engine => used.engine += spent,
                Who::Executors => used.executors += spent,
                Who::Nats => used.nats += spent,
                Who::Postgres => used.postgres += spent,
            }
        }
        used
    }

    /// Everything busy that is none of the four: the kernel, and any other work on the machine.
    fn rest(&self) -> u64 {
        self.busy
            .saturating_sub(self.engine + self.executors + self.nats + self.postgres)
    }
}

// ---- time on the critical path ---------------------------------------------------------------

type Span = (Instant, Instant);

/// Sorted, non-overlapping spans covering the same time as `spans`, cut to `[lo, hi]`.
fn merged(mut spans: Vec<Span>, lo: Instant, hi: Instant) -> Vec<Span> {
    spans.retain(|(a, b)| b > a && *b > lo && *a < hi);
    spans.sort_by_key(|s| s.0);
    let mut out: Vec<Span> = Vec::new();
    for (a, b) in spans {
        let (a, b) = (a.max(lo), b.min(hi));
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn covered(spans: &[Span]) -> Duration {
    spans.iter().map(|(a, b)| *b - *a).sum()
}

/// Time covered by both (both merged).
fn overlap(x: &[Span], y: &[Span]) -> Duration {
    let (mut i, mut j, mut total) = (0, 0, Duration::ZERO);
    while i < x.len() && j < y.len() {
        let (a, b) = (x[i].0.max(y[j].0), x[i].1.min(y[j].1));
        if b > a {
            total += b - a;
        }
        if x[i].1 < y[j].1 { i += 1 } else { j += 1 }
    }
    total
}

/// Splits each run's latency (from `engine.start` to the return of `wait`) into
/// - commit: time an append on the run's stream was in flight;
/// - NATS round trip: time one of the run's remote node runs was between its submit and the
///   arrival of its `Finished` report at the engine, while no append of the run was in flight;
/// - engine: the rest (returned implicitly: latency - commit - NATS).
///
/// Returns (latency, commit, NATS), each summed over the runs. For one run at a time this is
/// the critical path of the wall time; for concurrent runs it is where each run's own latency
/// went, which includes waiting for a turn on the CPU, a pool connection, or the driver.
fn split(
    log: &[(StreamId, Instant, Duration)],
    marks: &[Marks],
    runs: &[(RunId, Instant, Instant)],
) -> (Duration, Duration, Duration) {
    let mut commits: HashMap<StreamId, Vec<Span>> = HashMap::new();
    for (stream, at, took) in log {
        commits
            .entry(stream.clone())
            .or_default()
            .push((*at, *at + *took));
    }
    let mut trips: HashMap<RunId, Vec<Span>> = HashMap::new();
    for m in marks {
        if let (Some(run), Some(a), Some(b)) = (m.run_id, m.submitted, m.finished) {
            trips.entry(run).or_default().push((a, b));
        }
    }
    let (mut latency, mut commit, mut nats) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for (run_id, began, ended) in runs {
        let c = merged(
            commits
                .remove(&StreamId::for_run(*run_id))
                .unwrap_or_default(),
            *began,
            *ended,
        );
        let t = merged(trips.remove(run_id).unwrap_or_default(), *began, *ended);
        latency += *ended - *began;
        commit += covered(&c);
        nats += covered(&t).saturating_sub(overlap(&t, &c));
    }
    (latency, commit, nats)
}

// ---- the NATS floor --------------------------------------------------------------------------

struct Pings {
    /// Publish until the executor's result (`Finished` or `Ran`) is read back, per ping.
    round_trip: Vec<Duration>,
    /// Publish until the stream acked the dispatch.
    acked: Vec<Duration>,
}

/// Sequential round trips through the scenario's own streams and executor processes: publish
/// a dispatch of one scripted task node, read the executor's reports from the results stream
/// until its `Finished` arrives. Runs before intake exists (the results stream is a work queue:
/// one consumer at a time), and deletes its consumer afterwards.
async fn nats_pings(
    js: &jetstream::Context,
    topology: &Topology,
    node: &Arc<Node>,
) -> BenchResult<Pings> {
    let (_, results) = topology.ensure_streams(js).await?;
    let name = format!("{}_BENCH_PING", topology.results_stream());
    let consumer: consumer::PullConsumer = results
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let run_id = RunId::new_v7();
    let context = json!({
        "inputs": {},
        "upstream": { "t0": { "output": { "ok": true }, "node_run_id": NodeRunId::new_v7(), "status": "succeeded" } },
        "context": {},
        "run": { "id": run_id, "flowchart": "bench-ping", "version": null },
    });
    let mut pings = Pings {
        round_trip: Vec::new(),
        acked: Vec::new(),
    };
    for i in 0..PING_WARMUP + PINGS {
        let node_run_id = NodeRunId::new_v7();
        let work = NodeWork {
            run_id,
            node_run_id,
            attempt: 1,
            ordinal: 1,
            deadline: None,
            input_context: context.clone(),
            node: Arc::clone(node),
            workspace: None,
            git_policy: None,
            recorded_calls: Vec::new(),
            workspace_holder: None,
        };
        let message = DispatchMessage {
            wire_version: WIRE_VERSION,
            executor_class: CLASS.into(),
            not_after: Some(add_ms(Timestamp::now(), DISPATCH_TIMEOUT_MS)),
            work,
        };
        let start = Instant::now();
        let payload = serde_json::to_vec(&message)?;
        publish(
            js,
            topology.dispatch_subject(CLASS),
            &dispatch_message_id(run_id, node_run_id, 1),
            payload,
        )
        .await?;
        let acked = start.elapsed();
        let round_trip = loop {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
            let message = match next {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(format!("ping: reading reports failed: {e}").into()),
                Ok(None) | Err(_) => {
                    return Err("ping: no report from the executors within 10 s".into());
                }
            };
            let at = start.elapsed();
            let report: ReportMessage = serde_json::from_slice(&message.payload)?;
            message
                .ack()
                .await
                .map_err(|e| format!("ping: ack failed: {e}"))?;
            if let Report::Finished(result) | Report::Ran { result, .. } = report.report
                && result.node_run_id == node_run_id
            {
                break at;
            }
        };
        if i >= PING_WARMUP {
            pings.round_trip.push(round_trip);
            pings.acked.push(acked);
        }
    }
    drop(messages);
    results.delete_consumer(&name).await?;
    Ok(pings)
}

fn mean(v: &[Duration]) -> Duration {
    if v.is_empty() {
        Duration::ZERO
    } else {
        v.iter().sum::<Duration>() / v.len() as u32
    }
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

// ---- driving runs ----------------------------------------------------------------------------

fn start_of(flowchart: &Arc<Flowchart>) -> StartRun {
    StartRun {
        run_id: RunId::new_v7(),
        flowchart: Arc::clone(flowchart),
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "bench".into(),
    }
}

/// Starts a run, waits for it, and checks it completed with the expected node runs.
async fn one_run(
    engine: Engine<Metered>,
    flowchart: Arc<Flowchart>,
    node_runs: usize,
    trace: Arc<Trace>,
) -> BenchResult<()> {
    let began = Instant::now();
    let run_id = engine
        .start(
            start_of(&flowchart),
            RequestId::generate(),
            CorrelationId::generate(),
        )
        .await?;
    let summary = engine.wait(run_id).await?;
    if let Ok(mut runs) = trace.runs.lock() {
        runs.push((run_id, began, Instant::now()));
    }
    if summary.status != RunStatus::Completed || summary.node_runs != node_runs {
        return Err(format!(
            "run {run_id} ended {} with {} node runs (expected completed with {node_runs}); error: {:?}",
            summary.status.as_str(),
            summary.node_runs,
            summary.error
        )
        .into());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One run after another, each waited for before the next starts.
    Sequential,
    /// Every run spawned at once, then all joined.
    Concurrent,
}

async fn drive(
    engine: &Engine<Metered>,
    flowchart: &Arc<Flowchart>,
    runs: usize,
    node_runs: usize,
    mode: Mode,
    trace: &Arc<Trace>,
) -> BenchResult<()> {
    if mode == Mode::Sequential {
        for _ in 0..runs {
            one_run(
                engine.clone(),
                Arc::clone(flowchart),
                node_runs,
                Arc::clone(trace),
            )
            .await?;
        }
        return Ok(());
    }
    let tasks: Vec<_> = (0..runs)
        .map(|_| {
            let run = one_run(
                engine.clone(),
                Arc::clone(flowchart),
                node_runs,
                Arc::clone(trace),
            );
            tokio::spawn(run)
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Mean latency of one-event appends on a scratch stream: the commit floor right now.
async fn commit_floor(store: &PgEventStore) -> BenchResult<Duration> {
    let stream = StreamId::new("bench-floor")?;
    let start = Instant::now();
    for v in 0..FLOOR_APPENDS {
        let event = NewEvent {
            event_type: "BenchFloor".into(),
            schema_version: 1,
            payload: json!({ "i": v }),
            blob_refs: vec![],
        };
        let request = AppendRequest::new(
            RequestId::new(format!("floor-{v}"))?,
            CorrelationId::new("bench")?,
            vec![event],
        );
        let expected = if v == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(v)
        };
        store.append(&stream, expected, request).await?;
    }
    Ok(start.elapsed() / FLOOR_APPENDS as u32)
}

#[derive(Clone)]
struct Scenario {
    name: String,
    flowchart: Arc<Flowchart>,
    runs: usize,
    /// Per run, start and end included.
    node_runs: usize,
    mode: Mode,
}

/// Where task node runs go.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// NATS JetStream to executor processes (what this bench is about).
    Nats,
    /// The engine's in-process pool, as `orchestrator/benches/engine.rs` measures it: the
    /// baseline under the same machine conditions.
    InProcess,
}

struct Measured {
    name: String,
    via: Via,
    /// Which pass of a scenario measured several times (0: measured once).
    round: usize,
    runs: usize,
    node_runs: usize,
    wall: Duration,
    appends: u64,
    events: u64,
    append_time: Duration,
    reads: u64,
    /// Runs' own latencies (start to end of `wait`), summed over the runs, and how much of them
    /// was commit and NATS round trip (see [`split`]).
    latency: Duration,
    commit: Duration,
    nats: Duration,
    /// Node runs that went over NATS, and their mean times from submit to each report.
    remote: usize,
    to_dispatched: Duration,
    to_started: Duration,
    to_finished: Duration,
    floor: Duration,
    pings: Option<Pings>,
    cpu: Option<CpuUse>,
    executors: Vec<String>,
}

impl Measured {
    fn label(&self) -> String {
        let via = match self.via {
            Via::Nats => "",
            Via::InProcess => " in-process",
        };
        let round = if self.round > 0 {
            format!(" #{}", self.round)
        } else {
            String::new()
        };
        format!("{}{via}{round}", self.name)
    }
    fn ms_per_node_run(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3 / self.node_runs as f64
    }
    fn node_runs_per_s(&self) -> f64 {
        self.node_runs as f64 / self.wall.as_secs_f64()
    }
    fn per_node(&self, x: f64) -> f64 {
        x / self.node_runs as f64
    }
    fn share(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.latency.as_secs_f64()
    }
    fn engine(&self) -> Duration {
        self.latency.saturating_sub(self.commit + self.nats)
    }
}

/// One scenario on a fresh schema (and, over NATS, a fresh namespace and executor processes).
/// The schema and the streams are deleted and the executors stopped whatever happened.
async fn measure(s: &Scenario, via: Via, executors: usize) -> BenchResult<Measured> {
    let ledger = TestLedger::new().await?;
    let outcome = match via {
        Via::InProcess => measure_in(&ledger, None, s, executors).await,
        Via::Nats => {
            let namespace = format!("bench_{}", RunId::new_v7().to_string().replace('-', ""));
            let topology = Topology::in_namespace(&namespace)?;
            let js = runledger_executor_gateway::connect(&nats_url()).await?;
            let outcome = measure_in(&ledger, Some((&js, &topology)), s, executors).await;
            let deleted = topology.delete_streams(&js).await;
            match (outcome, deleted) {
                (Ok(m), Ok(())) => Ok(m),
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e.into()),
            }
        }
    };
    let dropped = ledger.drop_schema().await;
    let measured = outcome?;
    dropped?;
    Ok(measured)
}

/// The NATS side of a scenario: executor processes, result intake, the tap.
struct NatsSide {
    executors: Executors,
    pings: Pings,
    stop: watch::Sender<bool>,
    intake: tokio::task::JoinHandle<Result<(), runledger_executor_gateway::GatewayError>>,
}

async fn measure_in(
    ledger: &TestLedger,
    nats: Option<(&jetstream::Context, &Topology)>,
    s: &Scenario,
    count: usize,
) -> BenchResult<Measured> {
    let counters = Arc::new(Counters::default());
    let config = DatabaseConfig {
        max_connections: 8,
        ..ledger.config.clone()
    };
    let store = Metered {
        inner: PgEventStore::connect(&config).await?,
        counters: Arc::clone(&counters),
    };
    let trace = Arc::new(Trace::default());
    let pool = InProcessPool::new(
        Providers::scripted(ScriptedProvider::new()),
        InProcessPool::DEFAULT_CONCURRENCY,
    );
    let (engine, mut side) = match nats {
        None => {
            let engine = Engine::new(
                store,
                Arc::new(pool),
                Arc::new(NoFlowcharts),
                EngineConfig::default(),
            );
            (engine, None)
        }
        Some((js, topology)) => {
            topology.ensure_streams(js).await?;
            topology.executor_consumer_of(js, CLASS).await?;
            let executors = Executors::spawn(&topology.namespace, count)?;
            let node = s
                .flowchart
                .nodes()
                .iter()
                .find(|n| remote_work(n.node_type))
                .cloned()
                .ok_or("no task node")?;
            let pings = nats_pings(js, topology, &Arc::new(node)).await?;
            topology.ensure_all(js).await?;
            let (tap_tx, tap_rx) = mpsc::unbounded_channel();
            let dispatcher = NatsDispatcher::new(
                js.clone(),
                topology.clone(),
                frontier_for_all(),
                Duration::from_millis(DISPATCH_TIMEOUT_MS),
                Arc::new(pool),
            );
            let traced = Traced {
                inner: dispatcher,
                trace: Arc::clone(&trace),
                tap: tap_tx.clone(),
            };
            let config = EngineConfig {
                settings: Settings {
                    executor: "nats".into(),
                    remote: Some(RemoteDispatch {
                        dispatch_timeout_ms: DISPATCH_TIMEOUT_MS,
                    }),
                },
                ..EngineConfig::default()
            };
            let engine = Engine::new(store, Arc::new(traced), Arc::new(NoFlowcharts), config);
            tokio::spawn(tap(Arc::clone(&trace), tap_rx, engine.reports()));
            let (stop, stopped) = watch::channel(false);
            // Reports go through the tap (for the trace), then to the engine.
            let sink = IntakeSink {
                reports: tap_tx,
                ..IntakeSink::for_engine(&engine, GatewayMetrics::new())
            };
            let intake = tokio::spawn(run_intake(js.clone(), topology.clone(), sink, stopped));
            (
                engine,
                Some(NatsSide {
                    executors,
                    pings,
                    stop,
                    intake,
                }),
            )
        }
    };

    let outcome = async {
        let warm_runs = if s.mode == Mode::Concurrent {
            s.runs
        } else {
            1
        };
        drive(
            &engine,
            &s.flowchart,
            warm_runs,
            s.node_runs,
            s.mode,
            &trace,
        )
        .await?;
        let floor = commit_floor(&ledger.store).await?;
        counters.reset();
        trace.take();
        let pids = side
            .as_ref()
            .map(|n| n.executors.pids())
            .unwrap_or_default();
        let before = cpu_now(&pids);
        let start = Instant::now();
        drive(&engine, &s.flowchart, s.runs, s.node_runs, s.mode, &trace).await?;
        let end = Instant::now();
        let after = cpu_now(&pids);
        let cpu = before
            .zip(after)
            .map(|(before, after)| CpuUse::between(&before, &after));
        BenchResult::Ok((floor, start, end, cpu))
    }
    .await;
    let (mut said, mut pings) = (Ok(Vec::new()), None);
    if let Some(side) = side.as_mut() {
        let _ = side.stop.send(true);
        let _ = (&mut side.intake).await;
        said = side.executors.stop().await;
    }
    if let Some(side) = side {
        pings = Some(side.pings);
    }
    let (floor, start, end, cpu) = outcome?;
    let said = said?;

    let log = counters.log.lock().map(|l| l.clone()).unwrap_or_default();
    let (marks, runs) = trace.take();
    let (latency, commit, nats_time) = split(&log, &marks, &runs);
    let since_submit = |pick: fn(&Marks) -> Option<Instant>| {
        let v: Vec<Duration> = marks
            .iter()
            .filter_map(|m| Some(pick(m)? - m.submitted?))
            .collect();
        mean(&v)
    };
    Ok(Measured {
        name: s.name.clone(),
        via: if nats.is_some() {
            Via::Nats
        } else {
            Via::InProcess
        },
        round: 0,
        runs: s.runs,
        node_runs: s.runs * s.node_runs,
        wall: end - start,
        appends: counters.appends.load(Ordering::Relaxed),
        events: counters.events.load(Ordering::Relaxed),
        append_time: Duration::from_nanos(counters.append_ns.load(Ordering::Relaxed)),
        reads: counters.reads.load(Ordering::Relaxed),
        latency,
        commit,
        nats: nats_time,
        remote: marks
            .iter()
            .filter(|m| m.submitted.is_some() && m.finished.is_some())
            .count(),
        to_dispatched: since_submit(|m| m.dispatched),
        to_started: since_submit(|m| m.started),
        to_finished: since_submit(|m| m.finished),
        floor,
        pings,
        cpu,
        executors: said,
    })
}

// ---- output ----------------------------------------------------------------------------------

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn result_header() {
    println!(
        "| scenario                    |  runs | node runs |    wall ms | ms / node run | node runs / s |"
    );
    println!(
        "|-----------------------------|------:|----------:|-----------:|--------------:|--------------:|"
    );
}

fn result_row(m: &Measured) {
    println!(
        "| {:<27} | {:>5} | {:>9} | {:>10.1} | {:>13.3} | {:>13.0} |",
        m.label(),
        m.runs,
        m.node_runs,
        m.wall.as_secs_f64() * 1e3,
        m.ms_per_node_run(),
        m.node_runs_per_s()
    );
}

fn versus_header() {
    println!(
        "| scenario                    | node runs | NATS ms / node run | NATS node runs / s | in-process ms / node run | in-process node runs / s | NATS / in-process time |"
    );
    println!(
        "|-----------------------------|----------:|-------------------:|-------------------:|-------------------------:|-------------------------:|-----------------------:|"
    );
}

fn versus_row(nats: &Measured, local: &Measured) {
    println!(
        "| {:<27} | {:>9} | {:>18.3} | {:>18.0} | {:>24.3} | {:>24.0} | {:>21.2}x |",
        nats.name,
        nats.node_runs,
        nats.ms_per_node_run(),
        nats.node_runs_per_s(),
        local.ms_per_node_run(),
        local.node_runs_per_s(),
        nats.ms_per_node_run() / local.ms_per_node_run()
    );
}

fn split_header() {
    println!(
        "| scenario                    | commit           | NATS round trip  | engine           | appends / node run | events / append | append mean µs | commit floor µs |"
    );
    println!(
        "|-----------------------------|-----------------:|-----------------:|-----------------:|-------------------:|----------------:|---------------:|----------------:|"
    );
}

fn split_row(m: &Measured) {
    let part = |d: Duration| format!("{:.0}% ({:.0} µs)", m.share(d) * 100.0, m.per_node(us(d)));
    println!(
        "| {:<27} | {:>16} | {:>16} | {:>16} | {:>18.2} | {:>15.2} | {:>14.0} | {:>15.0} |",
        m.label(),
        part(m.commit),
        part(m.nats),
        part(m.engine()),
        m.per_node(m.appends as f64),
        m.events as f64 / m.appends.max(1) as f64,
        us(m.append_time) / m.appends.max(1) as f64,
        us(m.floor),
    );
}

fn nats_header() {
    println!(
        "| scenario                    | remote node runs | submit -> Dispatched µs | submit -> Started µs | submit -> Finished µs | ping p50 µs | ping p99 µs | ping publish ack p50 µs |"
    );
    println!(
        "|-----------------------------|-----------------:|------------------------:|---------------------:|----------------------:|------------:|------------:|------------------------:|"
    );
}

fn nats_row(m: &Measured) {
    let Some(pings) = &m.pings else { return };
    println!(
        "| {:<27} | {:>16} | {:>23.0} | {:>20.0} | {:>21.0} | {:>11.0} | {:>11.0} | {:>23.0} |",
        m.label(),
        m.remote,
        us(m.to_dispatched),
        us(m.to_started),
        us(m.to_finished),
        us(percentile(&pings.round_trip, 0.5)),
        us(percentile(&pings.round_trip, 0.99)),
        us(percentile(&pings.acked, 0.5)),
    );
}

fn cpu_header() {
    println!(
        "| scenario                    | engine process | executors | nats-server | postgres | rest | sum of the four | ceiling on idle cores, node runs / s | machine busy | reads / node run |"
    );
    println!(
        "|-----------------------------|---------------:|----------:|------------:|---------:|-----:|----------------:|-------------------------------------:|-------------:|-----------------:|"
    );
}

fn cpu_row(m: &Measured, cores: usize) {
    let per_node_us = |ticks: u64| m.per_node(ticks as f64 / TICKS_PER_S * 1e6);
    let per = |ticks: u64| format!("{:.0}", per_node_us(ticks));
    let dash = || "–".to_owned();
    let cells = match m.cpu {
        Some(c) if c.total >= MIN_TICKS * 2 && c.busy >= MIN_TICKS => {
            let ours = c.engine + c.executors + c.nats + c.postgres;
            [
                per(c.engine),
                per(c.executors),
                per(c.nats),
                per(c.postgres),
                per(c.rest()),
                per(ours),
                format!("{:.0}", cores as f64 * 1e6 / per_node_us(ours).max(1.0)),
                format!("{:.0}%", c.busy as f64 * 100.0 / c.total.max(1) as f64),
            ]
        }
        _ => [
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
        ],
    };
    println!(
        "| {:<27} | {:>14} | {:>9} | {:>11} | {:>8} | {:>4} | {:>15} | {:>36} | {:>12} | {:>16.3} |",
        m.label(),
        cells[0],
        cells[1],
        cells[2],
        cells[3],
        cells[4],
        cells[5],
        cells[6],
        cells[7],
        m.per_node(m.reads as f64)
    );
}

fn main() -> BenchResult<()> {
    if let Ok(namespace) = std::env::var(WORKER_ENV) {
        return executor_process(&namespace);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> BenchResult<()> {
    let scale: f64 = std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |base: f64| ((base * scale).round() as usize).max(1);
    let (short, long, width, runs, chain) = (n(100.0), n(1000.0), n(100.0), n(200.0), 3);
    let rounds: usize = std::env::var("RUNLEDGER_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let cores = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(2);
    let scenario = |name: String, flowchart, runs, node_runs, mode| Scenario {
        name,
        flowchart,
        runs,
        node_runs,
        mode,
    };

    println!(
        "Gateway benchmark (RUNLEDGER_BENCH_SCALE={scale}): task node runs over NATS to {cores} executor processes \
         ({EXECUTOR_CONCURRENCY} node runs at once each), each main scenario also in-process right before, as a \
         baseline under the same conditions, in {rounds} rounds; node runs include start and end."
    );
    println!("Load average at start: {}", load_average());
    let began = Instant::now();

    let main_scenarios = [
        scenario(
            format!("linear-{short}"),
            linear(short)?,
            1,
            short + 2,
            Mode::Sequential,
        ),
        scenario(
            format!("linear-{long}"),
            linear(long)?,
            1,
            long + 2,
            Mode::Sequential,
        ),
        scenario(
            format!("fanout-{width}"),
            fanout(width)?,
            1,
            width + 3,
            Mode::Sequential,
        ),
        scenario(
            format!("concurrent-{runs}x{}", chain + 2),
            linear(chain)?,
            runs,
            chain + 2,
            Mode::Concurrent,
        ),
    ];
    let mut main_results = Vec::new();
    let mut baselines = Vec::new();
    for round in 1..=rounds {
        for s in &main_scenarios {
            let mut local = measure(s, Via::InProcess, cores).await?;
            let mut nats = measure(s, Via::Nats, cores).await?;
            (local.round, nats.round) = (round, round);
            baselines.push(local);
            main_results.push(nats);
        }
    }
    println!("Load average after the main scenarios: {}", load_average());

    let mut per_node = Vec::new();
    for base in [100.0, 1000.0, 10_000.0] {
        let len = n(base);
        let repeats = (n(PER_NODE_WORK) / len).max(1);
        let s = scenario(
            format!("chain-{len} x{repeats}"),
            linear(len)?,
            repeats,
            len + 2,
            Mode::Sequential,
        );
        per_node.push(measure(&s, Via::Nats, cores).await?);
    }

    println!(
        "Load average at end: {} ({:.0} s in all)",
        load_average(),
        began.elapsed().as_secs_f64()
    );
    println!();
    println!("Results (each row one measured pass after one warm-up; #n: round n):");
    println!();
    result_header();
    main_results.iter().chain(&baselines).for_each(result_row);
    println!();
    versus_header();
    main_results
        .iter()
        .zip(&baselines)
        .for_each(|(nats, local)| versus_row(nats, local));
    println!();
    println!(
        "Per-node cost over NATS: each chain length run sequentially until it makes ~{} node runs.",
        n(PER_NODE_WORK)
    );
    println!();
    result_header();
    per_node.iter().for_each(result_row);
    let all: Vec<&Measured> = main_results
        .iter()
        .chain(&per_node)
        .chain(&baselines)
        .collect();

    println!();
    println!(
        "Where each run's latency goes (share, and µs per node run), per run from start to the end of"
    );
    println!(
        "wait. commit: an append on the run's stream in flight; NATS round trip: one of its remote node"
    );
    println!(
        "runs between submit and the arrival of its Finished report, no append in flight; engine: the"
    );
    println!(
        "rest. One run at a time, this is the wall time's critical path; for concurrent runs it includes"
    );
    println!(
        "waiting for a CPU, a pool connection or the driver (the CPU table says what saturates)."
    );
    println!();
    split_header();
    all.iter().for_each(|m| split_row(m));
    println!();
    println!(
        "NATS: mean time from the engine's submit to the arrival of each report at the engine (remote node"
    );
    println!(
        "runs of the measured pass); ping: {PINGS} sequential dispatch -> executor -> Finished round trips"
    );
    println!(
        "through the same streams and executors with no engine and no ledger, just before the scenario."
    );
    println!();
    nats_header();
    all.iter().for_each(|m| nats_row(m));
    println!();
    println!(
        "CPU over the measured pass, µs per node run (/proc, 10 ms ticks; – where too short to read)."
    );
    println!(
        "postgres: every postgres process; rest: busy time of all cores minus the four (the kernel, and"
    );
    println!(
        "anything else running on the machine). Ceiling: {cores} cores divided by the sum of the four, the"
    );
    println!("throughput if the machine ran nothing else and everything scaled.");
    println!();
    cpu_header();
    all.iter().for_each(|m| cpu_row(m, cores));
    println!();
    for m in main_results.iter().chain(&per_node) {
        println!("{}: executors {}", m.label(), m.executors.join("; "));
    }

    let (first, last) = (&per_node[0], &per_node[per_node.len() - 1]);
    let of =
        |name: &str| -> Vec<&Measured> { main_results.iter().filter(|m| m.name == name).collect() };
    let linear_long = of(&main_scenarios[1].name);
    let conc = of(&main_scenarios[3].name);
    let listed = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!();
    println!("Targets:");
    let ms: Vec<f64> = linear_long.iter().map(|m| m.ms_per_node_run()).collect();
    let met = ms.iter().filter(|&&x| x <= 1.5).count();
    println!(
        "  {}: {} ms per node run (target <= 1.5): met in {met} of {} passes",
        main_scenarios[1].name,
        listed(&ms, 3),
        ms.len()
    );
    let rates: Vec<f64> = conc.iter().map(|m| m.node_runs_per_s()).collect();
    let met = rates.iter().filter(|&&x| x >= 2500.0).count();
    println!(
        "  {}: {} node runs/s (target >= 2500): met in {met} of {} passes",
        main_scenarios[3].name,
        listed(&rates, 0),
        rates.len()
    );
    println!(
        "  per-node cost {} vs {}: {:.2}x ({:.3} vs {:.3} ms; no target here, within 20% in the engine issue)",
        last.name,
        first.name,
        last.ms_per_node_run() / first.ms_per_node_run(),
        last.ms_per_node_run(),
        first.ms_per_node_run()
    );
    Ok(())
}
