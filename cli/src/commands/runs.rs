//! `runledger runs ...`: operator controls and a run's current state, straight on the ledger.
//! A running engine (`serve`, `run --wait`) picks the controls up on its next poll.

use clap::{Args, Subcommand, ValueEnum};
use runledger_contracts::events::Control;
use runledger_contracts::ids::{RequestId, RunId};
use runledger_orchestrator::ControlAction;
use runledger_orchestrator::engine::{
    ControlOutcome, EngineError, apply_control, load_run, status_counts,
};
use runledger_orchestrator::fork::ForkRequest;
use runledger_orchestrator::state::Phase;
use serde_json::{Value, json};

use crate::{Failure, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Pause, resume or cancel a run.
    Control(ControlArgs),
    /// Retry, skip or rewind one node of a run.
    Node(NodeArgs),
    /// Start a new run from a node of a finished run: the source's results upstream of the node
    /// are kept, the node and everything downstream of it run again (`serve` drives the fork).
    /// The source is unchanged but for a link to the fork.
    Fork(ForkArgs),
    /// Show a run's status and its node runs (execution index, attempt, status, output or
    /// error, warnings), rebuilt from the run's stream; a broken stream is reported, not shown.
    Show {
        /// The run's id (a UUID).
        run: RunId,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RunAction {
    /// Nothing new is scheduled; running node runs finish.
    Pause,
    /// A paused run schedules again.
    Resume,
    /// Running node runs finish, then the run is canceled (`--force`: cancel them now).
    Cancel,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NodeAction {
    /// Re-run a failed or timed-out node with its recorded inputs.
    Retry,
    /// End the node's running or failed node run with `--output`; downstream continues.
    Skip,
    /// Re-run the node and everything downstream of it; upstream results are kept.
    Rewind,
}

/// Who acts, why, and the request id that makes the control idempotent.
#[derive(Debug, Args)]
pub struct ControlMeta {
    /// Why (recorded on the control event).
    #[arg(long, default_value = "operator request")]
    reason: String,
    /// Who (recorded on the control event).
    #[arg(long, env = "USER", default_value = "cli", hide_env_values = true)]
    actor: String,
    /// Idempotency key: the same request id applies the control once. Generated when absent.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The run's id (a UUID).
    run: RunId,
    /// What to do with the run.
    #[arg(value_enum)]
    action: RunAction,
    /// With `cancel`: cancel running node runs now; their late results are recorded as ignored.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    meta: ControlMeta,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The run's id (a UUID).
    run: RunId,
    /// Node id in the run's flowchart.
    node: String,
    /// What to do with the node.
    #[arg(value_enum)]
    action: NodeAction,
    /// With `skip`: the output (JSON) that downstream nodes see.
    #[arg(long, value_name = "JSON", required_if_eq("action", "skip"))]
    output: Option<String>,
    #[command(flatten)]
    meta: ControlMeta,
}

#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The source run's id (a UUID): a completed, failed or canceled run.
    run: RunId,
    /// The node to run again, with everything downstream of it.
    #[arg(long = "from", value_name = "NODE")]
    from: String,
    /// An output (JSON) for NODE instead of running it, as `skip` takes one.
    #[arg(long, value_name = "JSON")]
    output: Option<String>,
    #[command(flatten)]
    meta: ControlMeta,
}

impl RunsCommand {
    pub fn wants_json(&self) -> bool {
        match self {
            RunsCommand::Fork(args) => args.meta.json,
            RunsCommand::Control(args) => args.meta.json,
            RunsCommand::Node(args) => args.meta.json,
            RunsCommand::Show { json, .. } => *json,
        }
    }
}

/// Longest output, error or warning shown per node run by `runs show` without `--json`
/// (characters).
const OUTPUT_WIDTH: usize = 120;

pub async fn run(global: &GlobalArgs, command: RunsCommand) -> Result<(), Failure> {
    match command {
        RunsCommand::Control(args) => {
            if args.force && !matches!(args.action, RunAction::Cancel) {
                return Err(Failure::usage("--force only goes with `cancel`"));
            }
            let action = match args.action {
                RunAction::Pause => ControlAction::Pause,
                RunAction::Resume => ControlAction::Resume,
                RunAction::Cancel => ControlAction::Cancel { force: args.force },
            };
            control(global, args.run, action, args.meta).await
        }
        RunsCommand::Node(args) => {
            let action = match args.action {
                NodeAction::Retry => ControlAction::RetryNode { node: args.node },
                NodeAction::Rewind => ControlAction::RewindNode { node: args.node },
                NodeAction::Skip => {
                    let text = args.output.clone().unwrap_or_default();
                    let output: Value = serde_json::from_str(&text).map_err(|e| {
                        Failure::caused("--output: not JSON", e).with_code("invalid_argument")
                    })?;
                    ControlAction::SkipNode {
                        node: args.node,
                        output,
                    }
                }
            };
            if args.output.is_some() && !matches!(action, ControlAction::SkipNode { .. }) {
                return Err(Failure::usage("--output only goes with `skip`"));
            }
            control(global, args.run, action, args.meta).await
        }
        RunsCommand::Show { run, json } => show(global, run, json).await,
        RunsCommand::Fork(args) => fork(global, args).await,
    }
}

async fn fork(global: &GlobalArgs, args: ForkArgs) -> Result<(), Failure> {
    let output =
        match &args.output {
            Some(text) => Some(serde_json::from_str::<Value>(text).map_err(|e| {
                Failure::caused("--output: not JSON", e).with_code("invalid_argument")
            })?),
            None => None,
        };
    let meta = args.meta;
    let request_id = match meta.request_id {
        Some(id) => RequestId::new(id).map_err(|e| Failure::usage(format!("--request-id: {e}")))?,
        None => RequestId::generate(),
    };
    let store = super::open_existing(global).await?;
    let request = ForkRequest {
        source: args.run,
        from_node: args.from.clone(),
        output,
        control: Control {
            actor: meta.actor,
            reason: meta.reason,
        },
        request_id: request_id.clone(),
        correlation_id: None,
    };
    match runledger_orchestrator::fork::fork(&store, request).await {
        Ok(outcome) => {
            if meta.json {
                let line = json!({
                    "ok": true,
                    "run_id": outcome.run_id,
                    "source_run_id": args.run,
                    "from_node": args.from,
                    "source_version": outcome.source.stream_version,
                    "source_head_hash": outcome.source.head_hash.to_hex(),
                    "request_id": request_id,
                    "deduplicated": outcome.deduplicated,
                });
                outln!("{line}");
            } else if outcome.deduplicated {
                outln!(
                    "fork: request {request_id} already forked run {} as run {}; nothing written",
                    args.run,
                    outcome.run_id
                );
            } else {
                outln!(
                    "fork: run {} from node `{}` of run {} (at version {})",
                    outcome.run_id,
                    args.from,
                    args.run,
                    outcome.source.stream_version
                );
            }
            hint_when_undriven(&store, outcome.run_id, "the fork runs").await;
            Ok(())
        }
        Err(e) => {
            if meta.json {
                let envelope =
                    runledger_contracts::error::ErrorEnvelope::new(e.code(), e.to_string())
                        .with_ids(Some(request_id.as_str().to_owned()), None);
                outln!("{}", serde_json::to_string(&envelope).unwrap_or_default());
                return Err(Failure::silent());
            }
            Err(describe(args.run, "fork", e))
        }
    }
}

async fn control(
    global: &GlobalArgs,
    run_id: RunId,
    action: ControlAction,
    meta: ControlMeta,
) -> Result<(), Failure> {
    let request_id = match meta.request_id {
        Some(id) => RequestId::new(id).map_err(|e| Failure::usage(format!("--request-id: {e}")))?,
        None => RequestId::generate(),
    };
    let store = super::open_existing(global).await?;
    let control = Control {
        actor: meta.actor,
        reason: meta.reason,
    };
    let name = action.name();
    match apply_control(&store, run_id, action, control, request_id.clone()).await {
        Ok(outcome) => {
            if !outcome.deduplicated
                && let Some(pg) = store.as_postgres()
            {
                // The serve that drives the run reads the control now, not on a poll. (On
                // SQLite the one engine polls its runs.)
                let leases = runledger_ledger::leases::LeaseStore::new(pg.pool().clone());
                if let Err(e) = leases.wake_owner(run_id).await {
                    tracing::warn!(error = %e, "cannot wake the engine that drives the run");
                }
            }
            print_outcome(run_id, name, &request_id, &outcome, meta.json);
            hint_when_undriven(&store, run_id, "the control takes effect").await;
            Ok(())
        }
        Err(e) => {
            if meta.json {
                let envelope =
                    runledger_contracts::error::ErrorEnvelope::new(e.code(), e.to_string())
                        .with_ids(Some(request_id.as_str().to_owned()), None);
                outln!("{}", serde_json::to_string(&envelope).unwrap_or_default());
                return Err(Failure::silent());
            }
            Err(describe(run_id, name, e))
        }
    }
}

/// A control on a run that no engine instance drives is recorded but changes nothing until one
/// does: say so on stderr.
async fn hint_when_undriven(store: &runledger_ledger::LedgerStore, run_id: RunId, what: &str) {
    match (store.as_postgres(), store.sqlite_path()) {
        (Some(pg), _) => hint_when_unleased(pg, run_id, what).await,
        (None, Some(path)) => hint_when_no_engine(path, run_id, what),
        (None, None) => {}
    }
}

/// On PostgreSQL a run is driven when it is in the run index under a live lease.
async fn hint_when_unleased(store: &runledger_ledger::PgEventStore, run_id: RunId, what: &str) {
    let leases = runledger_ledger::leases::LeaseStore::new(store.pool().clone());
    let (indexed, lease) = match (
        leases.is_indexed(run_id).await,
        leases.lease_of(run_id).await,
    ) {
        (Ok(indexed), Ok(lease)) => (indexed, lease),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot tell whether an engine drives the run");
            return;
        }
    };
    if indexed && !lease.is_some_and(|l| l.live) {
        errln!("runledger: no engine drives run {run_id} now; {what} when `runledger serve` runs");
    }
}

/// On SQLite the only engine is a process holding the file's engine lock (`dev`, `run --wait`,
/// either of which takes the unfinished runs of the run index when it starts): when
/// the lock is free, nothing drives the run now; say so on stderr.
fn hint_when_no_engine(ledger: &std::path::Path, run_id: RunId, what: &str) {
    let path = runledger_ledger::sqlite::lock_file_path(ledger, "engine");
    let free = std::fs::OpenOptions::new()
        .read(true)
        .open(&path)
        .map_or(true, |file| file.try_lock_shared().is_ok());
    if free {
        errln!(
            "runledger: no engine drives run {run_id} now; {what} once `runledger dev` (or the next `run --wait`) runs on this file"
        );
    }
}

fn describe(run_id: RunId, name: &str, e: EngineError) -> Failure {
    match e {
        EngineError::RunNotFound(_) => {
            Failure::new(format!("run {run_id} does not exist")).with_code("run_not_found")
        }
        other => Failure::coded(format!("{name} run {run_id}"), other),
    }
}

fn print_outcome(
    run_id: RunId,
    name: &str,
    request_id: &RequestId,
    outcome: &ControlOutcome,
    as_json: bool,
) {
    let versions: Vec<u64> = outcome.events.iter().map(|e| e.stream_version).collect();
    if as_json {
        let events: Vec<Value> = outcome
            .events
            .iter()
            .map(|e| json!({ "version": e.stream_version, "event_type": e.event_type }))
            .collect();
        let line = json!({
            "ok": true,
            "run_id": run_id,
            "action": name,
            "request_id": request_id,
            "deduplicated": outcome.deduplicated,
            "events": events,
        });
        outln!("{line}");
    } else if outcome.deduplicated {
        outln!("{name}: request {request_id} was already applied to run {run_id}; nothing written");
    } else {
        let types: Vec<&str> = outcome
            .events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        let range = match (versions.first(), versions.last()) {
            (Some(a), Some(b)) if a != b => format!("versions {a}-{b}"),
            (Some(a), _) => format!("version {a}"),
            _ => "nothing".into(),
        };
        outln!("{name}: run {run_id}: {} ({range})", types.join(", "));
    }
}

async fn show(global: &GlobalArgs, run_id: RunId, as_json: bool) -> Result<(), Failure> {
    let store = super::open_existing(global).await?;
    let loaded = load_run(&store, run_id)
        .await
        .map_err(|e| describe(run_id, "show", e))?;
    let state = &loaded.state;
    let node_runs: Vec<Value> = state
        .node_runs
        .iter()
        .enumerate()
        .map(|(i, nr)| {
            let status = match nr.phase {
                Phase::Scheduled => "scheduled".to_owned(),
                Phase::Running => "running".to_owned(),
                Phase::Ended(_) => serde_json::to_value(nr.status())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            };
            json!({
                "node_id": state.node_id(nr.node),
                "node_run_id": nr.id,
                "attempt": nr.attempt,
                "execution_index": nr.execution_index,
                "status": status,
                "invalidated": nr.invalidated,
                "output": nr.output,
                "error": nr.error,
                "warnings": nr.warnings,
                "has_artifact": nr.artifact.is_some(),
                "kept_from_source": i < state.kept,
            })
        })
        .collect();
    if as_json {
        let line = json!({
            "run_id": run_id,
            "flowchart": state.flowchart_ref.name,
            "status": state.status.as_str(),
            "version": loaded.version,
            "node_runs": node_runs.len(),
            "node_run_statuses": status_counts(state),
            "output": state.output,
            "error": state.failure,
            "forked_from": forked_from(state),
            "forks": forks(state),
            "nodes": node_runs,
        });
        outln!("{line}");
        return Ok(());
    }
    outln!(
        "run {run_id}  flowchart {}  {}  (version {})",
        state.flowchart_ref.name,
        state.status.as_str(),
        loaded.version
    );
    if let Some(error) = &state.failure {
        outln!("  error: {} [{}]", error.message, error.code);
    }
    if let Some(from) = &state.forked_from {
        outln!(
            "  forked from run {} at version {} (its first {} node run(s) are the source's)",
            from.run_id,
            from.stream_version,
            state.kept
        );
    }
    for (fork, node) in &state.forks {
        outln!("  forked to run {fork} from node `{node}`");
    }
    // `#E.A`: execution E of the node (a loop or a rewind runs it again), attempt A of that
    // execution (retries).
    for nr in &node_runs {
        outln!(
            "  {:<20} #{:<5} {:<22} {}{}",
            nr["node_id"].as_str().unwrap_or_default(),
            format!("{}.{}", nr["execution_index"], nr["attempt"]),
            nr["status"].as_str().unwrap_or_default(),
            nr["node_run_id"].as_str().unwrap_or_default(),
            if nr["invalidated"] == json!(true) {
                "  (invalidated)"
            } else if nr["kept_from_source"] == json!(true) {
                "  (kept from the source)"
            } else {
                ""
            }
        );
        if let Some(output) = nr.get("output").filter(|o| !o.is_null()) {
            outln!(
                "      output: {}",
                truncate(&output.to_string(), OUTPUT_WIDTH)
            );
        }
        if let Some(error) = nr.get("error").filter(|e| !e.is_null()) {
            outln!(
                "      error: {} [{}]",
                truncate(error["message"].as_str().unwrap_or_default(), OUTPUT_WIDTH),
                error["code"].as_str().unwrap_or_default()
            );
        }
        for warning in nr["warnings"].as_array().into_iter().flatten() {
            outln!(
                "      warning: {} [{}]",
                truncate(
                    warning["message"].as_str().unwrap_or_default(),
                    OUTPUT_WIDTH
                ),
                warning["code"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn forked_from(state: &runledger_orchestrator::RunState) -> Value {
    state.forked_from.as_ref().map_or(Value::Null, |f| {
        json!({
            "run_id": f.run_id,
            "stream_version": f.stream_version,
            "head_hash": f.head_hash.to_hex(),
        })
    })
}

fn forks(state: &runledger_orchestrator::RunState) -> Value {
    state
        .forks
        .iter()
        .map(|(run_id, node)| json!({ "run_id": run_id, "from_node": node }))
        .collect()
}

/// `text` cut to `width` characters (never inside a UTF-8 sequence) with the full length when
/// cut; control characters escaped, so one value stays on one line of a terminal.
fn truncate(text: &str, width: usize) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    let count = escaped.chars().count();
    if count <= width {
        return escaped;
    }
    let cut: String = escaped.chars().take(width).collect();
    format!("{cut}... ({count} characters)")
}
