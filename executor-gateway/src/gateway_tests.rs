//! Dispatch, intake and workers against real NATS JetStream and real PostgreSQL. Each test
//! has its own ledger schema and its own JetStream namespace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use runledger_contracts::events::{DomainEvent, NodeRunStatus, TimeoutPhase};
use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{EventStore, PgEventStore};
use runledger_orchestrator::decide::{
    ControlAction, NodeOutcome, NodeResult, RemoteDispatch, Settings,
};
use runledger_orchestrator::engine::{Engine, EngineConfig, NoFlowcharts, RunSummary};
use runledger_orchestrator::executor::{InProcessPool, Providers, Report};
use runledger_orchestrator::provider::ScriptedProvider;
use runledger_orchestrator::{RunStatus, StartRun};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::dispatcher::{NatsDispatcher, frontier_for_all};
use crate::intake::{IntakeSink, run_intake};
use crate::messages::{
    DispatchMessage, ReportMessage, WIRE_VERSION, publish, result_message_id, started_message_id,
};
use crate::topology::Topology;
use crate::worker::{WorkerConfig, WorkerStats, run_worker};

const NATS: &str = "nats://127.0.0.1:4222";

mod hardening;
mod workspace;

struct Harness {
    ledger: TestLedger,
    engine: Engine<PgEventStore>,
    js: jetstream::Context,
    topology: Topology,
    stop: watch::Sender<bool>,
    /// What this harness's intake counted.
    metrics: Arc<crate::metrics::GatewayMetrics>,
}

async fn harness(dispatch_timeout_ms: u64) -> Harness {
    harness_owning(
        dispatch_timeout_ms,
        Arc::new(runledger_orchestrator::lease::Solo),
    )
    .await
}

/// A harness whose engine asks `ownership` before it drives a run.
async fn harness_owning(
    dispatch_timeout_ms: u64,
    ownership: Arc<dyn runledger_orchestrator::lease::Ownership>,
) -> Harness {
    let ledger = TestLedger::new().await.unwrap();
    let namespace = format!("t{}", RunId::new_v7().to_string().replace('-', ""));
    let mut topology = Topology::in_namespace(&namespace).unwrap();
    topology.ack_wait = Duration::from_secs(2);
    let js = crate::connect(NATS).await.unwrap();
    topology.ensure_all(&js).await.unwrap();
    let local = InProcessPool::new(providers(), 64);
    let dispatcher = NatsDispatcher::new(
        js.clone(),
        topology.clone(),
        frontier_for_all(),
        Duration::from_millis(dispatch_timeout_ms),
        Arc::new(local),
    );
    let config = EngineConfig {
        poll_interval: Duration::from_millis(50),
        settings: Settings {
            executor: "nats".into(),
            remote: Some(RemoteDispatch {
                dispatch_timeout_ms,
            }),
        },
        ..EngineConfig::default()
    };
    let engine = Engine::with_ownership(
        ledger.second_store().await.unwrap(),
        Arc::new(dispatcher),
        Arc::new(NoFlowcharts),
        config,
        ownership,
    );
    let (stop, stopped) = watch::channel(false);
    let metrics = crate::metrics::GatewayMetrics::new();
    tokio::spawn(run_intake(
        js.clone(),
        topology.clone(),
        IntakeSink::for_engine(&engine, Arc::clone(&metrics)),
        stopped,
    ));
    Harness {
        ledger,
        engine,
        js,
        topology,
        stop,
        metrics,
    }
}

fn providers() -> Providers {
    Providers::scripted(ScriptedProvider::new())
}

fn flowchart(yaml: &str) -> Arc<Flowchart> {
    Arc::new(load(yaml, SourceFormat::Yaml).unwrap_or_else(|e| panic!("{e:?}")))
}

fn example(name: &str) -> Arc<Flowchart> {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    flowchart(&std::fs::read_to_string(path).unwrap())
}

/// `task` nodes `t1..tn` between start and end, in parallel.
fn fanout(n: usize) -> Arc<Flowchart> {
    let mut yaml = String::from(
        "name: fanout\nnodes:\n  - { id: start, type: start }\n  - { id: done, type: end }\n",
    );
    let mut connectors = String::from("connectors:\n");
    for i in 1..=n {
        yaml.push_str(&format!("  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ n: {i} }} }}] }}\n"));
        connectors.push_str(&format!(
            "  - {{ id: a{i}, from: start, to: t{i} }}\n  - {{ id: b{i}, from: t{i}, to: done }}\n"
        ));
    }
    flowchart(&(yaml + &connectors))
}

impl Harness {
    fn worker(
        &self,
        concurrency: usize,
        id: &str,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<WorkerStats>) {
        let (stop, stopped) = watch::channel(false);
        let config = WorkerConfig {
            executor_class: "frontier".into(),
            concurrency,
            executor_id: id.into(),
            exit_when_idle: None,
        };
        let task = tokio::spawn(run_worker(
            self.js.clone(),
            self.topology.clone(),
            config,
            Arc::new(providers()),
            stopped,
        ));
        (
            stop,
            tokio::spawn(async move { task.await.unwrap().unwrap() }),
        )
    }

    async fn start(&self, flowchart: Arc<Flowchart>, inputs: Value) -> RunId {
        let start = StartRun {
            run_id: RunId::new_v7(),
            flowchart,
            version: None,
            inputs,
            parent: None,
            actor: "test".into(),
        };
        self.engine
            .start(start, RequestId::generate(), CorrelationId::generate())
            .await
            .unwrap()
    }

    async fn wait(&self, run: RunId) -> (RunSummary, Vec<DomainEvent>) {
        let summary = tokio::time::timeout(Duration::from_secs(60), self.engine.wait(run))
            .await
            .unwrap()
            .unwrap();
        (summary, self.events(run).await)
    }

    async fn events(&self, run: RunId) -> Vec<DomainEvent> {
        let recorded = self
            .ledger
            .store
            .read_stream(&StreamId::for_run(run), 1, usize::MAX)
            .await
            .unwrap();
        recorded.iter().map(|e| e.decode().unwrap()).collect()
    }

    async fn until(&self, run: RunId, done: impl Fn(&[DomainEvent]) -> bool) -> Vec<DomainEvent> {
        for _ in 0..1000 {
            let events = self.events(run).await;
            if done(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached: {:#?}", self.events(run).await);
    }

    /// Plays an executor by hand: takes the next `frontier` dispatch (waiting for it) and
    /// reports it started as `executor`. Returns the message (unacked) and its work's ids.
    async fn take_and_start(
        &self,
        run: RunId,
        executor: &str,
    ) -> (jetstream::Message, runledger_contracts::ids::NodeRunId, u32) {
        let consumer = self
            .topology
            .executor_consumer_of(&self.js, "frontier")
            .await
            .unwrap();
        let message = loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .unwrap();
            if let Some(m) = batch.next().await {
                break m.unwrap();
            }
        };
        let dispatch: DispatchMessage = serde_json::from_slice(&message.payload).unwrap();
        let (nr, attempt) = (dispatch.work.node_run_id, dispatch.work.attempt);
        let started = ReportMessage {
            wire_version: WIRE_VERSION,
            run_id: run,
            report: Report::Started {
                node_run_id: nr,
                attempt,
                executor: executor.into(),
            },
        };
        let subject = self.topology.results_subject(run);
        publish(
            &self.js,
            subject,
            &started_message_id(nr, attempt),
            serde_json::to_vec(&started).unwrap(),
        )
        .await
        .unwrap();
        (message, nr, attempt)
    }

    async fn finish(self) {
        let _ = self.stop.send(true);
        self.topology.delete_streams(&self.js).await.unwrap();
        self.ledger.drop_schema().await.unwrap();
    }
}

/// Every node run: one terminal event, one artifact; and the statuses per node id.
fn check(events: &[DomainEvent]) -> HashMap<String, Vec<NodeRunStatus>> {
    let mut ends: HashMap<_, u32> = HashMap::new();
    let mut artifacts: HashMap<_, u32> = HashMap::new();
    let mut by_node: HashMap<String, Vec<NodeRunStatus>> = HashMap::new();
    for e in events {
        match e {
            DomainEvent::NodeScheduled(s) => {
                ends.insert(s.node_run_id, 0);
            }
            DomainEvent::NodeSucceeded(s) => {
                *ends.get_mut(&s.node_run_id).unwrap() += 1;
                let status = if s.warnings.is_empty() && !s.fallback_used {
                    NodeRunStatus::Succeeded
                } else {
                    NodeRunStatus::SuccessWithWarning
                };
                by_node.entry(s.node_id.clone()).or_default().push(status);
            }
            DomainEvent::NodeFailed(s) => {
                *ends.get_mut(&s.node_run_id).unwrap() += 1;
                by_node
                    .entry(s.node_id.clone())
                    .or_default()
                    .push(NodeRunStatus::Failed);
            }
            DomainEvent::NodeTimedOut(s) => {
                *ends.get_mut(&s.node_run_id).unwrap() += 1;
                by_node
                    .entry(s.node_id.clone())
                    .or_default()
                    .push(NodeRunStatus::TimedOut);
            }
            DomainEvent::NodeCanceled(s) => {
                *ends.get_mut(&s.node_run_id).unwrap() += 1;
                by_node
                    .entry(s.node_id.clone())
                    .or_default()
                    .push(NodeRunStatus::Canceled);
            }
            DomainEvent::ArtifactPersisted(a) => *artifacts.entry(a.node_run_id).or_default() += 1,
            _ => {}
        }
    }
    for (id, n) in &ends {
        assert_eq!(*n, 1, "node run {id} ends once");
        assert_eq!(
            artifacts.get(id),
            Some(&1),
            "node run {id} has one artifact"
        );
    }
    by_node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_complete_through_nats_with_two_workers() {
    let h = harness(10_000).await;
    let workers = [h.worker(8, "w1"), h.worker(8, "w2")];
    for name in ["review-loop.yaml", "fan-in.yaml", "fallback-route.yaml"] {
        let run = h.start(example(name), json!({"topic": "owls"})).await;
        let (summary, events) = h.wait(run).await;
        assert_eq!(summary.status, RunStatus::Completed, "{name}: {events:#?}");
        check(&events);
        // Every task node run went out over NATS: dispatched with a stream sequence, started by a worker.
        for e in &events {
            if let DomainEvent::NodeScheduled(s) = e
                && s.node_type == runledger_contracts::flowchart::NodeType::Task
            {
                let dispatched = events.iter().find_map(|d| match d {
                    DomainEvent::NodeDispatched(d) if d.node_run_id == s.node_run_id => Some(d),
                    _ => None,
                });
                let d =
                    dispatched.unwrap_or_else(|| panic!("{name}: {} not dispatched", s.node_id));
                assert!(d.stream_sequence.is_some_and(|q| q > 0));
                assert_eq!(d.executor_class, "frontier");
                assert_eq!(
                    d.message_id,
                    format!("{run}:{}:{}", s.node_run_id, s.attempt)
                );
                // A node run the run's end canceled may never have reached a worker.
                let canceled = events.iter().any(
                    |x| matches!(x, DomainEvent::NodeCanceled(c) if c.node_run_id == s.node_run_id),
                );
                assert!(
                    canceled || events.iter().any(|x| matches!(x, DomainEvent::NodeStarted(st)
                        if st.node_run_id == s.node_run_id && (st.executor == "w1" || st.executor == "w2"))),
                    "{name}: {} not started by a worker: {events:#?}",
                    s.node_id
                );
            }
        }
    }
    for (stop, task) in workers {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_100_through_two_workers_runs_each_node_once() {
    let h = harness(30_000).await;
    let (stop1, w1) = h.worker(16, "w1");
    let (stop2, w2) = h.worker(16, "w2");
    let run = h.start(fanout(100), json!({})).await;
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let by_node = check(&events);
    for i in 1..=100 {
        assert_eq!(
            by_node[&format!("t{i}")],
            vec![NodeRunStatus::Succeeded],
            "t{i}"
        );
    }
    stop1.send(true).unwrap();
    stop2.send(true).unwrap();
    let (s1, s2) = (w1.await.unwrap(), w2.await.unwrap());
    assert_eq!(s1.ran + s2.ran, 100, "each task ran once: {s1:?} {s2:?}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_published_many_times_is_recorded_once() {
    let h = harness(30_000).await;
    let flow = flowchart(
        "name: one\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ output: { ok: true } }] }\n  - { id: done, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: done }\n",
    );
    let run = h.start(flow, json!({})).await;
    // Play the executor by hand: take the dispatch, report it started, then publish its result
    // three times with one message id and twice more with other ids (a redelivery after the
    // duplicate window).
    let (message, nr, attempt) = h.take_and_start(run, "hand").await;
    let subject = h.topology.results_subject(run);
    let result = NodeResult {
        node_run_id: nr,
        attempt,
        outcome: NodeOutcome::Succeeded {
            output: json!({"ok": true}),
            warnings: Vec::new(),
            fallback_used: false,
            agent: None,
        },
        tool_calls: Vec::new(),
    };
    let finished = serde_json::to_vec(&ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: run,
        report: Report::Finished(result),
    })
    .unwrap();
    let first = publish(
        &h.js,
        subject.clone(),
        &result_message_id(nr, attempt),
        finished.clone(),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let again = publish(
            &h.js,
            subject.clone(),
            &result_message_id(nr, attempt),
            finished.clone(),
        )
        .await
        .unwrap();
        assert_eq!(again, first, "the stream stores one copy");
    }
    let (summary, _) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let version = h
        .ledger
        .store
        .stream_head(&StreamId::for_run(run))
        .await
        .unwrap()
        .unwrap()
        .version;
    for n in 0..2 {
        publish(
            &h.js,
            subject.clone(),
            &format!("redelivered-{n}"),
            finished.clone(),
        )
        .await
        .unwrap();
    }
    message.ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = h.events(run).await;
    let after = h
        .ledger
        .store
        .stream_head(&StreamId::for_run(run))
        .await
        .unwrap()
        .unwrap()
        .version;
    assert_eq!(
        after, version,
        "redelivered results write nothing: {events:#?}"
    );
    let succeeded = events
        .iter()
        .filter(|e| matches!(e, DomainEvent::NodeSucceeded(s) if s.node_run_id == nr))
        .count();
    assert_eq!(succeeded, 1);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeResultIgnored(_)))
    );
    check(&events);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_executor_means_dispatch_timeout_then_the_retry_policy() {
    let h = harness(300).await;
    let flow = flowchart(
        "name: lonely\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, retry: { max_attempts: 2, backoff_ms: 10 }, scripted: [{ output: { ok: true } }] }\n  - { id: done, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: done }\n",
    );
    let run = h.start(flow.clone(), json!({})).await;
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Failed);
    let by_node = check(&events);
    assert_eq!(
        by_node["t"],
        vec![NodeRunStatus::TimedOut, NodeRunStatus::TimedOut],
        "two attempts, both undispatched"
    );
    let phases: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeTimedOut(t) => Some((t.phase, t.timeout_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        vec![(TimeoutPhase::Dispatch, 300), (TimeoutPhase::Dispatch, 300)]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeRetryScheduled(r) if r.next_attempt == 2))
    );
    assert_eq!(
        summary.error.as_ref().map(|e| e.code.as_str()),
        Some("dispatch_timeout")
    );

    // A worker that comes late finds both dispatches expired and runs neither.
    let (stop, worker) = h.worker(4, "late");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send(true).unwrap();
    let stats = worker.await.unwrap();
    assert_eq!((stats.ran, stats.expired), (0, 2), "{stats:?}");

    // With a worker present the same flowchart completes.
    let (stop, worker) = h.worker(4, "w");
    let run = h.start(flow, json!({})).await;
    let (summary, _) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    stop.send(true).unwrap();
    worker.await.unwrap();
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_lost_mid_node_is_replaced_after_the_ack_wait() {
    let h = harness(30_000).await;
    let flow = flowchart(
        "name: slow\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, timeout_s: 30, scripted: [{ delay_ms: 300, output: { ok: true } }] }\n  - { id: done, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: done }\n",
    );
    let run = h.start(flow, json!({})).await;
    // The first "executor" takes the work, says so, and dies without a result or an ack.
    let (taken, nr, _) = h.take_and_start(run, "doomed").await;
    drop(taken);
    h.until(run, |e| {
        e.iter()
            .any(|x| matches!(x, DomainEvent::NodeStarted(s) if s.executor == "doomed"))
    })
    .await;
    // A healthy worker gets the message once the ack wait (2 s) has passed.
    let (stop, worker) = h.worker(4, "healthy");
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    check(&events);
    let started: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, DomainEvent::NodeStarted(s) if s.node_run_id == nr))
        .collect();
    assert_eq!(
        started.len(),
        1,
        "the first start stands; the redelivery adds none"
    );
    stop.send(true).unwrap();
    assert_eq!(worker.await.unwrap().ran, 1);
    h.finish().await;
}

/// Loses every remote dispatch, as a crash between the scheduling commit and the publish does.
struct LosesDispatches;

impl runledger_orchestrator::executor::NodeExecutor for LosesDispatches {
    fn submit(
        &self,
        _work: runledger_orchestrator::executor::NodeWork,
        _results: runledger_orchestrator::executor::ResultSender,
    ) {
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_owner_publishes_what_a_crash_left_unpublished() {
    let h = harness(30_000).await;
    // A second engine on the same ledger whose publishes are lost: its run stays scheduled,
    // as after a crash between the scheduling commit and the publish.
    let lossy = Engine::new(
        h.ledger.second_store().await.unwrap(),
        Arc::new(LosesDispatches),
        Arc::new(NoFlowcharts),
        EngineConfig {
            poll_interval: Duration::from_millis(50),
            settings: Settings {
                executor: "nats".into(),
                remote: Some(RemoteDispatch {
                    dispatch_timeout_ms: 30_000,
                }),
            },
            ..EngineConfig::default()
        },
    );
    let start = StartRun {
        run_id: RunId::new_v7(),
        flowchart: fanout(3),
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "test".into(),
    };
    let run = lossy
        .start(start, RequestId::generate(), CorrelationId::generate())
        .await
        .unwrap();
    let scheduled = h
        .until(run, |e| {
            e.iter()
                .filter(|x| matches!(x, DomainEvent::NodeScheduled(_)))
                .count()
                == 4
        })
        .await;
    assert!(
        !scheduled
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeDispatched(_)))
    );
    let (stop, worker) = h.worker(4, "w");
    // The engine that takes the run over rebuilds it and publishes each unpublished node run
    // once; nothing reads the ledger beyond this run's stream.
    h.engine.ensure_driven(run).await.unwrap();
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    check(&events);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, DomainEvent::NodeDispatched(_)))
            .count(),
        3
    );
    stop.send(true).unwrap();
    worker.await.unwrap();
    drop(lossy);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_executor_job_fails_its_node_runs_with_infra_error_and_the_retry_policy_applies() {
    let h = harness(30_000).await;
    let flow = flowchart(
        "name: jobbed\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, timeout_s: 60, retry: { max_attempts: 2, backoff_ms: 10 }, scripted: [{ output: { ok: true } }] }\n  - { id: done, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: done }\n",
    );
    let run = h.start(flow, json!({})).await;
    // The Job's executor takes the work and its pod is evicted before it answers.
    let pod = "rl-frontier-0123456789ab-x7k2p";
    let (taken, nr, _) = h.take_and_start(run, pod).await;
    taken.ack().await.unwrap();
    h.until(run, |e| {
        e.iter()
            .any(|x| matches!(x, DomainEvent::NodeStarted(s) if s.executor == pod))
    })
    .await;
    let failure = crate::kube::InfraFailure {
        run_id: run,
        executor_class: crate::kube::ExecutorClass::Frontier,
        job_name: "rl-frontier-0123456789ab".into(),
        job_uid: "uid-1".into(),
        executor_ids: vec![pod.into()],
        reason: "Evicted".into(),
        message: "the node was low on memory".into(),
    };
    // The run's owner (this engine) checks its own state; nothing else reads the ledger.
    assert_eq!(crate::jobs::fail_started_node_runs(&h.engine, &failure), 1);
    let (stop, worker) = h.worker(2, "w");
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let failed = events.iter().find_map(|e| match e {
        DomainEvent::NodeFailed(f) if f.node_run_id == nr => Some(f.error.clone()),
        _ => None,
    });
    let failed = failed.expect("the evicted executor's node run failed");
    assert_eq!(
        (failed.code.as_str(), failed.retryable),
        ("infra_error", true)
    );
    assert!(failed.message.contains("Evicted"), "{failed:?}");
    assert_eq!(
        check(&events)["t"],
        vec![NodeRunStatus::Failed, NodeRunStatus::Succeeded]
    );
    // Reported again (a restarted watcher): the run has ended, no driver is told.
    assert_eq!(crate::jobs::fail_started_node_runs(&h.engine, &failure), 0);
    stop.send(true).unwrap();
    worker.await.unwrap();
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_hook_sees_each_remote_dispatch_with_its_class() {
    let ledger = TestLedger::new().await.unwrap();
    let mut topology = Topology::in_namespace(&format!(
        "t{}",
        RunId::new_v7().to_string().replace('-', "")
    ))
    .unwrap();
    topology.ack_wait = Duration::from_secs(2);
    let js = crate::connect(NATS).await.unwrap();
    topology.ensure_all(&js).await.unwrap();
    let seen: Arc<std::sync::Mutex<Vec<(RunId, String)>>> = Arc::default();
    let hook: crate::dispatcher::OnDispatch = {
        let seen = Arc::clone(&seen);
        Arc::new(move |run, class: &str| seen.lock().unwrap().push((run, class.to_owned())))
    };
    let class_of: crate::dispatcher::ClassOf = Arc::new(|node| {
        let class = if node.id.starts_with('v') {
            "vllm"
        } else {
            "frontier"
        };
        Box::pin(async move { class.to_owned() })
    });
    let dispatcher = NatsDispatcher::new(
        js.clone(),
        topology.clone(),
        class_of,
        Duration::from_secs(30),
        Arc::new(InProcessPool::new(providers(), 4)),
    )
    .with_on_dispatch(hook);
    let config = EngineConfig {
        settings: Settings {
            executor: "nats".into(),
            remote: Some(RemoteDispatch {
                dispatch_timeout_ms: 30_000,
            }),
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        ledger.second_store().await.unwrap(),
        Arc::new(dispatcher),
        Arc::new(NoFlowcharts),
        config,
    );
    let flow = flowchart(
        "name: classes\nnodes:\n  - { id: start, type: start }\n  - { id: f1, type: task, model: scripted, scripted: [{ output: {} }] }\n  - { id: v1, type: task, model: scripted, scripted: [{ output: {} }] }\n  - { id: done, type: end }\nconnectors:\n  - { id: a, from: start, to: f1 }\n  - { id: b, from: start, to: v1 }\n  - { id: c, from: f1, to: done }\n  - { id: d, from: v1, to: done }\n",
    );
    let start = StartRun {
        run_id: RunId::new_v7(),
        flowchart: flow,
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "test".into(),
    };
    let run = engine
        .start(start, RequestId::generate(), CorrelationId::generate())
        .await
        .unwrap();
    for _ in 0..200 {
        if seen.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        seen,
        vec![(run, "frontier".to_owned()), (run, "vllm".to_owned())]
    );
    let vllm = topology.executor_consumer_of(&js, "vllm").await.unwrap();
    let mut batch = vllm
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let message = batch.next().await.unwrap().unwrap();
    let dispatch: DispatchMessage = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (
            dispatch.executor_class.as_str(),
            dispatch.work.node.id.as_str()
        ),
        ("vllm", "v1")
    );
    // No executor runs here: end the run so its driver stops before the schema goes.
    let stop = runledger_contracts::events::Control {
        actor: "test".into(),
        reason: "done".into(),
    };
    engine
        .control(
            run,
            ControlAction::Cancel { force: true },
            stop,
            RequestId::generate(),
        )
        .await
        .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), engine.wait(run))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.status, RunStatus::Canceled);
    topology.delete_streams(&js).await.unwrap();
    ledger.drop_schema().await.unwrap();
}
