//! The read models on a SQLite ledger file: live projectors follow the engine, a rebuild gives
//! exactly the live rows, and the query API answers exactly what it answers on PostgreSQL for
//! the same events (the read models are backend-independent).

use std::sync::Arc;
use std::time::{Duration, Instant};

use runledger_contracts::canonical;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId};
use runledger_ledger::testing::{TestLedger, TestSqliteLedger};
use runledger_ledger::{EventStore, SqliteEventStore};
use runledger_orchestrator::engine::{Engine, EngineConfig, NoFlowcharts};
use runledger_orchestrator::executor::{InProcessPool, Providers};
use runledger_orchestrator::provider::ScriptedProvider;
use runledger_orchestrator::{ControlAction, StartRun};
use serde_json::{Value, json};

use super::{TWO_STEP, example, flowchart};
use crate::query::{self, ArtifactFilter, RunFilter};
use crate::{Projections, ReadDb, ReadSource, lag};

/// Every row of every projection table on SQLite (its JSON document), canonical and sorted.
async fn dump(store: &SqliteEventStore) -> Vec<String> {
    let mut rows = Vec::new();
    for p in crate::builtin() {
        for table in p.tables() {
            let sql = format!("SELECT doc FROM {table}");
            let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(store.readers())
                .await
                .unwrap();
            for text in texts {
                let value: Value = serde_json::from_str(&text).unwrap();
                let canonical =
                    String::from_utf8(canonical::to_canonical_vec(&value).unwrap()).unwrap();
                rows.push(format!("{table} {canonical}"));
            }
        }
    }
    rows.sort();
    rows
}

async fn until_caught_up(db: &(impl ReadSource + ?Sized)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lags = lag(db).await.unwrap();
        if lags
            .iter()
            .all(|l| l.events_behind == 0 && l.error.is_none())
        {
            return;
        }
        assert!(Instant::now() < deadline, "not caught up: {lags:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_events(store: &SqliteEventStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 1000).await.unwrap();
        if page.events.is_empty() {
            return events;
        }
        after = page.checkpoint;
        events.extend(page.events);
    }
}

/// Every list page of `filter`, following the cursors.
async fn all_runs(db: &(impl ReadSource + ?Sized), mut filter: RunFilter) -> Vec<Value> {
    let mut pages = Vec::new();
    loop {
        let page = query::list_runs(db, &filter).await.unwrap();
        pages.push(serde_json::to_value(&page).unwrap());
        match page.next_cursor {
            Some(c) => filter.cursor = Some(c),
            None => return pages,
        }
    }
}

async fn all_artifacts(db: &(impl ReadSource + ?Sized), mut filter: ArtifactFilter) -> Vec<Value> {
    let mut pages = Vec::new();
    loop {
        let page = query::list_artifacts(db, &filter).await.unwrap();
        pages.push(serde_json::to_value(&page).unwrap());
        match page.next_cursor {
            Some(c) => filter.cursor = Some(c),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn sqlite_read_models_rebuild_to_the_live_rows_and_answer_as_postgres_does() {
    let ledger = TestSqliteLedger::new().await.unwrap();
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 64);
    let config = EngineConfig {
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        ledger.store.share(),
        Arc::new(pool),
        Arc::new(NoFlowcharts),
        config,
    );
    let live = Projections::new(ledger.store.share()).with_poll_interval(Duration::from_millis(50));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        live.run_live(async {
            let _ = stopped.await;
        })
        .await
    });
    let run = |f, inputs: Value| {
        let engine = &engine;
        async move {
            let id = engine
                .start(
                    StartRun {
                        run_id: RunId::new_v7(),
                        flowchart: f,
                        version: None,
                        inputs,
                        parent: None,
                        actor: "test".into(),
                    },
                    RequestId::generate(),
                    CorrelationId::generate(),
                )
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(30), engine.wait(id))
                .await
                .unwrap()
                .unwrap();
            id
        }
    };
    // Loops, fan-in, a fallback route, a failure reopened by an operator, plain runs.
    let mut runs = vec![
        run(example("review-loop.yaml"), json!({ "topic": "owls" })).await,
        run(example("fan-in.yaml"), json!({ "topic": "owls" })).await,
        run(example("fallback-route.yaml"), json!({ "ticket": "?" })).await,
    ];
    let flaky = flowchart(
        "name: ops\nnodes:\n  - { id: start, type: start }\n  - { id: b, type: task, model: scripted, scripted: [{ error: { code: bad, message: broken } }, { output: 2 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: b }\n  - { id: c2, from: b, to: end }\n",
    );
    let reopened = run(flaky, json!({})).await;
    let control = runledger_contracts::events::Control {
        actor: "alice".into(),
        reason: "transient".into(),
    };
    engine
        .control(
            reopened,
            ControlAction::RetryNode { node: "b".into() },
            control,
            RequestId::generate(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), engine.wait(reopened))
        .await
        .unwrap()
        .unwrap();
    runs.push(reopened);
    for _ in 0..3 {
        runs.push(run(flowchart(TWO_STEP), json!({})).await);
    }

    // Late results (fan-in's slow branch) arrive after their run ended: wait for a quiet ledger.
    let mut quiet_since = (Instant::now(), 0u64);
    loop {
        let n = ledger.store.last_global_position().await.unwrap();
        if n != quiet_since.1 {
            quiet_since = (Instant::now(), n);
        } else if quiet_since.0.elapsed() > Duration::from_millis(1500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_caught_up(&ledger.store).await;
    let _ = stop.send(());
    task.await.unwrap();
    drop(engine);
    let live_rows = dump(&ledger.store).await;
    assert!(live_rows.len() > 100, "rows: {}", live_rows.len());
    let detail = query::run_detail(&ledger.store, reopened)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.run.status, "completed");
    assert!(
        detail
            .timeline
            .iter()
            .any(|t| t.actor.as_deref() == Some("alice")),
        "the operator's retry is on the timeline: {:#?}",
        detail.timeline
    );

    // Small batches (many boundaries) and one big batch both give the live rows.
    let events = all_events(&ledger.store).await;
    for batch_size in [7, 100_000] {
        let reports = Projections::new(ledger.store.share())
            .with_batch_size(batch_size)
            .rebuild(&mut |_| {})
            .await
            .unwrap();
        assert!(
            reports.iter().all(|r| r.applied == events.len() as u64),
            "{reports:?}"
        );
        assert_eq!(
            dump(&ledger.store).await,
            live_rows,
            "batch size {batch_size}"
        );
    }

    // The same events projected on PostgreSQL: every query answers the same.
    let pg = TestLedger::new().await.unwrap();
    let pg_db = ReadDb::Postgres(pg.store.pool().clone());
    for p in crate::builtin() {
        let mut tx = pg_db.begin().await.unwrap();
        p.apply(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
    }
    let pool = pg.store.pool().clone();
    let sqlite = &ledger.store;
    for run in &runs {
        let on_pg = query::run_detail(&pool, *run).await.unwrap().unwrap();
        let on_sqlite = query::run_detail(sqlite, *run).await.unwrap().unwrap();
        assert_eq!(on_sqlite, on_pg, "run {run}");
        for node in &on_pg.node_runs {
            assert_eq!(
                query::node_run_detail(sqlite, *run, node.node_run_id)
                    .await
                    .unwrap(),
                query::node_run_detail(&pool, *run, node.node_run_id)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            query::claims(sqlite, Some(*run)).await.unwrap(),
            query::claims(&pool, Some(*run)).await.unwrap()
        );
    }
    let claims = query::claims(sqlite, None).await.unwrap();
    assert_eq!(claims, query::claims(&pool, None).await.unwrap());
    assert!(
        claims.iter().all(|c| c.violations == 0),
        "the engine's runs keep every claim: {claims:#?}"
    );
    let filters = [
        RunFilter {
            limit: Some(2),
            ..RunFilter::default()
        },
        RunFilter {
            status: Some("completed".into()),
            limit: Some(3),
            ..RunFilter::default()
        },
        RunFilter {
            flowchart: Some("two-step".into()),
            ..RunFilter::default()
        },
        RunFilter {
            search: Some("TWO".into()),
            ..RunFilter::default()
        },
        RunFilter {
            search: Some(runs[0].to_string()[..8].to_owned()),
            ..RunFilter::default()
        },
    ];
    for filter in filters {
        let on_sqlite = all_runs(sqlite, filter.clone()).await;
        assert_eq!(
            on_sqlite,
            all_runs(&pool, filter.clone()).await,
            "{filter:?}"
        );
        assert!(!on_sqlite.is_empty());
    }
    for filter in [
        ArtifactFilter {
            limit: Some(4),
            ..ArtifactFilter::default()
        },
        ArtifactFilter {
            run_id: Some(runs[1]),
            ..ArtifactFilter::default()
        },
        ArtifactFilter {
            node_id: Some("end".into()),
            artifact_type: Some("run_output".into()),
            ..ArtifactFilter::default()
        },
    ] {
        let on_sqlite = all_artifacts(sqlite, filter.clone()).await;
        assert_eq!(
            on_sqlite,
            all_artifacts(&pool, filter.clone()).await,
            "{filter:?}"
        );
    }
    let first = query::list_artifacts(sqlite, &ArtifactFilter::default())
        .await
        .unwrap();
    let id = first.items[0].artifact_id;
    assert_eq!(
        query::artifact(sqlite, id).await.unwrap(),
        query::artifact(&pool, id).await.unwrap()
    );
    assert!(
        crate::claims::query::run_known(sqlite, runs[0])
            .await
            .unwrap()
    );
    pg.drop_schema().await.unwrap();
    ledger.remove().await.unwrap();
}
