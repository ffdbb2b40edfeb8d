//! Run-engine benchmark: whole runs of no-op scripted task nodes through the engine, the
//! in-process executor and the PostgreSQL ledger, timed from `start` to the end of `wait`.
//!
//! Scenarios (see docs/benchmarks.md):
//! - `linear-100`, `linear-1000`: start -> N chained task nodes -> end, one run.
//! - `fanout-100`: start -> 100 parallel task nodes -> one task node (`fan_in: all`) -> end.
//! - `concurrent-200x5`: 200 runs of start -> 3 chained task nodes -> end, all started at
//!   once, then waited for.
//! - `per-node cost`: chains of 100, 1,000 and 10,000 task nodes, each length run as many times
//!   as it takes to make 10,000 node runs, so every length is measured over the same work.
//! - `decider only`: the same chains driven in memory (executor call, decide, event encoding)
//!   without the ledger or the engine's tasks, to split CPU time from the ledger's.
//!
//! Each ledger scenario has its own engine and its own ledger schema (dropped afterwards) and
//! one unmeasured warm-up of the same shape. The engine's store is the PostgreSQL ledger behind
//! a thin wrapper that counts and times every call, so each scenario also reports appends per
//! node run and the time spent inside `append`.
//!
//! Run: `cargo bench -p runledger-orchestrator --bench engine`. `RUNLEDGER_BENCH_SCALE`
//! (default 1.0) scales node and run counts. Uses `RUNLEDGER_TEST_DATABASE_URL` (default: the
//! local `runledger_test` database).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runledger_contracts::envelope::{NewEvent, Position};
use runledger_contracts::digest::Digest;
use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{
    AppendOutcome, AppendRequest, Blob, EventStore, ExpectedVersion, GlobalPage, PgEventStore, StoreError, StreamHead,
};
use runledger_orchestrator::decide::{self, Cause, Command, Settings, StartRun, SystemEnv};
use runledger_orchestrator::engine::{Engine, EngineConfig, NoFlowcharts};
use runledger_orchestrator::executor::{InProcessPool, Providers, run_node};
use runledger_orchestrator::provider::ScriptedProvider;
use runledger_orchestrator::state::RunStatus;
use serde_json::json;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Every node run the per-node-cost scenario makes at each chain length.
const PER_NODE_WORK: f64 = 10_000.0;

// ---- flowcharts ------------------------------------------------------------------------------

const TASK: &str = "    type: task\n    model: scripted\n    scripted: [{output: {ok: true}}]\n";

fn parse(text: &str) -> BenchResult<Arc<Flowchart>> {
    load(text, SourceFormat::Yaml).map(Arc::new).map_err(|errors| {
        let first = errors.first().map(|e| format!("{}: {}", e.path, e.message)).unwrap_or_default();
        format!("bench flowchart is invalid ({} errors; first: {first})", errors.len()).into()
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
    write!(text, "  - id: join\n{TASK}  - id: end\n    type: end\nconnectors:\n")?;
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
    events: AtomicU64,
    append_ns: AtomicU64,
    reads: AtomicU64,
}

impl Counters {
    fn reset(&self) {
        for c in [&self.appends, &self.events, &self.append_ns, &self.reads] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

fn add_elapsed(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The PostgreSQL ledger, with every append counted and timed and every read counted.
struct Metered {
    inner: PgEventStore,
    counters: Arc<Counters>,
}

impl EventStore for Metered {
    async fn append(&self, stream: &StreamId, expected: ExpectedVersion, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let events = request.events.len() as u64;
        let start = Instant::now();
        let outcome = self.inner.append(stream, expected, request).await;
        add_elapsed(&self.counters.append_ns, start);
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        self.counters.events.fetch_add(events, Ordering::Relaxed);
        outcome
    }

    async fn read_stream(&self, stream: &StreamId, from_version: u64, limit: usize) -> Result<Vec<runledger_contracts::envelope::RecordedEvent>, StoreError> {
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

/// Waits for a run and checks it completed with the expected number of node runs.
async fn finish(engine: &Engine<Metered>, run_id: RunId, node_runs: usize) -> BenchResult<()> {
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
    /// Every start spawned at once, then every run waited for.
    Concurrent,
}

async fn drive(engine: &Engine<Metered>, flowchart: &Arc<Flowchart>, runs: usize, node_runs: usize, mode: Mode) -> BenchResult<()> {
    if mode == Mode::Sequential {
        for _ in 0..runs {
            let run_id = engine.start(start_of(flowchart), RequestId::generate(), CorrelationId::generate()).await?;
            finish(engine, run_id, node_runs).await?;
        }
        return Ok(());
    }
    let starts: Vec<_> = (0..runs)
        .map(|_| {
            let (engine, start) = (engine.clone(), start_of(flowchart));
            tokio::spawn(async move { engine.start(start, RequestId::generate(), CorrelationId::generate()).await })
        })
        .collect();
    let mut run_ids = Vec::with_capacity(runs);
    for handle in starts {
        run_ids.push(handle.await??);
    }
    for run_id in run_ids {
        finish(engine, run_id, node_runs).await?;
    }
    Ok(())
}

struct Measured {
    name: String,
    runs: usize,
    node_runs: usize,
    wall: Duration,
    appends: u64,
    events: u64,
    append_time: Duration,
    reads: u64,
}

impl Measured {
    fn ms_per_node_run(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3 / self.node_runs as f64
    }
    fn node_runs_per_s(&self) -> f64 {
        self.node_runs as f64 / self.wall.as_secs_f64()
    }
    fn appends_per_node_run(&self) -> f64 {
        self.appends as f64 / self.node_runs as f64
    }
    fn events_per_append(&self) -> f64 {
        self.events as f64 / self.appends.max(1) as f64
    }
    fn append_mean_us(&self) -> f64 {
        self.append_time.as_secs_f64() * 1e6 / self.appends.max(1) as f64
    }
    /// Summed append latency over wall time: the share of a sequential run spent appending
    /// (above 1 when appends overlap).
    fn append_share(&self) -> f64 {
        self.append_time.as_secs_f64() / self.wall.as_secs_f64()
    }
}

/// One scenario on a fresh schema and engine: a warm-up of the same shape, then the measured
/// runs. `node_runs` is per run, start and end included.
async fn scenario(name: String, flowchart: Arc<Flowchart>, runs: usize, node_runs: usize, mode: Mode) -> BenchResult<Measured> {
    let ledger = TestLedger::new().await?;
    let counters = Arc::new(Counters::default());
    let store = Metered { inner: ledger.second_store().await?, counters: Arc::clone(&counters) };
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 256);
    let engine = Engine::new(store, Arc::new(pool), Arc::new(NoFlowcharts), EngineConfig::default());

    drive(&engine, &flowchart, runs, node_runs, mode).await?;
    counters.reset();
    let start = Instant::now();
    drive(&engine, &flowchart, runs, node_runs, mode).await?;
    let wall = start.elapsed();

    let measured = Measured {
        name,
        runs,
        node_runs: runs * node_runs,
        wall,
        appends: counters.appends.load(Ordering::Relaxed),
        events: counters.events.load(Ordering::Relaxed),
        append_time: Duration::from_nanos(counters.append_ns.load(Ordering::Relaxed)),
        reads: counters.reads.load(Ordering::Relaxed),
    };
    drop(engine);
    ledger.drop_schema().await?;
    Ok(measured)
}

// ---- the decider alone -----------------------------------------------------------------------

/// CPU time of one chain driven in memory, split by stage.
#[derive(Default)]
struct CpuProfile {
    node_runs: usize,
    execute: Duration,
    decide: Duration,
    encode: Duration,
    events: usize,
}

/// Runs `flowchart` the way a driver does, minus the ledger and the tasks: each started node
/// run goes through `run_node`, its result through `decide`, every event through
/// `NewEvent::from_domain` (what `append_request` does before an append).
async fn decider_only(flowchart: &Arc<Flowchart>) -> BenchResult<CpuProfile> {
    let providers = Providers::scripted(ScriptedProvider::new());
    let settings = Settings::default();
    let cause = Cause { request_id: RequestId::generate(), correlation_id: CorrelationId::generate() };
    let mut profile = CpuProfile::default();
    let t = Instant::now();
    let (mut state, mut events) = decide::start_run(start_of(flowchart), &mut SystemEnv, &cause, &settings)?;
    profile.decide += t.elapsed();
    let mut queue = VecDeque::new();
    loop {
        let t = Instant::now();
        for event in &events {
            NewEvent::from_domain(event)?;
        }
        profile.encode += t.elapsed();
        profile.events += events.len();
        for event in &events {
            if let DomainEvent::NodeStarted(started) = event {
                queue.push_back(state.node_run_index(&started.node_run_id).ok_or("started node run not in state")?);
            }
        }
        let Some(i) = queue.pop_front() else { break };
        let t = Instant::now();
        let work = state.work(i).ok_or("no work for a started node run")?;
        let result = run_node(&providers, &work).await;
        profile.execute += t.elapsed();
        let t = Instant::now();
        events = decide::decide(&mut state, Command::RecordResult(result), &mut SystemEnv, &cause, &settings)?;
        profile.decide += t.elapsed();
    }
    if state.status != RunStatus::Completed {
        return Err(format!("in-memory run ended {}", state.status.as_str()).into());
    }
    profile.node_runs = state.node_runs.len();
    Ok(profile)
}

// ---- output ----------------------------------------------------------------------------------

fn row(m: &Measured) {
    println!(
        "| {:<18} | {:>5} | {:>9} | {:>10.1} | {:>8.3} | {:>10.0} | {:>7.2} | {:>6.2} | {:>8.0} | {:>6.0}% | {:>8.2} |",
        m.name,
        m.runs,
        m.node_runs,
        m.wall.as_secs_f64() * 1e3,
        m.ms_per_node_run(),
        m.node_runs_per_s(),
        m.appends_per_node_run(),
        m.events_per_append(),
        m.append_mean_us(),
        m.append_share() * 100.0,
        m.reads as f64 / m.node_runs as f64,
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let scale: f64 = std::env::var("RUNLEDGER_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n = |base: f64| ((base * scale).round() as usize).max(1);

    let (short, long, width, runs, chain) = (n(100.0), n(1000.0), n(100.0), n(200.0), 3);
    let mut results = Vec::new();
    println!("Run engine benchmark (RUNLEDGER_BENCH_SCALE={scale}); node runs include start and end.");
    println!();
    println!("| scenario           |  runs | node runs |    wall ms | ms/node  | node runs/s | appends/node | events/append | append µs | append share | reads/node |");
    println!("|--------------------|------:|----------:|-----------:|---------:|-----------:|--------:|-------:|---------:|-------:|---------:|");

    let linear_short = scenario(format!("linear-{short}"), linear(short)?, 1, short + 2, Mode::Sequential).await?;
    row(&linear_short);
    let linear_long = scenario(format!("linear-{long}"), linear(long)?, 1, long + 2, Mode::Sequential).await?;
    row(&linear_long);
    let fan = scenario(format!("fanout-{width}"), fanout(width)?, 1, width + 3, Mode::Sequential).await?;
    row(&fan);
    let conc = scenario(format!("concurrent-{runs}x{}", chain + 2), linear(chain)?, runs, chain + 2, Mode::Concurrent).await?;
    row(&conc);
    results.extend([linear_short, linear_long, fan, conc]);

    println!();
    println!("Per-node cost: each chain length run sequentially until it makes ~{} node runs.", n(PER_NODE_WORK));
    println!();
    println!("| scenario           |  runs | node runs |    wall ms | ms/node  | node runs/s | appends/node | events/append | append µs | append share | reads/node |");
    println!("|--------------------|------:|----------:|-----------:|---------:|-----------:|--------:|-------:|---------:|-------:|---------:|");
    let mut per_node = Vec::new();
    for base in [100.0, 1000.0, 10_000.0] {
        let len = n(base);
        let repeats = (n(PER_NODE_WORK) / len).max(1);
        let m = scenario(format!("chain-{len} x{repeats}"), linear(len)?, repeats, len + 2, Mode::Sequential).await?;
        row(&m);
        per_node.push(m);
    }

    println!();
    println!("Decider only (no ledger, no engine tasks), µs per node run:");
    println!();
    println!("| chain  | node runs | execute | decide | encode | total | events/node |");
    println!("|--------|----------:|--------:|-------:|-------:|------:|------------:|");
    for base in [100.0, 1000.0, 10_000.0] {
        let flowchart = linear(n(base))?;
        decider_only(&flowchart).await?;
        let p = decider_only(&flowchart).await?;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / p.node_runs as f64;
        println!(
            "| {:<6} | {:>9} | {:>7.1} | {:>6.1} | {:>6.1} | {:>5.1} | {:>11.2} |",
            n(base),
            p.node_runs,
            per(p.execute),
            per(p.decide),
            per(p.encode),
            per(p.execute + p.decide + p.encode),
            p.events as f64 / p.node_runs as f64
        );
    }

    let [linear_long, fan, conc] = [&results[1], &results[2], &results[3]];
    let ratio = per_node[2].ms_per_node_run() / per_node[0].ms_per_node_run();
    println!();
    println!("Targets:");
    let long_ms = linear_long.ms_per_node_run();
    println!("  {}: {long_ms:.3} ms per node run (target <= 1.0): {}", linear_long.name, verdict(long_ms <= 1.0));
    let fan_ms = fan.ms_per_node_run();
    println!("  {}: {fan_ms:.3} ms per node run (target <= 0.3): {}", fan.name, verdict(fan_ms <= 0.3));
    let conc_rate = conc.node_runs_per_s();
    println!("  {}: {conc_rate:.0} node runs/s (target >= 3000): {}", conc.name, verdict(conc_rate >= 3000.0));
    println!(
        "  per-node cost {} vs {}: {ratio:.2}x ({:.3} vs {:.3} ms; target within 20%): {}",
        per_node[2].name,
        per_node[0].name,
        per_node[2].ms_per_node_run(),
        per_node[0].ms_per_node_run(),
        verdict((0.8..=1.2).contains(&ratio))
    );
    Ok(())
}
