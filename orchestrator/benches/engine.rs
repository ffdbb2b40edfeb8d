//! Run-engine benchmark: whole runs of no-op scripted task nodes through the engine, the
//! in-process executor and the PostgreSQL ledger, timed from `start` to the end of `wait`.
//!
//! Scenarios (see docs/benchmarks.md):
//! - `linear-100`, `linear-1000`: start -> N chained task nodes -> end, one run.
//! - `fanout-100`: start -> 100 parallel task nodes -> one task node (`fan_in: all`) -> end.
//! - `concurrent-200x5`: 200 runs of start -> 3 chained task nodes -> end, all spawned at once
//!   (each task starts its run, then waits for it), timed until the last one ends.
//! - `per-node cost`: chains of 100, 1,000 and 10,000 task nodes, each length run as many times
//!   as it takes to make 10,000 node runs, so every length is measured over the same work. A
//!   length the engine cannot start is reported, and a 5,000-node chain is measured instead.
//! - `decider only`: the same chains driven in memory (executor call, decide, event encoding,
//!   canonical JSON and hashing as the ledger does them) without the database or the engine's
//!   tasks, to split CPU time from commit time.
//!
//! Each ledger scenario has its own engine and its own ledger schema (dropped afterwards) and
//! one unmeasured warm-up of the same shape. The engine's store is the PostgreSQL ledger behind
//! a thin wrapper that counts and times every call. Before each measurement, 200 one-event
//! appends on a scratch stream give the commit floor of the moment: what one durable append
//! costs on this server right then.
//!
//! Run: `cargo bench -p runledger-orchestrator --bench engine`. `RUNLEDGER_BENCH_SCALE`
//! (default 1.0) scales node and run counts. Uses `RUNLEDGER_TEST_DATABASE_URL` (default: the
//! local `runledger_test` database). `RUNLEDGER_BENCH_BACKEND=sqlite` measures linear-1000 and
//! concurrent-200x5 on a SQLite file instead, beside a bare SQLite insert+commit floor
//! (`engine/sqlite.rs`). `RUNLEDGER_BENCH_ONLY=main` runs the four main scenarios only;
//! `linear` or `concurrent` runs linear-1000 or concurrent-200x5 alone (e.g. under callgrind).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{NewEvent, Position, RecordedEvent};
use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{
    AppendOutcome, AppendRequest, Blob, DatabaseConfig, EventStore, ExpectedVersion, GlobalPage,
    PgEventStore, StoreError, StreamHead,
};
use runledger_orchestrator::decide::{self, Cause, Command, Settings, StartRun, SystemEnv};
use runledger_orchestrator::engine::{Engine, EngineConfig, EngineError, NoFlowcharts};
use runledger_orchestrator::executor::{InProcessPool, Providers, run_node};
use runledger_orchestrator::provider::ScriptedProvider;
use runledger_orchestrator::state::RunStatus;
use serde_json::json;

#[path = "engine/sqlite.rs"]
mod sqlite;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Node runs the per-node-cost scenario makes at each chain length.
const PER_NODE_WORK: f64 = 10_000.0;
/// Chain length measured instead when a per-node-cost length cannot be started.
const FALLBACK_CHAIN: f64 = 5_000.0;
/// One-event appends that measure the commit floor before each scenario.
const FLOOR_APPENDS: u64 = 200;

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

// ---- a ledger that counts --------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    /// Group commits (transactions shared by several appends).
    commits: AtomicU64,
    events: AtomicU64,
    append_ns: AtomicU64,
    reads: AtomicU64,
    /// Every append of the measured runs: events in it and how long it took.
    log: Mutex<Vec<(usize, Duration)>>,
}

impl Counters {
    fn reset(&self) {
        for c in [
            &self.appends,
            &self.commits,
            &self.events,
            &self.append_ns,
            &self.reads,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        if let Ok(mut log) = self.log.lock() {
            log.clear();
        }
    }
}

/// The PostgreSQL ledger, with every append counted and timed and every read counted.
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
        let took = start.elapsed();
        let c = &self.counters;
        c.append_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        c.appends.fetch_add(1, Ordering::Relaxed);
        c.events.fetch_add(events as u64, Ordering::Relaxed);
        if let Ok(mut log) = c.log.lock() {
            log.push((events, took));
        }
        outcome
    }

    async fn append_many(
        &self,
        items: Vec<runledger_ledger::StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let events: usize = items.iter().map(|i| i.request.events.len()).sum();
        let start = Instant::now();
        let outcome = self.inner.append_many(items).await;
        let took = start.elapsed();
        let c = &self.counters;
        c.append_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        c.appends.fetch_add(1, Ordering::Relaxed);
        c.events.fetch_add(events as u64, Ordering::Relaxed);
        if let Ok(mut log) = c.log.lock() {
            log.push((events, took));
        }
        outcome
    }

    /// One group commit: its items count as appends, its time once.
    async fn append_batch(
        &self,
        items: Vec<runledger_ledger::StreamAppend>,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        let events: usize = items.iter().map(|i| i.request.events.len()).sum();
        let n = items.len() as u64;
        let start = Instant::now();
        let outcome = self.inner.append_batch(items).await;
        let took = start.elapsed();
        let c = &self.counters;
        c.append_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        c.appends.fetch_add(n, Ordering::Relaxed);
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.events.fetch_add(events as u64, Ordering::Relaxed);
        if let Ok(mut log) = c.log.lock() {
            log.push((events, took));
        }
        outcome
    }

    async fn find_request(
        &self,
        stream: &StreamId,
        request_id: &RequestId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.find_request(stream, request_id).await
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

// ---- CPU accounting from /proc (Linux; absent elsewhere) -------------------------------------

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// This process's user + system CPU time, in ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The machine's CPU ticks: (busy, iowait, total) summed over all cores.
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let (idle, iowait) = (*v.get(3)?, *v.get(4)?);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle - iowait, iowait, total))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Fewer ticks than this make a CPU figure too coarse to print.
const MIN_TICKS: u64 = 20;

/// CPU ticks spent over an interval.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    /// This process (engine, executor, ledger client).
    process: u64,
    /// All cores, busy (user, system, interrupts).
    busy: u64,
    iowait: u64,
    /// All cores, everything including idle.
    total: u64,
}

/// CPU ticks so far, to be subtracted with [`CpuUse::since`].
fn cpu_now() -> Option<CpuUse> {
    let (busy, iowait, total) = machine_ticks()?;
    Some(CpuUse {
        process: process_ticks()?,
        busy,
        iowait,
        total,
    })
}

impl CpuUse {
    fn since(self, before: CpuUse) -> CpuUse {
        CpuUse {
            process: self.process.saturating_sub(before.process),
            busy: self.busy.saturating_sub(before.busy),
            iowait: self.iowait.saturating_sub(before.iowait),
            total: self.total.saturating_sub(before.total),
        }
    }
}

// ---- driving runs through the engine ---------------------------------------------------------

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
async fn one_run<S: EventStore + 'static>(
    engine: Engine<S>,
    flowchart: Arc<Flowchart>,
    node_runs: usize,
) -> BenchResult<()> {
    let run_id = engine
        .start(
            start_of(&flowchart),
            RequestId::generate(),
            CorrelationId::generate(),
        )
        .await?;
    let summary = engine.wait(run_id).await?;
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

async fn drive<S: EventStore + 'static>(
    engine: &Engine<S>,
    flowchart: &Arc<Flowchart>,
    runs: usize,
    node_runs: usize,
    mode: Mode,
) -> BenchResult<()> {
    if mode == Mode::Sequential {
        for _ in 0..runs {
            one_run(engine.clone(), Arc::clone(flowchart), node_runs).await?;
        }
        return Ok(());
    }
    let tasks: Vec<_> = (0..runs)
        .map(|_| tokio::spawn(one_run(engine.clone(), Arc::clone(flowchart), node_runs)))
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Mean latency of one-event appends on a scratch stream: the commit floor right now.
async fn commit_floor(store: &impl EventStore, tag: &str) -> BenchResult<Duration> {
    let stream = StreamId::new(format!("bench-floor-{tag}"))?;
    let start = Instant::now();
    for v in 0..FLOOR_APPENDS {
        let event = NewEvent {
            event_type: "BenchFloor".into(),
            schema_version: 1,
            payload: json!({ "i": v }),
            blob_refs: vec![],
        };
        let request = AppendRequest::new(
            RequestId::new(format!("floor-{tag}-{v}"))?,
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

struct Measured {
    name: String,
    runs: usize,
    node_runs: usize,
    wall: Duration,
    appends: u64,
    commits: u64,
    events: u64,
    append_time: Duration,
    reads: u64,
    floor: Duration,
    log: Vec<(usize, Duration)>,
    /// CPU over the measured runs; `None` where /proc is not there.
    cpu: Option<CpuUse>,
}

impl Measured {
    fn ms_per_node_run(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3 / self.node_runs as f64
    }
    fn node_runs_per_s(&self) -> f64 {
        self.node_runs as f64 / self.wall.as_secs_f64()
    }
    fn per_node(&self, x: f64) -> f64 {
        x / self.node_runs as f64
    }
    fn append_mean_us(&self) -> f64 {
        self.append_time.as_secs_f64() * 1e6 / self.appends.max(1) as f64
    }
    /// Summed append latency over wall time: the share of a sequential run spent appending
    /// (above 100% when appends overlap).
    fn append_share(&self) -> f64 {
        self.append_time.as_secs_f64() / self.wall.as_secs_f64()
    }
}

struct Scenario {
    name: String,
    flowchart: Arc<Flowchart>,
    runs: usize,
    /// Per run, start and end included.
    node_runs: usize,
    mode: Mode,
    /// Connections of the engine's pool (8, the default, unless a what-if says otherwise).
    connections: u32,
    /// Group commit across runs (the default); `false` is the engine before it, one
    /// transaction per step, measured in the same run as the baseline.
    group_commit: bool,
}

/// One scenario on a fresh schema and engine: a warm-up of the same shape, the commit floor,
/// then the measured runs. The schema is dropped whatever happened.
async fn measure(s: Scenario) -> BenchResult<Measured> {
    let ledger = TestLedger::new().await?;
    let outcome = measure_in(&ledger, s).await;
    ledger.drop_schema().await?;
    outcome
}

async fn measure_in(ledger: &TestLedger, s: Scenario) -> BenchResult<Measured> {
    let counters = Arc::new(Counters::default());
    let config = DatabaseConfig {
        max_connections: s.connections,
        ..ledger.config.clone()
    };
    let store = Metered {
        inner: PgEventStore::connect(&config).await?,
        counters: Arc::clone(&counters),
    };
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 256);
    let mut config = EngineConfig::default();
    config.group_commit.enabled = s.group_commit;
    let engine = Engine::new(store, Arc::new(pool), Arc::new(NoFlowcharts), config);

    drive(&engine, &s.flowchart, s.runs, s.node_runs, s.mode).await?;
    let floor = commit_floor(&ledger.store, "before").await?;
    counters.reset();
    let before = cpu_now();
    let start = Instant::now();
    drive(&engine, &s.flowchart, s.runs, s.node_runs, s.mode).await?;
    let wall = start.elapsed();
    let cpu = before
        .zip(cpu_now())
        .map(|(before, after)| after.since(before));
    let log = counters.log.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(Measured {
        name: s.name,
        runs: s.runs,
        node_runs: s.runs * s.node_runs,
        wall,
        appends: counters.appends.load(Ordering::Relaxed),
        commits: counters.commits.load(Ordering::Relaxed),
        events: counters.events.load(Ordering::Relaxed),
        append_time: Duration::from_nanos(counters.append_ns.load(Ordering::Relaxed)),
        reads: counters.reads.load(Ordering::Relaxed),
        floor,
        log,
        cpu,
    })
}

/// Whether starting failed because an event exceeds the ledger's inline payload limit.
fn too_large(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<String> {
    match e.downcast_ref::<EngineError>() {
        Some(EngineError::Store(inner @ StoreError::InvalidEvent { .. })) => {
            Some(inner.to_string())
        }
        _ => None,
    }
}

// ---- the decider alone -----------------------------------------------------------------------

/// CPU time of one chain driven in memory, split by stage.
#[derive(Default)]
struct CpuProfile {
    node_runs: usize,
    execute: Duration,
    decide: Duration,
    encode: Duration,
    canonical: Duration,
    events: usize,
    first_step: Duration,
}

/// Runs `flowchart` the way a driver does, minus the database and the tasks: each started node
/// run goes through `run_node`, its result through `decide`, every event through
/// `NewEvent::from_domain` (what the engine does before an append) and then through canonical
/// JSON and blake3 (what the ledger does inside `append`).
async fn decider_only(flowchart: &Arc<Flowchart>) -> BenchResult<CpuProfile> {
    let providers = Providers::scripted(ScriptedProvider::new());
    let settings = Settings::default();
    let cause = Cause {
        request_id: RequestId::generate(),
        correlation_id: CorrelationId::generate(),
    };
    let mut profile = CpuProfile::default();
    let t = Instant::now();
    let (mut state, mut events) =
        decide::start_run(start_of(flowchart), &mut SystemEnv, &cause, &settings)?;
    profile.first_step = t.elapsed();
    profile.decide += profile.first_step;
    let mut queue = VecDeque::new();
    loop {
        let t = Instant::now();
        let encoded = events
            .iter()
            .map(NewEvent::from_domain)
            .collect::<Result<Vec<_>, _>>()?;
        profile.encode += t.elapsed();
        let t = Instant::now();
        for event in &encoded {
            Digest::of(&canonical::to_canonical_vec(&event.payload)?);
        }
        profile.canonical += t.elapsed();
        profile.events += events.len();
        for event in &events {
            if let DomainEvent::NodeStarted(started) = event {
                queue.push_back(
                    state
                        .node_run_index(&started.node_run_id)
                        .ok_or("started node run not in state")?,
                );
            }
        }
        let Some(i) = queue.pop_front() else { break };
        let t = Instant::now();
        let work = state.work(i).ok_or("no work for a started node run")?;
        let result = run_node(&providers, &work).await;
        profile.execute += t.elapsed();
        let t = Instant::now();
        events = decide::decide(
            &mut state,
            Command::RecordResult(result),
            &mut SystemEnv,
            &cause,
            &settings,
        )?;
        profile.decide += t.elapsed();
    }
    if state.status != RunStatus::Completed {
        return Err(format!("in-memory run ended {}", state.status.as_str()).into());
    }
    profile.node_runs = state.node_runs.len();
    Ok(profile)
}

// ---- output ----------------------------------------------------------------------------------

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn result_header() {
    println!(
        "| scenario                  |  runs | node runs |    wall ms | ms / node run | node runs / s | group commits | appends / commit |"
    );
    println!(
        "|---------------------------|------:|----------:|-----------:|--------------:|--------------:|--------------:|-----------------:|"
    );
}

fn result_row(m: &Measured) {
    println!(
        "| {:<25} | {:>5} | {:>9} | {:>10.1} | {:>13.3} | {:>13.0} | {:>13} | {:>16.1} |",
        m.name,
        m.runs,
        m.node_runs,
        m.wall.as_secs_f64() * 1e3,
        m.ms_per_node_run(),
        m.node_runs_per_s(),
        m.commits,
        if m.commits == 0 {
            1.0
        } else {
            m.appends as f64 / m.commits as f64
        }
    );
}

fn breakdown_header() {
    println!(
        "| scenario                  | appends / node run | events / append | append mean µs | append share | floor µs | reads / node run | bench CPU µs / node run | other CPU µs / node run | machine busy | iowait |"
    );
    println!(
        "|---------------------------|-------------------:|----------------:|---------------:|-------------:|---------:|-----------------:|------------------------:|------------------------:|-------------:|-------:|"
    );
}

fn breakdown_row(m: &Measured) {
    let us_per_node = |ticks: u64| format!("{:.0}", m.per_node(ticks as f64 / TICKS_PER_S * 1e6));
    let share =
        |ticks: u64, total: u64| format!("{:.0}%", ticks as f64 * 100.0 / total.max(1) as f64);
    let dash = || "–".to_owned();
    let (process, other, busy, iowait) = match m.cpu {
        Some(c) if c.total >= MIN_TICKS * 2 => (
            if c.process >= MIN_TICKS {
                us_per_node(c.process)
            } else {
                dash()
            },
            us_per_node(c.busy.saturating_sub(c.process)),
            share(c.busy, c.total),
            share(c.iowait, c.total),
        ),
        Some(c) if c.process >= MIN_TICKS => (us_per_node(c.process), dash(), dash(), dash()),
        _ => (dash(), dash(), dash(), dash()),
    };
    println!(
        "| {:<25} | {:>18.3} | {:>15.2} | {:>14.0} | {:>11.0}% | {:>8.0} | {:>16.3} | {:>23} | {:>23} | {:>12} | {:>6} |",
        m.name,
        m.per_node(m.appends as f64),
        m.events as f64 / m.appends.max(1) as f64,
        m.append_mean_us(),
        m.append_share() * 100.0,
        m.floor.as_secs_f64() * 1e6,
        m.per_node(m.reads as f64),
        process,
        other,
        busy,
        iowait
    );
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let scale: f64 = std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    if std::env::var("RUNLEDGER_BENCH_BACKEND").is_ok_and(|v| v == "sqlite") {
        return sqlite::main(scale).await;
    }
    let n = |base: f64| ((base * scale).round() as usize).max(1);
    let (short, long, width, runs, chain) = (n(100.0), n(1000.0), n(100.0), n(200.0), 3);
    let scenario = |name: String, flowchart, runs, node_runs, mode| Scenario {
        name,
        flowchart,
        runs,
        node_runs,
        mode,
        connections: 8,
        group_commit: std::env::var("RUNLEDGER_BENCH_GROUP_COMMIT").map_or(true, |v| v != "0"),
    };
    // `main`: the four main scenarios with their floors, no more; `linear` or `concurrent`:
    // linear-1000 or concurrent-200x5 alone (under a profiler, say).
    let only = std::env::var("RUNLEDGER_BENCH_ONLY").unwrap_or_default();
    let one = only == "linear" || only == "concurrent";

    println!(
        "Run engine benchmark (RUNLEDGER_BENCH_SCALE={scale}); node runs include start and end."
    );
    println!("Load average at start: {}", load_average());

    let mut main_results = Vec::new();
    if !one {
        main_results.push(
            measure(scenario(
                format!("linear-{short}"),
                linear(short)?,
                1,
                short + 2,
                Mode::Sequential,
            ))
            .await?,
        );
    }
    if !one || only == "linear" {
        main_results.push(
            measure(scenario(
                format!("linear-{long}"),
                linear(long)?,
                1,
                long + 2,
                Mode::Sequential,
            ))
            .await?,
        );
    }
    if !one {
        main_results.push(
            measure(scenario(
                format!("fanout-{width}"),
                fanout(width)?,
                1,
                width + 3,
                Mode::Sequential,
            ))
            .await?,
        );
    }
    let conc_name = format!("concurrent-{runs}x{}", chain + 2);
    if !one || only == "concurrent" {
        main_results.push(
            measure(scenario(
                conc_name.clone(),
                linear(chain)?,
                runs,
                chain + 2,
                Mode::Concurrent,
            ))
            .await?,
        );
    }

    if one || only == "main" {
        println!("Load average at end: {}", load_average());
        result_header();
        main_results.iter().for_each(result_row);
        println!();
        breakdown_header();
        main_results.iter().for_each(breakdown_row);
        return Ok(());
    }
    let mut per_node = Vec::new();
    let mut unstartable = Vec::new();
    for base in [100.0, 1000.0, 10_000.0] {
        let mut len = n(base);
        let work = n(PER_NODE_WORK);
        let attempt = measure(scenario(
            format!("chain-{len} x{}", (work / len).max(1)),
            linear(len)?,
            (work / len).max(1),
            len + 2,
            Mode::Sequential,
        ))
        .await;
        let m = match attempt.map_err(|e| (too_large(e.as_ref()), e)) {
            Ok(m) => m,
            Err((None, e)) => return Err(e),
            Err((Some(reason), _)) => {
                unstartable.push(format!("chain-{len}: cannot start: {reason}"));
                len = n(FALLBACK_CHAIN);
                let repeats = (work / len).max(1);
                measure(scenario(
                    format!("chain-{len} x{repeats}"),
                    linear(len)?,
                    repeats,
                    len + 2,
                    Mode::Sequential,
                ))
                .await?
            }
        };
        per_node.push(m);
    }

    let what_if = measure(Scenario {
        name: format!("{conc_name}, pool 32"),
        flowchart: linear(chain)?,
        runs,
        node_runs: chain + 2,
        mode: Mode::Concurrent,
        connections: 32,
        group_commit: std::env::var("RUNLEDGER_BENCH_GROUP_COMMIT").map_or(true, |v| v != "0"),
    })
    .await?;

    println!("Load average at end: {}", load_average());
    println!();
    println!("Results (one measured pass after one warm-up):");
    println!();
    result_header();
    main_results.iter().for_each(result_row);
    println!();
    println!(
        "Per-node cost: each chain length run sequentially until it makes ~{} node runs.",
        n(PER_NODE_WORK)
    );
    println!();
    result_header();
    per_node.iter().for_each(result_row);
    for line in &unstartable {
        println!("  {line}");
    }
    println!();
    println!(
        "Where the time goes. append share: summed append latency / wall (over 100% when appends overlap);"
    );
    println!(
        "floor: mean one-event append just before the measured runs; other CPU: busy time of all cores minus"
    );
    println!(
        "this process (PostgreSQL, the kernel, anything else running); – where /proc's 10 ms ticks are too coarse."
    );
    println!();
    breakdown_header();
    main_results
        .iter()
        .chain(&per_node)
        .chain([&what_if])
        .for_each(breakdown_row);
    let fan = &main_results[2];
    let appends: Vec<String> = fan
        .log
        .iter()
        .map(|(e, d)| format!("{e} events {:.1} ms", d.as_secs_f64() * 1e3))
        .collect();
    println!();
    println!("{} appends in order: {}", fan.name, appends.join(", "));
    println!(
        "What-if, engine pool of 32 connections instead of 8: {:.0} node runs/s (default pool: {:.0})",
        what_if.node_runs_per_s(),
        main_results[3].node_runs_per_s()
    );

    println!();
    println!("Decider only (no database, no engine tasks), µs per node run:");
    println!();
    println!(
        "| chain  | node runs | execute | decide | encode | canonical + hash | total | events / node run | start_run ms |"
    );
    println!(
        "|--------|----------:|--------:|-------:|-------:|-----------------:|------:|------------------:|-------------:|"
    );
    for base in [100.0, 1000.0, 10_000.0] {
        let flowchart = linear(n(base))?;
        decider_only(&flowchart).await?;
        let p = decider_only(&flowchart).await?;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / p.node_runs as f64;
        println!(
            "| {:<6} | {:>9} | {:>7.1} | {:>6.1} | {:>6.1} | {:>16.1} | {:>5.1} | {:>17.2} | {:>12.1} |",
            n(base),
            p.node_runs,
            per(p.execute),
            per(p.decide),
            per(p.encode),
            per(p.canonical),
            per(p.execute + p.decide + p.encode + p.canonical),
            p.events as f64 / p.node_runs as f64,
            p.first_step.as_secs_f64() * 1e3
        );
    }

    let (linear_long, fan, conc) = (&main_results[1], &main_results[2], &main_results[3]);
    let (first, last) = (&per_node[0], &per_node[per_node.len() - 1]);
    let ratio = last.ms_per_node_run() / first.ms_per_node_run();
    println!();
    println!("Targets:");
    let long_ms = linear_long.ms_per_node_run();
    println!(
        "  {}: {long_ms:.3} ms per node run (target <= 1.0): {}",
        linear_long.name,
        verdict(long_ms <= 1.0)
    );
    let fan_ms = fan.ms_per_node_run();
    println!(
        "  {}: {fan_ms:.3} ms per node run (target <= 0.3): {}",
        fan.name,
        verdict(fan_ms <= 0.3)
    );
    let conc_rate = conc.node_runs_per_s();
    println!(
        "  {}: {conc_rate:.0} node runs/s (target >= 3000): {}",
        conc.name,
        verdict(conc_rate >= 3000.0)
    );
    println!(
        "  per-node cost {} vs {}: {ratio:.2}x ({:.3} vs {:.3} ms; target within 20%): {}{}",
        last.name,
        first.name,
        last.ms_per_node_run(),
        first.ms_per_node_run(),
        verdict((0.8..=1.2).contains(&ratio)),
        if unstartable.is_empty() {
            ""
        } else {
            " (but see the chain that cannot start)"
        }
    );
    Ok(())
}
