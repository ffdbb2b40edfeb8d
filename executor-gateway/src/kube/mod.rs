//! Executors as Kubernetes Jobs (see docs/kubernetes.md).
//!
//! - [`KubeSettings`]: namespace, image/tag/resources per executor class, env allowlist, TTLs;
//!   loaded from a YAML or JSON file and validated with errors that name the field.
//! - [`JobLauncher`]: one batch/v1 Job per run and executor class, with a deterministic name, so
//!   launching twice is harmless (the second call reports that the Job already runs).
//! - [`JobWatcher`]: polls the runledger Jobs and their pods and turns a failed Job or an evicted
//!   pod into one [`InfraFailure`] on a channel; the engine fails the node runs that Job's
//!   executors had started with `infra_error`.
//!
//! The Kubernetes client is built from an explicit [`::kube::Config`] ([`connect`] infers it
//! in production), so tests point it at an HTTP stub of the API server.

mod failure;
mod job;
mod launcher;
mod settings;
mod watcher;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use failure::{FailureReporter, InfraFailure, ReporterClosed};
pub use job::job_name;
pub use launcher::{JobLauncher, LaunchError, LaunchOutcome};
pub use settings::{
    ClassSettings, ExecutorClasses, KubeSettings, ResourceAmounts, Resources, SettingsError,
    SettingsProblem,
};
pub use watcher::{JobWatcher, WatchError};

/// Label every object the launcher creates carries, so one selector finds them all.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Value of [`LABEL_NAME`].
pub const NAME_VALUE: &str = "runledger";
/// Tells executor Jobs apart from the `runledger serve` pods that carry the same name label.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`LABEL_COMPONENT`] on executor Jobs and their pods.
pub const COMPONENT_VALUE: &str = "executor";
/// The run a Job was launched for (the run id, a UUID).
pub const LABEL_RUN_ID: &str = "runledger.dev/run-id";
/// The executor class a Job runs (`frontier` or `vllm`).
pub const LABEL_EXECUTOR_CLASS: &str = "runledger.dev/executor-class";
/// Environment variable every executor pod gets from the downward API: its pod name, which the
/// executor records as its executor id, so a failure of the pod maps to the node runs it started.
pub const EXECUTOR_ID_ENV: &str = "RUNLEDGER_EXECUTOR_ID";

/// Label selector matching the executor Jobs (and their pods) this module manages.
pub fn executor_selector() -> String {
    format!("{LABEL_NAME}={NAME_VALUE},{LABEL_COMPONENT}={COMPONENT_VALUE}")
}

/// The queue an executor pulls from: hosted providers over HTTP, or local OpenAI-compatible
/// (vLLM) servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorClass {
    Frontier,
    Vllm,
}

impl ExecutorClass {
    pub const ALL: [ExecutorClass; 2] = [ExecutorClass::Frontier, ExecutorClass::Vllm];

    /// The name used in `--class`, NATS subjects, labels and Job names.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorClass::Frontier => "frontier",
            ExecutorClass::Vllm => "vllm",
        }
    }
}

impl fmt::Display for ExecutorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutorClass {
    type Err = UnknownExecutorClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "frontier" => Ok(ExecutorClass::Frontier),
            "vllm" => Ok(ExecutorClass::Vllm),
            other => Err(UnknownExecutorClass(other.chars().take(64).collect())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown executor class `{0}` (expected `frontier` or `vllm`)")]
pub struct UnknownExecutorClass(pub String);

/// The Kubernetes API could not be reached or configured.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("kubernetes settings: clusterUrl: {0}")]
    ClusterUrl(#[source] ClusterUrlError),
    #[error("cannot find a Kubernetes configuration (no kubeconfig and not in a cluster): {0}")]
    Infer(#[source] ::kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
}

/// Why a `clusterUrl` cannot be talked to.
#[derive(Debug, thiserror::Error)]
pub enum ClusterUrlError {
    #[error("`{url}` is not a URL: {source}")]
    NotUrl {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("`{url}` must be an http:// or https:// URL with a host")]
    NotHttp { url: String },
}

impl ConnectError {
    /// A stable code for CLI and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::ClusterUrl(_) => "kube_cluster_url_invalid",
            ConnectError::Infer(_) => "kube_config_not_found",
            ConnectError::Client(_) => "kube_client_error",
        }
    }
}

/// A client for the settings' cluster: `clusterUrl` when set (an API proxy, or a stub in
/// tests; no credentials are added), otherwise the kubeconfig or in-cluster service account
/// found by [`::kube::Config::infer`]. The default namespace is the settings' namespace.
pub async fn connect(settings: &KubeSettings) -> Result<::kube::Client, ConnectError> {
    let mut config = match &settings.cluster_url {
        Some(url) => cluster_config(url).map_err(ConnectError::ClusterUrl)?,
        None => ::kube::Config::infer().await.map_err(ConnectError::Infer)?,
    };
    config.default_namespace = settings.namespace.clone();
    client_for(config)
}

/// A client for an explicit configuration.
pub fn client_for(config: ::kube::Config) -> Result<::kube::Client, ConnectError> {
    ::kube::Client::try_from(config).map_err(ConnectError::Client)
}

/// A configuration that talks to `url` (http or https) with no credentials.
pub fn cluster_config(url: &str) -> Result<::kube::Config, ClusterUrlError> {
    let config = ::kube::Config::new(url.parse().map_err(|e| ClusterUrlError::NotUrl {
        url: url.to_owned(),
        source: Box::new(e),
    })?);
    match config.cluster_url.scheme_str() {
        Some("http") | Some("https") if config.cluster_url.host().is_some() => Ok(config),
        _ => Err(ClusterUrlError::NotHttp {
            url: url.to_owned(),
        }),
    }
}
