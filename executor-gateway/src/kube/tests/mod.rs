//! Tests of the Kubernetes launcher and watcher against an HTTP stub of the API server, of the
//! settings, and of the manifests in `ops/k8s/`.

mod launcher;
mod manifests;
mod settings;
mod stub;
mod watcher;

use crate::kube::KubeSettings;

pub const NS: &str = "rl-test";

/// Settings with both classes, every option set; `cluster_url` points at the stub.
pub fn settings_text(cluster_url: &str) -> String {
    format!(
        r#"
namespace: {NS}
clusterUrl: {cluster_url}
serviceAccount: runledger-executor
ttlSecondsAfterFinished: 600
activeDeadlineSeconds: 7200
exitWhenIdleSeconds: 90
watchIntervalSeconds: 1
terminationGracePeriodSeconds: 120
envAllowlist: [RUNLEDGER_NATS_URL, OPENAI_API_KEY, RUNLEDGER_LOG]
envFromSecrets: [runledger-provider-keys]
classes:
  frontier:
    image: registry.example.com/runledger/runledger
    tag: "0.1.0"
    concurrency: 8
    resources:
      requests: {{cpu: 250m, memory: 256Mi}}
      limits: {{cpu: "1", memory: 512Mi}}
  vllm:
    image: registry.example.com:5000/runledger/runledger-vllm
    tag: 0.1.0-cuda12
    concurrency: 2
    gpus: 2
    resources:
      requests: {{cpu: "2", memory: 8Gi}}
      limits: {{cpu: "4", memory: 16Gi}}
    nodeSelector: {{runledger.dev/gpu: "true"}}
    tolerations:
      - {{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}
"#
    )
}

pub fn settings(cluster_url: &str) -> KubeSettings {
    KubeSettings::from_text(&settings_text(cluster_url)).unwrap()
}
