//! The engine on a SQLite ledger file (`synchronous = FULL`, WAL), `RUNLEDGER_BENCH_BACKEND=sqlite`:
//! linear-1000 and concurrent-200x5, three interleaved rounds, each scenario on a fresh file
//! with a warm-up run first. Before each measured pass, on the same file and the same writer
//! connection: the bare floor (200 × `BEGIN IMMEDIATE; INSERT` of a small row into a scratch
//! table; `COMMIT`, no ledger code) and the ledger's own one-event append. So the engine's
//! figure can be read against what one durable commit costs on this disk right then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runledger_ledger::testing::TestSqliteLedger;
use runledger_orchestrator::engine::{Engine, EngineConfig, NoFlowcharts};
use runledger_orchestrator::executor::{InProcessPool, Providers};
use runledger_orchestrator::provider::ScriptedProvider;

use super::{BenchResult, FLOOR_APPENDS, Mode, commit_floor, drive, linear};

struct Row {
    name: String,
    round: usize,
    node_runs: usize,
    wall: Duration,
    bare_floor: Duration,
    append_floor: Duration,
    /// Write transactions (distinct `tx_id`s) of the measured pass.
    commits: i64,
}

/// Write transactions that wrote events after `after` (each one commit, one fsync of the WAL).
async fn commits_since(ledger: &TestSqliteLedger, after: u64) -> BenchResult<i64> {
    let n =
        sqlx::query_scalar("SELECT count(DISTINCT tx_id) FROM events WHERE global_position > ?1")
            .bind(after as i64)
            .fetch_one(ledger.store.readers())
            .await?;
    Ok(n)
}

/// Mean time of one bare write transaction (`BEGIN IMMEDIATE`, one INSERT, `COMMIT`) on the
/// store's writer connection: the least a durable commit costs on this file.
async fn bare_floor(ledger: &TestSqliteLedger) -> BenchResult<Duration> {
    let pool = ledger.store.writer();
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_floor (i INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let start = Instant::now();
    for _ in 0..FLOOR_APPENDS {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO bench_floor (payload) VALUES ('{\"i\":1}')")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(start.elapsed() / FLOOR_APPENDS as u32)
}

async fn measure(
    name: &str,
    round: usize,
    flowchart: &Arc<runledger_contracts::flowchart::Flowchart>,
    runs: usize,
    node_runs: usize,
    mode: Mode,
) -> BenchResult<Row> {
    let ledger = TestSqliteLedger::new().await?;
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 256);
    let engine = Engine::new(
        ledger.store.share(),
        Arc::new(pool),
        Arc::new(NoFlowcharts),
        EngineConfig::default(),
    );
    drive(&engine, flowchart, runs, node_runs, mode).await?;
    let bare = bare_floor(&ledger).await?;
    let append = commit_floor(&ledger.store, "before").await?;
    let before = ledger.store.last_global_position().await?;
    let start = Instant::now();
    drive(&engine, flowchart, runs, node_runs, mode).await?;
    let wall = start.elapsed();
    let commits = commits_since(&ledger, before).await?;
    drop(engine);
    ledger.remove().await?;
    Ok(Row {
        name: name.to_owned(),
        round,
        node_runs: runs * node_runs,
        wall,
        bare_floor: bare,
        append_floor: append,
        commits,
    })
}

pub async fn main(scale: f64) -> BenchResult<()> {
    let n = |base: f64| ((base * scale).round() as usize).max(1);
    let (long, runs, chain) = (n(1000.0), n(200.0), 3);
    let linear_name = format!("linear-{long}");
    let conc_name = format!("concurrent-{runs}x{}", chain + 2);
    let long_chart = linear(long)?;
    let short_chart = linear(chain)?;
    println!(
        "Run engine on SQLite (synchronous = FULL, WAL; RUNLEDGER_BENCH_SCALE={scale}), files in {}",
        std::env::temp_dir().display()
    );
    // `RUNLEDGER_BENCH_ONLY=linear|concurrent` measures one scenario (e.g. under strace).
    let only = std::env::var("RUNLEDGER_BENCH_ONLY").unwrap_or_default();
    println!(
        "| scenario | round | node runs | wall ms | ms / node run | node runs / s | commits / node run | bare insert+commit µs | ledger one-event append µs | ms / node run ÷ bare |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for round in 1..=3 {
        let mut rows = Vec::new();
        if only.is_empty() || only == "linear" {
            rows.push(
                measure(
                    &linear_name,
                    round,
                    &long_chart,
                    1,
                    long + 2,
                    Mode::Sequential,
                )
                .await?,
            );
        }
        if only.is_empty() || only == "concurrent" {
            rows.push(
                measure(
                    &conc_name,
                    round,
                    &short_chart,
                    runs,
                    chain + 2,
                    Mode::Concurrent,
                )
                .await?,
            );
        }
        for row in rows {
            let per_node = row.wall.as_secs_f64() / row.node_runs as f64;
            println!(
                "| {} | {} | {} | {:.1} | {:.3} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
                row.name,
                row.round,
                row.node_runs,
                row.wall.as_secs_f64() * 1e3,
                per_node * 1e3,
                1.0 / per_node,
                row.commits as f64 / row.node_runs as f64,
                row.bare_floor.as_secs_f64() * 1e6,
                row.append_floor.as_secs_f64() * 1e6,
                per_node / row.bare_floor.as_secs_f64(),
            );
        }
    }
    Ok(())
}
