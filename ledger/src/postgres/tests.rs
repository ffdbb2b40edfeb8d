//! PostgreSQL-only tests of the event store: its transaction horizon, its error codes, its
//! transaction ids. Everything the trait promises is in the shared suite, `conformance.rs`.

#![cfg(test)]

use runledger_contracts::envelope::{NewEvent, Position};
use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use serde_json::json;

use crate::testing::TestLedger;
use crate::{AppendRequest, EventStore, ExpectedVersion, StoreError};

fn event(kind: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: kind.into(),
        schema_version: 1,
        payload,
        blob_refs: vec![],
    }
}

fn request(id: &str, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(
        RequestId::new(id).unwrap(),
        CorrelationId::new("corr-1").unwrap(),
        events,
    )
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

/// Reads from `checkpoint` until `want` events were seen in total (or 30 s passed). The horizon
/// is cluster-wide: other sessions' open transactions may hold it back for a moment, during
/// which the reader lags; it never skips.
async fn read_until(
    store: &impl EventStore,
    checkpoint: &mut Position,
    seen: &mut Vec<serde_json::Value>,
    want: usize,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < want && std::time::Instant::now() < deadline {
        let page = store.read_all(*checkpoint, 2).await.unwrap();
        if page.events.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        seen.extend(page.events.iter().map(|e| e.payload["i"].clone()));
        *checkpoint = page.checkpoint;
    }
}

/// A transaction that takes an early global position but commits after later ones must still be
/// read, exactly once, by a reader that checkpoints as it goes.
#[tokio::test]
async fn catch_up_reader_never_skips_an_event_that_commits_late() {
    let ledger = TestLedger::new().await.unwrap();
    let store = &ledger.store;
    let mut seen = Vec::new();
    let mut checkpoint = Position::START;
    store
        .append(
            &stream("s-before"),
            ExpectedVersion::NoStream,
            request("r0", vec![event("E", json!({"i": 0}))]),
        )
        .await
        .unwrap();
    read_until(store, &mut checkpoint, &mut seen, 1).await;
    assert_eq!(seen, vec![json!(0)]);

    // The slow writer: an open transaction holding an event with an early position.
    let mut slow = store.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                             request_id, correlation_id, recorded_at, payload, prev_hash, hash)
         SELECT gen_random_uuid(), 's-late', 1, 'E', 1, 'late', 'corr', now(), '{\"i\": \"late\"}',
                prev_hash, hash FROM events LIMIT 1",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    let late_position: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&mut *slow)
        .await
        .unwrap();

    // Faster writers commit after it, with later positions.
    for i in 1..=3 {
        store
            .append(
                &stream(&format!("s-after-{i}")),
                ExpectedVersion::NoStream,
                request(&format!("r{i}"), vec![event("E", json!({"i": i}))]),
            )
            .await
            .unwrap();
    }
    let after_positions: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events WHERE stream_id LIKE 's-after-%'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert!(
        after_positions.iter().all(|p| *p > late_position),
        "the late event has the earliest position"
    );

    // Committed events exist past the checkpoint, but none may be handed out while an earlier
    // transaction is still open: a reader that took them would checkpoint past the late event.
    let page = store.read_all(checkpoint, 100).await.unwrap();
    assert!(
        page.events.is_empty(),
        "read past an open transaction: {:?}",
        page.events
    );

    slow.commit().await.unwrap();
    read_until(store, &mut checkpoint, &mut seen, 5).await;
    assert_eq!(
        seen,
        vec![json!(0), json!("late"), json!(1), json!(2), json!(3)]
    );
    assert!(
        store
            .read_all(checkpoint, 100)
            .await
            .unwrap()
            .events
            .is_empty(),
        "each event exactly once"
    );
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn errors_say_whether_a_retry_can_help_and_keep_their_source() {
    use std::error::Error as _;

    let ledger = TestLedger::new().await.unwrap();
    // Permanent: the request is refused, whatever happens to the database.
    let err = ledger
        .store
        .append(
            &stream("run-p"),
            ExpectedVersion::NoStream,
            request("r", vec![event("A", json!({"s": "\u{0}"}))]),
        )
        .await
        .unwrap_err();
    assert!(!err.is_transient() && err.is_permanent(), "{err}");
    // Permanent: the database rejects the statement itself (division by zero, class 22).
    let sql_err = sqlx::query("SELECT 1/0")
        .execute(ledger.store.pool())
        .await
        .unwrap_err();
    let err = StoreError::Database(sql_err);
    assert!(!err.is_transient() && err.is_permanent(), "{err}");
    assert_eq!(err.code(), "database_error");
    assert!(
        err.source()
            .is_some_and(|s| s.to_string().contains("division by zero")),
        "{err:?}"
    );
    // Transient: nothing listens on the port (the connection is refused).
    let config = crate::DatabaseConfig::new("postgres://postgres@127.0.0.1:1/runledger_test");
    let err = crate::PgEventStore::connect(&config)
        .await
        .err()
        .expect("nothing listens on port 1");
    assert!(err.is_transient() && !err.is_permanent(), "{err:?}");
    assert!(
        err.source().is_some(),
        "the sqlx error is kept as the source"
    );
    // Transient: a serialization failure raised by the server.
    let sql_err = sqlx::query("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001'; END $$")
        .execute(ledger.store.pool())
        .await
        .unwrap_err();
    let err = StoreError::Database(sql_err);
    assert!(err.is_transient() && !err.is_permanent(), "{err:?}");
    // Neither: a conflict asks the caller to re-read and decide again.
    let conflict = StoreError::Conflict {
        stream_id: stream("run-p"),
        expected: 1,
        actual: 2,
    };
    assert!(!conflict.is_transient() && !conflict.is_permanent());
    ledger.drop_schema().await.unwrap();
}

/// Writes one event row with a chosen transaction id (as a ledger written over many
/// transactions would have), bypassing `append`.
async fn insert_with_tx_id(ledger: &TestLedger, stream_id: &str, tx_id: u64) {
    sqlx::query(
        "INSERT INTO events (tx_id, event_id, stream_id, stream_version, event_type, schema_version,
                             request_id, correlation_id, recorded_at, payload, prev_hash, hash)
         VALUES ($1::text::xid8, gen_random_uuid(), $2, 1, 'Forged', 1, 'r', 'c', now(), '{}',
                 decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex'))",
    )
    .bind(tx_id.to_string())
    .bind(stream_id)
    .execute(ledger.store.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn the_ledger_end_orders_transaction_ids_as_numbers_across_a_power_of_ten() {
    let ledger = TestLedger::new().await.unwrap();
    assert_eq!(ledger.store.last_committed_position().await.unwrap(), None);
    assert_eq!(
        ledger.store.horizon_position().await.unwrap(),
        Position::START
    );
    assert_eq!(ledger.store.last_global_position().await.unwrap(), 0);
    // Written in this order, the later transaction (100) gets the higher global position too.
    // As text, "99" sorts after "100": the end would be the older transaction.
    insert_with_tx_id(&ledger, "forged-a", 99).await;
    insert_with_tx_id(&ledger, "forged-b", 100).await;
    let end = ledger
        .store
        .last_committed_position()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.commit, 100);
    let horizon = ledger.store.horizon_position().await.unwrap();
    assert_eq!(
        horizon.commit, 100,
        "both transaction ids are far below any running one"
    );
    assert_eq!(horizon, end);
    assert_eq!(
        ledger.store.last_global_position().await.unwrap(),
        end.global
    );
    // Nothing is read after the end.
    assert!(
        ledger
            .store
            .read_all(horizon, 10)
            .await
            .unwrap()
            .events
            .is_empty()
    );
}
