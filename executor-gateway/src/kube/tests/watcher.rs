use std::time::Duration;

use runledger_contracts::ids::RunId;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::kube::{
    ExecutorClass, FailureReporter, InfraFailure, JobLauncher, JobWatcher, executor_selector,
    job_name,
};

use super::stub::ApiStub;
use super::{NS, settings};

/// A pod of `job` the way the Job controller creates it (template labels, owner reference).
pub fn pod_of(job: &Value, suffix: &str, status: Value) -> Value {
    let name = job["metadata"]["name"].as_str().unwrap();
    let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["batch.kubernetes.io/controller-uid"] = job["metadata"]["uid"].clone();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{name}-{suffix}"),
            "namespace": job["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {"containers": [{"name": "executor", "image": "registry.example.com/runledger/runledger:0.1.0"}]},
        "status": status,
    })
}

struct Cluster {
    stub: ApiStub,
    launcher: JobLauncher,
    reporter: FailureReporter,
    rx: mpsc::Receiver<InfraFailure>,
}

impl Cluster {
    async fn start() -> Cluster {
        let stub = ApiStub::start().await;
        let (tx, rx) = mpsc::channel(64);
        let reporter = FailureReporter::new(tx);
        // Through `connect`, as serve does: the settings' clusterUrl is the stub.
        let client = crate::kube::connect(&settings(&stub.url())).await.unwrap();
        let launcher = JobLauncher::with_env(client, &settings(&stub.url()), reporter.clone(), []);
        Cluster {
            stub,
            launcher,
            reporter,
            rx,
        }
    }

    fn watcher(&self) -> JobWatcher {
        JobWatcher::new(
            self.stub.client(),
            &settings(&self.stub.url()),
            self.reporter.clone(),
        )
    }

    /// Launches the Job of a new run and returns the run id and the Job as stored.
    async fn job(&self, class: ExecutorClass) -> (RunId, Value) {
        let run = RunId::new_v7();
        self.launcher.launch(run, class).await.unwrap();
        (run, self.stub.job(NS, &job_name(run, class)).unwrap())
    }

    fn received(&mut self) -> Vec<InfraFailure> {
        let mut all = Vec::new();
        while let Ok(f) = self.rx.try_recv() {
            all.push(f);
        }
        all.sort_by(|a, b| a.job_name.cmp(&b.job_name));
        all
    }
}

fn name_of(job: &Value) -> String {
    job["metadata"]["name"].as_str().unwrap().to_string()
}

fn failed(reason: &str, message: &str) -> Value {
    json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}]})
}

fn running() -> Value {
    json!({"phase": "Running"})
}

#[tokio::test]
async fn failed_jobs_and_evicted_pods_are_reported_once_each() {
    let mut c = Cluster::start().await;
    let (run_a, a) = c.job(ExecutorClass::Frontier).await; // fails: its executor exited non-zero
    let (run_b, b) = c.job(ExecutorClass::Vllm).await; // runs past its deadline, later
    let (run_e, e) = c.job(ExecutorClass::Frontier).await; // its pod is evicted by the kubelet
    let (run_p, p) = c.job(ExecutorClass::Vllm).await; // its pod is preempted
    let (_, done) = c.job(ExecutorClass::Frontier).await; // idled out: complete, not a failure
    let (_, healthy) = c.job(ExecutorClass::Frontier).await;

    c.stub.add_pod(pod_of(&a, "a1", json!({"phase": "Failed"})));
    c.stub.set_job_status(
        NS,
        &name_of(&a),
        failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ),
    );
    c.stub.add_pod(pod_of(&b, "b1", running()));
    c.stub.add_pod(pod_of(
        &e,
        "e1",
        json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
    ));
    c.stub.add_pod(pod_of(
        &p,
        "p1",
        json!({"phase": "Running", "conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "PreemptionByScheduler", "message": "Preempted in order to admit critical pod"}]}),
    ));
    c.stub
        .add_pod(pod_of(&done, "d1", json!({"phase": "Succeeded"})));
    c.stub.set_job_status(
        NS,
        &name_of(&done),
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
    );
    c.stub.add_pod(pod_of(&healthy, "h1", running()));
    // Not ours: another app's failed Job, and a runledger-labelled Job without a valid run id.
    c.stub.put_job(
        NS,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "other-app", "labels": {"app": "other"}},
            "spec": {"template": {}}, "status": failed("BackoffLimitExceeded", "")}),
    );
    c.stub.put_job(
        NS,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "rl-frontier-garbled", "labels": {
            "app.kubernetes.io/name": "runledger", "app.kubernetes.io/component": "executor",
            "runledger.dev/run-id": "not-a-uuid", "runledger.dev/executor-class": "frontier"}},
            "spec": {"template": {}}, "status": failed("BackoffLimitExceeded", "")}),
    );

    let mut watcher = c.watcher();
    assert_eq!(watcher.poll_once().await.unwrap(), 3);
    let got = c.received();
    let mut want = vec![
        InfraFailure {
            run_id: run_a,
            executor_class: ExecutorClass::Frontier,
            job_name: name_of(&a),
            job_uid: a["metadata"]["uid"].as_str().unwrap().to_string(),
            executor_ids: vec![format!("{}-a1", name_of(&a))],
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        },
        InfraFailure {
            run_id: run_e,
            executor_class: ExecutorClass::Frontier,
            job_name: name_of(&e),
            job_uid: e["metadata"]["uid"].as_str().unwrap().to_string(),
            executor_ids: vec![format!("{}-e1", name_of(&e))],
            reason: "Evicted".into(),
            message: "The node was low on resource: memory.".into(),
        },
        InfraFailure {
            run_id: run_p,
            executor_class: ExecutorClass::Vllm,
            job_name: name_of(&p),
            job_uid: p["metadata"]["uid"].as_str().unwrap().to_string(),
            executor_ids: vec![format!("{}-p1", name_of(&p))],
            reason: "PreemptionByScheduler".into(),
            message: "Preempted in order to admit critical pod".into(),
        },
    ];
    want.sort_by(|x, y| x.job_name.cmp(&y.job_name));
    assert_eq!(got, want);

    // Nothing new: nothing reported again.
    assert_eq!(watcher.poll_once().await.unwrap(), 0);
    // The evicted pod's Job now fails as well: still the one report it already got.
    c.stub.set_job_status(
        NS,
        &name_of(&e),
        failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ),
    );
    assert_eq!(watcher.poll_once().await.unwrap(), 0);

    // B passes its deadline; the Job controller deletes its pod. The watcher still names it.
    c.stub.set_job_status(
        NS,
        &name_of(&b),
        failed(
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ),
    );
    c.stub
        .state
        .lock()
        .unwrap()
        .pods
        .retain(|pod| pod["metadata"]["name"] != format!("{}-b1", name_of(&b)));
    assert_eq!(watcher.poll_once().await.unwrap(), 1);
    let got = c.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].run_id, got[0].executor_class),
        (run_b, ExecutorClass::Vllm)
    );
    assert_eq!(got[0].reason, "DeadlineExceeded");
    assert_eq!(got[0].executor_ids, [format!("{}-b1", name_of(&b))]);
    assert_eq!(watcher.poll_once().await.unwrap(), 0);

    // Every list asked only for executor objects.
    let lists: Vec<_> = c
        .stub
        .requests_to("GET")
        .into_iter()
        .filter(|r| r.path.ends_with("/jobs") || r.path.ends_with("/pods"))
        .collect();
    assert!(!lists.is_empty());
    for r in lists {
        assert_eq!(
            r.query.get("labelSelector"),
            Some(&executor_selector()),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn the_watcher_reads_every_page_of_a_long_list() {
    let mut c = Cluster::start().await;
    let (_, busy) = c.job(ExecutorClass::Frontier).await;
    for i in 0..520 {
        c.stub.add_pod(pod_of(&busy, &format!("{i:05}"), running()));
    }
    let (run, evicted) = c.job(ExecutorClass::Frontier).await;
    c.stub.add_pod(pod_of(
        &evicted,
        "last",
        json!({"phase": "Failed", "reason": "Evicted", "message": "disk pressure"}),
    ));
    let mut watcher = c.watcher();
    assert_eq!(watcher.poll_once().await.unwrap(), 1);
    let got = c.received();
    assert_eq!((got[0].run_id, got[0].reason.as_str()), (run, "Evicted"));
    let pod_lists = c
        .stub
        .requests_to("GET")
        .into_iter()
        .filter(|r| r.path.ends_with("/pods"))
        .count();
    assert_eq!(pod_lists, 2, "two pages of at most 500");
}

#[tokio::test]
async fn run_reports_on_the_channel_and_stops_on_shutdown() {
    let mut c = Cluster::start().await;
    let watcher = c.watcher();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(watcher.run(async {
        let _ = stopped.await;
    }));
    let (run, job) = c.job(ExecutorClass::Frontier).await;
    c.stub.set_job_status(
        NS,
        &name_of(&job),
        failed(
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ),
    );
    let failure = tokio::time::timeout(Duration::from_secs(10), c.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (failure.run_id, failure.reason.as_str()),
        (run, "DeadlineExceeded")
    );
    assert!(failure.executor_ids.is_empty(), "no pod was ever seen");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn run_keeps_going_when_the_api_fails_and_ends_when_nobody_listens() {
    let c = Cluster::start().await;
    let (_, job) = c.job(ExecutorClass::Frontier).await;
    // A poll that fails (every list answered 404: wrong API path) is retried, not fatal.
    let stub_url = c.stub.url();
    let broken = {
        let (tx, _rx) = mpsc::channel(1);
        let client = crate::kube::client_for(
            crate::kube::cluster_config(&format!("{stub_url}/broken")).unwrap(),
        )
        .unwrap();
        JobWatcher::new(client, &settings(&stub_url), FailureReporter::new(tx))
    };
    let (_stop, never) = tokio::sync::oneshot::channel::<()>();
    let broken_task = tokio::spawn(broken.run(async {
        let _ = never.await;
    }));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !broken_task.is_finished(),
        "a failing poll must not stop the watcher"
    );
    broken_task.abort();

    // With the receiver gone, the first failure found ends the watcher.
    let Cluster {
        stub, reporter, rx, ..
    } = c;
    drop(rx);
    stub.set_job_status(NS, &name_of(&job), failed("BackoffLimitExceeded", ""));
    let watcher = JobWatcher::new(stub.client(), &settings(&stub.url()), reporter);
    let (_stop, never) = tokio::sync::oneshot::channel::<()>();
    tokio::time::timeout(
        Duration::from_secs(10),
        watcher.run(async {
            let _ = never.await;
        }),
    )
    .await
    .expect("the watcher ends once nobody receives its failures");
}
