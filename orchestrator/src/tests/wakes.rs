//! Writes of others reach a run's owner by a wake (NOTIFY through the lease keeper), not by an
//! idle poll; controls find their request id through the store's index; steps of different
//! runs share commits. Counted assertions on real PostgreSQL, no timings: every poll interval
//! here is an hour, so anything that happens happened because of a wake.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::events::Control;
use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::leases::LeaseStore;
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{
    AppendOutcome, AppendRequest, Blob, EventStore, ExpectedVersion, GlobalPage, PgEventStore,
    StoreError, StreamAppend, StreamHead,
};
use serde_json::json;
use tokio::sync::watch;

use crate::decide::{ControlAction, NodeOutcome, NodeResult, StartRun};
use crate::engine::{Engine, EngineConfig, NoFlowcharts};
use crate::executor::{
    Delivery, InProcessPool, NodeExecutor, NodeWork, Providers, Report, ResultSender,
};
use crate::lease::{self, LeaseConfig, Leases};
use crate::provider::ScriptedProvider;

/// Counts the store calls that matter here.
struct Counted {
    inner: PgEventStore,
    heads: AtomicUsize,
    reads: AtomicUsize,
    batches: AtomicUsize,
    batched_items: AtomicUsize,
}

impl Counted {
    fn new(inner: PgEventStore) -> Self {
        Self {
            inner,
            heads: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            batched_items: AtomicUsize::new(0),
        }
    }
}

impl EventStore for Counted {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.append(stream, expected, request).await
    }
    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.inner.append_many(items).await
    }
    async fn append_batch(
        &self,
        items: Vec<StreamAppend>,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.batched_items.fetch_add(items.len(), Ordering::SeqCst);
        self.inner.append_batch(items).await
    }
    async fn find_request(
        &self,
        stream: &StreamId,
        request_id: &RequestId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.find_request(stream, request_id).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream, from_version, limit).await
    }
    async fn read_all(&self, after: Position, limit: usize) -> Result<GlobalPage, StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn stream_head(&self, stream: &StreamId) -> Result<Option<StreamHead>, StoreError> {
        self.heads.fetch_add(1, Ordering::SeqCst);
        self.inner.stream_head(stream).await
    }
    async fn list_streams(&self, prefix: &str) -> Result<Vec<StreamHead>, StoreError> {
        self.inner.list_streams(prefix).await
    }
    async fn put_blob(&self, blob: Blob) -> Result<Digest, StoreError> {
        self.inner.put_blob(blob).await
    }
    async fn get_blob(&self, hash: &Digest) -> Result<Option<Blob>, StoreError> {
        self.inner.get_blob(hash).await
    }
}

/// An executor that keeps the work it is given and never answers.
#[derive(Default)]
struct Holding {
    work: Mutex<Vec<NodeWork>>,
}

impl NodeExecutor for Arc<Holding> {
    fn submit(&self, work: NodeWork, _: ResultSender) {
        self.work.lock().unwrap().push(work);
    }
}

struct Instance {
    engine: Engine<Counted>,
    held: Arc<Holding>,
    stop: watch::Sender<bool>,
}

fn quiet() -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_secs(3600),
        ..EngineConfig::default()
    }
}

/// An engine on its own store whose executor holds its work, under leases of `ttl` that are
/// renewed once; nothing keeps them.
async fn unkept(
    ledger: &TestLedger,
    name: &str,
    ttl: Duration,
    takes_runs: bool,
) -> (Engine<Counted>, Arc<Holding>, Arc<Leases>) {
    let store = ledger.second_store().await.unwrap();
    let leases = Leases::new(
        LeaseStore::new(store.pool().clone()),
        LeaseConfig {
            instance_id: name.into(),
            ttl,
            max_active_runs: 100,
            look_interval: Duration::from_secs(3600),
            takes_runs,
        },
    );
    leases.renew().await.unwrap();
    let held = Arc::new(Holding::default());
    let executor: Arc<dyn NodeExecutor> = Arc::new(Arc::clone(&held));
    let engine = Engine::with_ownership(
        Counted::new(store),
        executor,
        Arc::new(NoFlowcharts),
        quiet(),
        leases.clone(),
    );
    (engine, held, leases)
}

async fn instance(ledger: &TestLedger, name: &str, takes_runs: bool) -> Instance {
    let (engine, held, leases) = unkept(ledger, name, Duration::from_secs(30), takes_runs).await;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(lease::keep(leases, engine.clone(), stopped));
    Instance { engine, held, stop }
}

fn chain(n: usize) -> Arc<Flowchart> {
    let mut yaml = String::from("name: chain\nnodes:\n  - { id: start, type: start }\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ ok: true }} }}] }}\n"
        ));
    }
    yaml.push_str("  - { id: end, type: end }\nconnectors:\n");
    let mut prev = "start".to_owned();
    for i in 0..n {
        yaml.push_str(&format!("  - {{ id: c{i}, from: {prev}, to: t{i} }}\n"));
        prev = format!("t{i}");
    }
    yaml.push_str(&format!("  - {{ id: ce, from: {prev}, to: end }}\n"));
    Arc::new(load(&yaml, SourceFormat::Yaml).unwrap())
}

fn start(flowchart: Arc<Flowchart>) -> StartRun {
    StartRun {
        run_id: RunId::new_v7(),
        flowchart,
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "test".into(),
    }
}

/// Starts a run of [`chain`]`(n)` on `engine`.
async fn start_chain(engine: &Engine<Counted>, n: usize) -> RunId {
    engine
        .start(
            start(chain(n)),
            RequestId::generate(),
            CorrelationId::generate(),
        )
        .await
        .unwrap()
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn succeeded(work: &NodeWork) -> NodeResult {
    NodeResult {
        node_run_id: work.node_run_id,
        attempt: work.attempt,
        outcome: NodeOutcome::Succeeded {
            output: json!({ "ok": true }),
            warnings: Vec::new(),
            fallback_used: false,
            agent: None,
        },
        tool_calls: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_recorded_by_another_instance_wakes_the_owner_which_never_polls() {
    let ledger = TestLedger::new().await.unwrap();
    let owner = instance(&ledger, "owner", true).await;
    let other = instance(&ledger, "other", true).await;
    let run = start_chain(&owner.engine, 3).await;
    until("t0 handed to the owner's executor", || {
        owner.held.work.lock().unwrap().len() == 1
    })
    .await;
    let heads_before = owner.engine.store().heads.load(Ordering::SeqCst);
    // Idle for a while: with hour-long polls and wakes heard, the driver reads nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        owner.engine.store().heads.load(Ordering::SeqCst),
        heads_before,
        "an idle driver that hears wakes does not poll its stream head"
    );
    // Each result reaches the instance that does not own the run (a shared NATS consumer):
    // it records it, wakes the owner, and the owner dispatches the next node run.
    for n in 1..=3 {
        let work = owner.held.work.lock().unwrap()[n - 1].clone();
        other
            .engine
            .deliver(Delivery {
                run_id: run,
                report: Report::Finished(succeeded(&work)),
                message_id: Some(format!("result-msg-{n}")),
                receipt: None,
            })
            .await;
        if n < 3 {
            until("the next node run handed to the owner", || {
                owner.held.work.lock().unwrap().len() == n + 1
            })
            .await;
        }
    }
    let summary = owner.engine.wait(run).await.unwrap();
    assert_eq!(summary.status, crate::state::RunStatus::Completed);
    assert_eq!(
        other.held.work.lock().unwrap().len(),
        0,
        "only the owner dispatches"
    );
    assert!(!other.engine.is_driven(run));
    let _ = owner.stop.send(true);
    let _ = other.stop.send(true);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_finds_its_request_id_without_reading_the_stream_and_wakes_the_owner() {
    let ledger = TestLedger::new().await.unwrap();
    let owner = instance(&ledger, "owner", true).await;
    let other = instance(&ledger, "other", false).await;
    let run = start_chain(&owner.engine, 2).await;
    until("t0 handed out", || {
        owner.held.work.lock().unwrap().len() == 1
    })
    .await;
    let control = Control {
        actor: "test".into(),
        reason: "wake".into(),
    };
    let request = RequestId::new("pause-1").unwrap();
    let reads_before = owner.engine.store().reads.load(Ordering::SeqCst);
    let paused = owner
        .engine
        .control(run, ControlAction::Pause, control.clone(), request.clone())
        .await
        .unwrap();
    assert!(!paused.deduplicated);
    let again = owner
        .engine
        .control(run, ControlAction::Pause, control.clone(), request.clone())
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.events, paused.events);
    assert_eq!(
        owner.engine.store().reads.load(Ordering::SeqCst),
        reads_before,
        "the driver's controls read no stream: the request index answers"
    );
    // A resume through an instance that does not drive the run (the API of another serve):
    // it is applied to the ledger there and the owner, woken, reads it.
    let heads_before = owner.engine.store().heads.load(Ordering::SeqCst);
    let resumed = other
        .engine
        .control(
            run,
            ControlAction::Resume,
            control,
            RequestId::new("resume-1").unwrap(),
        )
        .await
        .unwrap();
    assert!(!resumed.deduplicated);
    assert!(!other.engine.is_driven(run), "the owner keeps the run");
    until("the owner woken to read the resume", || {
        owner.engine.store().heads.load(Ordering::SeqCst) > heads_before
    })
    .await;
    let work = owner.held.work.lock().unwrap()[0].clone();
    owner
        .engine
        .deliver(Delivery::finished(run, succeeded(&work)))
        .await;
    until("t1 handed to the owner after the resume", || {
        owner.held.work.lock().unwrap().len() == 2
    })
    .await;
    let _ = owner.stop.send(true);
    let _ = other.stop.send(true);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_of_concurrent_runs_share_commits_and_every_run_completes() {
    let ledger = TestLedger::new().await.unwrap();
    let store = Counted::new(ledger.second_store().await.unwrap());
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 256);
    let engine = Engine::new(store, Arc::new(pool), Arc::new(NoFlowcharts), quiet());
    let flowchart = chain(3);
    let runs = 40;
    let mut tasks = Vec::new();
    for _ in 0..runs {
        let engine = engine.clone();
        let flowchart = Arc::clone(&flowchart);
        tasks.push(tokio::spawn(async move {
            let run = engine
                .start(
                    start(flowchart),
                    RequestId::generate(),
                    CorrelationId::generate(),
                )
                .await
                .unwrap();
            engine.wait(run).await.unwrap()
        }));
    }
    for t in tasks {
        let summary = t.await.unwrap();
        assert_eq!(summary.status, crate::state::RunStatus::Completed);
        assert_eq!(summary.node_runs, 5);
    }
    let items = engine.store().batched_items.load(Ordering::SeqCst);
    let batches = engine.store().batches.load(Ordering::SeqCst);
    // Per run: the start, then one step per task result (the last one ends the run).
    assert_eq!(items, runs * 4, "every step went through group commit once");
    assert!(
        batches < items,
        "some steps of different runs shared a commit ({batches} commits for {items} steps)"
    );
    // Each run's stream is its own: linear, one RunStarted, one RunCompleted.
    let streams = engine.store().list_streams("run-").await.unwrap();
    assert_eq!(streams.len(), runs);
    ledger.drop_schema().await.unwrap();
}

/// Renewals failed long enough for the lease to lose the instance's trust (a database cut),
/// and a step recorded a node run meanwhile: its work was not handed out. The renewal that
/// succeeds again names the run, the keeper pokes its driver, and the work goes out; before,
/// the run sat until the node run's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_skipped_while_the_lease_was_untrusted_goes_out_once_it_is_renewed() {
    let ledger = TestLedger::new().await.unwrap();
    let ttl = Duration::from_millis(300);
    // No keeper: renewals happen only when the test makes them, as when they all fail.
    let (engine, held, leases) = unkept(&ledger, "owner", ttl, true).await;
    let run = start_chain(&engine, 2).await;
    until("t0 handed out", || held.work.lock().unwrap().len() == 1).await;
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let t0 = held.work.lock().unwrap()[0].clone();
    engine
        .deliver(Delivery {
            run_id: run,
            report: Report::Finished(succeeded(&t0)),
            message_id: Some("t0-result".into()),
            receipt: None,
        })
        .await;
    let stream = StreamId::for_run(run);
    let mut started = 0;
    for _ in 0..250 {
        let events = engine
            .store()
            .inner
            .read_stream(&stream, 1, usize::MAX)
            .await
            .unwrap();
        started = events
            .iter()
            .filter(|e| e.event_type == "NodeStarted")
            .count();
        if started == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(started, 2, "t1 recorded as started");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        held.work.lock().unwrap().len(),
        1,
        "an instance that cannot trust its lease hands out nothing"
    );
    let renewal = leases.renew().await.unwrap();
    assert_eq!(renewal.regained, vec![run]);
    assert!(renewal.lost.is_empty());
    engine.poke(run);
    until("t1 handed out once the lease is trusted again", || {
        held.work.lock().unwrap().len() == 2
    })
    .await;
    ledger.drop_schema().await.unwrap();
}
