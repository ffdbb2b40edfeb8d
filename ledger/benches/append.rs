//! Append benchmark: the ledger's append beside a bare INSERT + COMMIT of the same rows into a
//! table of the same shape, measured in the same run on the same server.
//!
//! Scenarios (see docs/benchmarks.md):
//! - `single`: one event per append, sequential, on one stream (the orchestrator's hot path);
//!   ledger appends and bare inserts interleaved one for one.
//! - `concurrent-16`: 16 appenders at once, each on its own stream, one event per append; two
//!   alternating rounds each.
//! - `batch-100`: 100 events per append, sequential, interleaved like `single`.
//!
//! Run: `cargo bench -p runledger-ledger --bench append`. `RUNLEDGER_BENCH_SCALE` (default 1.0)
//! scales the operation counts. Uses `RUNLEDGER_DATABASE_URL` (default: the local `runledger`
//! database) and a throwaway schema it drops afterwards.

use std::time::{Duration, Instant};

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use runledger_ledger::{AppendRequest, DatabaseConfig, EventStore, ExpectedVersion, PgEventStore};
use serde_json::json;
use sqlx::PgPool;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const BARE_INSERT: &str = "INSERT INTO bare_events (event_id, stream_id, stream_version, event_type,
        schema_version, request_id, correlation_id, recorded_at, payload, blob_refs, prev_hash, hash)
    SELECT e.event_id, $1, e.stream_version, 'NodeSucceeded', 1, $2, 'bench', now(),
           e.payload::jsonb, '[]'::jsonb, e.prev_hash, e.hash
      FROM unnest($3::uuid[], $4::bigint[], $5::text[], $6::bytea[], $7::bytea[])
           AS e(event_id, stream_version, payload, prev_hash, hash)";

fn payload(i: u64) -> serde_json::Value {
    json!({
        "run_id": "0190f3a2-7c1e-7000-8000-000000000000",
        "node_id": format!("task-{i}"),
        "node_run_id": "0190f3a2-7c1e-7000-8000-000000000001",
        "attempt": 1,
        "output": {"text": "ok"}
    })
}

fn request(tag: &str, first: u64, n: u64) -> BenchResult<AppendRequest> {
    let events = (first..first + n)
        .map(|i| NewEvent {
            event_type: "NodeSucceeded".into(),
            schema_version: 1,
            payload: payload(i),
            blob_refs: vec![],
        })
        .collect();
    Ok(AppendRequest::new(
        RequestId::new(format!("{tag}-{first}"))?,
        CorrelationId::new("bench")?,
        events,
    ))
}

async fn bare_insert(pool: &PgPool, stream: &str, first: u64, n: u64) -> BenchResult<()> {
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    let versions: Vec<i64> = (first..first + n).map(|v| v as i64).collect();
    let payloads: Vec<String> = (first..first + n).map(|i| payload(i).to_string()).collect();
    let hashes: Vec<Vec<u8>> = (first..first + n)
        .map(|i| Digest::of(&i.to_le_bytes()).as_bytes().to_vec())
        .collect();
    sqlx::query(BARE_INSERT)
        .bind(stream)
        .bind(format!("{stream}-{first}"))
        .bind(&ids)
        .bind(&versions)
        .bind(&payloads)
        .bind(&hashes)
        .bind(&hashes)
        .execute(pool)
        .await?;
    Ok(())
}

struct Stats {
    ops: usize,
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    /// For sequential runs: elapsed time is the sum of the operations' latencies.
    fn from_latencies(latencies: Vec<Duration>, events_per_op: u64) -> Self {
        let elapsed = latencies.iter().sum();
        Stats {
            ops: latencies.len(),
            events: latencies.len() as u64 * events_per_op,
            elapsed,
            latencies,
        }
    }

    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1e6
    }
    fn mean_us(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.ops as f64
    }
    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// Ledger appends and bare inserts, interleaved one for one so both see the same machine.
async fn single(store: &PgEventStore, pool: &PgPool, ops: u64) -> BenchResult<(Stats, Stats)> {
    let stream = StreamId::new("bench-single")?;
    let (mut ledger, mut bare) = (
        Vec::with_capacity(ops as usize),
        Vec::with_capacity(ops as usize),
    );
    for i in 0..ops {
        let expected = if i == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(i)
        };
        let t = Instant::now();
        store
            .append(&stream, expected, request("single", i + 1, 1)?)
            .await?;
        ledger.push(t.elapsed());
        let t = Instant::now();
        bare_insert(pool, "bare-single", i + 1, 1).await?;
        bare.push(t.elapsed());
    }
    Ok((
        Stats::from_latencies(ledger, 1),
        Stats::from_latencies(bare, 1),
    ))
}

async fn concurrent(
    store: &std::sync::Arc<PgEventStore>,
    pool: &PgPool,
    phase: &str,
    bare: bool,
    tasks: u64,
    each: u64,
) -> BenchResult<Stats> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let pool = pool.clone();
        let phase = phase.to_owned();
        handles.push(tokio::spawn(async move {
            let stream = format!("bench-{phase}-{}-{t}", if bare { "bare" } else { "ledger" });
            let id = StreamId::new(stream.clone())?;
            let mut latencies = Vec::with_capacity(each as usize);
            for i in 0..each {
                let s = Instant::now();
                if bare {
                    bare_insert(&pool, &stream, i + 1, 1).await?;
                } else {
                    let expected = if i == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(i)
                    };
                    store
                        .append(&id, expected, request(&stream, i + 1, 1)?)
                        .await?;
                }
                latencies.push(s.elapsed());
            }
            BenchResult::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await??);
    }
    Ok(Stats {
        ops: (tasks * each) as usize,
        events: tasks * each,
        elapsed: start.elapsed(),
        latencies,
    })
}

/// Batches of `size` events, ledger and bare interleaved one for one.
async fn batched(
    store: &PgEventStore,
    pool: &PgPool,
    batches: u64,
    size: u64,
) -> BenchResult<(Stats, Stats)> {
    let id = StreamId::new("bench-batch")?;
    let (mut ledger, mut bare) = (
        Vec::with_capacity(batches as usize),
        Vec::with_capacity(batches as usize),
    );
    for b in 0..batches {
        let first = b * size + 1;
        let expected = if b == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(b * size)
        };
        let t = Instant::now();
        store
            .append(&id, expected, request("batch", first, size)?)
            .await?;
        ledger.push(t.elapsed());
        let t = Instant::now();
        bare_insert(pool, "bare-batch", first, size).await?;
        bare.push(t.elapsed());
    }
    Ok((
        Stats::from_latencies(ledger, size),
        Stats::from_latencies(bare, size),
    ))
}

fn row(name: &str, s: &mut Stats) {
    let (p50, p99, mean, eps) = (
        s.percentile(0.50),
        s.percentile(0.99),
        s.mean_us(),
        s.events_per_s(),
    );
    println!(
        "| {name:<28} | {:>7} | {p50:>9.0} | {p99:>9.0} | {mean:>9.0} | {eps:>10.0} |",
        s.ops
    );
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let scale: f64 = std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |base: f64| ((base * scale).round() as u64).max(1);
    let url = std::env::var("RUNLEDGER_DATABASE_URL")
        .unwrap_or_else(|_| DatabaseConfig::DEFAULT_URL.to_owned());
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let mut config = DatabaseConfig::new(url).with_schema(schema.clone());
    config.max_connections = 20;
    let store = PgEventStore::connect(&config).await?;
    store.migrate().await?;
    let pool = store.pool().clone();
    sqlx::query("CREATE TABLE bare_events (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS INCLUDING INDEXES)")
        .execute(&pool)
        .await?;
    let store = std::sync::Arc::new(store);

    // Warm up connections and prepared statements on both paths.
    concurrent(&store, &pool, "warm", false, 16, 5).await?;
    concurrent(&store, &pool, "warm", true, 16, 5).await?;

    println!(
        "| scenario                     |     ops | p50 (µs) | p99 (µs) | mean (µs) |   events/s |"
    );
    println!(
        "|------------------------------|--------:|---------:|---------:|----------:|-----------:|"
    );
    let ops = n(2000.0);
    let (mut a, mut b) = single(&store, &pool, ops).await?;
    row("single: ledger append", &mut a);
    row("single: bare INSERT+COMMIT", &mut b);
    let ratio_single = a.mean_us() / b.mean_us();

    // Concurrent runs cannot interleave op by op: alternate ledger and bare rounds instead and
    // report the sum of both rounds.
    let each = n(125.0);
    let mut c1 = concurrent(&store, &pool, "conc1", false, 16, each).await?;
    let mut d1 = concurrent(&store, &pool, "conc1", true, 16, each).await?;
    let c2 = concurrent(&store, &pool, "conc2", false, 16, each).await?;
    let d2 = concurrent(&store, &pool, "conc2", true, 16, each).await?;
    let merge = |a: &mut Stats, b: Stats| {
        a.ops += b.ops;
        a.events += b.events;
        a.elapsed += b.elapsed;
        a.latencies.extend(b.latencies);
    };
    merge(&mut c1, c2);
    merge(&mut d1, d2);
    let (mut c, mut d) = (c1, d1);
    row("concurrent-16: ledger", &mut c);
    row("concurrent-16: bare", &mut d);

    let batches = n(200.0);
    let (mut e, mut f) = batched(&store, &pool, batches, 100).await?;
    row("batch-100: ledger append", &mut e);
    row("batch-100: bare INSERT", &mut f);

    println!();
    println!("single append / bare insert (mean): {ratio_single:.2}x (target <= 1.30x)");
    println!(
        "concurrent-16 ledger / bare throughput: {:.2}",
        c.events_per_s() / d.events_per_s()
    );
    println!(
        "batch-100 ledger: {:.0} events/s (target >= 20000)",
        e.events_per_s()
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await?;
    Ok(())
}
