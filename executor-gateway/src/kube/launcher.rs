//! Creates the executor Job of a run and class, idempotently.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use runledger_contracts::ids::RunId;

use super::failure::{self, FailureReporter, Finished};
use super::job::{build_job, job_name};
use super::settings::KubeSettings;
use super::{ExecutorClass, LABEL_EXECUTOR_CLASS, LABEL_RUN_ID, executor_selector};

/// How often a launch retries create → inspect → delete before giving up on a Job that is
/// still being deleted.
const LAUNCH_ATTEMPTS: u32 = 6;
/// Wait between attempts while a Job is being deleted, multiplied by the attempt number.
const DELETE_WAIT: Duration = Duration::from_millis(250);

/// What [`JobLauncher::launch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// A new Job was created.
    Created { job_name: String },
    /// The run's Job for this class already exists and has not finished: nothing was done.
    AlreadyRunning { job_name: String },
    /// The run's Job had finished (its executors went idle and exited, or it failed, which was
    /// reported first); it was deleted and a new one created under the same name.
    Replaced { job_name: String },
}

impl LaunchOutcome {
    pub fn job_name(&self) -> &str {
        match self {
            LaunchOutcome::Created { job_name }
            | LaunchOutcome::AlreadyRunning { job_name }
            | LaunchOutcome::Replaced { job_name } => job_name,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("executor class `{class}` has no settings under `classes.{class}`")]
    ClassNotConfigured { class: ExecutorClass },
    #[error(
        "job {job_name} already exists for another run ({other}); the names of two runs collided"
    )]
    NameTaken { job_name: String, other: String },
    #[error("kubernetes refused job {job_name}: HTTP {status} {reason}: {message}")]
    Api {
        job_name: String,
        status: u16,
        reason: String,
        message: String,
    },
    #[error("cannot reach kubernetes for job {job_name}: {message}")]
    Unreachable { job_name: String, message: String },
    #[error("job {job_name} is still being deleted; try again later")]
    StillDeleting { job_name: String },
}

impl LaunchError {
    /// A stable code for CLI and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            LaunchError::ClassNotConfigured { .. } => "executor_class_not_configured",
            LaunchError::NameTaken { .. } => "job_name_collision",
            LaunchError::Api { .. } => "kube_api_error",
            LaunchError::Unreachable { .. } => "kube_unreachable",
            LaunchError::StillDeleting { .. } => "job_still_deleting",
        }
    }

    fn from_kube(job_name: &str, error: ::kube::Error) -> Self {
        match error {
            ::kube::Error::Api(status) => LaunchError::Api {
                job_name: job_name.to_string(),
                status: status.code,
                reason: status.reason,
                message: status.message,
            },
            other => LaunchError::Unreachable {
                job_name: job_name.to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// Launches executors as Jobs in the settings' namespace.
pub struct JobLauncher {
    jobs: Api<Job>,
    pods: Api<Pod>,
    settings: KubeSettings,
    env: CopiedEnv,
    reporter: FailureReporter,
}

/// Allowlisted variables and their values. Debug shows names only: values are often secrets.
struct CopiedEnv(Vec<(String, String)>);

impl fmt::Debug for CopiedEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl fmt::Debug for JobLauncher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobLauncher")
            .field("namespace", &self.settings.namespace)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl JobLauncher {
    /// A launcher that copies the allowlisted variables from this process's environment, read
    /// once now (restart to pick up new values). A listed variable that is unset or not UTF-8
    /// is left out, with a warning that names it (never its value).
    pub fn new(client: ::kube::Client, settings: &KubeSettings, reporter: FailureReporter) -> Self {
        let env = settings.env_allowlist.iter().filter_map(|name| {
            let value = std::env::var_os(name)?;
            match value.into_string() {
                Ok(value) => Some((name.clone(), value)),
                Err(_) => {
                    tracing::warn!(variable = %name, "allowlisted variable is not UTF-8; executors will not get it");
                    None
                }
            }
        });
        Self::with_env(client, settings, reporter, env.collect::<Vec<_>>())
    }

    /// A launcher that takes variables from `env` instead of the process environment; only
    /// names on the settings' allowlist are kept.
    pub fn with_env(
        client: ::kube::Client,
        settings: &KubeSettings,
        reporter: FailureReporter,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut given: HashMap<String, String> = env.into_iter().collect();
        let mut copied = Vec::new();
        for name in &settings.env_allowlist {
            match given.remove(name) {
                Some(value) => copied.push((name.clone(), value)),
                None => {
                    tracing::warn!(variable = %name, "allowlisted variable is not set; executors will not get it")
                }
            }
        }
        Self {
            jobs: Api::namespaced(client.clone(), &settings.namespace),
            pods: Api::namespaced(client, &settings.namespace),
            settings: settings.clone(),
            env: CopiedEnv(copied),
            reporter,
        }
    }

    /// The Job [`launch`](Self::launch) would create.
    pub fn job(&self, run_id: RunId, class: ExecutorClass) -> Result<Job, LaunchError> {
        let class_settings = self
            .settings
            .class(class)
            .ok_or(LaunchError::ClassNotConfigured { class })?;
        Ok(build_job(
            &self.settings,
            class_settings,
            run_id,
            class,
            &self.env.0,
        ))
    }

    /// Makes sure an executor Job of `class` runs for `run_id`. Safe to call on every dispatch:
    /// an unfinished Job of that name means there is nothing to do (`AlreadyRunning`). A
    /// finished one (its executors idled out, or it failed) is deleted and created again, so
    /// new work of the run gets an executor; a failed one is reported first.
    pub async fn launch(
        &self,
        run_id: RunId,
        class: ExecutorClass,
    ) -> Result<LaunchOutcome, LaunchError> {
        let job = self.job(run_id, class)?;
        let name = job_name(run_id, class);
        let mut replaced = false;
        for attempt in 1..=LAUNCH_ATTEMPTS {
            match self.jobs.create(&PostParams::default(), &job).await {
                Ok(_) => {
                    tracing::info!(job = %name, %run_id, executor_class = %class, replaced, "executor job created");
                    return Ok(if replaced {
                        LaunchOutcome::Replaced { job_name: name }
                    } else {
                        LaunchOutcome::Created { job_name: name }
                    });
                }
                Err(::kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(e) => return Err(LaunchError::from_kube(&name, e)),
            }
            let existing = self
                .jobs
                .get_opt(&name)
                .await
                .map_err(|e| LaunchError::from_kube(&name, e))?;
            let Some(existing) = existing else { continue };
            check_owner(&existing, &name, run_id, class)?;
            if existing.metadata.deletion_timestamp.is_some() {
                tokio::time::sleep(DELETE_WAIT * attempt).await;
                continue;
            }
            match failure::finished(&existing) {
                None => return Ok(LaunchOutcome::AlreadyRunning { job_name: name }),
                Some(Finished::Failed) => self.report_failed(&existing).await,
                Some(Finished::Complete) => {}
            }
            self.delete(&existing, &name).await?;
            replaced = true;
        }
        Err(LaunchError::StillDeleting { job_name: name })
    }

    /// Deletes exactly this Job (uid precondition: a Job someone else created meanwhile under
    /// the same name survives). Its pods are deleted in the background.
    async fn delete(&self, job: &Job, name: &str) -> Result<(), LaunchError> {
        let mut params = DeleteParams::background();
        params.preconditions = Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        });
        match self.jobs.delete(name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by someone else: the next create attempt sorts it out.
            Err(::kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => {
                Ok(())
            }
            Err(e) => Err(LaunchError::from_kube(name, e)),
        }
    }

    /// Reports a failed Job before it is replaced (the watcher may not have seen it yet).
    async fn report_failed(&self, job: &Job) {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        if self.reporter.was_reported(&uid) {
            return;
        }
        let labels = job.metadata.labels.clone().unwrap_or_default();
        let selector = format!(
            "{},{LABEL_RUN_ID}={},{LABEL_EXECUTOR_CLASS}={}",
            executor_selector(),
            labels.get(LABEL_RUN_ID).map_or("", String::as_str),
            labels.get(LABEL_EXECUTOR_CLASS).map_or("", String::as_str),
        );
        let pods = match self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, job = ?job.metadata.name, "cannot list the pods of a failed job; reporting it without executor ids");
                Vec::new()
            }
        };
        let owned: Vec<&Pod> = pods.iter().filter(|p| failure::owned_by(p, &uid)).collect();
        if let Some(f) = failure::assess(job, &owned, &Default::default())
            && self.reporter.report(f).await.is_err()
        {
            tracing::warn!(job = ?job.metadata.name, "infra failure channel is closed; failure not delivered");
        }
    }
}

/// An existing Job of our name must be for the same run and class (12 hex digits of blake3
/// make a collision unlikely, not impossible).
fn check_owner(
    job: &Job,
    name: &str,
    run_id: RunId,
    class: ExecutorClass,
) -> Result<(), LaunchError> {
    let labels = job.metadata.labels.clone().unwrap_or_default();
    let run = labels.get(LABEL_RUN_ID).map(String::as_str);
    let cls = labels.get(LABEL_EXECUTOR_CLASS).map(String::as_str);
    if run == Some(run_id.to_string().as_str()) && cls == Some(class.as_str()) {
        Ok(())
    } else {
        Err(LaunchError::NameTaken {
            job_name: name.to_string(),
            other: format!(
                "run-id={}, executor-class={}",
                run.unwrap_or("?"),
                cls.unwrap_or("?")
            ),
        })
    }
}
