//! Projection benchmark (not a test): what the read side costs on a real PostgreSQL.
//!
//! Scenarios (see docs/benchmarks.md, "Projections"):
//! - `run-detail-1000`: one run of start -> 998 chained task nodes -> end (1,000 node runs)
//!   through the engine (in-process executor, `scripted` model), projected; then `run_detail`
//!   plus its JSON body, as the HTTP API builds it, timed many times.
//! - `catch-up` / `rebuild`: a ledger of synthetic runs written through the ledger's own append
//!   (start -> N tasks -> decision -> end, the events the engine writes: schedulings, starts,
//!   tool calls, successes, artifacts, routing), then each projector caught up from zero, then
//!   rebuilt from zero (truncate + replay). Reports events/s per projector.
//! - `artifacts-1m`: 1,000,000 `ArtifactPersisted` events bulk-inserted into the events table
//!   with SQL (1,000 runs x 1,000 artifacts, a mix of node and artifact types), projected by
//!   the artifact_history projector, then `list_artifacts` with each filter, first and second
//!   pages, timed.
//!
//! Run: `cargo bench -p runledger-projections --bench projections`. `RUNLEDGER_BENCH_SCALE`
//! (default 1.0) scales the synthetic ledger and the artifact count; `RUNLEDGER_BENCH_ONLY`
//! (`run-detail`, `catch-up` or `artifacts`) runs one scenario. Uses
//! `RUNLEDGER_TEST_DATABASE_URL` (default: the local `runledger_test` database), one schema per
//! scenario, dropped afterwards.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::events::{
    ArtifactPersisted, ConditionEvaluation, ConditionOutcome, ConsumedToken, DomainEvent,
    FlowchartRef, NodeRunStatus, NodeScheduled, NodeStarted, NodeSucceeded, ProviderCall,
    RoutingDecided, RunCompleted, RunStarted, ToolAttempt, ToolCalled, ToolOutcome,
};
use runledger_contracts::flowchart::{Flowchart, NodeType, SourceFormat, load};
use runledger_contracts::ids::{ArtifactId, CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_contracts::time::Timestamp;
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion, PgEventStore};
use runledger_orchestrator::StartRun;
use runledger_orchestrator::engine::{Engine, EngineConfig, NoFlowcharts};
use runledger_orchestrator::executor::{InProcessPool, Providers};
use runledger_orchestrator::provider::ScriptedProvider;
use runledger_projections::Projections;
use runledger_projections::claims::query::claims;
use runledger_projections::query::{ArtifactFilter, ClaimStatus, list_artifacts, run_detail};
use serde_json::{Value, json};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn scale() -> f64 {
    std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: f64) -> usize {
    ((n * scale()).round() as usize).max(1)
}

/// p50, p95, p99 and max of durations, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.95), at(0.99), at(1.0))
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!("# projections benchmark (scale {})", scale());
        let only = std::env::var("RUNLEDGER_BENCH_ONLY").ok();
        let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
        if runs("run-detail") {
            run_detail_1000().await?;
        }
        if runs("catch-up") {
            catch_up_and_rebuild().await?;
        }
        if runs("artifacts") {
            artifacts_1m().await?;
        }
        Ok(())
    })
}

// ---- run-detail-1000 -----------------------------------------------------------------------

fn linear(tasks: usize) -> BenchResult<Arc<Flowchart>> {
    let mut text =
        format!("name: bench-linear-{tasks}\nnodes:\n  - {{ id: start, type: start }}\n");
    for i in 1..=tasks {
        writeln!(
            text,
            "  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ ok: true, i: {i} }} }}] }}"
        )?;
    }
    text.push_str("  - { id: end, type: end }\nconnectors:\n");
    let mut from = "start".to_owned();
    for i in 1..=tasks {
        writeln!(text, "  - {{ id: c{i}, from: {from}, to: t{i} }}")?;
        from = format!("t{i}");
    }
    writeln!(text, "  - {{ id: c_end, from: {from}, to: end }}")?;
    load(&text, SourceFormat::Yaml)
        .map(Arc::new)
        .map_err(|e| format!("bench flowchart: {e:?}").into())
}

async fn run_detail_1000() -> BenchResult<()> {
    let ledger = TestLedger::new().await?;
    let store = ledger.second_store().await?;
    let executor = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 256);
    let engine = Engine::new(
        store,
        Arc::new(executor),
        Arc::new(NoFlowcharts),
        EngineConfig::default(),
    );
    let started = Instant::now();
    let start = StartRun {
        run_id: RunId::new_v7(),
        flowchart: linear(998)?,
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "bench".into(),
    };
    let run = engine
        .start(start, RequestId::generate(), CorrelationId::generate())
        .await?;
    let summary = engine.wait(run).await?;
    let engine_ms = started.elapsed().as_secs_f64() * 1000.0;
    let pool = ledger.store.pool().clone();
    let projections = Projections::new(pool.clone());
    let started = Instant::now();
    let reports = projections.catch_up().await?;
    let catch_up = started.elapsed();
    let detail = run_detail(&pool, run)
        .await?
        .ok_or("the run is not projected")?;
    let body = serde_json::to_vec(&detail)?;
    println!(
        "\n## run-detail-1000\nrun {}: {} node runs, {} timeline entries, JSON body {} bytes; engine {:.0} ms; catch-up of {} events x 3 projectors {:.0} ms",
        summary.status.as_str(),
        detail.node_runs.len(),
        detail.timeline.len(),
        body.len(),
        engine_ms,
        reports.first().map_or(0, |r| r.applied),
        catch_up.as_secs_f64() * 1000.0
    );
    for _ in 0..20 {
        let d = run_detail(&pool, run).await?.ok_or("gone")?;
        serde_json::to_vec(&d)?;
    }
    let mut query_only = Vec::new();
    let mut with_body = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let d = run_detail(&pool, run).await?.ok_or("gone")?;
        query_only.push(t.elapsed());
        let bytes = serde_json::to_vec(&d)?;
        with_body.push(t.elapsed());
        std::hint::black_box(bytes);
    }
    for (what, samples) in [
        ("run_detail", &mut query_only),
        ("run_detail + JSON body", &mut with_body),
    ] {
        let (p50, p95, p99, max) = percentiles(samples);
        println!("| {what} | 500 | {p50:.2} | {p95:.2} | {p99:.2} | {max:.2} |");
    }
    drop(engine);
    ledger.drop_schema().await?;
    Ok(())
}

// ---- catch-up and rebuild --------------------------------------------------------------------

/// Writes the events the engine writes for a chain start -> t1..tN -> gate -> end.
struct Synthetic {
    run: RunId,
    events: Vec<DomainEvent>,
}

fn digest(value: &Value) -> BenchResult<Digest> {
    Ok(Digest::of(&canonical::to_canonical_vec(value)?))
}

fn chain_flowchart(tasks: usize) -> BenchResult<Arc<Flowchart>> {
    let mut text = format!("name: bench-chain-{tasks}\nnodes:\n  - {{ id: start, type: start }}\n");
    for i in 1..=tasks {
        writeln!(
            text,
            "  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ score: 9 }} }}] }}"
        )?;
    }
    text.push_str("  - id: gate\n    type: decision\n    conditions: [{ connector: approve, when: 'latest_upstream.output.score >= 8' }]\n");
    text.push_str("  - { id: end, type: end }\nconnectors:\n");
    let mut from = "start".to_owned();
    for i in 1..=tasks {
        writeln!(text, "  - {{ id: c{i}, from: {from}, to: t{i} }}")?;
        from = format!("t{i}");
    }
    writeln!(
        text,
        "  - {{ id: c_gate, from: {from}, to: gate }}\n  - {{ id: approve, from: gate, to: end }}"
    )?;
    load(&text, SourceFormat::Yaml)
        .map(Arc::new)
        .map_err(|e| format!("bench flowchart: {e:?}").into())
}

fn synthetic_run(
    flowchart: &Flowchart,
    tasks: usize,
    request: &RequestId,
    correlation: &CorrelationId,
) -> BenchResult<Synthetic> {
    let run = RunId::new_v7();
    let definition = serde_json::to_value(flowchart.doc())?;
    let mut events: Vec<DomainEvent> = vec![
        RunStarted {
            run_id: run,
            flowchart: FlowchartRef {
                name: flowchart.name().to_owned(),
                version: Some(1),
                definition_hash: digest(&definition)?,
            },
            definition,
            inputs: json!({ "topic": "bench" }),
            parent: None,
            deadline: None,
            actor: "bench".into(),
        }
        .into(),
    ];
    let mut previous: Option<(String, NodeRunId)> = None;
    let ids: Vec<String> = std::iter::once("start".to_owned())
        .chain((1..=tasks).map(|i| format!("t{i}")))
        .chain(["gate".to_owned(), "end".to_owned()])
        .collect();
    for (k, node) in ids.iter().enumerate() {
        let node_type = match node.as_str() {
            "start" => NodeType::Start,
            "end" => NodeType::End,
            "gate" => NodeType::Decision,
            _ => NodeType::Task,
        };
        let id = NodeRunId::new_v7();
        let connector = match (node.as_str(), k) {
            ("gate", _) => "c_gate".to_owned(),
            ("end", _) => "approve".to_owned(),
            (_, k) => format!("c{k}"),
        };
        let consumed_tokens = previous
            .as_ref()
            .map(|(_, from)| {
                vec![ConsumedToken {
                    connector_id: connector,
                    from_node_run_id: *from,
                }]
            })
            .unwrap_or_default();
        events.push(
            NodeScheduled {
                run_id: run,
                node_id: node.clone(),
                node_run_id: id,
                node_type,
                attempt: 1,
                execution_index: 0,
                input_context_hash: Digest::of(node.as_bytes()),
                consumed_tokens,
                retry_of: None,
            }
            .into(),
        );
        let output = json!({ "score": 9, "text": format!("output of {node}") });
        let (artifact_type, payload) = if node_type == NodeType::Decision {
            let routing = RoutingDecided {
                run_id: run,
                node_id: node.clone(),
                node_run_id: id,
                evaluations: vec![ConditionEvaluation {
                    connector_id: "approve".into(),
                    condition: "latest_upstream.output.score >= 8".into(),
                    outcome: ConditionOutcome::Matched,
                    reason: "latest_upstream.output.score (9) >= 8 is true".into(),
                }],
                route_key: None,
                route_key_matched: false,
                matched_connectors: vec!["approve".into()],
                no_match: false,
                fallback_connector: None,
            };
            let mut payload = serde_json::to_value(&routing)?;
            if let Value::Object(m) = &mut payload {
                m.insert("output".into(), output.clone());
            }
            events.push(routing.into());
            ("routing", payload)
        } else {
            if node_type == NodeType::Task {
                events.push(
                    NodeStarted {
                        run_id: run,
                        node_id: node.clone(),
                        node_run_id: id,
                        attempt: 1,
                        executor: "inprocess".into(),
                        deadline: None,
                    }
                    .into(),
                );
                events.push(
                    ToolCalled {
                        run_id: run,
                        node_id: node.clone(),
                        node_run_id: id,
                        tool: "provider".into(),
                        operation: "generate".into(),
                        idempotency_key: format!("{id}:provider:1"),
                        input_hash: Digest::of(node.as_bytes()),
                        outcome: ToolOutcome::Ok,
                        attempts: vec![ToolAttempt {
                            attempt: 1,
                            started_at: Timestamp::now(),
                            duration_ms: 3,
                            error: None,
                        }],
                        duration_ms: 3,
                        provider: Some(ProviderCall {
                            provider: "scripted".into(),
                            model: "scripted".into(),
                            latency_ms: 3,
                            input_tokens: Some(120),
                            output_tokens: Some(40),
                        }),
                        output: Some(output.clone()),
                        error: None,
                        agent: None,
                    }
                    .into(),
                );
            }
            let kind = match node_type {
                NodeType::Start => "run_input",
                NodeType::End => "run_output",
                _ => "task_output",
            };
            (
                kind,
                json!({ "output": output, "warnings": [], "fallback_used": false }),
            )
        };
        events.push(
            NodeSucceeded {
                run_id: run,
                node_id: node.clone(),
                node_run_id: id,
                attempt: 1,
                output,
                warnings: vec![],
                fallback_used: false,
            }
            .into(),
        );
        events.push(
            ArtifactPersisted {
                run_id: run,
                node_id: node.clone(),
                node_run_id: id,
                node_type,
                artifact_id: ArtifactId::new_v7(),
                artifact_type: artifact_type.into(),
                contract_version: 1,
                status: NodeRunStatus::Succeeded,
                content_hash: digest(&payload)?,
                payload,
                content: None,
                idempotency_key: format!("{id}:artifact"),
                request_id: request.clone(),
                correlation_id: correlation.clone(),
            }
            .into(),
        );
        previous = Some((node.clone(), id));
    }
    events.push(
        RunCompleted {
            run_id: run,
            node_runs: ids.len() as u32,
            output: Some(json!({ "score": 9 })),
        }
        .into(),
    );
    Ok(Synthetic { run, events })
}

/// Appends a synthetic run node by node, one append per node run (as the engine's steps do;
/// an artifact always travels with its node run's end), all under one request id per append.
async fn write_run(
    store: &PgEventStore,
    flowchart: &Flowchart,
    tasks: usize,
) -> BenchResult<usize> {
    let stream_request = RequestId::generate();
    let correlation = CorrelationId::generate();
    let synthetic = synthetic_run(flowchart, tasks, &stream_request, &correlation)?;
    let stream = StreamId::for_run(synthetic.run);
    let total = synthetic.events.len();
    let mut version = 0u64;
    let mut chunk: Vec<NewEvent> = Vec::new();
    let flush = |chunk: &mut Vec<NewEvent>| -> Option<Vec<NewEvent>> {
        (!chunk.is_empty()).then(|| std::mem::take(chunk))
    };
    let mut appends: Vec<Vec<NewEvent>> = Vec::new();
    for event in &synthetic.events {
        chunk.push(NewEvent::from_domain(event)?);
        if matches!(
            event,
            DomainEvent::ArtifactPersisted(_) | DomainEvent::RunStarted(_)
        ) {
            appends.extend(flush(&mut chunk));
        }
    }
    appends.extend(flush(&mut chunk));
    for (i, events) in appends.into_iter().enumerate() {
        // Each append has its own request id; the artifacts in it name that id, as the
        // engine's do.
        let has_artifact = events.iter().any(|e| e.event_type == "ArtifactPersisted");
        let request = if has_artifact {
            RequestId::new(format!("{}-{i}", stream_request))?
        } else {
            RequestId::new(format!("{}-s{i}", stream_request))?
        };
        let n = events.len() as u64;
        let events = if has_artifact {
            retarget_artifacts(events, &request)?
        } else {
            events
        };
        let append = AppendRequest::new(request, correlation.clone(), events);
        store
            .append(&stream, ExpectedVersion::Exact(version), append)
            .await?;
        version += n;
    }
    Ok(total)
}

/// Points each artifact's `request_id` at the append that records it.
fn retarget_artifacts(events: Vec<NewEvent>, request: &RequestId) -> BenchResult<Vec<NewEvent>> {
    events
        .into_iter()
        .map(|mut e| {
            if e.event_type == "ArtifactPersisted"
                && let Value::Object(m) = &mut e.payload
            {
                m.insert("request_id".into(), Value::String(request.to_string()));
            }
            Ok(e)
        })
        .collect()
}

async fn catch_up_and_rebuild() -> BenchResult<()> {
    let ledger = TestLedger::new().await?;
    let runs = scaled(2_000.0);
    let tasks = 25;
    let flowchart = chain_flowchart(tasks)?;
    let started = Instant::now();
    let mut written = 0usize;
    let writers = 8;
    let mut handles = Vec::new();
    for w in 0..writers {
        let store = ledger.second_store().await?;
        let flowchart = flowchart.clone();
        let mine = runs / writers + usize::from(w < runs % writers);
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..mine {
                n += write_run(&store, &flowchart, tasks)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<usize, String>(n)
        }));
    }
    for h in handles {
        written += h
            .await?
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
    }
    println!(
        "\n## catch-up / rebuild\nledger: {runs} runs x {} node runs = {written} events, written in {:.1} s",
        tasks + 3,
        started.elapsed().as_secs_f64()
    );
    let pool = ledger.store.pool().clone();
    sqlx::query("ANALYZE events").execute(&pool).await?;
    println!("| projector | pass | events | seconds | events/s |\n|---|---|---:|---:|---:|");
    for pass in ["catch-up from zero", "rebuild", "rebuild"] {
        let mut total = Duration::ZERO;
        for name in runledger_projections::PROJECTOR_NAMES {
            let projections = Projections::select(pool.clone(), Some(name))?;
            let reports = if pass == "catch-up from zero" {
                projections.catch_up().await?
            } else {
                projections.rebuild(&mut |_| {}).await?
            };
            for r in reports {
                total += r.elapsed;
                println!(
                    "| {} | {pass} | {} | {:.2} | {:.0} |",
                    r.projector,
                    r.applied,
                    r.elapsed.as_secs_f64(),
                    r.events_per_second()
                );
            }
        }
        println!(
            "| all three, one after the other | {pass} | {} | {:.2} | {:.0} (ledger events per second of the three) |",
            written,
            total.as_secs_f64(),
            written as f64 / total.as_secs_f64()
        );
    }
    let results = claims(&pool, None).await?;
    let failing: Vec<&str> = results
        .iter()
        .filter(|c| c.status == ClaimStatus::Fail)
        .map(|c| c.id.as_str())
        .collect();
    println!(
        "claims over the synthetic ledger: {} fail {failing:?}",
        failing.len()
    );
    ledger.drop_schema().await?;
    Ok(())
}

// ---- artifacts-1m ----------------------------------------------------------------------------

/// 10 runs x `per_run` artifacts per statement. The mix: every 20th a decision's `routing`,
/// every 20th (+1) a task's `failure`, one `run_input` and one `run_output` per 20, the rest
/// `task_output`; node ids `n0`..`n49`. Artifact and node run ids are time-ordered like the
/// engine's UUIDv7 (a sequence in the first 48 bits), so index inserts land where real ones do.
const BULK_ARTIFACTS: &str = "
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, request_id,
                    correlation_id, recorded_at, payload, prev_hash, hash)
SELECT gen_random_uuid(), 'run-' || r.run_id, g.v, 'ArtifactPersisted', 1, 'bench-' || r.run_id, 'bench',
       now(),
       jsonb_build_object(
           'run_id', r.run_id, 'node_id', 'n' || (g.v % 50),
           'node_run_id', (lpad(to_hex($3::bigint + r.i * $2 + g.v), 12, '0') || substr(md5('nr' || r.run_id || g.v), 1, 20))::uuid,
           'node_type', CASE g.v % 20 WHEN 0 THEN 'decision' WHEN 2 THEN 'start' WHEN 3 THEN 'end' ELSE 'task' END,
           'artifact_id', (lpad(to_hex($3::bigint + r.i * $2 + g.v), 12, '0') || substr(md5('a' || r.run_id || g.v), 1, 20))::uuid,
           'artifact_type', CASE g.v % 20 WHEN 0 THEN 'routing' WHEN 1 THEN 'failure' WHEN 2 THEN 'run_input'
                                          WHEN 3 THEN 'run_output' ELSE 'task_output' END,
           'contract_version', 1,
           'status', CASE g.v % 20 WHEN 1 THEN 'failed' ELSE 'succeeded' END,
           'payload', jsonb_build_object('output', jsonb_build_object('i', g.v, 'text', 'artifact ' || g.v),
                                         'warnings', '[]'::jsonb, 'fallback_used', false),
           'content_hash', encode(sha256(g.v::text::bytea), 'hex'),
           'idempotency_key', 'bench-' || g.v || ':artifact',
           'request_id', 'bench-' || r.run_id, 'correlation_id', 'bench'),
       '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,
       sha256((r.run_id::text || g.v)::bytea)
  FROM unnest($1::uuid[]) WITH ORDINALITY AS r(run_id, i), generate_series(1, $2::int) AS g(v)";

async fn artifacts_1m() -> BenchResult<()> {
    let ledger = TestLedger::new().await?;
    let pool = ledger.store.pool().clone();
    let per_run = 1_000usize;
    let runs_total = scaled(1_000.0);
    let started = Instant::now();
    let mut runs = Vec::with_capacity(runs_total);
    for chunk in 0..runs_total.div_ceil(10) {
        let ids: Vec<uuid::Uuid> = (0..10.min(runs_total - chunk * 10))
            .map(|_| uuid::Uuid::now_v7())
            .collect();
        let offset = (chunk * 10 * per_run) as i64;
        sqlx::query(BULK_ARTIFACTS)
            .bind(&ids)
            .bind(per_run as i32)
            .bind(offset)
            .execute(&pool)
            .await?;
        runs.extend(ids);
    }
    let total = runs.len() * per_run;
    println!(
        "\n## artifacts-1m\n{total} ArtifactPersisted events bulk-inserted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let projections = Projections::select(pool.clone(), Some("artifact_history"))?;
    let reports = projections.catch_up().await?;
    for r in &reports {
        println!(
            "artifact_history catch-up: {} events in {:.1} s = {:.0} events/s",
            r.applied,
            r.elapsed.as_secs_f64(),
            r.events_per_second()
        );
    }
    sqlx::query("ANALYZE artifact_history")
        .execute(&pool)
        .await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('artifact_history'))")
            .fetch_one(&pool)
            .await?;
    println!("artifact_history: {size} with indexes");

    let runs = Arc::new(runs);
    let pick = {
        let runs = runs.clone();
        move |i: usize| runs[(i * 7919) % runs.len()]
    };
    let types = [
        "task_output",
        "failure",
        "routing",
        "run_input",
        "run_output",
    ];
    let node_types = [
        NodeType::Task,
        NodeType::Decision,
        NodeType::Start,
        NodeType::End,
    ];
    let mut sample_node_runs = Vec::new();
    for i in 0..50 {
        let id: uuid::Uuid = sqlx::query_scalar(
            "SELECT node_run_id FROM artifact_history WHERE run_id = $1 LIMIT 1",
        )
        .bind(pick(i))
        .fetch_one(&pool)
        .await?;
        sample_node_runs.push(runledger_contracts::ids::NodeRunId(id));
    }
    let pick2 = pick.clone();
    type Filter = Box<dyn Fn(usize) -> ArtifactFilter>;
    let filters: Vec<(&str, Filter)> = vec![
        ("no filter", Box::new(|_| ArtifactFilter::default())),
        (
            "run",
            Box::new(move |i| ArtifactFilter {
                run_id: Some(RunId(pick(i))),
                ..ArtifactFilter::default()
            }),
        ),
        (
            "node run",
            Box::new(move |i| ArtifactFilter {
                node_run_id: Some(sample_node_runs[i % 50]),
                ..ArtifactFilter::default()
            }),
        ),
        (
            "node id",
            Box::new(|i| ArtifactFilter {
                node_id: Some(format!("n{}", i % 50)),
                ..ArtifactFilter::default()
            }),
        ),
        (
            "node type",
            Box::new(move |i| ArtifactFilter {
                node_type: Some(node_types[i % 4]),
                ..ArtifactFilter::default()
            }),
        ),
        (
            "artifact type",
            Box::new(move |i| ArtifactFilter {
                artifact_type: Some(types[i % 5].into()),
                ..ArtifactFilter::default()
            }),
        ),
        (
            "run + artifact type",
            Box::new(move |i| ArtifactFilter {
                run_id: Some(RunId(pick2(i))),
                artifact_type: Some(types[i % 5].into()),
                ..ArtifactFilter::default()
            }),
        ),
        (
            "node type + artifact type",
            Box::new(move |i| ArtifactFilter {
                node_type: Some(NodeType::Task),
                artifact_type: Some(["task_output", "failure"][i % 2].into()),
                ..ArtifactFilter::default()
            }),
        ),
        (
            "node id + node type + artifact type",
            Box::new(move |i| ArtifactFilter {
                node_id: Some(format!("n{}", i % 50)),
                node_type: Some(NodeType::Task),
                artifact_type: Some("task_output".into()),
                ..ArtifactFilter::default()
            }),
        ),
    ];
    println!(
        "| filter | page | queries | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|"
    );
    let mut all = Vec::new();
    for (name, filter) in &filters {
        for _ in 0..10 {
            list_artifacts(&pool, &filter(0)).await?;
        }
        let mut first = Vec::new();
        let mut second = Vec::new();
        for i in 0..300 {
            let mut f = filter(i);
            f.limit = Some(50);
            let t = Instant::now();
            let page = list_artifacts(&pool, &f).await?;
            first.push(t.elapsed());
            if let Some(cursor) = page.next_cursor {
                f.cursor = Some(cursor);
                let t = Instant::now();
                list_artifacts(&pool, &f).await?;
                second.push(t.elapsed());
            }
        }
        for (page, samples) in [("first", &mut first), ("second", &mut second)] {
            if samples.is_empty() {
                continue;
            }
            all.extend(samples.iter().copied());
            let n = samples.len();
            let (p50, p95, p99, max) = percentiles(samples);
            println!("| {name} | {page} | {n} | {p50:.2} | {p95:.2} | {p99:.2} | {max:.2} |");
        }
    }
    let n = all.len();
    let (p50, p95, p99, max) = percentiles(&mut all);
    println!("| every filter and page | | {n} | {p50:.2} | {p95:.2} | {p99:.2} | {max:.2} |");
    ledger.drop_schema().await?;
    Ok(())
}
