//! What the launcher needs to know about the cluster, read from a YAML or JSON file.
//!
//! Keys are camelCase like Kubernetes' own fields. Every problem names the field as written in
//! the file (`classes.vllm.resources.limits.memory`), so a bad setting is found before the first
//! Job is launched, not as a 422 from the API server at run time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Serialize};

use super::{EXECUTOR_ID_ENV, ExecutorClass};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeSettings {
    /// Namespace the Jobs are created in (the launcher's RBAC is scoped to it).
    pub namespace: String,
    /// API server URL. Absent in production: the kubeconfig or in-cluster service account is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_url: Option<String>,
    /// Service account of executor pods; the namespace's `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Finished Jobs (and their pods) are deleted this long after they end.
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: i32,
    /// Hard limit on a Job's lifetime; the Job then fails with `DeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Executors launched as Jobs exit after this long without work, so the Job completes.
    #[serde(default = "default_exit_when_idle")]
    pub exit_when_idle_seconds: u32,
    /// How often the watcher lists Jobs and pods.
    #[serde(default = "default_watch_interval")]
    pub watch_interval_seconds: u32,
    /// Time an executor gets to drain after SIGTERM; Kubernetes' default (30) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Names of environment variables copied from the launcher's environment into every Job.
    /// Values end up in the Job object: put API keys in `envFromSecrets` instead.
    #[serde(default)]
    pub env_allowlist: Vec<String>,
    /// Secrets whose keys become environment variables of executor pods (`envFrom`), so provider
    /// keys reach executors without being copied into Job specs.
    #[serde(default)]
    pub env_from_secrets: Vec<String>,
    pub classes: ExecutorClasses,
}

/// Settings per executor class; a class without settings cannot be launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutorClasses {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontier: Option<ClassSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vllm: Option<ClassSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassSettings {
    /// Image repository without tag, e.g. `registry.example.com/runledger/runledger`.
    pub image: String,
    pub tag: String,
    /// Node runs one executor works on at once (`--concurrency`).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default)]
    pub resources: Resources,
    /// `nvidia.com/gpu` requested (and limited to); `vllm` only.
    #[serde(default)]
    pub gpus: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: ResourceAmounts,
    #[serde(default)]
    pub limits: ResourceAmounts,
}

/// Kubernetes quantities, e.g. `cpu: 500m`, `memory: 512Mi`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAmounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

fn default_ttl() -> i32 {
    3600
}
fn default_exit_when_idle() -> u32 {
    120
}
fn default_watch_interval() -> u32 {
    5
}
fn default_concurrency() -> u32 {
    4
}

/// One thing wrong with the settings, at `field` (dotted path as written in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for SettingsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read kubernetes settings {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubernetes settings: {field}: {message}")]
    Malformed { field: String, message: String },
    #[error("kubernetes settings: {}", summary(problems))]
    Invalid { problems: Vec<SettingsProblem> },
}

/// The first problem, and how many more there are.
fn summary(problems: &[SettingsProblem]) -> String {
    match problems {
        [] => "invalid".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] if rest.len() == 1 => format!("{first} (and 1 more problem)"),
        [first, rest @ ..] => format!("{first} (and {} more problems)", rest.len()),
    }
}

impl SettingsError {
    /// A stable code for CLI and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            SettingsError::Unreadable { .. } => "kube_settings_unreadable",
            SettingsError::Malformed { .. } => "kube_settings_malformed",
            SettingsError::Invalid { .. } => "kube_settings_invalid",
        }
    }

    /// Every field that is wrong (one for unreadable or malformed files).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            SettingsError::Unreadable { .. } => vec![],
            SettingsError::Malformed { field, .. } => vec![field.as_str()],
            SettingsError::Invalid { problems } => {
                problems.iter().map(|p| p.field.as_str()).collect()
            }
        }
    }
}

impl KubeSettings {
    /// Reads, parses (YAML or JSON) and validates the settings file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SettingsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text)
    }

    /// Parses (YAML, of which JSON is a subset) and validates.
    pub fn from_text(text: &str) -> Result<Self, SettingsError> {
        let settings: KubeSettings = serde_path_to_error::deserialize(
            runledger_contracts::strict_json::Strict(serde_yaml_ng::Deserializer::from_str(text)),
        )
        .map_err(|e| {
            let path = e.path().to_string();
            SettingsError::Malformed {
                field: if path == "." {
                    "(document)".to_string()
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every problem at once, each naming its field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut p = Problems::default();
        if !is_dns_label(&self.namespace) {
            p.add(
                "namespace",
                "must be a DNS-1123 label (lowercase letters, digits, `-`; at most 63)",
            );
        }
        if let Some(url) = &self.cluster_url
            && let Err(e) = super::cluster_config(url)
        {
            p.add("clusterUrl", e.to_string());
        }
        if let Some(sa) = &self.service_account
            && !is_dns_subdomain(sa)
        {
            p.add("serviceAccount", "must be a DNS-1123 subdomain");
        }
        if self.ttl_seconds_after_finished < 0 {
            p.add("ttlSecondsAfterFinished", "must be 0 or more");
        }
        if let Some(d) = self.active_deadline_seconds
            && d < 1
        {
            p.add("activeDeadlineSeconds", "must be 1 or more");
        }
        if self.exit_when_idle_seconds == 0 {
            p.add("exitWhenIdleSeconds", "must be 1 or more");
        }
        if !(1..=3600).contains(&self.watch_interval_seconds) {
            p.add("watchIntervalSeconds", "must be between 1 and 3600");
        }
        if let Some(g) = self.termination_grace_period_seconds
            && g < 0
        {
            p.add("terminationGracePeriodSeconds", "must be 0 or more");
        }
        let mut seen = BTreeSet::new();
        for (i, name) in self.env_allowlist.iter().enumerate() {
            let field = format!("envAllowlist[{i}]");
            if !is_env_name(name) {
                p.add(
                    &field,
                    format!("`{}` is not an environment variable name", clip(name)),
                );
            } else if name == EXECUTOR_ID_ENV {
                p.add(
                    &field,
                    format!("{EXECUTOR_ID_ENV} is set by the launcher from the pod name"),
                );
            } else if !seen.insert(name.as_str()) {
                p.add(&field, format!("{name} is listed twice"));
            }
        }
        for (i, name) in self.env_from_secrets.iter().enumerate() {
            if !is_dns_subdomain(name) {
                p.add(
                    &format!("envFromSecrets[{i}]"),
                    "must be a Secret name (DNS-1123 subdomain)",
                );
            }
        }
        if self.classes.frontier.is_none() && self.classes.vllm.is_none() {
            p.add(
                "classes",
                "configure at least one executor class (`frontier` or `vllm`)",
            );
        }
        for class in ExecutorClass::ALL {
            if let Some(c) = self.class(class) {
                c.validate(class, &format!("classes.{class}"), &mut p);
            }
        }
        p.into_result()
    }

    /// The settings of `class`, if it is configured.
    pub fn class(&self, class: ExecutorClass) -> Option<&ClassSettings> {
        match class {
            ExecutorClass::Frontier => self.classes.frontier.as_ref(),
            ExecutorClass::Vllm => self.classes.vllm.as_ref(),
        }
    }
}

impl ClassSettings {
    /// `image:tag`, as the container's image.
    pub fn image_ref(&self) -> String {
        format!("{}:{}", self.image, self.tag)
    }

    fn validate(&self, class: ExecutorClass, at: &str, p: &mut Problems) {
        let last_segment = self.image.rsplit('/').next().unwrap_or_default();
        if self.image.is_empty() {
            p.add(&format!("{at}.image"), "must not be empty");
        } else if self.image.chars().any(|c| c.is_whitespace() || c == '@')
            || last_segment.contains(':')
        {
            p.add(
                &format!("{at}.image"),
                "must be an image repository without tag or digest (the tag goes in `tag`)",
            );
        }
        if !is_tag(&self.tag) {
            p.add(
                &format!("{at}.tag"),
                "must be an image tag (letters, digits, `_`, `.`, `-`; at most 128)",
            );
        }
        if !(1..=1024).contains(&self.concurrency) {
            p.add(&format!("{at}.concurrency"), "must be between 1 and 1024");
        }
        if class == ExecutorClass::Frontier && self.gpus > 0 {
            p.add(
                &format!("{at}.gpus"),
                "frontier executors call hosted providers over HTTP; only vllm takes GPUs",
            );
        }
        if self.gpus > 64 {
            p.add(&format!("{at}.gpus"), "must be at most 64");
        }
        self.resources.validate(&format!("{at}.resources"), p);
        for (key, value) in &self.node_selector {
            if key.is_empty() || key.len() > 317 || value.len() > 63 {
                p.add(
                    &format!("{at}.nodeSelector.{key}"),
                    "must be a label key and value",
                );
            }
        }
    }
}

impl Resources {
    fn validate(&self, at: &str, p: &mut Problems) {
        let amounts = [
            ("requests.cpu", &self.requests.cpu),
            ("requests.memory", &self.requests.memory),
            ("limits.cpu", &self.limits.cpu),
            ("limits.memory", &self.limits.memory),
        ];
        for (name, value) in amounts {
            if let Some(v) = value
                && quantity_value(v).is_none_or(|q| q <= 0.0)
            {
                p.add(
                    &format!("{at}.{name}"),
                    format!(
                        "`{}` is not a positive Kubernetes quantity (e.g. 500m, 2, 512Mi)",
                        clip(v)
                    ),
                );
            }
        }
        for (resource, request, limit) in [
            ("cpu", &self.requests.cpu, &self.limits.cpu),
            ("memory", &self.requests.memory, &self.limits.memory),
        ] {
            if let (Some(r), Some(l)) = (request, limit)
                && let (Some(rq), Some(lq)) = (quantity_value(r), quantity_value(l))
                && rq > lq
            {
                p.add(
                    &format!("{at}.requests.{resource}"),
                    format!("request {r} is more than the limit {l}"),
                );
            }
        }
    }
}

#[derive(Default)]
struct Problems(Vec<SettingsProblem>);

impl Problems {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(SettingsProblem {
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn into_result(self) -> Result<(), SettingsError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid { problems: self.0 })
        }
    }
}

/// Keeps echoed input short in messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_tag(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 128
        && matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The value of a Kubernetes quantity (`500m` = 0.5, `1Gi` = 2^30, `1e3` = 1000), or `None`
/// when `s` is not one. Precise enough to compare a request with its limit.
pub(crate) fn quantity_value(s: &str) -> Option<f64> {
    let number_end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().ok()?;
            10f64.powi(e)
        }
        _ => return None,
    };
    Some(value * scale)
}
