//! Benchmark (not a test): `GET /v1/runs/{id}` of a run with 1,000 task nodes, through HTTP.
//! Target: p99 <= 20 ms. Also times the projection query alone (`query::run_detail`) and the
//! serialization, to show where the time goes.
//!
//! `cargo bench -p runledger-api --bench run_detail` (uses `RUNLEDGER_TEST_DATABASE_URL`, in a
//! throwaway schema it drops afterwards). `RUNLEDGER_BENCH_REQUESTS` sets the number of timed
//! requests (default 500); `RUNLEDGER_BENCH_NODES` the chain length (default 1,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use runledger_api::{ApiConfig, ApiState, LedgerFlowcharts};
use runledger_contracts::flowchart::{SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::testing::TestLedger;
use runledger_orchestrator::StartRun;
use runledger_orchestrator::engine::{Engine, EngineConfig};
use runledger_orchestrator::executor::{InProcessPool, Providers};
use runledger_orchestrator::provider::{Script, ScriptedProvider};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn chain(n: usize) -> String {
    let mut text = String::from("name: bench-chain\nnodes:\n  - { id: start, type: start }\n");
    for i in 0..n {
        text.push_str(&format!("  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ ok: true }} }}] }}\n"));
    }
    text.push_str("  - { id: done, type: end }\nconnectors:\n");
    let mut prev = "start".to_owned();
    for i in 0..n {
        text.push_str(&format!("  - {{ id: c{i}, from: {prev}, to: t{i} }}\n"));
        prev = format!("t{i}");
    }
    text.push_str(&format!("  - {{ id: cend, from: {prev}, to: done }}\n"));
    text
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean =
        samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1000.0;
    println!(
        "{label:<34} n={:<5} p50={:>7.2} ms  p95={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms  mean={:>7.2} ms",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
        mean
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = env_usize("RUNLEDGER_BENCH_NODES", 1_000);
    let requests = env_usize("RUNLEDGER_BENCH_REQUESTS", 500);
    let ledger = TestLedger::new().await?;
    let store = runledger_ledger::LedgerStore::Postgres(ledger.second_store().await?);
    let registry = Arc::new(LedgerFlowcharts::on_store(store.share()));
    let providers = Providers::scripted(ScriptedProvider::with_fixture(Script::new()));
    let engine = Engine::new(
        store,
        Arc::new(InProcessPool::new(providers, 256)),
        registry.clone(),
        EngineConfig::default(),
    );
    let state = ApiState::new(engine.clone(), registry, ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(runledger_api::serve(listener, state.clone()));
    // A second server on the same engine with no detail cache: every request runs the query.
    let uncached = ApiState::new(
        engine.clone(),
        Arc::new(LedgerFlowcharts::on_store(engine.store().share())),
        ApiConfig {
            detail_cache_bytes: 0,
            run_projections: false,
            ..ApiConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cold_addr = listener.local_addr()?;
    let cold_server = tokio::spawn(runledger_api::serve(listener, uncached));

    // One run of `nodes` chained task nodes, through the engine.
    let flowchart = load(&chain(nodes), SourceFormat::Yaml).map_err(|e| format!("{e:?}"))?;
    let run = RunId::new_v7();
    let start = StartRun {
        run_id: run,
        flowchart: Arc::new(flowchart),
        version: None,
        inputs: serde_json::json!({}),
        parent: None,
        actor: "bench".into(),
    };
    let began = Instant::now();
    engine
        .start(start, RequestId::generate(), CorrelationId::generate())
        .await?;
    let summary = engine.wait(run).await?;
    println!(
        "run of {} node runs: {} in {:.0} ms",
        summary.node_runs,
        summary.status.as_str(),
        began.elapsed().as_secs_f64() * 1000.0
    );
    let head = engine
        .store()
        .stream_head(&StreamId::for_run(run))
        .await?
        .map_or(0, |h| h.version);

    // Wait for the projections, through the API's own consistency parameter.
    runledger_executor_gateway::providers::install_crypto_provider();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/runs/{run}");
    let caught_up = Instant::now();
    loop {
        let r = client
            .get(format!("{url}?min_version={head}"))
            .send()
            .await?;
        if r.status().is_success() {
            break;
        }
        if caught_up.elapsed() > Duration::from_secs(120) {
            return Err(format!("projection did not catch up: {}", r.status()).into());
        }
    }
    println!(
        "projected {head} events in {:.0} ms after the run ended",
        caught_up.elapsed().as_secs_f64() * 1000.0
    );

    // Warm-up, then the timed requests (one client, keep-alive, sequential).
    let mut size = 0;
    for _ in 0..20 {
        size = client.get(&url).send().await?.bytes().await?.len();
    }
    let mut http = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let body = client.get(&url).send().await?.bytes().await?;
        http.push(t.elapsed());
        assert_eq!(body.len(), size, "the same answer every time");
    }
    // Conditional requests with the ETag: 304, no body.
    let etag = client.get(&url).send().await?.headers()["etag"]
        .to_str()?
        .to_owned();
    let mut not_modified = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let r = client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await?;
        assert_eq!(r.status(), 304);
        r.bytes().await?;
        not_modified.push(t.elapsed());
    }
    // Every request encoded afresh (the first read after each change of the run).
    let cold_url = format!("http://{cold_addr}/v1/runs/{run}");
    let cold_requests = requests.min(200);
    let mut cold = Vec::with_capacity(cold_requests);
    for _ in 0..cold_requests {
        let t = Instant::now();
        let body = client.get(&cold_url).send().await?.bytes().await?;
        cold.push(t.elapsed());
        assert_eq!(body.len(), size);
    }
    let mut query = Vec::with_capacity(requests);
    let mut encode = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let detail = runledger_projections::query::run_detail(state.db(), run)
            .await?
            .ok_or("run missing")?;
        query.push(t.elapsed());
        let t = Instant::now();
        let bytes = serde_json::to_vec(&detail)?;
        encode.push(t.elapsed());
        assert!(!bytes.is_empty());
    }
    println!(
        "response: {size} bytes ({:.0} bytes per node run)",
        size as f64 / summary.node_runs as f64
    );
    report("GET /v1/runs/{id} (cached body)", http);
    report("GET with If-None-Match (304)", not_modified);
    report("GET /v1/runs/{id} (no cache)", cold);
    report("  query::run_detail alone", query);
    report("  JSON encoding alone", encode);

    server.abort();
    cold_server.abort();
    drop(state);
    drop(engine);
    ledger.drop_schema().await?;
    Ok(())
}
