//! Group commit (`append_batch`) and the request index (`find_request`), against a real server.

use std::sync::Arc;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use serde_json::json;

use crate::testing::TestLedger;
use crate::{AppendRequest, EventStore, ExpectedVersion, StoreError, StreamAppend};

fn event(kind: &str, n: u64) -> NewEvent {
    NewEvent {
        event_type: kind.into(),
        schema_version: 1,
        payload: json!({ "n": n }),
        blob_refs: vec![],
    }
}

fn request(id: &str, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(
        RequestId::new(id).unwrap(),
        CorrelationId::new("corr-batch").unwrap(),
        events,
    )
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

fn item(s: &StreamId, expected: ExpectedVersion, req: AppendRequest) -> StreamAppend {
    StreamAppend::new(s.clone(), expected, req)
}

async fn count_events(ledger: &TestLedger) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(ledger.store.pool())
        .await
        .unwrap()
}

async fn commits(ledger: &TestLedger) -> Vec<String> {
    sqlx::query_scalar("SELECT DISTINCT tx_id::text FROM events WHERE request_id LIKE 'b-%'")
        .fetch_all(ledger.store.pool())
        .await
        .unwrap()
}

/// Every stream's chain is linear and unbroken.
async fn assert_linear(store: &impl EventStore, s: &StreamId, len: u64) {
    let events = store.read_stream(s, 1, 10_000).await.unwrap();
    assert_eq!(events.len() as u64, len, "{s} has {len} events");
    let mut prev = Digest::GENESIS;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.stream_version, i as u64 + 1);
        assert_eq!(e.prev_hash, prev);
        assert_eq!(e.chain_body().hash().unwrap(), e.hash);
        prev = e.hash;
    }
}

#[tokio::test]
async fn a_batch_shares_one_commit_and_a_conflict_fails_only_its_own_item() {
    let ledger = TestLedger::new().await.unwrap();
    let streams: Vec<StreamId> = (0..5).map(|i| stream(&format!("run-g{i}"))).collect();
    for s in &streams {
        ledger
            .store
            .append(
                s,
                ExpectedVersion::NoStream,
                request("start", vec![event("A", 0)]),
            )
            .await
            .unwrap();
    }
    // Another process moves stream 2 on; this store still caches its old head, so the stale
    // item is only found out inside the shared transaction (a unique violation).
    let other = ledger.second_store().await.unwrap();
    other
        .append(
            &streams[2],
            ExpectedVersion::Exact(1),
            request("other", vec![event("B", 1)]),
        )
        .await
        .unwrap();
    let before = count_events(&ledger).await;
    let items = streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            item(
                s,
                ExpectedVersion::Exact(1),
                request(
                    &format!("b-{i}"),
                    vec![event("C", i as u64), event("D", i as u64)],
                ),
            )
        })
        .collect();
    let outcomes = ledger.store.append_batch(items).await;
    assert_eq!(outcomes.len(), 5);
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 2 {
            match outcome {
                Err(StoreError::Conflict {
                    expected, actual, ..
                }) => assert_eq!((*expected, *actual), (1, 2)),
                other => panic!("item 2 must conflict, got {other:?}"),
            }
        } else {
            let o = outcome.as_ref().unwrap();
            assert!(!o.deduplicated);
            assert_eq!(o.last_version(), 3, "item {i}");
        }
    }
    assert_eq!(
        count_events(&ledger).await,
        before + 8,
        "4 items of 2 events"
    );
    assert_eq!(
        commits(&ledger).await.len(),
        1,
        "the 4 written items share one transaction"
    );
    for (i, s) in streams.iter().enumerate() {
        assert_linear(&ledger.store, s, if i == 2 { 2 } else { 3 }).await;
    }
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn duplicate_request_ids_inside_one_batch_apply_once() {
    let ledger = TestLedger::new().await.unwrap();
    let (a, b) = (stream("run-d1"), stream("run-d2"));
    let same = || request("b-dup", vec![event("A", 1)]);
    let outcomes = ledger
        .store
        .append_batch(vec![
            item(&a, ExpectedVersion::NoStream, same()),
            // The same request again on the same stream: deduplicated, not written twice.
            item(&a, ExpectedVersion::NoStream, same()),
            // The same id with other content on that stream: refused.
            item(
                &a,
                ExpectedVersion::Exact(1),
                request("b-dup", vec![event("A", 2)]),
            ),
            // The same id on another stream is another request (ids are per stream).
            item(&b, ExpectedVersion::NoStream, same()),
        ])
        .await;
    let first = outcomes[0].as_ref().unwrap();
    assert!(!first.deduplicated);
    let again = outcomes[1].as_ref().unwrap();
    assert!(again.deduplicated);
    assert_eq!(
        again.events, first.events,
        "the first write's events come back"
    );
    assert!(
        matches!(outcomes[2], Err(StoreError::RequestMismatch { .. })),
        "{:?}",
        outcomes[2]
    );
    assert!(!outcomes[3].as_ref().unwrap().deduplicated);
    assert_linear(&ledger.store, &a, 1).await;
    assert_linear(&ledger.store, &b, 1).await;
    // A batch repeated as a whole writes nothing.
    let before = count_events(&ledger).await;
    let again = ledger
        .store
        .append_batch(vec![
            item(&a, ExpectedVersion::NoStream, same()),
            item(&b, ExpectedVersion::NoStream, same()),
        ])
        .await;
    assert!(again.iter().all(|o| o.as_ref().unwrap().deduplicated));
    assert_eq!(count_events(&ledger).await, before);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn a_refused_item_fails_alone_and_is_permanent() {
    let ledger = TestLedger::new().await.unwrap();
    let streams: Vec<StreamId> = (0..3).map(|i| stream(&format!("run-p{i}"))).collect();
    let mut bad_event = event("A", 1);
    bad_event.payload = json!({ "text": "nul \u{0000} byte" });
    let mut missing_blob = event("A", 1);
    missing_blob.blob_refs = vec![Digest::of(b"never stored")];
    let outcomes = ledger
        .store
        .append_batch(vec![
            item(
                &streams[0],
                ExpectedVersion::NoStream,
                request("b-0", vec![bad_event]),
            ),
            item(
                &streams[1],
                ExpectedVersion::NoStream,
                request("b-1", vec![event("A", 1)]),
            ),
            item(
                &streams[2],
                ExpectedVersion::NoStream,
                request("b-2", vec![missing_blob]),
            ),
        ])
        .await;
    match &outcomes[0] {
        Err(e @ StoreError::InvalidEvent { index: 0, .. }) => assert!(!e.is_transient()),
        other => panic!("the U+0000 payload must be refused, got {other:?}"),
    }
    assert!(!outcomes[1].as_ref().unwrap().deduplicated);
    match &outcomes[2] {
        Err(e @ StoreError::MissingBlob { .. }) => assert!(!e.is_transient()),
        other => panic!("the missing blob must be refused, got {other:?}"),
    }
    assert_eq!(
        count_events(&ledger).await,
        1,
        "only the good item was written"
    );
    ledger.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_from_two_stores_keep_every_stream_linear() {
    let ledger = TestLedger::new().await.unwrap();
    let stores = [
        Arc::new(ledger.second_store().await.unwrap()),
        Arc::new(ledger.second_store().await.unwrap()),
    ];
    let streams: Vec<StreamId> = (0..6).map(|i| stream(&format!("run-c{i}"))).collect();
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        for round in 0..4 {
            let store = Arc::clone(store);
            let streams = streams.clone();
            tasks.push(tokio::spawn(async move {
                let mut written = 0;
                for step in 0..10 {
                    // Both writers hit every stream, in opposite orders, each with the
                    // version it last saw: many conflicts, never a fork or a deadlock.
                    let mut items = Vec::new();
                    let mut order: Vec<&StreamId> = streams.iter().collect();
                    if w == 1 {
                        order.reverse();
                    }
                    for s in order {
                        let head = store.stream_head(s).await.unwrap().map_or(0, |h| h.version);
                        let expected = match head {
                            0 => ExpectedVersion::NoStream,
                            v => ExpectedVersion::Exact(v),
                        };
                        let id = format!("b-{w}-{round}-{step}-{s}");
                        items.push(item(s, expected, request(&id, vec![event("E", step)])));
                    }
                    for outcome in store.append_batch(items).await {
                        match outcome {
                            Ok(o) => written += o.events.len(),
                            Err(StoreError::Conflict { .. }) => {}
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                }
                written
            }));
        }
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    assert!(written > 0);
    let mut total = 0;
    for s in &streams {
        let len = ledger
            .store
            .stream_head(s)
            .await
            .unwrap()
            .map_or(0, |h| h.version);
        assert_linear(&ledger.store, s, len).await;
        total += len as usize;
    }
    assert_eq!(
        total, written,
        "every reported write is in the ledger, nothing else"
    );
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn find_request_answers_from_the_request_index() {
    let ledger = TestLedger::new().await.unwrap();
    let s = stream("run-f");
    ledger
        .store
        .append(
            &s,
            ExpectedVersion::NoStream,
            request("one", vec![event("A", 1)]),
        )
        .await
        .unwrap();
    let two = ledger
        .store
        .append(
            &s,
            ExpectedVersion::Exact(1),
            request("two", vec![event("B", 2), event("C", 3)]),
        )
        .await
        .unwrap();
    ledger
        .store
        .append(
            &s,
            ExpectedVersion::Exact(3),
            request("three", vec![event("D", 4)]),
        )
        .await
        .unwrap();
    let found = ledger
        .store
        .find_request(&s, &RequestId::new("two").unwrap())
        .await
        .unwrap();
    assert_eq!(found, two.events);
    let none = ledger
        .store
        .find_request(&s, &RequestId::new("four").unwrap())
        .await
        .unwrap();
    assert!(none.is_empty());
    let elsewhere = ledger
        .store
        .find_request(&stream("run-other"), &RequestId::new("two").unwrap())
        .await
        .unwrap();
    assert!(elsewhere.is_empty(), "request ids are per stream");
    // The default (a read of the stream) gives the same answer.
    let by_scan = Scan(&ledger.store)
        .find_request(&s, &RequestId::new("two").unwrap())
        .await
        .unwrap();
    assert_eq!(by_scan, found);
    ledger.drop_schema().await.unwrap();
}

/// A store that keeps the trait's default `find_request` and `append_batch`.
struct Scan<'a>(&'a crate::PgEventStore);

impl EventStore for Scan<'_> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<crate::AppendOutcome, StoreError> {
        self.0.append(stream, expected, request).await
    }
    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<crate::AppendOutcome>, StoreError> {
        self.0.append_many(items).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<runledger_contracts::envelope::RecordedEvent>, StoreError> {
        self.0.read_stream(stream, from_version, limit).await
    }
    async fn read_all(
        &self,
        after: runledger_contracts::envelope::Position,
        limit: usize,
    ) -> Result<crate::GlobalPage, StoreError> {
        self.0.read_all(after, limit).await
    }
    async fn stream_head(
        &self,
        stream: &StreamId,
    ) -> Result<Option<crate::StreamHead>, StoreError> {
        self.0.stream_head(stream).await
    }
    async fn list_streams(&self, prefix: &str) -> Result<Vec<crate::StreamHead>, StoreError> {
        self.0.list_streams(prefix).await
    }
    async fn put_blob(&self, blob: crate::Blob) -> Result<Digest, StoreError> {
        self.0.put_blob(blob).await
    }
    async fn get_blob(&self, hash: &Digest) -> Result<Option<crate::Blob>, StoreError> {
        self.0.get_blob(hash).await
    }
}

#[tokio::test]
async fn the_default_append_batch_gives_each_item_its_own_outcome() {
    let ledger = TestLedger::new().await.unwrap();
    let (a, b) = (stream("run-s1"), stream("run-s2"));
    let outcomes = Scan(&ledger.store)
        .append_batch(vec![
            item(
                &a,
                ExpectedVersion::NoStream,
                request("b-a", vec![event("A", 1)]),
            ),
            item(
                &b,
                ExpectedVersion::Exact(4),
                request("b-b", vec![event("A", 1)]),
            ),
        ])
        .await;
    assert!(!outcomes[0].as_ref().unwrap().deduplicated);
    assert!(matches!(outcomes[1], Err(StoreError::Conflict { .. })));
    ledger.drop_schema().await.unwrap();
}
