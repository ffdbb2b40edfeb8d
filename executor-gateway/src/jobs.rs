//! Executors on demand in Kubernetes (`serve --kube-settings FILE`): the first dispatch of a run
//! to a class launches that run's executor Job, and a Job that fails or is evicted turns the node
//! runs its executors had started into `infra_error` failures, so the retry policy applies
//! instead of waiting for the execution timeout.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::ids::RunId;
use runledger_ledger::EventStore;
use runledger_orchestrator::engine::{Engine, ExecutorsLost};

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
/// retryable `infra_error`, in the runs this instance drives (each run's owner does it for its
/// own; the drivers check their in-memory state, nothing is read from the ledger). The report's
/// message id is derived from the Job's uid, so a failure reported again writes nothing.
/// Returns how many runs were told.
pub fn fail_started_node_runs<S: EventStore + 'static>(
    engine: &Engine<S>,
    failure: &InfraFailure,
) -> usize {
    if failure.executor_ids.is_empty() {
        return 0;
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
    engine.executors_lost(ExecutorsLost {
        executor_ids: failure.executor_ids.clone(),
        error,
        key: format!("infra:{}", failure.job_uid),
    })
}
