use runledger_contracts::ids::RunId;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::kube::{
    ExecutorClass, FailureReporter, JobLauncher, LaunchError, LaunchOutcome, job_name,
};

use super::stub::ApiStub;
use super::{NS, settings};

const OPENAI_KEY: &str = "sk-test-allowlisted-value";
const LEAKED: &str = "must-not-leave-the-launcher";

/// The launcher's environment: two allowlisted variables (a third, RUNLEDGER_LOG, is missing)
/// and two that are not on the allowlist.
fn environment() -> Vec<(String, String)> {
    [
        ("RUNLEDGER_NATS_URL", "nats://nats.runledger.svc:4222"),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("AWS_SECRET_ACCESS_KEY", LEAKED),
        ("HOME", "/root"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn launcher(stub: &ApiStub) -> (JobLauncher, mpsc::Receiver<crate::kube::InfraFailure>) {
    let (tx, rx) = mpsc::channel(16);
    let launcher = JobLauncher::with_env(
        stub.client(),
        &settings(&stub.url()),
        FailureReporter::new(tx),
        environment(),
    );
    (launcher, rx)
}

fn run_id() -> RunId {
    "0197a3c2-5b1e-7c3d-9f00-0123456789ab".parse().unwrap()
}

fn created_bodies(stub: &ApiStub) -> Vec<Value> {
    stub.requests_to("POST")
        .into_iter()
        .map(|r| r.body.unwrap())
        .collect()
}

#[test]
fn job_names_are_deterministic_dns_labels() {
    let run = run_id();
    let name = job_name(run, ExecutorClass::Frontier);
    assert_eq!(name, job_name(run, ExecutorClass::Frontier));
    let hex = blake3::hash(run.to_string().as_bytes()).to_hex();
    assert_eq!(name, format!("rl-frontier-{}", &hex.as_str()[..12]));
    assert_eq!(
        job_name(run, ExecutorClass::Vllm),
        format!("rl-vllm-{}", &hex.as_str()[..12])
    );
    assert_ne!(name, job_name(RunId::new_v7(), ExecutorClass::Frontier));
    for _ in 0..100 {
        let n = job_name(RunId::new_v7(), ExecutorClass::Frontier);
        assert!(
            crate::kube::settings::is_dns_label(&n) && n.len() <= 63,
            "{n}"
        );
    }
}

#[tokio::test]
async fn a_frontier_job_carries_exactly_what_the_settings_say() {
    let stub = ApiStub::start().await;
    let (launcher, _rx) = launcher(&stub);
    let run = run_id();
    let outcome = launcher.launch(run, ExecutorClass::Frontier).await.unwrap();
    let name = job_name(run, ExecutorClass::Frontier);
    assert_eq!(
        outcome,
        LaunchOutcome::Created {
            job_name: name.clone()
        }
    );

    let posts = stub.requests_to("POST");
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].path,
        format!("/apis/batch/v1/namespaces/{NS}/jobs")
    );
    let job = posts[0].body.clone().unwrap();
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["name"], name.as_str());
    let labels = json!({
        "app.kubernetes.io/name": "runledger",
        "app.kubernetes.io/component": "executor",
        "runledger.dev/run-id": run.to_string(),
        "runledger.dev/executor-class": "frontier",
    });
    assert_eq!(job["metadata"]["labels"], labels);
    assert_eq!(job["spec"]["template"]["metadata"]["labels"], labels);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 600);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 7200);

    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], "runledger-executor");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["terminationGracePeriodSeconds"], 120);
    assert!(pod.get("nodeSelector").is_none() && pod.get("tolerations").is_none());
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], "registry.example.com/runledger/runledger:0.1.0");
    assert_eq!(c["command"], json!(["runledger"]));
    assert_eq!(
        c["args"],
        json!([
            "executor",
            "--class",
            "frontier",
            "--concurrency",
            "8",
            "--exit-when-idle",
            "90"
        ])
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}})
    );
    assert_eq!(
        c["env"],
        json!([
            {"name": "RUNLEDGER_NATS_URL", "value": "nats://nats.runledger.svc:4222"},
            {"name": "OPENAI_API_KEY", "value": OPENAI_KEY},
            {"name": "RUNLEDGER_EXECUTOR_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ])
    );
    assert_eq!(
        c["envFrom"],
        json!([{"secretRef": {"name": "runledger-provider-keys", "optional": false}}])
    );

    // Nothing off the allowlist reaches the cluster, by name or by value.
    let text = job.to_string();
    for absent in [
        "AWS_SECRET_ACCESS_KEY",
        LEAKED,
        "HOME",
        "/root",
        "RUNLEDGER_LOG",
    ] {
        assert!(!text.contains(absent), "{absent} leaked into the Job");
    }
    // And the launcher never prints a value.
    assert!(!format!("{launcher:?}").contains(OPENAI_KEY));

    let stored = stub.job(NS, &name).unwrap();
    assert!(stored["metadata"]["uid"].is_string());
}

#[tokio::test]
async fn a_vllm_job_requests_its_gpus_on_gpu_nodes() {
    let stub = ApiStub::start().await;
    let (launcher, _rx) = launcher(&stub);
    let outcome = launcher
        .launch(run_id(), ExecutorClass::Vllm)
        .await
        .unwrap();
    assert_eq!(outcome.job_name(), job_name(run_id(), ExecutorClass::Vllm));
    let job = &created_bodies(&stub)[0];
    assert_eq!(
        job["metadata"]["labels"]["runledger.dev/executor-class"],
        "vllm"
    );
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        "registry.example.com:5000/runledger/runledger-vllm:0.1.0-cuda12"
    );
    assert_eq!(
        c["args"],
        json!([
            "executor",
            "--class",
            "vllm",
            "--concurrency",
            "2",
            "--exit-when-idle",
            "90"
        ])
    );
    assert_eq!(
        c["resources"],
        json!({
            "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"},
            "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
        })
    );
    assert_eq!(pod["nodeSelector"], json!({"runledger.dev/gpu": "true"}));
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    );
}

#[tokio::test]
async fn launching_twice_finds_the_running_job() {
    let stub = ApiStub::start().await;
    let (launcher, _rx) = launcher(&stub);
    let first = launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap();
    let second = launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap();
    let name = job_name(run_id(), ExecutorClass::Frontier);
    assert_eq!(
        first,
        LaunchOutcome::Created {
            job_name: name.clone()
        }
    );
    assert_eq!(
        second,
        LaunchOutcome::AlreadyRunning {
            job_name: name.clone()
        }
    );
    // Two creates (the second answered 409), one look at the existing Job, nothing deleted.
    assert_eq!(stub.requests_to("POST").len(), 2);
    assert_eq!(stub.requests_to("DELETE").len(), 0);
    assert_eq!(stub.state.lock().unwrap().jobs.len(), 1);
    // Another class of the same run is another Job.
    let vllm = launcher
        .launch(run_id(), ExecutorClass::Vllm)
        .await
        .unwrap();
    assert!(matches!(vllm, LaunchOutcome::Created { .. }));
    assert_eq!(stub.state.lock().unwrap().jobs.len(), 2);
}

#[tokio::test]
async fn a_completed_job_is_replaced_so_new_work_gets_an_executor() {
    let stub = ApiStub::start().await;
    let (launcher, mut rx) = launcher(&stub);
    let name = job_name(run_id(), ExecutorClass::Frontier);
    launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap();
    let old_uid = stub.job(NS, &name).unwrap()["metadata"]["uid"].clone();
    stub.set_job_status(
        NS,
        &name,
        json!({"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}),
    );

    let outcome = launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        LaunchOutcome::Replaced {
            job_name: name.clone()
        }
    );
    let deletes = stub.requests_to("DELETE");
    assert_eq!(deletes.len(), 1);
    let options = deletes[0].body.clone().unwrap();
    assert_eq!(options["propagationPolicy"], "Background");
    assert_eq!(options["preconditions"]["uid"], old_uid);
    let new = stub.job(NS, &name).unwrap();
    assert_ne!(new["metadata"]["uid"], old_uid);
    assert_eq!(new["status"], json!({}));
    assert!(rx.try_recv().is_err(), "a completed job is not a failure");
}

#[tokio::test]
async fn a_failed_job_is_reported_once_then_replaced() {
    let stub = ApiStub::start().await;
    let (tx, mut rx) = mpsc::channel(16);
    let reporter = FailureReporter::new(tx);
    let launcher = JobLauncher::with_env(
        stub.client(),
        &settings(&stub.url()),
        reporter.clone(),
        environment(),
    );
    let name = job_name(run_id(), ExecutorClass::Frontier);
    launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap();
    let stored = stub.job(NS, &name).unwrap();
    let uid = stored["metadata"]["uid"].as_str().unwrap().to_string();
    stub.add_pod(super::watcher::pod_of(
        &stored,
        "abcde",
        json!({"phase": "Failed"}),
    ));
    stub.set_job_status(
        NS,
        &name,
        json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]}),
    );

    let outcome = launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        LaunchOutcome::Replaced {
            job_name: name.clone()
        }
    );
    let failure = rx.try_recv().unwrap();
    assert_eq!(failure.run_id, run_id());
    assert_eq!(failure.executor_class, ExecutorClass::Frontier);
    assert_eq!(failure.job_name, name);
    assert_eq!(failure.job_uid, uid);
    assert_eq!(failure.executor_ids, [format!("{name}-abcde")]);
    assert_eq!(failure.reason, "BackoffLimitExceeded");
    assert_eq!(
        failure.message,
        "Job has reached the specified backoff limit"
    );
    assert!(rx.try_recv().is_err(), "reported once");
}

#[tokio::test]
async fn a_failure_the_watcher_reported_is_not_reported_again_on_replacement() {
    let stub = ApiStub::start().await;
    let (tx, mut rx) = mpsc::channel(16);
    let reporter = FailureReporter::new(tx);
    let launcher = JobLauncher::with_env(
        stub.client(),
        &settings(&stub.url()),
        reporter.clone(),
        environment(),
    );
    let mut watcher = crate::kube::JobWatcher::new(stub.client(), &settings(&stub.url()), reporter);
    let name = job_name(run_id(), ExecutorClass::Vllm);
    launcher
        .launch(run_id(), ExecutorClass::Vllm)
        .await
        .unwrap();
    stub.set_job_status(
        NS,
        &name,
        json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]}),
    );
    assert_eq!(watcher.poll_once().await.unwrap(), 1);
    assert_eq!(rx.try_recv().unwrap().reason, "DeadlineExceeded");

    let outcome = launcher
        .launch(run_id(), ExecutorClass::Vllm)
        .await
        .unwrap();
    assert_eq!(outcome, LaunchOutcome::Replaced { job_name: name });
    assert!(rx.try_recv().is_err(), "reported twice");
    // The new Job is healthy: nothing more to report.
    assert_eq!(watcher.poll_once().await.unwrap(), 0);
}

#[tokio::test]
async fn a_name_taken_by_another_run_is_an_error() {
    let stub = ApiStub::start().await;
    let (launcher, _rx) = launcher(&stub);
    let name = job_name(run_id(), ExecutorClass::Frontier);
    stub.put_job(
        NS,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": {
            "app.kubernetes.io/name": "runledger", "runledger.dev/run-id": "00000000-0000-7000-8000-000000000001",
            "runledger.dev/executor-class": "frontier"}}, "spec": {"template": {}}}),
    );
    let err = launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "job_name_collision", "{err}");
    assert!(
        err.to_string()
            .contains("00000000-0000-7000-8000-000000000001"),
        "{err}"
    );
    assert_eq!(
        stub.requests_to("DELETE").len(),
        0,
        "someone else's job is never deleted"
    );
}

#[tokio::test]
async fn api_refusals_are_typed_errors() {
    let stub = ApiStub::start().await;
    let (launcher, _rx) = launcher(&stub);
    stub.state.lock().unwrap().refuse_create = Some((403, "Forbidden"));
    let err = launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap_err();
    match &err {
        LaunchError::Api {
            status,
            reason,
            job_name: name,
            ..
        } => {
            assert_eq!((*status, reason.as_str()), (403, "Forbidden"));
            assert_eq!(name, &job_name(run_id(), ExecutorClass::Frontier));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert_eq!(err.code(), "kube_api_error");
    assert!(!err.to_string().contains(OPENAI_KEY));
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_typed_error() {
    // A port nothing listens on any more.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (tx, _rx) = mpsc::channel(1);
    let client = crate::kube::client_for(crate::kube::cluster_config(&url).unwrap()).unwrap();
    let launcher = JobLauncher::with_env(
        client,
        &settings(&url),
        FailureReporter::new(tx),
        environment(),
    );
    let err = launcher
        .launch(run_id(), ExecutorClass::Frontier)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "kube_unreachable", "{err}");
}

#[tokio::test]
async fn an_unconfigured_class_cannot_be_launched() {
    let stub = ApiStub::start().await;
    let mut s = settings(&stub.url());
    s.classes.vllm = None;
    let (tx, _rx) = mpsc::channel(1);
    let launcher =
        JobLauncher::with_env(stub.client(), &s, FailureReporter::new(tx), environment());
    let err = launcher
        .launch(run_id(), ExecutorClass::Vllm)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "executor_class_not_configured");
    assert!(stub.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn clients_build_for_https_clusters_and_refuse_other_schemes() {
    // Builds the rustls connector (ring provider) without contacting anything.
    let https = crate::kube::cluster_config("https://127.0.0.1:6443").unwrap();
    assert!(crate::kube::client_for(https).is_ok());
    for bad in ["ftp://cluster", "127.0.0.1:6443", "not a url"] {
        assert!(crate::kube::cluster_config(bad).is_err(), "{bad}");
    }
    let mut s = settings("http://127.0.0.1:1");
    s.cluster_url = Some("ftp://cluster".into());
    let Err(err) = crate::kube::connect(&s).await else {
        panic!("an ftp cluster URL was accepted")
    };
    assert_eq!(err.code(), "kube_cluster_url_invalid", "{err}");
}

#[tokio::test]
async fn the_launcher_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>(_: &T) {}
    fn sendable<T: Send>(_: &T) {}
    let stub = ApiStub::start().await;
    let (launcher, _rx) = launcher(&stub);
    shareable(&launcher);
    let launch = launcher.launch(run_id(), ExecutorClass::Frontier);
    sendable(&launch);
    assert!(matches!(
        launch.await.unwrap(),
        LaunchOutcome::Created { .. }
    ));
}
