//! Finds executor Jobs that failed and reports each once.
//!
//! It polls (two label-selected lists per interval) rather than watching: a list always gives
//! the whole current state, so there is no resourceVersion to resume, no `410 Gone` to recover
//! from and nothing to re-sync after the API server restarts, and a few seconds of latency are
//! small next to the node execution timeouts that would otherwise catch a dead executor.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use ::kube::Api;
use ::kube::api::ListParams;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde::de::DeserializeOwned;

use super::executor_selector;
use super::failure::{self, FailureReporter, ReporterClosed};
use super::settings::KubeSettings;

/// Objects per list page.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot list executor {what}: {message}")]
    List { what: &'static str, message: String },
    #[error(transparent)]
    Closed(#[from] ReporterClosed),
}

impl WatchError {
    /// A stable code for logs and errors.
    pub fn code(&self) -> &'static str {
        match self {
            WatchError::List { .. } => "kube_list_failed",
            WatchError::Closed(_) => "infra_failure_channel_closed",
        }
    }
}

/// Polls the settings' namespace for failed executor Jobs and evicted executor pods.
pub struct JobWatcher {
    jobs: Api<Job>,
    pods: Api<Pod>,
    reporter: FailureReporter,
    interval: Duration,
    /// Pod names seen per Job uid, so a Job whose pods were deleted (deadline exceeded) still
    /// names its executors.
    pods_seen: HashMap<String, BTreeSet<String>>,
}

impl JobWatcher {
    pub fn new(client: ::kube::Client, settings: &KubeSettings, reporter: FailureReporter) -> Self {
        Self {
            jobs: Api::namespaced(client.clone(), &settings.namespace),
            pods: Api::namespaced(client, &settings.namespace),
            reporter,
            interval: Duration::from_secs(u64::from(settings.watch_interval_seconds)),
            pods_seen: HashMap::new(),
        }
    }

    /// One look at the cluster: reports every failure not reported before; returns how many.
    pub async fn poll_once(&mut self) -> Result<usize, WatchError> {
        let jobs: Vec<Job> = list_all(&self.jobs, "jobs").await?;
        let pods: Vec<Pod> = list_all(&self.pods, "pods").await?;
        let mut pods_by_job: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for pod in &pods {
            if let Some(uid) = failure::owner_job_uid(pod) {
                pods_by_job.entry(uid).or_default().push(pod);
                if let Some(name) = &pod.metadata.name {
                    self.pods_seen
                        .entry(uid.to_string())
                        .or_default()
                        .insert(name.clone());
                }
            }
        }
        let live: HashSet<&str> = jobs
            .iter()
            .filter_map(|j| j.metadata.uid.as_deref())
            .collect();
        self.pods_seen.retain(|uid, _| live.contains(uid.as_str()));
        self.reporter.retain(&live);

        let mut reported = 0;
        let empty = BTreeSet::new();
        for job in &jobs {
            let Some(uid) = job.metadata.uid.as_deref() else {
                continue;
            };
            if self.reporter.was_reported(uid) {
                continue;
            }
            let job_pods = pods_by_job.get(uid).map_or(&[][..], Vec::as_slice);
            let remembered = self.pods_seen.get(uid).unwrap_or(&empty);
            if let Some(f) = failure::assess(job, job_pods, remembered)
                && self.reporter.report(f).await?
            {
                reported += 1;
            }
        }
        Ok(reported)
    }

    /// Polls every `watchIntervalSeconds` until `shutdown` completes or the receiver of the
    /// failure channel is dropped. A failed poll (API server unreachable, RBAC missing) is
    /// logged and retried at the next interval.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => match self.poll_once().await {
                    Ok(_) => {}
                    Err(WatchError::Closed(_)) => return,
                    Err(e) => tracing::warn!(code = e.code(), error = %e, "executor job watch failed; retrying"),
                },
            }
        }
    }
}

/// Every executor object of one kind, page by page.
async fn list_all<K>(api: &Api<K>, what: &'static str) -> Result<Vec<K>, WatchError>
where
    K: ::kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let selector = executor_selector();
    let mut items = Vec::new();
    let mut params = ListParams::default().labels(&selector).limit(PAGE);
    loop {
        let page = api.list(&params).await.map_err(|e| WatchError::List {
            what,
            message: e.to_string(),
        })?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}
