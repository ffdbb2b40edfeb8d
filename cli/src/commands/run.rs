//! `runledger run FLOW`: validate, start, and with `--wait` follow the run to its end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::load;
use runledger_contracts::ids::{CorrelationId, RequestId, RunId};
use runledger_orchestrator::engine::{RunSummary, status_counts};
use runledger_orchestrator::{RunStatus, StartRun};
use serde_json::{Value, json};

use runledger_ledger::{EventStore, LedgerLocation, LedgerStore};

use super::engine::{Built, ExecArgs};
use crate::{Failure, GlobalArgs};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Flowchart file (.yaml, .yml or .json).
    flow: PathBuf,
    /// The run's inputs, a JSON value (`inputs` in conditions and prompts).
    #[arg(long, value_name = "JSON", default_value = "{}")]
    input: String,
    /// Follow the run to its end, printing node transitions; exit 0 only if it completes.
    #[arg(long)]
    wait: bool,
    /// Print one JSON object per line: each transition, then a summary.
    #[arg(long)]
    json: bool,
    /// Run id to use (a UUID); a repeated start with the same id and request id is a no-op.
    #[arg(long, value_name = "UUID")]
    run_id: Option<RunId>,
    /// Request id of the start (idempotency key); generated when absent.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Correlation id written on every event of the run; generated when absent.
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
    /// Who starts the run (recorded on RunStarted).
    #[arg(long, env = "USER", default_value = "cli", hide_env_values = true)]
    actor: String,
    /// Directory of flowcharts that `flowchart` (sub-flow) nodes name; default: FLOW's directory.
    #[arg(long, value_name = "DIR")]
    flowcharts: Option<PathBuf>,
    #[command(flatten)]
    exec: ExecArgs,
}

impl RunArgs {
    pub fn wants_json(&self) -> bool {
        self.json
    }
}

pub async fn run(global: &GlobalArgs, args: RunArgs) -> Result<(), Failure> {
    let (text, format) = super::validate::read_flowchart(&args.flow)?;
    let flowchart = load(&text, format).map_err(|errors| {
        if args.json {
            super::validate::print_json_errors(&errors);
        } else {
            super::validate::print_errors(&args.flow, &errors);
        }
        Failure::silent()
    })?;
    let inputs: Value = serde_json::from_str(&args.input)
        .map_err(|e| Failure::caused("--input: not JSON", e).with_code("invalid_argument"))?;
    let request_id = match &args.request_id {
        Some(id) => {
            RequestId::new(id.clone()).map_err(|e| Failure::usage(format!("--request-id: {e}")))?
        }
        None => RequestId::generate(),
    };
    let correlation_id = match &args.correlation_id {
        Some(id) => CorrelationId::new(id.clone())
            .map_err(|e| Failure::usage(format!("--correlation-id: {e}")))?,
        None => CorrelationId::generate(),
    };
    let dir = args.flowcharts.clone().or_else(|| {
        args.flow.parent().map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
    });
    let dispatch = args
        .exec
        .dispatch
        .unwrap_or(super::engine::Dispatch::Inprocess);
    let location = global.location()?;
    let start = Start {
        flowchart,
        inputs,
        request_id,
        correlation_id,
    };
    match &location {
        LedgerLocation::Postgres(_) => {
            let built =
                super::engine::build(global, &args.exec, dir, dispatch, super::engine::Role::Cli)
                    .await?;
            drive(built, args, start).await
        }
        LedgerLocation::Sqlite(path) => {
            if dispatch == super::engine::Dispatch::Nats {
                return Err(super::needs_postgres(&location, "`--dispatch nats`"));
            }
            let store = super::open(global).await?;
            let LedgerStore::Sqlite(store) = store else {
                return Err(Failure::new(
                    "the ledger URL named SQLite but opened another backend",
                ));
            };
            // Without --wait the run is only recorded, for `runledger dev` (or the next engine
            // on the file) to drive; with it this process is the file's engine.
            let role = if args.wait {
                super::engine::SqliteRole::Drives
            } else {
                super::engine::SqliteRole::RecordsOnly
            };
            let built =
                super::engine::build_sqlite(store, &args.exec, dir, &global.rag_data_dir, role)
                    .await?;
            if !args.json {
                errln!("runledger: ledger file {}", path.display());
            }
            if args.wait {
                take_left_behind(&built.engine, args.json);
            } else if !super::engine::engine_running(path) {
                errln!(
                    "runledger: no `runledger dev` runs on {}; the run waits until one starts (or the next `run --wait` on the file)",
                    path.display()
                );
            }
            drive(built, args, start).await
        }
    }
}

/// `run --wait` on a SQLite file is the file's one engine while it lives: it also drives the
/// runs a killed process left unfinished (or `run` recorded without driving), in the
/// background. What they have not finished when this run ends waits for the next engine.
fn take_left_behind(engine: &runledger_orchestrator::Engine<LedgerStore>, as_json: bool) {
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut refused = std::collections::HashSet::new();
        match super::engine::take_unfinished(&engine, &mut refused).await {
            Ok(0) => {}
            Ok(n) if !as_json => {
                errln!("runledger: resumed {n} unfinished run(s) left on the ledger file")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e.chain().join(": "), "cannot resume the unfinished runs")
            }
        }
    });
}

/// What `run` starts, read from its arguments.
struct Start {
    flowchart: runledger_contracts::flowchart::Flowchart,
    inputs: Value,
    request_id: RequestId,
    correlation_id: CorrelationId,
}

/// Starts the run on the built engine and, with `--wait`, follows it to its end.
async fn drive<S: EventStore + 'static>(
    mut built: Built<S>,
    args: RunArgs,
    start: Start,
) -> Result<(), Failure> {
    let Start {
        flowchart,
        inputs,
        request_id,
        correlation_id,
    } = start;
    let engine = built.engine.clone();
    let mut events = engine.subscribe();
    let run_id = args.run_id.unwrap_or_else(RunId::new_v7);
    let start = StartRun {
        run_id,
        flowchart: Arc::new(flowchart),
        version: None,
        inputs,
        parent: None,
        actor: args.actor.clone(),
    };
    let clock = Instant::now();
    if !args.wait {
        // Recorded only: whichever `serve` instance is free (or the `dev` on a SQLite file)
        // takes it from the run index.
        engine
            .start_detached(start, request_id, correlation_id)
            .await
            .map_err(|e| Failure::coded("cannot start the run", e))?;
        if args.json {
            outln!(
                "{}",
                json!({ "kind": "started", "run_id": run_id, "status": "running" })
            );
        } else {
            outln!(
                "run {run_id} started; `runledger serve` (or `runledger dev` on a SQLite file) drives it to the end"
            );
        }
        if let Some(leases) = &built.leases {
            match leases.store().live_instances().await {
                Ok(0) => errln!(
                    "runledger: no `runledger serve` is running on this ledger; run {run_id} waits until one starts"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether a serve instance is running")
                }
            }
        }
        built.shutdown().await?;
        return Ok(());
    }
    // Drive it here, under its lease (renewed until the run ends); a `serve` beside us leaves
    // it alone, and takes it over if this process dies.
    built.spawn_keeper().await?;
    engine
        .start(start, request_id, correlation_id)
        .await
        .map_err(|e| Failure::coded("cannot start the run", e))?;
    // From here the output follows a run: a reader that goes away has not seen it complete,
    // so the exit status says so (the run itself goes on under `runledger serve`).
    crate::output::set_broken_pipe_exit(1);
    if !args.json {
        outln!("run {run_id} started (flowchart {})", args.flow.display());
    }
    let printer = tokio::spawn({
        let as_json = args.json;
        async move {
            let mut last_version = 0;
            loop {
                match events.recv().await {
                    Ok(batch) if batch.run_id == run_id => {
                        for event in &batch.events {
                            if event.stream_version > last_version {
                                last_version = event.stream_version;
                                print_transition(event, as_json, clock);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        errln!(
                            "runledger: warning: {n} event batches were not printed (output too slow)"
                        );
                    }
                    Err(_) => return,
                }
            }
        }
    });
    let summary = engine
        .wait(run_id)
        .await
        .map_err(|e| Failure::coded(format!("run {run_id}"), e))?;
    built.shutdown().await?;
    // Let the printer drain what is already queued before the summary.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    printer.abort();
    let loaded = runledger_orchestrator::engine::load_run(engine.store(), run_id)
        .await
        .ok();
    print_summary(
        &summary,
        loaded.as_ref().map(|l| &l.state),
        args.json,
        clock,
    );
    match summary.status {
        RunStatus::Completed => Ok(()),
        _ => Err(Failure::silent()),
    }
}

/// One transition: which event, which node run, and a short detail. With `--json`, failures
/// also carry their error as fields (`error`: `code`, `message`, `retryable`, `details`) and
/// successes their `warnings`, so scripts need not parse `detail`.
fn print_transition(event: &RecordedEvent, as_json: bool, clock: Instant) {
    let Ok(decoded) = event.decode() else { return };
    let structured: Option<(&str, Value)> = match &decoded {
        DomainEvent::RunFailed(e) => Some(("error", json!(e.error))),
        DomainEvent::NodeFailed(e) => Some(("error", json!(e.error))),
        DomainEvent::NodeSucceeded(e) if !e.warnings.is_empty() => {
            Some(("warnings", json!(e.warnings)))
        }
        _ => None,
    };
    let (node_id, node_run_id, attempt, detail): (
        Option<&str>,
        Option<String>,
        Option<u32>,
        String,
    ) = match &decoded {
        DomainEvent::ToolCalled(_) | DomainEvent::ArtifactPersisted(_) => return,
        // Not events of a run stream (flowchart registry, API idempotency keys).
        DomainEvent::FlowchartVersionCreated(_) | DomainEvent::IdempotencyKeyRecorded(_) => return,
        DomainEvent::ModelCreated(_)
        | DomainEvent::ModelUpdated(_)
        | DomainEvent::ModelDeleted(_)
        | DomainEvent::RagCollectionCreated(_)
        | DomainEvent::RagCollectionDeleted(_)
        | DomainEvent::RagIndexStarted(_)
        | DomainEvent::RagIndexCompleted(_)
        | DomainEvent::RagIndexFailed(_) => return,
        // Tool state events live in the tools' own streams (memory, plans, milestones).
        DomainEvent::MemoryEntryCreated(_)
        | DomainEvent::MemoryEntryUpdated(_)
        | DomainEvent::MemoryEntryDeleted(_)
        | DomainEvent::PlanCreated(_)
        | DomainEvent::PlanUpdated(_)
        | DomainEvent::PlanDeleted(_)
        | DomainEvent::PlanStagesReordered(_)
        | DomainEvent::PlanStageStatusSet(_)
        | DomainEvent::MilestoneCreated(_)
        | DomainEvent::MilestoneUpdated(_)
        | DomainEvent::MilestoneDeleted(_)
        | DomainEvent::MilestoneStatusSet(_)
        | DomainEvent::MilestoneEvidenceAttached(_)
        | DomainEvent::DecisionCreated(_)
        | DomainEvent::DecisionOptionsScored(_)
        | DomainEvent::DecisionOutcomeRecorded(_) => return,
        DomainEvent::RunStarted(e) => (None, None, None, format!("flowchart {}", e.flowchart.name)),
        DomainEvent::RunCompleted(e) => (None, None, None, format!("{} node runs", e.node_runs)),
        DomainEvent::RunFailed(e) => (
            e.node_id.as_deref(),
            e.node_run_id.map(|i| i.to_string()),
            None,
            format!("{}: {}", e.error.code, e.error.message),
        ),
        DomainEvent::RunPaused(e) => (
            None,
            None,
            None,
            format!("by {}: {}", e.control.actor, e.control.reason),
        ),
        DomainEvent::RunResumed(e) => (
            None,
            None,
            None,
            format!("by {}: {}", e.control.actor, e.control.reason),
        ),
        DomainEvent::RunCancelRequested(e) => (
            None,
            None,
            None,
            format!("by {} (force: {})", e.control.actor, e.force),
        ),
        DomainEvent::RunCanceled(e) => (None, None, None, format!("forced: {}", e.forced)),
        DomainEvent::RunTakenOver(e) => (
            None,
            None,
            None,
            format!("by {} (lease epoch {})", e.instance_id, e.epoch),
        ),
        DomainEvent::RunForked(e) => (
            Some(&e.from_node),
            None,
            None,
            format!(
                "forked from run {} at version {}",
                e.source.run_id, e.source.stream_version
            ),
        ),
        DomainEvent::RunForkedTo(e) => (
            Some(&e.from_node),
            None,
            None,
            format!("forked to run {}", e.fork_run_id),
        ),
        DomainEvent::ChildRunStarted(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            None,
            format!("child run {}", e.child_run_id),
        ),
        DomainEvent::NodeScheduled(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.attempt),
            format!("execution {}", e.execution_index),
        ),
        DomainEvent::NodeDispatched(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.attempt),
            e.executor_class.clone(),
        ),
        DomainEvent::NodeStarted(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.attempt),
            e.executor.clone(),
        ),
        DomainEvent::NodeSucceeded(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.attempt),
            String::new(),
        ),
        DomainEvent::NodeFailed(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.attempt),
            format!("{}: {}", e.error.code, e.error.message),
        ),
        DomainEvent::NodeTimedOut(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.attempt),
            format!("after {} ms", e.timeout_ms),
        ),
        DomainEvent::NodeRetryScheduled(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.next_attempt),
            format!("attempt {} in {} ms", e.next_attempt, e.backoff_ms),
        ),
        DomainEvent::NodeSkipped(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            None,
            format!("by {}", e.control.actor),
        ),
        DomainEvent::NodeCanceled(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.attempt),
            e.reason.clone(),
        ),
        DomainEvent::NodeRewound(e) => (
            Some(&e.node_id),
            None,
            None,
            format!("{} node runs invalidated", e.invalidated_node_run_ids.len()),
        ),
        DomainEvent::NodeResultIgnored(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            Some(e.attempt),
            e.reason.clone(),
        ),
        DomainEvent::RoutingDecided(e) => (
            Some(&e.node_id),
            Some(e.node_run_id.to_string()),
            None,
            format!(
                "-> [{}]{}",
                e.matched_connectors.join(", "),
                if e.fallback_connector.is_some() {
                    " (fallback)"
                } else {
                    ""
                }
            ),
        ),
    };
    let event_type = event.event_type.as_str();
    if as_json {
        let mut line = json!({
            "kind": "transition",
            "event": event_type,
            "version": event.stream_version,
            "recorded_at": event.recorded_at,
            "node_id": node_id,
            "node_run_id": node_run_id,
            "attempt": attempt,
            "detail": detail,
        });
        if let Some((key, value)) = structured {
            line[key] = value;
        }
        outln!("{line}");
    } else {
        let at = clock.elapsed().as_secs_f64();
        let who = match (node_id, attempt) {
            (Some(node), Some(a)) => format!("{node}#{a} "),
            (Some(node), None) => format!("{node} "),
            _ => String::new(),
        };
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!("  {detail}")
        };
        outln!("  [{at:>8.3}s] {who}{event_type}{detail}");
    }
}

fn print_summary(
    summary: &RunSummary,
    state: Option<&runledger_orchestrator::RunState>,
    as_json: bool,
    clock: Instant,
) {
    let counts = state.map(status_counts).unwrap_or_default();
    let elapsed_ms = clock.elapsed().as_millis() as u64;
    if as_json {
        let line = json!({
            "kind": "summary",
            "run_id": summary.run_id,
            "status": summary.status.as_str(),
            "node_runs": summary.node_runs,
            "node_run_statuses": counts,
            "output": summary.output,
            "error": summary.error,
            "duration_ms": elapsed_ms,
        });
        outln!("{line}");
    } else {
        let mut counts: Vec<_> = counts
            .into_iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        counts.sort();
        outln!(
            "run {} {}: {} node runs ({}) in {:.3}s",
            summary.run_id,
            summary.status.as_str(),
            summary.node_runs,
            counts.join(", "),
            elapsed_ms as f64 / 1000.0
        );
        if let Some(error) = &summary.error {
            outln!("  error: {} [{}]", error.message, error.code);
        }
    }
}
