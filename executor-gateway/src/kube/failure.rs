//! What counts as an infrastructure failure of an executor Job, and reporting each one once.
//!
//! Shared by the watcher (which finds failures) and the launcher (which reports a failed Job
//! itself before replacing it, so a failure is never lost to a quick relaunch).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use runledger_contracts::ids::RunId;
use tokio::sync::mpsc;

use super::{ExecutorClass, LABEL_EXECUTOR_CLASS, LABEL_RUN_ID};

/// An executor Job died for reasons outside the node's work: its pod was evicted or preempted,
/// it ran past `activeDeadlineSeconds`, or its executor process exited with an error. The node
/// runs its executors had started should fail with `infra_error`; the engine's retry policy
/// then applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraFailure {
    pub run_id: RunId,
    pub executor_class: ExecutorClass,
    pub job_name: String,
    /// The Job's uid: the same failure always has the same key, also after a restart of the
    /// watcher, so it can serve as the idempotency key of whatever the engine appends.
    pub job_uid: String,
    /// Names of the Job's pods, which are the executor ids (`RUNLEDGER_EXECUTOR_ID`) that node
    /// runs started by this Job record. Executors pull from a queue per class, so a Job's
    /// executors may also have started node runs of other runs.
    pub executor_ids: Vec<String>,
    /// Kubernetes' reason: `Evicted`, a `DisruptionTarget` reason (`PreemptionByScheduler`,
    /// `EvictionByEvictionAPI`, `TerminationByKubelet`, ...), or the Job's failure reason
    /// (`DeadlineExceeded`, `BackoffLimitExceeded`, ...).
    pub reason: String,
    pub message: String,
}

/// Sends each failure once: the first report of a Job (by uid) goes to the channel, later ones
/// are dropped. Clones share what was reported.
#[derive(Debug, Clone)]
pub struct FailureReporter {
    tx: mpsc::Sender<InfraFailure>,
    reported: Arc<Mutex<HashSet<String>>>,
}

/// The receiving side of the failure channel is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the infra failure channel is closed")]
pub struct ReporterClosed;

impl FailureReporter {
    pub fn new(tx: mpsc::Sender<InfraFailure>) -> Self {
        Self {
            tx,
            reported: Arc::default(),
        }
    }

    /// Sends `failure` unless its Job was reported before. `Ok(true)` when it was sent.
    pub(crate) async fn report(&self, failure: InfraFailure) -> Result<bool, ReporterClosed> {
        if !self.claim(&failure.job_uid) {
            return Ok(false);
        }
        tracing::warn!(
            run_id = %failure.run_id,
            executor_class = %failure.executor_class,
            job = %failure.job_name,
            reason = %failure.reason,
            "executor job failed"
        );
        self.tx
            .send(failure)
            .await
            .map(|()| true)
            .map_err(|_| ReporterClosed)
    }

    pub(crate) fn was_reported(&self, job_uid: &str) -> bool {
        self.reported.lock().is_ok_and(|set| set.contains(job_uid))
    }

    /// Forgets Jobs that no longer exist, so memory stays bounded by the live Jobs.
    pub(crate) fn retain(&self, live_uids: &HashSet<&str>) {
        if let Ok(mut set) = self.reported.lock() {
            set.retain(|uid| live_uids.contains(uid.as_str()));
        }
    }

    /// Marks `job_uid` reported; false if it already was.
    fn claim(&self, job_uid: &str) -> bool {
        match self.reported.lock() {
            Ok(mut set) => set.insert(job_uid.to_string()),
            // A panic while holding the lock cannot leave the set half-written; keep going.
            Err(poisoned) => poisoned.into_inner().insert(job_uid.to_string()),
        }
    }
}

/// The failure of `job`, if it has one. `pods` are the Job's pods as seen now; `remembered`
/// holds names of its pods seen earlier (a Job past its deadline has its pods deleted).
/// An evicted pod is reported even before the Job is marked failed, and its reason wins over
/// the Job's generic `BackoffLimitExceeded`.
pub(crate) fn assess(
    job: &Job,
    pods: &[&Pod],
    remembered: &BTreeSet<String>,
) -> Option<InfraFailure> {
    let (reason, message) = pods
        .iter()
        .find_map(|pod| disruption(pod))
        .or_else(|| job_failed(job))?;
    let labels = job.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key));
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let (Some(run_id), Some(executor_class)) = (
        label(LABEL_RUN_ID).and_then(|v| v.parse::<RunId>().ok()),
        label(LABEL_EXECUTOR_CLASS).and_then(|v| v.parse::<ExecutorClass>().ok()),
    ) else {
        tracing::warn!(job = %job_name, "failed executor job without valid run-id/executor-class labels; not reported");
        return None;
    };
    let mut executor_ids = remembered.clone();
    executor_ids.extend(pods.iter().filter_map(|p| p.metadata.name.clone()));
    Some(InfraFailure {
        run_id,
        executor_class,
        job_uid: job.metadata.uid.clone().unwrap_or_else(|| job_name.clone()),
        job_name,
        executor_ids: executor_ids.into_iter().collect(),
        reason,
        message,
    })
}

/// The Job's `Failed` condition, or `FailureTarget` (set first by newer Kubernetes, while the
/// pods are still terminating).
fn job_failed(job: &Job) -> Option<(String, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True" && (c.type_ == "Failed" || c.type_ == "FailureTarget"))
        .min_by_key(|c| c.type_ != "Failed")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_else(|| c.type_.clone()),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// A pod evicted by the kubelet (`status.reason: Evicted`), or marked for disruption
/// (`DisruptionTarget` condition: preemption, API eviction, node shutdown, taint).
fn disruption(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    if status.reason.as_deref() == Some("Evicted") {
        return Some((
            "Evicted".to_string(),
            status.message.clone().unwrap_or_default(),
        ));
    }
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        .map(|c| {
            (
                c.reason
                    .clone()
                    .unwrap_or_else(|| "DisruptionTarget".to_string()),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Whether the Job has ended (`Complete` or `Failed`, or their early forms `SuccessCriteriaMet`
/// and `FailureTarget` that newer Kubernetes sets while the pods terminate), and how.
pub(crate) fn finished(job: &Job) -> Option<Finished> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let is = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if is("Failed") || is("FailureTarget") {
        Some(Finished::Failed)
    } else if is("Complete") || is("SuccessCriteriaMet") {
        Some(Finished::Complete)
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    Complete,
    Failed,
}

/// Whether `pod` belongs to the Job with `job_uid` (by owner reference).
pub(crate) fn owned_by(pod: &Pod, job_uid: &str) -> bool {
    owner_job_uid(pod) == Some(job_uid)
}

pub(crate) fn owner_job_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Job")
        .map(|o| o.uid.as_str())
}
