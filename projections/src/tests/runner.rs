//! The runner: live projection, rebuild equals live, stops on a bad event, NOTIFY, lag.

use std::time::{Duration, Instant};

use runledger_contracts::envelope::NewEvent;
use runledger_contracts::events::Control;
use runledger_contracts::flowchart::NodeType;
use runledger_contracts::ids::{CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion};
use runledger_orchestrator::ControlAction;
use serde_json::json;

use super::{
    TWO_STEP, append, dump, example, flowchart, harness, run_started, scheduled, succeeded,
};
use crate::error::ProjectionError;
use crate::{Projections, lag};

/// Waits until every projector has applied everything in the ledger.
async fn until_caught_up(pool: &sqlx::PgPool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lags = lag(pool).await.unwrap();
        if lags
            .iter()
            .all(|l| l.events_behind == 0 && l.error.is_none())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "projections did not catch up: {lags:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rebuild_gives_exactly_the_rows_the_live_projectors_gave() {
    let h = harness().await;
    let live = h
        .projections()
        .with_poll_interval(Duration::from_millis(200));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        live.run_live(async {
            let _ = stopped.await;
        })
        .await
    });

    // Runs of every shape while the live projectors follow: loops, retries, fallback routes,
    // fan-in, a failure reopened by an operator, a cancel.
    h.run(example("review-loop.yaml"), json!({ "topic": "owls" }))
        .await;
    h.run(example("fan-in.yaml"), json!({ "topic": "owls" }))
        .await;
    h.run(example("fallback-route.yaml"), json!({ "ticket": "?" }))
        .await;
    let flaky = flowchart(
        "name: ops\nnodes:\n  - { id: start, type: start }\n  - { id: b, type: task, model: scripted, scripted: [{ error: { code: bad, message: broken } }, { output: 2 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: b }\n  - { id: c2, from: b, to: end }\n",
    );
    let reopened = h.run(flaky, json!({})).await;
    let control = Control {
        actor: "alice".into(),
        reason: "transient".into(),
    };
    h.engine
        .control(
            reopened,
            ControlAction::RetryNode { node: "b".into() },
            control.clone(),
            RequestId::generate(),
        )
        .await
        .unwrap();
    h.wait(reopened).await;
    let slow = flowchart(
        "name: slow\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ delay_ms: 1000, output: 1 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n",
    );
    let canceled = h.start(slow, json!({})).await;
    h.engine
        .control(
            canceled,
            ControlAction::Cancel { force: true },
            control,
            RequestId::generate(),
        )
        .await
        .unwrap();
    h.wait(canceled).await;
    for _ in 0..5 {
        h.run(flowchart(TWO_STEP), json!({})).await;
    }

    // Late results (a canceled node run answering, the slow angle of fan-in) arrive after their
    // runs ended; wait until the ledger is quiet so the live and rebuilt tables see the same.
    let pool = h.pool();
    let mut quiet_since = (Instant::now(), -1i64);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n != quiet_since.1 {
            quiet_since = (Instant::now(), n);
        } else if quiet_since.0.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_caught_up(&pool).await;
    let _ = stop.send(());
    task.await.unwrap();
    let live_rows = dump(&pool).await;
    assert!(
        live_rows.len() > 300,
        "the projections hold rows: {}",
        live_rows.len()
    );

    // Small batches (many boundaries) and one big batch both give the live tables.
    for batch_size in [7, 100_000] {
        let reports = Projections::new(pool.clone())
            .with_batch_size(batch_size)
            .rebuild(&mut |_| {})
            .await
            .unwrap();
        let events: u64 = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap() as u64;
        assert!(reports.iter().all(|r| r.applied == events), "{reports:?}");
        let rebuilt = dump(&pool).await;
        if rebuilt != live_rows {
            let only_live: Vec<_> = live_rows
                .iter()
                .filter(|r| !rebuilt.contains(r))
                .take(3)
                .collect();
            let only_rebuilt: Vec<_> = rebuilt
                .iter()
                .filter(|r| !live_rows.contains(r))
                .take(3)
                .collect();
            panic!(
                "batch size {batch_size}: rebuild differs\nlive only: {only_live:#?}\nrebuilt only: {only_rebuilt:#?}"
            );
        }
    }
    h.finish().await;
}

#[tokio::test]
async fn a_projector_stops_at_an_event_it_cannot_apply_and_never_skips_it() {
    let h = harness().await;
    let good = h.run(flowchart(TWO_STEP), json!({})).await;
    // A node run finishing that was never scheduled, in a run that exists.
    let stream = StreamId::for_run(good);
    let ghost = NodeRunId::new_v7();
    append(
        &h.ledger.store,
        &stream,
        vec![succeeded(good, "work", ghost, json!(1))],
    )
    .await;
    let head = h
        .ledger
        .store
        .stream_head(&stream)
        .await
        .unwrap()
        .unwrap()
        .version;

    let projections = h.projections();
    for _ in 0..2 {
        let err = projections.catch_up().await.unwrap_err();
        let ProjectionError::Stopped {
            projector,
            event,
            reason,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*projector, "run_detail");
        assert_eq!(
            (
                event.stream_id.as_str(),
                event.stream_version,
                event.event_type.as_str()
            ),
            (stream.as_str(), head, "NodeSucceeded")
        );
        assert!(
            reason.contains(&ghost.to_string()) && reason.contains("never scheduled"),
            "{reason}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("projector `run_detail` stopped at ")
                && text.contains(&format!("{stream}#{head}")),
            "{text}"
        );
        assert_eq!(err.code(), "projector_stopped");
    }
    // The checkpoint is just before the event: the good run is projected, the bad event is not.
    let lags = lag(&h.pool()).await.unwrap();
    let run_detail = &lags[0];
    assert_eq!(run_detail.name, "run_detail");
    assert_eq!(run_detail.events_behind, 1);
    assert!(
        run_detail
            .error
            .as_deref()
            .is_some_and(|e| e.contains("NodeSucceeded")),
        "{run_detail:?}"
    );
    assert!(
        crate::query::run_detail(&h.pool(), good)
            .await
            .unwrap()
            .is_some()
    );

    // An event type the catalog does not know stops every projector, naming it.
    let other = StreamId::new("misc-1").unwrap();
    let bogus = NewEvent {
        event_type: "Bogus".into(),
        schema_version: 1,
        payload: json!({"x": 1}),
        blob_refs: vec![],
    };
    h.ledger
        .store
        .append(
            &other,
            ExpectedVersion::NoStream,
            AppendRequest::new(
                RequestId::generate(),
                CorrelationId::generate(),
                vec![bogus],
            ),
        )
        .await
        .unwrap();
    for name in ["artifact_history", "claim_evidence"] {
        let err = Projections::select(h.pool(), Some(name))
            .unwrap()
            .catch_up()
            .await
            .unwrap_err();
        let ProjectionError::Stopped {
            projector,
            event,
            reason,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            (
                *projector,
                event.stream_id.as_str(),
                event.event_type.as_str()
            ),
            (name, "misc-1", "Bogus")
        );
        assert!(reason.contains("unknown event type `Bogus`"), "{reason}");
    }
    let err = Projections::select(h.pool(), Some("nope")).err().unwrap();
    assert_eq!(err.code(), "unknown_projector");
    h.finish().await;
}

#[tokio::test]
async fn notify_wakes_a_live_projector_without_waiting_for_the_poll() {
    let h = harness().await;
    // Polling every minute: only the NOTIFY after the append can make this quick.
    let live = h.projections().with_poll_interval(Duration::from_secs(60));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        live.run_live(async {
            let _ = stopped.await;
        })
        .await
    });
    // Let the runner reach its wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = RunId::new_v7();
    let chart = flowchart(TWO_STEP);
    append(
        &h.ledger.store,
        &StreamId::for_run(run),
        vec![run_started(run, &chart)],
    )
    .await;
    let started = Instant::now();
    loop {
        if crate::query::run_detail(&h.pool(), run)
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run was not projected after the NOTIFY"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    task.await.unwrap();
    h.finish().await;
}

#[tokio::test]
async fn lag_counts_events_and_age_behind_and_two_runners_never_apply_twice() {
    let h = harness().await;
    let run = RunId::new_v7();
    let chart = flowchart(TWO_STEP);
    let start = NodeRunId::new_v7();
    append(
        &h.ledger.store,
        &StreamId::for_run(run),
        vec![
            run_started(run, &chart),
            scheduled(run, "start", NodeType::Start, start, vec![]),
        ],
    )
    .await;
    for _ in 0..3 {
        h.run(flowchart(TWO_STEP), json!({})).await;
    }
    let pool = h.pool();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let before = lag(&pool).await.unwrap();
    assert_eq!(
        before.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        crate::PROJECTOR_NAMES
    );
    for l in &before {
        assert_eq!(l.events_behind, total as u64);
        assert!(l.seconds_behind > 0.0 && l.updated_at.is_none(), "{l:?}");
    }

    // Two runners at once (two `serve`s, or `check` beside `serve`): the checkpoint lock
    // serializes them, every event is applied once (a second apply would break primary keys).
    let (a, b) = (
        h.projections().with_batch_size(3),
        h.projections().with_batch_size(5),
    );
    let (ra, rb) = tokio::join!(a.catch_up(), b.catch_up());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    for i in 0..3 {
        assert_eq!(
            ra[i].applied + rb[i].applied,
            total as u64,
            "{:?} {:?}",
            ra[i],
            rb[i]
        );
    }
    let after = lag(&pool).await.unwrap();
    for l in &after {
        assert_eq!(
            (l.events_behind, l.seconds_behind, l.events_applied),
            (0, 0.0, total as u64),
            "{l:?}"
        );
        assert!(l.updated_at.is_some() && l.error.is_none());
    }
    h.finish().await;
}

#[tokio::test]
async fn a_dropped_database_connection_delays_a_live_projector_by_a_retry_not_a_parking() {
    let h = harness().await;
    // The runner's own pool, named so the test can cut exactly its connections, and not
    // checking connections before use: a connection dropped while idle fails the next query,
    // as one cut by a network or a database failover does.
    let application = format!("projector-cut-{}", std::process::id());
    let options = (*h.pool().connect_options())
        .clone()
        .application_name(&application);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .unwrap();
    let live = Projections::new(pool.clone()).with_poll_interval(Duration::from_secs(1));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        live.run_live(async {
            let _ = stopped.await;
        })
        .await
    });
    let chart = flowchart(TWO_STEP);
    let projected = |run: RunId| {
        let pool = h.pool();
        async move {
            crate::query::run_detail(&pool, run)
                .await
                .unwrap()
                .is_some()
        }
    };
    let before = RunId::new_v7();
    append(
        &h.ledger.store,
        &StreamId::for_run(before),
        vec![run_started(before, &chart)],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !projected(before).await {
        assert!(Instant::now() < deadline, "not projected before the cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Hold the checkpoint table so the runner's next batch waits inside a query, then cut its
    // connections there: the query fails for certain (an idle connection cut between queries
    // may be noticed and replaced by the pool before use). A table lock, not row locks: those
    // would give this transaction an id and hold back the read horizon, so the runner would
    // never see the new event at all.
    let mut holder = h.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE projection_checkpoints IN EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let after = RunId::new_v7();
    append(
        &h.ledger.store,
        &StreamId::for_run(after),
        vec![run_started(after, &chart)],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&application)
        .fetch_one(&h.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the runner never waited on the checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&application)
    .fetch_all(&h.pool())
    .await
    .unwrap();
    assert!(
        !cut.is_empty(),
        "the runner's connections were found and cut"
    );
    holder.rollback().await.unwrap();

    // Parked, the projector whose query was cut would be looked at again after 30 s;
    // retrying, every projector has the new event within the first polls. The bound is loose
    // on purpose: this checks behaviour, not speed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lags = lag(&h.pool()).await.unwrap();
        if projected(after).await && lags.iter().all(|l| l.events_behind == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an event appended after the connections were cut was not applied: {lags:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lags = lag(&h.pool()).await.unwrap();
    assert!(lags.iter().all(|l| l.error.is_none()), "{lags:#?}");
    let _ = stop.send(());
    task.await.unwrap();
    pool.close().await;
    h.finish().await;
}
