//! Executors on demand in Kubernetes (`serve --kube-settings FILE`): the first dispatch of a run
//! to a class launches that run's executor Job, and a Job that fails or is evicted turns the node
//! runs its executors had started into `infra_error` failures, so the retry policy applies
//! instead of waiting for the execution timeout.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_ledger::PgEventStore;
use runledger_orchestrator::decide::{NodeOutcome, NodeResult};
use runledger_orchestrator::engine::{Engine, load_run};
use runledger_orchestrator::executor::{Delivery, Report};
use runledger_orchestrator::state::Phase;
use sqlx::Row;

use crate::dispatcher::OnDispatch;
use crate::kube::{ExecutorClass, InfraFailure, JobLauncher};

/// Launches each (run, class) Job once per process; a failed launch is tried again on the
/// next dispatch.
pub fn launch_on_dispatch(launcher: Arc<JobLauncher>) -> OnDispatch {
    let launched: Arc<Mutex<HashSet<(RunId, ExecutorClass)>>> = Arc::default();
    Arc::new(move |run_id: RunId, class: &str| {
        let Ok(class) = ExecutorClass::from_str(class) else {
            return;
        };
        let first = launched
            .lock()
            .map(|mut l| l.insert((run_id, class)))
            .unwrap_or(false);
        if !first {
            return;
        }
        let (launcher, launched) = (Arc::clone(&launcher), Arc::clone(&launched));
        tokio::spawn(async move {
            if let Err(e) = launcher.launch(run_id, class).await {
                tracing::warn!(%run_id, executor_class = %class, error = %e, code = e.code(), "executor job not launched");
                if let Ok(mut l) = launched.lock() {
                    l.remove(&(run_id, class));
                }
            }
        });
    })
}

/// Fails every unfinished node run that one of the failed Job's executors had started, with a
/// retryable `infra_error`. The report's message id is derived from the Job's uid, so a
/// failure reported again (after a restart) writes nothing. Returns how many it failed.
pub async fn fail_started_node_runs(
    engine: &Engine<PgEventStore>,
    failure: &InfraFailure,
) -> Result<usize, String> {
    if failure.executor_ids.is_empty() {
        return Ok(0);
    }
    let rows = sqlx::query(
        "SELECT stream_id, payload->>'node_run_id' AS node_run_id, (payload->>'attempt')::bigint AS attempt
           FROM events
          WHERE event_type = 'NodeStarted' AND payload->>'executor' = ANY($1)",
    )
    .bind(&failure.executor_ids)
    .fetch_all(engine.store().pool())
    .await
    .map_err(|e| e.to_string())?;
    let mut failed = 0;
    for row in rows {
        let stream: String = row.try_get("stream_id").map_err(|e| e.to_string())?;
        let node_run: String = row.try_get("node_run_id").map_err(|e| e.to_string())?;
        let attempt: i64 = row.try_get("attempt").map_err(|e| e.to_string())?;
        let (Some(run_id), Ok(node_run_id)) = (
            stream
                .strip_prefix("run-")
                .and_then(|id| RunId::from_str(id).ok()),
            NodeRunId::from_str(&node_run),
        ) else {
            continue;
        };
        let Ok(loaded) = load_run(engine.store(), run_id).await else {
            continue;
        };
        let still_running = loaded
            .state
            .node_run(&node_run_id)
            .is_some_and(|nr| nr.phase == Phase::Running && i64::from(nr.attempt) == attempt);
        if !still_running || loaded.state.status.is_terminal() {
            continue;
        }
        let error = ErrorInfo {
            code: "infra_error".into(),
            message: format!(
                "executor job {} failed ({}): {}",
                failure.job_name, failure.reason, failure.message
            ),
            retryable: true,
            details: None,
        };
        let result = NodeResult {
            node_run_id,
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            outcome: NodeOutcome::Failed(error),
            tool_calls: Vec::new(),
        };
        let message_id = Some(format!("infra:{}:{node_run_id}", failure.job_uid));
        engine
            .deliver(Delivery {
                run_id,
                report: Report::Finished(result),
                message_id,
                recorded: None,
            })
            .await;
        failed += 1;
    }
    Ok(failed)
}
