use std::path::PathBuf;

use crate::kube::settings::quantity_value;
use crate::kube::{ExecutorClass, KubeSettings, SettingsError};

use super::{settings, settings_text};

/// A file of its own under the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("runledger-kube-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn invalid_fields(text: &str) -> Vec<String> {
    match KubeSettings::from_text(text) {
        Err(e @ SettingsError::Invalid { .. }) => {
            assert_eq!(e.code(), "kube_settings_invalid");
            e.fields().into_iter().map(String::from).collect()
        }
        other => panic!("expected invalid settings, got {other:?}"),
    }
}

const MINIMAL: &str =
    "namespace: runledger\nclasses:\n  frontier:\n    image: example/runledger\n    tag: v1\n";

#[test]
fn yaml_and_json_files_load_to_the_same_settings() {
    let yaml = TempFile::new("settings.yaml", &settings_text("http://127.0.0.1:1"));
    let from_yaml = KubeSettings::load(&yaml.0).unwrap();
    let json = TempFile::new(
        "settings.json",
        &serde_json::to_string_pretty(&from_yaml).unwrap(),
    );
    let from_json = KubeSettings::load(&json.0).unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_yaml, settings("http://127.0.0.1:1"));
    let vllm = from_yaml.class(ExecutorClass::Vllm).unwrap();
    assert_eq!(vllm.gpus, 2);
    assert_eq!(
        vllm.image_ref(),
        "registry.example.com:5000/runledger/runledger-vllm:0.1.0-cuda12"
    );
    assert_eq!(vllm.tolerations[0].key.as_deref(), Some("nvidia.com/gpu"));
    assert_eq!(
        from_yaml.env_allowlist,
        ["RUNLEDGER_NATS_URL", "OPENAI_API_KEY", "RUNLEDGER_LOG"]
    );
}

#[test]
fn omitted_settings_take_their_defaults() {
    let s = KubeSettings::from_text(MINIMAL).unwrap();
    assert_eq!(s.ttl_seconds_after_finished, 3600);
    assert_eq!(s.exit_when_idle_seconds, 120);
    assert_eq!(s.watch_interval_seconds, 5);
    assert_eq!(s.active_deadline_seconds, None);
    assert_eq!(s.cluster_url, None);
    assert!(s.env_allowlist.is_empty());
    let frontier = s.class(ExecutorClass::Frontier).unwrap();
    assert_eq!((frontier.concurrency, frontier.gpus), (4, 0));
    assert!(s.class(ExecutorClass::Vllm).is_none());
}

#[test]
fn a_missing_file_is_unreadable_and_names_the_path() {
    let err = KubeSettings::load("/nonexistent/runledger/kube.yaml").unwrap_err();
    assert_eq!(err.code(), "kube_settings_unreadable");
    assert!(
        err.to_string().contains("/nonexistent/runledger/kube.yaml"),
        "{err}"
    );
}

#[test]
fn type_errors_and_unknown_keys_name_the_field() {
    let wrong_type = MINIMAL.replace("tag: v1", "tag: v1\n    concurrency: many");
    let err = KubeSettings::from_text(&wrong_type).unwrap_err();
    assert_eq!(err.code(), "kube_settings_malformed");
    assert_eq!(err.fields(), ["classes.frontier.concurrency"], "{err}");

    let unknown = MINIMAL.replace("tag: v1", "tag: v1\n    replicas: 3");
    let err = KubeSettings::from_text(&unknown).unwrap_err();
    assert_eq!(err.code(), "kube_settings_malformed");
    assert!(err.fields()[0].starts_with("classes.frontier"), "{err}");
    assert!(
        err.to_string().contains("unknown field `replicas`"),
        "{err}"
    );

    let missing = "namespace: runledger\nclasses:\n  vllm:\n    image: example/runledger\n";
    let err = KubeSettings::from_text(missing).unwrap_err();
    assert_eq!(err.fields(), ["classes.vllm"], "{err}");
    assert!(err.to_string().contains("missing field `tag`"), "{err}");
}

#[test]
fn every_invalid_value_is_reported_with_its_field() {
    let text = r#"
namespace: Runledger_Prod
clusterUrl: "ftp://cluster"
serviceAccount: "Bad Account"
ttlSecondsAfterFinished: -1
activeDeadlineSeconds: 0
exitWhenIdleSeconds: 0
watchIntervalSeconds: 0
terminationGracePeriodSeconds: -5
envAllowlist: ["1BAD", RUNLEDGER_EXECUTOR_ID, OPENAI_API_KEY, OPENAI_API_KEY]
envFromSecrets: ["Keys!"]
classes:
  frontier:
    image: "example/runledger:latest"
    tag: ""
    concurrency: 0
    gpus: 1
    resources:
      requests: {cpu: "2", memory: lots}
      limits: {cpu: 500m, memory: 1Gi}
  vllm:
    image: ""
    tag: "bad tag"
    gpus: 65
    resources:
      requests: {memory: 2Gi}
      limits: {memory: 1Gi, cpu: "-1"}
"#;
    let fields = invalid_fields(text);
    let expected = [
        "namespace",
        "clusterUrl",
        "serviceAccount",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "exitWhenIdleSeconds",
        "watchIntervalSeconds",
        "terminationGracePeriodSeconds",
        "envAllowlist[0]",
        "envAllowlist[1]",
        "envAllowlist[3]",
        "envFromSecrets[0]",
        "classes.frontier.image",
        "classes.frontier.tag",
        "classes.frontier.concurrency",
        "classes.frontier.gpus",
        "classes.frontier.resources.requests.memory",
        "classes.frontier.resources.requests.cpu",
        "classes.vllm.image",
        "classes.vllm.tag",
        "classes.vllm.gpus",
        "classes.vllm.resources.limits.cpu",
        "classes.vllm.resources.requests.memory",
    ];
    assert_eq!(fields, expected);
}

#[test]
fn the_error_line_names_the_first_field_and_counts_the_rest() {
    let err = KubeSettings::from_text(
        &MINIMAL.replace("tag: v1", "tag: v1\n    concurrency: 0\n    gpus: 1"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "kubernetes settings: classes.frontier.concurrency: must be between 1 and 1024 (and 1 more problem)"
    );
}

#[test]
fn settings_need_at_least_one_class() {
    assert_eq!(
        invalid_fields("namespace: runledger\nclasses: {}\n"),
        ["classes"]
    );
}

#[test]
fn quantities_parse_like_kubernetes() {
    assert_eq!(quantity_value("500m"), Some(0.5));
    assert_eq!(quantity_value("2"), Some(2.0));
    assert_eq!(quantity_value("1.5"), Some(1.5));
    assert_eq!(quantity_value("1Gi"), Some(1024.0 * 1024.0 * 1024.0));
    assert_eq!(quantity_value("512Mi"), Some(512.0 * 1024.0 * 1024.0));
    assert_eq!(quantity_value("1G"), Some(1e9));
    assert_eq!(quantity_value("1e3"), Some(1000.0));
    assert_eq!(quantity_value("12E"), Some(12e18));
    for bad in ["", "m", "1.2.3", "1 Gi", "lots", "1GB", ".", "1ee"] {
        assert_eq!(quantity_value(bad), None, "{bad}");
    }
}
