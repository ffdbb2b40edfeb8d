//! The Job object for one run and executor class: a pure function of the settings, so the
//! same inputs always give the same name and spec.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretEnvSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use runledger_contracts::ids::RunId;

use super::settings::{ClassSettings, KubeSettings, ResourceAmounts};
use super::{
    COMPONENT_VALUE, EXECUTOR_ID_ENV, ExecutorClass, LABEL_COMPONENT, LABEL_EXECUTOR_CLASS,
    LABEL_NAME, LABEL_RUN_ID, NAME_VALUE,
};

/// Resource name Kubernetes' NVIDIA device plugin advertises GPUs under.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// `rl-<class>-<first 12 hex digits of blake3(run id)>`: a valid DNS-1123 label (at most 24
/// characters, well under 63) that is the same every time for one run and class, so a second
/// launch finds the first Job instead of starting another. The run id is hashed in its
/// canonical hyphenated lowercase form.
pub fn job_name(run_id: RunId, class: ExecutorClass) -> String {
    let digest = blake3::hash(run_id.to_string().as_bytes()).to_hex();
    format!("rl-{}-{}", class.as_str(), &digest.as_str()[..12])
}

/// Labels on the Job and on its pod template (so pods are found with the same selector).
pub(crate) fn labels(run_id: RunId, class: ExecutorClass) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), NAME_VALUE.to_string()),
        (LABEL_COMPONENT.to_string(), COMPONENT_VALUE.to_string()),
        (LABEL_RUN_ID.to_string(), run_id.to_string()),
        (LABEL_EXECUTOR_CLASS.to_string(), class.as_str().to_string()),
    ])
}

/// The Job that runs `runledger executor --class <class>` for `run_id`. `env` holds the
/// allowlisted variables with their values, already filtered.
pub(crate) fn build_job(
    settings: &KubeSettings,
    class_settings: &ClassSettings,
    run_id: RunId,
    class: ExecutorClass,
    env: &[(String, String)],
) -> Job {
    let labels = labels(run_id, class);
    let mut env_vars: Vec<EnvVar> = env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..Default::default()
        })
        .collect();
    env_vars.push(EnvVar {
        name: EXECUTOR_ID_ENV.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let env_from: Vec<EnvFromSource> = settings
        .env_from_secrets
        .iter()
        .map(|name| EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    let container = Container {
        name: "executor".to_string(),
        image: Some(class_settings.image_ref()),
        command: Some(vec!["runledger".to_string()]),
        args: Some(vec![
            "executor".to_string(),
            "--class".to_string(),
            class.as_str().to_string(),
            "--concurrency".to_string(),
            class_settings.concurrency.to_string(),
            "--exit-when-idle".to_string(),
            settings.exit_when_idle_seconds.to_string(),
        ]),
        env: Some(env_vars),
        env_from: (!env_from.is_empty()).then_some(env_from),
        resources: Some(resources(class_settings)),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".to_string()),
        service_account_name: settings.service_account.clone(),
        // Executors never talk to the Kubernetes API.
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: settings.termination_grace_period_seconds,
        node_selector: (!class_settings.node_selector.is_empty())
            .then(|| class_settings.node_selector.clone()),
        tolerations: (!class_settings.tolerations.is_empty())
            .then(|| class_settings.tolerations.clone()),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(run_id, class)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Retries belong to the engine: a failed executor fails its node runs, which the
            // engine's retry policy handles; Kubernetes must not start a second pod behind it.
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            active_deadline_seconds: settings.active_deadline_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn resources(class_settings: &ClassSettings) -> ResourceRequirements {
    let amounts = |a: &ResourceAmounts| {
        let mut map = BTreeMap::new();
        if let Some(cpu) = &a.cpu {
            map.insert("cpu".to_string(), Quantity(cpu.clone()));
        }
        if let Some(memory) = &a.memory {
            map.insert("memory".to_string(), Quantity(memory.clone()));
        }
        // Extended resources cannot be overcommitted: request and limit must be equal.
        if class_settings.gpus > 0 {
            map.insert(
                GPU_RESOURCE.to_string(),
                Quantity(class_settings.gpus.to_string()),
            );
        }
        map
    };
    let requests = amounts(&class_settings.resources.requests);
    let limits = amounts(&class_settings.resources.limits);
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    }
}
