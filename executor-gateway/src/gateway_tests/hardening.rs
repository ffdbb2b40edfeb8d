//! Defects found by outside tests (issue 10 and 11): reports that can never be recorded,
//! unknown wire versions, an executor whose reports cannot be published.

use super::*;
use crate::intake::IntakeSink;
use crate::metrics::{Consumer, DropReason};
use async_nats::jetstream::AckKind;
use runledger_contracts::ids::NodeRunId;
use runledger_orchestrator::delivery::{DeliveryOutcome, Receipt};
use runledger_orchestrator::executor::Delivery;

fn one_task(scripted: &str) -> Arc<Flowchart> {
    flowchart(&format!(
        "name: one\nnodes:\n  - {{ id: start, type: start }}\n  - {{ id: t, type: task, model: scripted, timeout_s: 60, scripted: [{scripted}] }}\n  - {{ id: done, type: end }}\nconnectors:\n  - {{ id: a, from: start, to: t }}\n  - {{ id: b, from: t, to: done }}\n"
    ))
}

fn succeeded(nr: runledger_contracts::ids::NodeRunId, attempt: u32, output: Value) -> Report {
    Report::Finished(NodeResult {
        node_run_id: nr,
        attempt,
        outcome: NodeOutcome::Succeeded {
            output,
            warnings: Vec::new(),
            fallback_used: false,
            agent: None,
        },
        tool_calls: Vec::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_can_never_be_recorded_are_terminated_once_and_counted() {
    let h = harness(30_000).await;
    let run = h
        .start(one_task("{ output: { ok: true } }"), json!({}))
        .await;
    let (dispatch, nr, attempt) = h.take_and_start(run, "hand").await;

    // A report for a run nobody started, published as an executor would.
    let unknown = RunId::new_v7();
    let forged = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: unknown,
        report: succeeded(nr, attempt, json!({"forged": true})),
    };
    publish(
        &h.js,
        h.topology.results_subject(unknown),
        "forged-1",
        serde_json::to_vec(&forged).unwrap(),
    )
    .await
    .unwrap();
    // A result for the real node run, in a wire version this build does not speak.
    let mut future = serde_json::to_value(ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: run,
        report: succeeded(nr, attempt, json!({"v": 999})),
    })
    .unwrap();
    future["wire_version"] = json!(999);
    publish(
        &h.js,
        h.topology.results_subject(run),
        "v999-1",
        serde_json::to_vec(&future).unwrap(),
    )
    .await
    .unwrap();
    // Not a report at all.
    publish(
        &h.js,
        h.topology.results_subject(run),
        "garbage-1",
        b"\0\xff not json".to_vec(),
    )
    .await
    .unwrap();
    // Behind them, the real result of the run.
    let real = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: run,
        report: succeeded(nr, attempt, json!({"real": true})),
    };
    publish(
        &h.js,
        h.topology.results_subject(run),
        &result_message_id(nr, attempt),
        serde_json::to_vec(&real).unwrap(),
    )
    .await
    .unwrap();

    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let outputs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeSucceeded(s) if s.node_run_id == nr => Some(s.output.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        outputs,
        vec![json!({"real": true})],
        "the v999 result is not recorded"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeResultIgnored(_))),
        "{events:#?}"
    );
    dispatch.ack().await.unwrap();
    // A result for a node run the (ended, no longer driven) run never had.
    for _ in 0..500 {
        if !h.engine.is_driven(run) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stray = runledger_contracts::ids::NodeRunId::new_v7();
    let forged = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: run,
        report: succeeded(stray, 1, json!({"stray": true})),
    };
    let payload = serde_json::to_vec(&forged).unwrap();
    publish(&h.js, h.topology.results_subject(run), "stray-1", payload)
        .await
        .unwrap();

    let counted = |reason| h.metrics.terminated(Consumer::Intake, reason);
    for _ in 0..500 {
        if counted(DropReason::UnknownRun) > 0 && counted(DropReason::UnknownNodeRun) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past several former redelivery intervals (1 s): each is terminated once, nothing is left.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(counted(DropReason::UnknownRun), 1);
    assert_eq!(counted(DropReason::UnknownWireVersion), 1);
    assert_eq!(counted(DropReason::Undecodable), 1);
    assert_eq!(counted(DropReason::UnknownNodeRun), 1);
    let mut consumer = h.topology.intake_consumer_of(&h.js).await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        (info.num_ack_pending, info.num_pending),
        (0, 0),
        "nothing waits for redelivery: {info:?}"
    );
    assert_eq!(info.config.max_deliver, crate::topology::REPORT_MAX_DELIVER);
    h.finish().await;
}

/// An engine that never drives a run (another instance holds every lease): reports reach
/// it through `record_late`, decided against the run as recorded.
struct Elsewhere;

impl runledger_orchestrator::lease::Ownership for Elsewhere {
    fn instance_id(&self) -> Option<&str> {
        Some("here")
    }
    fn acquire(&self, _: RunId) -> runledger_orchestrator::lease::ClaimFuture<'_> {
        Box::pin(async { Ok(None) })
    }
    fn holds(&self, _: RunId) -> bool {
        false
    }
    fn release(&self, _: RunId, _: bool) {}
}

/// A result whose tool call belongs to another node run: the decider refuses it on every
/// delivery (`invalid_input`).
fn forged_tool_call(run: RunId, nr: NodeRunId, attempt: u32) -> Report {
    let call = runledger_contracts::events::ToolCalled {
        run_id: run,
        node_id: "t".into(),
        node_run_id: NodeRunId::new_v7(),
        tool: "provider".into(),
        operation: "complete".into(),
        idempotency_key: "forged".into(),
        input_hash: runledger_contracts::digest::Digest::of(b"forged"),
        outcome: runledger_contracts::events::ToolOutcome::Ok,
        attempts: Vec::new(),
        duration_ms: 1,
        provider: None,
        output: None,
        error: None,
        agent: None,
    };
    let Report::Finished(mut result) = succeeded(nr, attempt, json!({"forged": true})) else {
        unreachable!()
    };
    result.tool_calls.push(call);
    Report::Ran {
        executor: "forger".into(),
        result,
    }
}

/// Waits for `count` refusals, then long enough for a redelivery (1 s after a nak) to have
/// come, and checks the consumer holds nothing and redelivered nothing.
async fn assert_terminated_once(h: &Harness, count: u64) {
    for _ in 0..500 {
        if h.metrics.terminated(Consumer::Intake, DropReason::Refused) >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        h.metrics.terminated(Consumer::Intake, DropReason::Refused),
        count
    );
    let mut consumer = h.topology.intake_consumer_of(&h.js).await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        (info.num_ack_pending, info.num_pending, info.num_redelivered),
        (0, 0, 0),
        "delivered once, terminated, never redelivered: {info:?}"
    );
}

/// Issue 10, slice A item 2: a report the engine refuses for good (not for an unknown run)
/// was nak'd and redelivered until `max_deliver` (about 20 minutes) when the run is not
/// driven here, and silently acked, uncounted, when it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_engine_refuses_are_terminated_at_once_and_counted() {
    // A run another instance drives.
    let h = super::harness_owning(30_000, Arc::new(Elsewhere)).await;
    let run = h
        .start(one_task("{ output: { ok: true } }"), json!({}))
        .await;
    assert!(!h.engine.is_driven(run));
    let events = h.events(run).await;
    let (nr, attempt) = events
        .iter()
        .find_map(|e| match e {
            DomainEvent::NodeScheduled(s) if s.node_id == "t" => Some((s.node_run_id, s.attempt)),
            _ => None,
        })
        .unwrap();
    let forged = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: run,
        report: forged_tool_call(run, nr, attempt),
    };
    publish(
        &h.js,
        h.topology.results_subject(run),
        "forged-late-1",
        serde_json::to_vec(&forged).unwrap(),
    )
    .await
    .unwrap();
    assert_terminated_once(&h, 1).await;
    assert_eq!(h.events(run).await.len(), events.len(), "nothing written");
    h.finish().await;

    // A run driven here: refused as well, not acked as if recorded.
    let h = harness(30_000).await;
    let run = h
        .start(one_task("{ output: { ok: true } }"), json!({}))
        .await;
    let (dispatch, nr, attempt) = h.take_and_start(run, "hand").await;
    let forged = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: run,
        report: forged_tool_call(run, nr, attempt),
    };
    publish(
        &h.js,
        h.topology.results_subject(run),
        "forged-driven-1",
        serde_json::to_vec(&forged).unwrap(),
    )
    .await
    .unwrap();
    assert_terminated_once(&h, 1).await;
    // The real result still completes the node, and the forgery left no trace.
    let real = ReportMessage {
        wire_version: WIRE_VERSION,
        run_id: run,
        report: succeeded(nr, attempt, json!({"real": true})),
    };
    publish(
        &h.js,
        h.topology.results_subject(run),
        &result_message_id(nr, attempt),
        serde_json::to_vec(&real).unwrap(),
    )
    .await
    .unwrap();
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DomainEvent::ToolCalled(_))),
        "{events:#?}"
    );
    dispatch.ack().await.unwrap();
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_dead_lettered_after_max_deliver() {
    let h = harness(30_000).await;
    // A consumer of its own (on a subject of the dispatch stream nobody else reads) with a
    // small max_deliver, and the advisory follower on it.
    let results = h.js.get_stream(h.topology.dispatch_stream()).await.unwrap();
    let name = "HARDENING_MAXDELIVER";
    let consumer: async_nats::jetstream::consumer::PullConsumer = results
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(name.into()),
            filter_subject: h.topology.dispatch_subject("poison"),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(crate::dead_letter::follow_max_deliveries(
        h.js.clone(),
        h.topology.dispatch_stream(),
        name.into(),
        Consumer::Intake,
        Arc::clone(&h.metrics),
        stopped,
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sequence = publish(
        &h.js,
        h.topology.dispatch_subject("poison"),
        "poison",
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(3))
            .messages()
            .await
            .unwrap();
        let message = batch.next().await.unwrap().unwrap();
        message.ack_with(AckKind::Nak(None)).await.unwrap();
    }
    // The server gives up (and advises) when it would deliver the message a third time, as
    // it does for intake, which always has a pull waiting.
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    assert!(batch.next().await.is_none(), "not delivered a third time");
    for _ in 0..500 {
        if h.metrics.max_deliveries(Consumer::Intake) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.metrics.max_deliveries(Consumer::Intake), 1);
    // Dead-lettered: logged and removed from the work queue.
    let mut gone = false;
    for _ in 0..100 {
        if results.get_raw_message(sequence).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the message is deleted from the stream");
    let _ = stop.send(true);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatches_of_an_unknown_wire_version_are_terminated_unrun() {
    let h = harness(30_000).await;
    let run = h
        .start(one_task("{ output: { ok: true } }"), json!({}))
        .await;
    // Take the engine's dispatch, and publish it again as wire version 999.
    let consumer = h
        .topology
        .executor_consumer_of(&h.js, "frontier")
        .await
        .unwrap();
    let original = loop {
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
    let mut future: Value = serde_json::from_slice(&original.payload).unwrap();
    future["wire_version"] = json!(999);
    original.ack().await.unwrap();
    let before = crate::metrics::GatewayMetrics::global()
        .terminated(Consumer::Executor, DropReason::UnknownWireVersion);
    publish(
        &h.js,
        h.topology.dispatch_subject("frontier"),
        "v999-dispatch",
        serde_json::to_vec(&future).unwrap(),
    )
    .await
    .unwrap();
    let (stop, worker) = h.worker(2, "w");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send(true).unwrap();
    let stats = worker.await.unwrap();
    assert_eq!((stats.ran, stats.rejected), (0, 1), "{stats:?}");
    assert!(
        crate::metrics::GatewayMetrics::global()
            .terminated(Consumer::Executor, DropReason::UnknownWireVersion)
            > before
    );
    let events = h.events(run).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeStarted(_))),
        "{events:#?}"
    );
    h.finish().await;
}

/// Issue 11: an executor whose `started` report cannot be published (here: the results stream
/// is gone, as in an outage of the stream) keeps running its node and heartbeating, so the
/// dispatch is not redelivered and the model is called once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_keeps_its_node_and_heartbeats_while_reports_are_retried() {
    let h = harness(30_000).await;
    // Intake off (it would recreate the results stream); a worker holding its consumer.
    h.stop.send(true).unwrap();
    let (stop, worker) = h.worker(4, "w");
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.js.delete_stream(h.topology.results_stream())
        .await
        .unwrap();
    // The node runs 3.5 s; the ack wait is 2 s.
    let run = h
        .start(
            one_task("{ delay_ms: 3500, output: { ok: true } }"),
            json!({}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(5000)).await;
    h.topology.ensure_streams(&h.js).await.unwrap();
    let (_intake_stop, intake_stopped) = watch::channel(false);
    tokio::spawn(run_intake(
        h.js.clone(),
        h.topology.clone(),
        IntakeSink::for_engine(&h.engine, Arc::clone(&h.metrics)),
        intake_stopped,
    ));
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed, "{events:#?}");
    check(&events);
    stop.send(true).unwrap();
    let stats = worker.await.unwrap();
    assert_eq!(
        stats.ran, 1,
        "the work was not redelivered and run again: {stats:?}"
    );
    h.finish().await;
}

#[test]
fn nats_urls_are_redacted_for_printing() {
    use crate::redact_nats_url as r;
    assert_eq!(r("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    assert_eq!(
        r("nats://alice:pa@ss@host:4222"),
        "nats://alice:***@host:4222"
    );
    assert_eq!(r("nats://s3cr3t@host:4222"), "nats://***@host:4222");
    assert_eq!(
        r("tls://a:b@h1:4222,nats://tok@h2:4222,h3:4222"),
        "tls://a:***@h1:4222,nats://***@h2:4222,h3:4222"
    );
    assert_eq!(r("u:p@host:4222"), "u:***@host:4222");
}

/// An OpenAI-compatible model on 127.0.0.1 that answers `{"from": <name>}` and counts calls.
async fn counting_model(name: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({
                    "id": "c", "object": "chat.completion", "model": "m",
                    "choices": [{ "index": 0, "finish_reason": "stop",
                                  "message": { "role": "assistant", "content": json!({"from": name}).to_string() } }],
                    "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 }
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

fn openai_model(name: &str, base_url: &str) -> runledger_contracts::model::ModelSpec {
    use runledger_contracts::model::{ModelSpec, ProviderKind};
    let mut spec = ModelSpec::new(name, ProviderKind::OpenaiCompatible, "m");
    spec.base_url = Some(base_url.to_owned());
    spec
}

/// Issue 10.15: models registered or re-pointed after the engine and its executors started are
/// used from their next call on (before, a run of a new model failed with `unknown_model` and a
/// re-pointed model kept being called at its old URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_and_executors_follow_the_model_registry() {
    use crate::live_models::LiveModels;
    use crate::models::{ChangeRequest, ModelRegistry};
    use std::sync::atomic::Ordering;
    let h = harness(30_000).await;
    let max_age = Duration::from_millis(200);
    let models = LiveModels::load(
        h.ledger.second_store().await.unwrap(),
        ScriptedProvider::new(),
        max_age,
    )
    .await
    .unwrap();
    let (stop, stopped) = watch::channel(false);
    let config = WorkerConfig {
        executor_class: "frontier".into(),
        concurrency: 4,
        executor_id: "w".into(),
        exit_when_idle: None,
    };
    let worker = tokio::spawn(run_worker(
        h.js.clone(),
        h.topology.clone(),
        config,
        Arc::new(models.providers()),
        stopped,
    ));

    let (a, a_calls) = counting_model("a").await;
    let (b, b_calls) = counting_model("b").await;
    let registry = ModelRegistry::new(&h.ledger.store);
    let change = || ChangeRequest::new(RequestId::generate(), "test");
    registry
        .create(openai_model("late", &a), change())
        .await
        .unwrap();
    let flow = flowchart(
        "name: late\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: late, prompt: hi }\n  - { id: done, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: done }\n",
    );
    let output_of = |events: &[DomainEvent]| {
        events.iter().find_map(|e| match e {
            DomainEvent::NodeSucceeded(s) if s.node_id == "t" => Some(s.output.clone()),
            _ => None,
        })
    };
    let run = h.start(flow.clone(), json!({})).await;
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed, "{events:#?}");
    assert_eq!(output_of(&events), Some(json!({"from": "a"})));
    assert_eq!(a_calls.load(Ordering::SeqCst), 1);

    registry
        .update("late", openai_model("late", &b), None, change())
        .await
        .unwrap();
    tokio::time::sleep(max_age + Duration::from_millis(50)).await;
    let run = h.start(flow, json!({})).await;
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed, "{events:#?}");
    assert_eq!(
        output_of(&events),
        Some(json!({"from": "b"})),
        "the next call goes to the new URL"
    );
    assert_eq!(
        (
            a_calls.load(Ordering::SeqCst),
            b_calls.load(Ordering::SeqCst)
        ),
        (1, 1)
    );

    // The executor class follows too: a vllm model registered now is dispatched as vllm.
    let mut local = openai_model("local", &a);
    local.executor_class = Some(runledger_contracts::model::ExecutorClass::Vllm);
    registry.create(local, change()).await.unwrap();
    let class_of = models.class_of();
    let node = |model: &str| {
        let flow = flowchart(&format!(
            "name: n\nnodes:\n  - {{ id: start, type: start }}\n  - {{ id: t, type: task, model: {model} }}\n  - {{ id: done, type: end }}\nconnectors:\n  - {{ id: a, from: start, to: t }}\n  - {{ id: b, from: t, to: done }}\n"
        ));
        flow.nodes().iter().find(|n| n.id == "t").cloned().unwrap()
    };
    assert_eq!(class_of(&node("local")).await, "vllm");
    assert_eq!(class_of(&node("late")).await, "frontier");
    assert_eq!(class_of(&node("nowhere")).await, "frontier");
    let scripted = one_task("{ output: {} }")
        .nodes()
        .iter()
        .find(|n| n.id == "t")
        .cloned()
        .unwrap();
    assert_eq!(class_of(&scripted).await, "frontier");
    // A model deleted is gone from the next lookup after max_age.
    registry.delete("late", None, change()).await.unwrap();
    tokio::time::sleep(max_age + Duration::from_millis(50)).await;
    let gone = models.providers();
    assert!(gone.resolve("late").await.is_none());
    assert!(gone.resolve("local").await.is_some());

    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    h.finish().await;
}

/// The ledger, with reads of one stream held until the test lets them go: a run that is slow
/// to load.
struct HeldStream {
    inner: PgEventStore,
    held: StreamId,
    release: Arc<tokio::sync::Semaphore>,
}

impl EventStore for HeldStream {
    async fn append(
        &self,
        stream: &StreamId,
        expected: runledger_ledger::ExpectedVersion,
        request: runledger_ledger::AppendRequest,
    ) -> Result<runledger_ledger::AppendOutcome, runledger_ledger::StoreError> {
        self.inner.append(stream, expected, request).await
    }

    async fn append_many(
        &self,
        items: Vec<runledger_ledger::StreamAppend>,
    ) -> Result<Vec<runledger_ledger::AppendOutcome>, runledger_ledger::StoreError> {
        self.inner.append_many(items).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<runledger_contracts::envelope::RecordedEvent>, runledger_ledger::StoreError>
    {
        if *stream == self.held {
            let _permit = self.release.acquire().await;
        }
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: runledger_contracts::envelope::Position,
        limit: usize,
    ) -> Result<runledger_ledger::GlobalPage, runledger_ledger::StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn stream_head(
        &self,
        stream: &StreamId,
    ) -> Result<Option<runledger_ledger::StreamHead>, runledger_ledger::StoreError> {
        self.inner.stream_head(stream).await
    }

    async fn list_streams(
        &self,
        prefix: &str,
    ) -> Result<Vec<runledger_ledger::StreamHead>, runledger_ledger::StoreError> {
        self.inner.list_streams(prefix).await
    }

    async fn put_blob(
        &self,
        blob: runledger_ledger::Blob,
    ) -> Result<runledger_contracts::digest::Digest, runledger_ledger::StoreError> {
        self.inner.put_blob(blob).await
    }

    async fn get_blob(
        &self,
        hash: &runledger_contracts::digest::Digest,
    ) -> Result<Option<runledger_ledger::Blob>, runledger_ledger::StoreError> {
        self.inner.get_blob(hash).await
    }
}

/// Issue 10.2: a report of a run that is slow to load (not driven here) does not hold up the
/// report of another run behind it. Before, the engine loaded the first run on the loop that
/// hands every report to its run, so the second waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_run_does_not_hold_up_reports_of_other_runs() {
    let ledger = TestLedger::new().await.unwrap();
    let slow = RunId::new_v7();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let store = HeldStream {
        inner: ledger.second_store().await.unwrap(),
        held: StreamId::for_run(slow),
        release: Arc::clone(&release),
    };
    let config = EngineConfig {
        poll_interval: Duration::from_millis(50),
        settings: Settings {
            executor: "nats".into(),
            remote: Some(RemoteDispatch {
                dispatch_timeout_ms: 30_000,
            }),
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        store,
        Arc::new(LosesDispatches),
        Arc::new(NoFlowcharts),
        config,
    );
    let start = StartRun {
        run_id: RunId::new_v7(),
        flowchart: one_task("{ output: { ok: true } }"),
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "test".into(),
    };
    let run = engine
        .start(start, RequestId::generate(), CorrelationId::generate())
        .await
        .unwrap();
    let recorded = ledger
        .store
        .read_stream(&StreamId::for_run(run), 1, usize::MAX)
        .await
        .unwrap();
    let nr = recorded
        .iter()
        .find_map(|e| match e.decode().unwrap() {
            DomainEvent::NodeScheduled(s) if s.node_id == "t" => Some(s.node_run_id),
            _ => None,
        })
        .unwrap();

    let (slow_recorded, _slow_done) = Receipt::channel();
    let slow_report = Delivery {
        run_id: slow,
        report: succeeded(NodeRunId::new_v7(), 1, json!({})),
        message_id: Some("slow-1".into()),
        receipt: Some(slow_recorded),
    };
    let (fast_recorded, fast_done) = Receipt::channel();
    let Report::Finished(result) = succeeded(nr, 1, json!({"fast": true})) else {
        unreachable!()
    };
    let fast_report = Delivery {
        run_id: run,
        report: Report::Ran {
            executor: "hand".into(),
            result,
        },
        message_id: Some("fast-1".into()),
        receipt: Some(fast_recorded),
    };
    engine.reports().send(slow_report).unwrap();
    engine.reports().send(fast_report).unwrap();
    let fast = tokio::time::timeout(Duration::from_secs(10), fast_done.outcome()).await;
    release.add_permits(1_000);
    assert!(
        matches!(fast, Ok(DeliveryOutcome::Recorded)),
        "the other run's report was recorded while the slow run loaded: {fast:?}"
    );
    let summary = tokio::time::timeout(Duration::from_secs(10), engine.wait(run))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.status, RunStatus::Completed);
    ledger.drop_schema().await.unwrap();
}

/// Consumers created before `max_deliver` existed get it on the next start; their `ack_wait`
/// stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_created_unbounded_get_their_max_deliver() {
    let namespace = format!("t{}", RunId::new_v7().to_string().replace('-', ""));
    let topology = Topology::in_namespace(&namespace).unwrap();
    let js = crate::connect(NATS).await.unwrap();
    let (dispatch, results) = topology.ensure_streams(&js).await.unwrap();
    let old = |name: String, filter: String| async_nats::jetstream::consumer::pull::Config {
        durable_name: Some(name),
        filter_subject: filter,
        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(7),
        ..Default::default()
    };
    results
        .create_consumer(old(topology.intake_consumer(), String::new()))
        .await
        .unwrap();
    dispatch
        .create_consumer(old(
            topology.executor_consumer("frontier"),
            topology.dispatch_subject("frontier"),
        ))
        .await
        .unwrap();
    let mut intake = topology.intake_consumer_of(&js).await.unwrap();
    let info = intake.info().await.unwrap();
    assert_eq!(
        (info.config.max_deliver, info.config.ack_wait),
        (crate::topology::REPORT_MAX_DELIVER, Duration::from_secs(7))
    );
    let mut executor = topology
        .executor_consumer_of(&js, "frontier")
        .await
        .unwrap();
    let info = executor.info().await.unwrap();
    assert_eq!(
        (info.config.max_deliver, info.config.ack_wait),
        (
            crate::topology::DISPATCH_MAX_DELIVER,
            Duration::from_secs(7)
        )
    );
    topology.delete_streams(&js).await.unwrap();
}
