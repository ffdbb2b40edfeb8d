//! SQLite-only tests: what the backend's single writer, its file and its pragmas give. The
//! trait's guarantees are tested for both backends in `conformance.rs`.

use std::time::Duration;

use runledger_contracts::envelope::{NewEvent, Position};
use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use serde_json::json;
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::testing::TestSqliteLedger;
use crate::{AppendRequest, EventStore, ExpectedVersion, SqliteEventStore, StoreError};

fn event(i: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: "E".into(),
        schema_version: 1,
        payload: json!({ "i": i }),
        blob_refs: vec![],
    }
}

fn request(id: &str, i: serde_json::Value) -> AppendRequest {
    AppendRequest::new(
        RequestId::new(id).unwrap(),
        CorrelationId::new("corr").unwrap(),
        vec![event(i)],
    )
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

async fn read_everything(
    store: &impl EventStore,
    checkpoint: &mut Position,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(*checkpoint, 2).await.unwrap();
        if page.events.is_empty() {
            return seen;
        }
        seen.extend(page.events.iter().map(|e| e.payload["i"].clone()));
        *checkpoint = page.checkpoint;
    }
}

/// A transaction that is still open is invisible to readers, and no other writer can commit
/// behind it or beside it: the next append waits for it and gets later positions. So a reader
/// that checkpoints as it goes sees every event once, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_skips_an_event_of_a_transaction_open_while_it_reads() {
    let ledger = TestSqliteLedger::new().await.unwrap();
    let store = &ledger.store;
    store
        .append(
            &stream("s-before"),
            ExpectedVersion::NoStream,
            request("r0", json!(0)),
        )
        .await
        .unwrap();
    let mut checkpoint = Position::START;
    assert_eq!(
        read_everything(store, &mut checkpoint).await,
        vec![json!(0)]
    );

    // The slow writer: another process's open write transaction with an event in it.
    let slow_store = ledger.second_store().await.unwrap();
    let mut slow = slow_store
        .writer()
        .begin_with("BEGIN IMMEDIATE")
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (tx_id, event_id, stream_id, stream_version, event_type,
                             schema_version, request_id, correlation_id, recorded_at, payload,
                             prev_hash, hash)
         SELECT (SELECT max(tx_id) + 1 FROM events), randomblob(16), 's-late', 1, 'E', 1,
                'late', 'corr', 0, '{\"i\":\"late\"}', prev_hash, hash FROM events LIMIT 1",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    // A faster writer has to wait for the write lock.
    let fast = tokio::spawn({
        let fast_store = store.share();
        async move {
            fast_store
                .append(
                    &stream("s-after"),
                    ExpectedVersion::NoStream,
                    request("r1", json!(1)),
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fast.is_finished(),
        "a second writer got past an open write transaction"
    );
    assert!(
        read_everything(store, &mut checkpoint).await.is_empty(),
        "an uncommitted event was read"
    );
    slow.commit().await.unwrap();
    let fast = fast.await.unwrap().unwrap();
    assert_eq!(
        read_everything(store, &mut checkpoint).await,
        vec![json!("late"), json!(1)],
        "each event once, in commit order"
    );
    assert!(
        fast.events[0].position
            > Position {
                commit: 1,
                global: 2
            }
    );
    slow_store.close().await;
    ledger.remove().await.unwrap();
}

/// WAL with `synchronous = FULL` on every connection: a commit is on disk when append returns.
#[tokio::test]
async fn connections_run_in_wal_mode_with_full_sync_and_the_file_keeps_the_ledger() {
    let ledger = TestSqliteLedger::new().await.unwrap();
    for pool in [ledger.store.writer(), ledger.store.readers()] {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
    }
    let s = stream("run-durable");
    let written = ledger
        .store
        .append(&s, ExpectedVersion::NoStream, request("r", json!("kept")))
        .await
        .unwrap();
    ledger.store.close().await;
    let reopened = SqliteEventStore::open(ledger.path()).await.unwrap();
    assert_eq!(reopened.migrate().await.unwrap(), 0, "already migrated");
    assert_eq!(
        reopened.read_stream(&s, 1, 10).await.unwrap(),
        written.events
    );
    reopened.close().await;
    ledger.remove().await.unwrap();
}

/// A busy file is worth retrying; a file that is not a ledger is not.
#[tokio::test]
async fn a_locked_file_is_transient_and_a_foreign_file_is_permanent() {
    let ledger = TestSqliteLedger::new().await.unwrap();
    let mut holder = ledger
        .store
        .writer()
        .begin_with("BEGIN IMMEDIATE")
        .await
        .unwrap();
    sqlx::query("INSERT INTO blobs (hash, media_type, data) VALUES (zeroblob(32), 'x', x'00')")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut impatient = SqliteConnectOptions::new()
        .filename(ledger.path())
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .unwrap();
    let err = sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut impatient)
        .await
        .unwrap_err();
    let err = StoreError::Database(err);
    assert!(err.is_transient(), "{err:?}");
    holder.rollback().await.unwrap();

    let foreign = ledger.dir().join("not-a-ledger.db");
    std::fs::write(&foreign, vec![b'x'; 4096]).unwrap();
    let err = match SqliteEventStore::open(&foreign).await {
        Ok(store) => store.migrate().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(!err.is_transient(), "{err:?}");
    assert_eq!(err.code(), "database_error");
    ledger.remove().await.unwrap();
}

fn typed(event_type: &str) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        schema_version: 1,
        payload: json!({}),
        blob_refs: vec![],
    }
}

/// The run index follows the appends that start, end and reopen runs, in their transaction;
/// streams that are not `run-<uuid>` never enter it, whatever their events are called.
#[tokio::test]
async fn the_run_index_holds_the_runs_started_or_reopened_and_not_ended() {
    let ledger = TestSqliteLedger::new().await.unwrap();
    let store = &ledger.store;
    let ended = runledger_contracts::ids::RunId::new_v7();
    let open = runledger_contracts::ids::RunId::new_v7();
    let reopened = runledger_contracts::ids::RunId::new_v7();
    let append = |stream: StreamId, id: &str, types: &[&str]| {
        let mut req = request(id, json!(0));
        req.events = types.iter().map(|t| typed(t)).collect();
        async move {
            store
                .append(&stream, ExpectedVersion::Any, req)
                .await
                .unwrap()
        }
    };
    append(
        StreamId::for_run(ended),
        "e1",
        &["RunStarted", "NodeScheduled"],
    )
    .await;
    append(StreamId::for_run(open), "o1", &["RunStarted"]).await;
    append(StreamId::for_run(reopened), "r1", &["RunStarted"]).await;
    append(stream("run-not-a-uuid"), "x1", &["RunStarted"]).await;
    append(stream("flowchart-run"), "x2", &["RunStarted"]).await;
    assert_eq!(
        store.unfinished_runs().await.unwrap(),
        vec![ended, open, reopened]
    );
    append(StreamId::for_run(ended), "e2", &["RunCompleted"]).await;
    append(StreamId::for_run(reopened), "r2", &["RunFailed"]).await;
    assert_eq!(store.unfinished_runs().await.unwrap(), vec![open]);
    append(StreamId::for_run(reopened), "r3", &["RunResumed"]).await;
    append(StreamId::for_run(open), "o2", &["RunPaused"]).await;
    assert_eq!(
        store.unfinished_runs().await.unwrap(),
        vec![open, reopened],
        "a paused run is unfinished; a reopened one is back"
    );
}
