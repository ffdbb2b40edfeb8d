//! Defects found by outside tests (issue 10 and 11): reports that can never be recorded,
//! unknown wire versions, an executor whose reports cannot be published.

use super::*;
use crate::intake::IntakeSink;
use crate::metrics::{Consumer, DropReason};
use async_nats::jetstream::AckKind;

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

    let counted = |reason| h.metrics.terminated(Consumer::Intake, reason);
    for _ in 0..500 {
        if counted(DropReason::UnknownRun) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past several former redelivery intervals (1 s): each is terminated once, nothing is left.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(counted(DropReason::UnknownRun), 1);
    assert_eq!(counted(DropReason::UnknownWireVersion), 1);
    assert_eq!(counted(DropReason::Undecodable), 1);
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
    assert_eq!(r("nats://alice:pa@ss@host:4222"), "nats://alice:***@host:4222");
    assert_eq!(r("nats://s3cr3t@host:4222"), "nats://***@host:4222");
    assert_eq!(r("tls://a:b@h1:4222,nats://tok@h2:4222,h3:4222"), "tls://a:***@h1:4222,nats://***@h2:4222,h3:4222");
    assert_eq!(r("u:p@host:4222"), "u:***@host:4222");
}
