//! The store's conformance suite: every guarantee of [`EventStore`] as a test, written once
//! as a generic function over a [`Harness`] and instantiated for each backend by
//! `conformance_tests!` (PostgreSQL in a schema of its own, SQLite in a file of its own).

#![cfg(test)]

use std::collections::BTreeSet;
use std::sync::Arc;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use serde_json::json;

use crate::export::{ExportScope, export};
use crate::testing::{Harness, PgHarness, SqliteHarness};
use crate::verify::verify;
use crate::{
    AppendOutcome, AppendRequest, Blob, EventStore, ExpectedVersion, StoreError, StreamAppend,
};

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

/// Recomputes a stream's chain from what the store returns.
async fn assert_chain(store: &impl EventStore, id: &StreamId) -> u64 {
    let events = store.read_stream(id, 1, 100_000).await.unwrap();
    let mut prev = Digest::GENESIS;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.stream_version, i as u64 + 1, "versions have no gaps");
        assert_eq!(
            e.prev_hash, prev,
            "prev_hash of version {}",
            e.stream_version
        );
        assert_eq!(
            e.chain_body().hash().unwrap(),
            e.hash,
            "hash of version {}",
            e.stream_version
        );
        prev = e.hash;
    }
    let head = store.stream_head(id).await.unwrap().unwrap();
    assert_eq!(head.version, events.len() as u64);
    assert_eq!(head.hash, prev);
    head.version
}

async fn append_then_read_back_a_valid_chain<H: Harness>() {
    let ledger = H::new().await;
    let s = stream("run-a");
    let first = ledger
        .store()
        .append(
            &s,
            ExpectedVersion::NoStream,
            request(
                "r1",
                vec![
                    event(
                        "RunStarted",
                        json!({"n": 1, "text": "héllo", "list": [1.5, null, true]}),
                    ),
                    event("NodeScheduled", json!({"n": 2})),
                ],
            ),
        )
        .await
        .unwrap();
    assert!(!first.deduplicated);
    assert_eq!(first.last_version(), 2);
    let second = ledger
        .store()
        .append(
            &s,
            ExpectedVersion::Exact(2),
            request("r2", vec![event("RunCompleted", json!({}))]),
        )
        .await
        .unwrap();
    assert_eq!(second.events[0].stream_version, 3);
    assert_eq!(second.events[0].prev_hash, first.events[1].hash);
    assert!(second.events[0].position > first.events[1].position);

    let read = ledger.store().read_stream(&s, 1, 10).await.unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(
        read[0], first.events[0],
        "what append returns is what a read returns"
    );
    assert_eq!(read[2], second.events[0]);
    assert_eq!(read[0].payload["text"], "héllo");
    assert_eq!(assert_chain(ledger.store(), &s).await, 3);
    assert_eq!(
        ledger.store().read_stream(&s, 3, 10).await.unwrap().len(),
        1
    );
    ledger.finish().await;
}

async fn repeating_a_request_returns_the_original_and_writes_nothing<H: Harness>() {
    let ledger = H::new().await;
    let s = stream("run-idem");
    let req = request(
        "same",
        vec![
            event("RunStarted", json!({"a": 1})),
            event("NodeScheduled", json!({})),
        ],
    );
    let original = ledger
        .store()
        .append(&s, ExpectedVersion::NoStream, req.clone())
        .await
        .unwrap();

    // A retry with the same expected version (the first reply was lost)...
    let again = ledger
        .store()
        .append(&s, ExpectedVersion::NoStream, req.clone())
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.events, original.events);
    // ...with a fresher expected version...
    let fresh = ledger
        .store()
        .append(&s, ExpectedVersion::Exact(2), req.clone())
        .await
        .unwrap();
    assert!(fresh.deduplicated);
    assert_eq!(fresh.events, original.events);
    // ...and from another process, with no cached head.
    let other = ledger.second_store().await;
    let third = other.append(&s, ExpectedVersion::Any, req).await.unwrap();
    assert!(third.deduplicated);
    assert_eq!(third.events, original.events);

    assert_eq!(ledger.count_events().await, 2);
    ledger.finish().await;
}

async fn reusing_a_request_id_with_other_content_is_an_error<H: Harness>() {
    let ledger = H::new().await;
    let s = stream("run-reuse");
    ledger
        .store()
        .append(
            &s,
            ExpectedVersion::NoStream,
            request("r1", vec![event("RunStarted", json!({"a": 1}))]),
        )
        .await
        .unwrap();
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(1)] {
        let err = ledger
            .store()
            .append(
                &s,
                expected,
                request("r1", vec![event("RunStarted", json!({"a": 2}))]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::RequestMismatch { .. }), "{err}");
        assert_eq!(err.code(), "request_id_reused");
    }
    assert_eq!(ledger.count_events().await, 1);
    ledger.finish().await;
}

async fn wrong_expected_version_is_a_conflict_carrying_the_actual_version<H: Harness>() {
    let ledger = H::new().await;
    let s = stream("run-conflict");
    ledger
        .store()
        .append(
            &s,
            ExpectedVersion::NoStream,
            request("r1", vec![event("A", json!({})), event("B", json!({}))]),
        )
        .await
        .unwrap();
    for (expected, label) in [
        (ExpectedVersion::NoStream, 0),
        (ExpectedVersion::Exact(1), 1),
        (ExpectedVersion::Exact(5), 5),
    ] {
        match ledger
            .store()
            .append(&s, expected, request("r2", vec![event("C", json!({}))]))
            .await
        {
            Err(StoreError::Conflict {
                expected, actual, ..
            }) => {
                assert_eq!((expected, actual), (label, 2));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    // A stream that does not exist is at version 0.
    match ledger
        .store()
        .append(
            &stream("run-none"),
            ExpectedVersion::Exact(3),
            request("r3", vec![event("C", json!({}))]),
        )
        .await
    {
        Err(StoreError::Conflict { actual: 0, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A stale cache in another process is caught by the version check, not trusted.
    let other = ledger.second_store().await;
    other
        .append(
            &s,
            ExpectedVersion::Exact(2),
            request("r4", vec![event("D", json!({}))]),
        )
        .await
        .unwrap();
    let err = ledger
        .store()
        .append(
            &s,
            ExpectedVersion::Exact(2),
            request("r5", vec![event("E", json!({}))]),
        )
        .await;
    assert!(
        matches!(err, Err(StoreError::Conflict { actual: 3, .. })),
        "{err:?}"
    );
    let ok = ledger
        .store()
        .append(
            &s,
            ExpectedVersion::Exact(3),
            request("r5", vec![event("E", json!({}))]),
        )
        .await
        .unwrap();
    assert_eq!(ok.last_version(), 4);
    assert_eq!(assert_chain(ledger.store(), &s).await, 4);
    assert_eq!(ledger.count_events().await, 4);
    ledger.finish().await;
}

async fn eight_concurrent_appenders_on_one_stream_never_fork_it<H: Harness>() {
    const APPENDERS: usize = 8;
    const EACH: usize = 25;
    let ledger = H::new().await;
    let s = stream("run-race");
    let mut tasks = Vec::new();
    for a in 0..APPENDERS {
        // Separate stores: separate pools and head caches, as separate processes would have.
        let store = Arc::new(ledger.second_store().await);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            let mut written = 0usize;
            while written < EACH {
                let head = store
                    .stream_head(&s)
                    .await
                    .unwrap()
                    .map_or(0, |h| h.version);
                let expected = if head == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(head)
                };
                let req = request(
                    &format!("a{a}-{written}"),
                    vec![event("Tick", json!({"appender": a, "n": written}))],
                );
                match store.append(&s, expected, req).await {
                    Ok(out) => {
                        assert!(!out.deduplicated);
                        assert_eq!(out.last_version(), head + 1);
                        written += 1;
                    }
                    Err(StoreError::Conflict { actual, .. }) => {
                        assert!(actual > head, "a conflict reports a newer version");
                        conflicts += 1;
                    }
                    Err(e) => panic!("appender {a}: {e}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    assert!(
        conflicts > 0,
        "8 appenders racing on one stream must lose some races"
    );
    let total = (APPENDERS * EACH) as u64;
    assert_eq!(assert_chain(ledger.store(), &s).await, total);
    let events = ledger.store().read_stream(&s, 1, 10_000).await.unwrap();
    let versions: BTreeSet<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(
        versions,
        (1..=total).collect::<BTreeSet<_>>(),
        "every version used once"
    );
    let per_appender: BTreeSet<(u64, u64)> = events
        .iter()
        .map(|e| {
            (
                e.payload["appender"].as_u64().unwrap(),
                e.payload["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_appender.len() as u64, total, "no event written twice");
    ledger.finish().await;
}

async fn expected_any_appends_after_whatever_is_there<H: Harness>() {
    let ledger = H::new().await;
    let s = stream("run-any");
    let a = ledger
        .store()
        .append(
            &s,
            ExpectedVersion::Any,
            request("r1", vec![event("A", json!({}))]),
        )
        .await
        .unwrap();
    let b = ledger
        .store()
        .append(
            &s,
            ExpectedVersion::Any,
            request("r2", vec![event("B", json!({}))]),
        )
        .await
        .unwrap();
    assert_eq!((a.last_version(), b.last_version()), (1, 2));
    ledger.finish().await;
}

async fn invalid_events_are_rejected_and_nothing_is_written<H: Harness>() {
    let ledger = H::new().await;
    let s = stream("run-bad");
    let cases = vec![
        (vec![], "at least one event"),
        (
            vec![event("A", json!({"n": 9_007_199_254_740_993u64}))],
            "$.n",
        ),
        (vec![event("A", json!({"s": "nul\u{0}here"}))], "U+0000"),
        (vec![event("has space", json!({}))], "event_type"),
        (
            vec![
                event("A", json!({})),
                event("B", json!({"x": "y".repeat(crate::MAX_PAYLOAD_BYTES)})),
            ],
            "blob",
        ),
    ];
    for (events, needle) in cases {
        let err = ledger
            .store()
            .append(&s, ExpectedVersion::NoStream, request("r", events))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(needle),
            "`{err}` should mention {needle}"
        );
    }
    let mut missing = event("A", json!({}));
    missing.blob_refs.push(Digest::of(b"never stored"));
    let err = ledger
        .store()
        .append(&s, ExpectedVersion::NoStream, request("r", vec![missing]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err}");
    assert_eq!(ledger.count_events().await, 0);
    assert!(ledger.store().stream_head(&s).await.unwrap().is_none());
    ledger.finish().await;
}

async fn the_ledger_refuses_updates_and_deletes<H: Harness>() {
    let ledger = H::new().await;
    ledger
        .store()
        .append(
            &stream("run-x"),
            ExpectedVersion::NoStream,
            request("r", vec![event("A", json!({}))]),
        )
        .await
        .unwrap();
    for sql in ["UPDATE events SET event_type = 'B'", "DELETE FROM events"] {
        let err = ledger.execute(sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    ledger.finish().await;
}

async fn migrate_is_idempotent<H: Harness>() {
    let ledger = H::new().await;
    assert_eq!(ledger.migrate().await.unwrap(), 0);
    assert_eq!(ledger.migrate_second().await.unwrap(), 0);
    ledger.finish().await;
}

async fn ledger_with_blob<H: Harness>() -> (H, StreamId, Digest) {
    let ledger = H::new().await;
    let s = stream("run-export");
    let blob = Blob {
        media_type: "text/plain".into(),
        data: b"a long model output".to_vec(),
    };
    let hash = blob.hash();
    let mut with_ref = event(
        "ArtifactPersisted",
        json!({"content": hash.to_hex(), "score": 0.5}),
    );
    with_ref.blob_refs.push(hash);
    let mut req = request(
        "r1",
        vec![
            event("RunStarted", json!({"inputs": {"topic": "ledgers"}})),
            with_ref,
        ],
    );
    req.blobs.push(blob);
    ledger
        .store()
        .append(&s, ExpectedVersion::NoStream, req)
        .await
        .unwrap();
    ledger
        .store()
        .append(
            &s,
            ExpectedVersion::Exact(2),
            request("r2", vec![event("RunCompleted", json!({"node_runs": 1}))]),
        )
        .await
        .unwrap();
    ledger
        .store()
        .append(
            &stream("run-other"),
            ExpectedVersion::NoStream,
            request("r3", vec![event("RunStarted", json!({}))]),
        )
        .await
        .unwrap();
    (ledger, s, hash)
}

async fn export_bytes(store: &impl EventStore, scope: &ExportScope) -> Vec<u8> {
    let mut out = Vec::new();
    export(store, scope, &mut out, |_, _| {}).await.unwrap();
    out
}

async fn blobs_are_stored_by_content_and_exported<H: Harness>() {
    let (ledger, s, hash) = ledger_with_blob::<H>().await;
    let blob = ledger.store().get_blob(&hash).await.unwrap().unwrap();
    assert_eq!(blob.data, b"a long model output");
    assert_eq!(
        ledger.store().put_blob(blob.clone()).await.unwrap(),
        hash,
        "idempotent"
    );
    let file = export_bytes(ledger.store(), &ExportScope::Stream(s)).await;
    let text = String::from_utf8(file.clone()).unwrap();
    assert_eq!(
        text.lines().count(),
        1 + 3 + 1,
        "manifest, 3 events, 1 blob"
    );
    assert!(text.lines().last().unwrap().contains("\"kind\":\"blob\""));
    let report = verify(file.as_slice()).unwrap();
    assert_eq!((report.streams, report.events, report.blobs), (1, 3, 1));
    ledger.finish().await;
}

async fn two_exports_of_the_same_ledger_are_byte_identical_and_verify<H: Harness>() {
    let (ledger, s, _) = ledger_with_blob::<H>().await;
    let all_a = export_bytes(ledger.store(), &ExportScope::All).await;
    // A second process, with nothing cached, exports the same bytes.
    let other = ledger.second_store().await;
    let all_b = export_bytes(&other, &ExportScope::All).await;
    assert_eq!(all_a, all_b);
    let report = verify(all_a.as_slice()).unwrap();
    assert_eq!((report.streams, report.events, report.blobs), (2, 4, 1));
    let head = ledger.store().stream_head(&s).await.unwrap().unwrap();
    assert_eq!(report.heads[s.as_str()], head.hash.to_hex());
    let first_line =
        String::from_utf8(all_a.split(|b| *b == b'\n').next().unwrap().to_vec()).unwrap();
    assert!(
        first_line.starts_with("{\"blobs\":"),
        "canonical key order: {first_line}"
    );
    assert!(
        first_line.contains("\"format_version\":1") && first_line.contains("\"kind\":\"manifest\"")
    );
    ledger.finish().await;
}

async fn verify_catches_a_flipped_byte_anywhere_in_an_export<H: Harness>() {
    let (ledger, s, _) = ledger_with_blob::<H>().await;
    let file = export_bytes(ledger.store(), &ExportScope::Stream(s)).await;
    assert!(verify(file.as_slice()).is_ok());
    let mut caught = 0;
    for i in 0..file.len() {
        for bit in [0x01u8, 0x20] {
            let mut bad = file.clone();
            bad[i] ^= bit;
            match verify(bad.as_slice()) {
                Err(_) => caught += 1,
                Ok(_) => panic!(
                    "flipping bit {bit:#x} of byte {i} ({:?}) went unnoticed",
                    char::from(file[i])
                ),
            }
        }
    }
    assert_eq!(caught, file.len() * 2);
    ledger.finish().await;
}

async fn verify_names_the_first_bad_event<H: Harness>() {
    let (ledger, s, _) = ledger_with_blob::<H>().await;
    let file =
        String::from_utf8(export_bytes(ledger.store(), &ExportScope::Stream(s)).await).unwrap();
    let lines: Vec<&str> = file.lines().collect();

    let tampered = file.replacen("\"node_runs\":1", "\"node_runs\":2", 1);
    let err = verify(tampered.as_bytes()).unwrap_err();
    assert_eq!((err.line, err.code), (4, "hash_mismatch"));
    assert_eq!(err.event.as_deref(), Some("run-export#3 RunCompleted"));
    assert!(
        err.to_string()
            .starts_with("line 4 (run-export#3 RunCompleted): hash recomputes to"),
        "{err}"
    );

    let truncated = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]);
    let err = verify(truncated.as_bytes()).unwrap_err();
    assert!(err.code == "counts" || err.code == "missing_blob", "{err}");

    let swapped = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        lines[0], lines[2], lines[1], lines[3], lines[4]
    );
    let err = verify(swapped.as_bytes()).unwrap_err();
    assert_eq!((err.line, err.code), (2, "sequence"));

    let no_blob = format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[2], lines[3]);
    assert_eq!(verify(no_blob.as_bytes()).unwrap_err().code, "missing_blob");
    assert_eq!(verify(&b""[..]).unwrap_err().code, "manifest");
    ledger.finish().await;
}

async fn exporting_a_missing_stream_is_an_error<H: Harness>() {
    let ledger = H::new().await;
    let mut out = Vec::new();
    let err = export(
        ledger.store(),
        &ExportScope::Stream(stream("run-nope")),
        &mut out,
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "stream `run-nope` does not exist");
    ledger.finish().await;
}

// ---- append_many: several streams, one transaction ------------------------------------------

fn item(s: &StreamId, expected: ExpectedVersion, req: AppendRequest) -> StreamAppend {
    StreamAppend::new(s.clone(), expected, req)
}

async fn version_of(store: &impl EventStore, s: &StreamId) -> u64 {
    store.stream_head(s).await.unwrap().map_or(0, |h| h.version)
}

async fn append_many_writes_every_stream_in_one_transaction<H: Harness>() {
    let ledger = H::new().await;
    let (run, tool) = (stream("run-m1"), stream("memory-m1"));
    ledger
        .store()
        .append(
            &run,
            ExpectedVersion::NoStream,
            request("r0", vec![event("RunStarted", json!({}))]),
        )
        .await
        .unwrap();
    let outcomes = ledger
        .store()
        .append_many(vec![
            item(
                &run,
                ExpectedVersion::Exact(1),
                request(
                    "r1",
                    vec![
                        event("NodeSucceeded", json!({"n": 1})),
                        event("ArtifactPersisted", json!({})),
                    ],
                ),
            ),
            item(
                &tool,
                ExpectedVersion::NoStream,
                request(
                    "nr:memory:create",
                    vec![event("MemoryEntryCreated", json!({"key": "k"}))],
                ),
            ),
        ])
        .await
        .unwrap();
    // Outcomes in item order, each with its stream's versions and chain.
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| !o.deduplicated));
    assert_eq!(
        outcomes[0]
            .events
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(outcomes[0].events[0].stream_id, run);
    assert_eq!(outcomes[1].events[0].stream_id, tool);
    assert_eq!(outcomes[1].events[0].stream_version, 1);
    assert_eq!(outcomes[1].events[0].prev_hash, Digest::GENESIS);
    // One transaction: every event of the call has the same commit position.
    let commits: BTreeSet<u64> = outcomes
        .iter()
        .flat_map(|o| o.events.iter().map(|e| e.position.commit))
        .collect();
    assert_eq!(commits.len(), 1, "one transaction id for both streams");
    // What append_many returns is what a read returns, and both chains verify.
    assert_eq!(
        ledger.store().read_stream(&run, 2, 10).await.unwrap(),
        outcomes[0].events
    );
    assert_eq!(
        ledger.store().read_stream(&tool, 1, 10).await.unwrap(),
        outcomes[1].events
    );
    assert_eq!(assert_chain(ledger.store(), &run).await, 3);
    assert_eq!(assert_chain(ledger.store(), &tool).await, 1);
    // The cached heads are right: a plain append continues both chains.
    ledger
        .store()
        .append(
            &tool,
            ExpectedVersion::Exact(1),
            request("r2", vec![event("MemoryEntryUpdated", json!({}))]),
        )
        .await
        .unwrap();
    assert_eq!(assert_chain(ledger.store(), &tool).await, 2);
    ledger.finish().await;
}

async fn append_many_conflict_on_one_stream_writes_nothing_on_any<H: Harness>() {
    let ledger = H::new().await;
    let (run, tool) = (stream("run-m2"), stream("memory-m2"));
    ledger
        .store()
        .append(
            &run,
            ExpectedVersion::NoStream,
            request("r0", vec![event("RunStarted", json!({}))]),
        )
        .await
        .unwrap();
    ledger
        .store()
        .append(
            &tool,
            ExpectedVersion::NoStream,
            request("t0", vec![event("MemoryEntryCreated", json!({}))]),
        )
        .await
        .unwrap();
    // Another writer moved the tool stream on; the run stream is where the caller expects it.
    let other = ledger.second_store().await;
    other
        .append(
            &tool,
            ExpectedVersion::Exact(1),
            request("t1", vec![event("MemoryEntryUpdated", json!({}))]),
        )
        .await
        .unwrap();
    let before = ledger.count_events().await;
    let err = ledger
        .store()
        .append_many(vec![
            item(
                &run,
                ExpectedVersion::Exact(1),
                request("r1", vec![event("NodeSucceeded", json!({}))]),
            ),
            item(
                &tool,
                ExpectedVersion::Exact(1),
                request(
                    "nr:memory:update",
                    vec![event("MemoryEntryUpdated", json!({"v": 2}))],
                ),
            ),
        ])
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict {
            stream_id,
            expected,
            actual,
        } => {
            assert_eq!(
                (stream_id, *expected, *actual),
                (&tool, 1, 2),
                "names the stream that moved"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        ledger.count_events().await,
        before,
        "nothing written on either stream"
    );
    assert_eq!(version_of(ledger.store(), &run).await, 1);
    // The same when it is the first stream (in stream-id order) that is ahead: the write on the
    // other stream, already made inside the transaction, is rolled back.
    let (a, b) = (stream("a-m2"), stream("z-m2"));
    ledger
        .store()
        .append(
            &b,
            ExpectedVersion::NoStream,
            request("b0", vec![event("X", json!({}))]),
        )
        .await
        .unwrap();
    let err = ledger
        .store()
        .append_many(vec![
            item(
                &b,
                ExpectedVersion::NoStream,
                request("b1", vec![event("X", json!({}))]),
            ),
            item(
                &a,
                ExpectedVersion::NoStream,
                request("a1", vec![event("X", json!({}))]),
            ),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref stream_id, .. } if *stream_id == b),
        "{err:?}"
    );
    assert_eq!(
        version_of(ledger.store(), &a).await,
        0,
        "the stream that was fine got nothing"
    );
    // And the request ids were not burnt: the same items succeed once the expectation is right.
    let ok = ledger
        .store()
        .append_many(vec![
            item(
                &b,
                ExpectedVersion::Exact(1),
                request("b1", vec![event("X", json!({}))]),
            ),
            item(
                &a,
                ExpectedVersion::NoStream,
                request("a1", vec![event("X", json!({}))]),
            ),
        ])
        .await
        .unwrap();
    assert_eq!((ok[0].last_version(), ok[1].last_version()), (2, 1));
    ledger.finish().await;
}

async fn append_many_is_idempotent_per_stream<H: Harness>() {
    let ledger = H::new().await;
    let (run, tool) = (stream("run-m3"), stream("plan-m3"));
    ledger
        .store()
        .append(
            &run,
            ExpectedVersion::NoStream,
            request("r0", vec![event("RunStarted", json!({}))]),
        )
        .await
        .unwrap();
    let items = vec![
        item(
            &run,
            ExpectedVersion::Exact(1),
            request("result-1", vec![event("NodeSucceeded", json!({}))]),
        ),
        item(
            &tool,
            ExpectedVersion::NoStream,
            request(
                "nr:plan:create",
                vec![event("PlanCreated", json!({"t": 1}))],
            ),
        ),
    ];
    let first = ledger.store().append_many(items.clone()).await.unwrap();
    // The whole call again (its reply was lost): nothing written, the originals returned.
    let again = ledger.store().append_many(items.clone()).await.unwrap();
    assert!(again.iter().all(|o| o.deduplicated));
    assert_eq!(again[0].events, first[0].events);
    assert_eq!(again[1].events, first[1].events);
    // From another process with no cached heads, and with fresher expectations.
    let other = ledger.second_store().await;
    let fresh = vec![
        item(&run, ExpectedVersion::Exact(2), items[0].request.clone()),
        item(&tool, ExpectedVersion::Any, items[1].request.clone()),
    ];
    let third = other.append_many(fresh).await.unwrap();
    assert!(third.iter().all(|o| o.deduplicated));
    assert_eq!(ledger.count_events().await, 3);
    // One item repeated, one new: the repeat writes nothing, the new one is written.
    let mixed = ledger
        .store()
        .append_many(vec![
            item(
                &run,
                ExpectedVersion::Exact(2),
                request("result-2", vec![event("NodeSucceeded", json!({"n": 2}))]),
            ),
            item(
                &tool,
                ExpectedVersion::NoStream,
                request(
                    "nr:plan:create",
                    vec![event("PlanCreated", json!({"t": 1}))],
                ),
            ),
        ])
        .await
        .unwrap();
    assert!(!mixed[0].deduplicated && mixed[1].deduplicated);
    assert_eq!(mixed[0].last_version(), 3);
    assert_eq!(mixed[1].events, first[1].events);
    assert_eq!(version_of(ledger.store(), &tool).await, 1);
    // A request id reused with other content fails the whole call.
    let err = ledger
        .store()
        .append_many(vec![
            item(
                &run,
                ExpectedVersion::Exact(3),
                request("result-3", vec![event("NodeSucceeded", json!({}))]),
            ),
            item(
                &tool,
                ExpectedVersion::Exact(1),
                request(
                    "nr:plan:create",
                    vec![event("PlanCreated", json!({"t": 2}))],
                ),
            ),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::RequestMismatch { ref stream_id, .. } if *stream_id == tool),
        "{err:?}"
    );
    assert_eq!(version_of(ledger.store(), &run).await, 3, "nothing written");
    assert_eq!(assert_chain(ledger.store(), &run).await, 3);
    ledger.finish().await;
}

async fn append_many_rejects_bad_requests_before_writing<H: Harness>() {
    let ledger = H::new().await;
    let s = stream("run-m4");
    let err = ledger.store().append_many(vec![]).await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    let twice = vec![
        item(
            &s,
            ExpectedVersion::NoStream,
            request("a", vec![event("X", json!({}))]),
        ),
        item(
            &s,
            ExpectedVersion::Exact(1),
            request("b", vec![event("X", json!({}))]),
        ),
    ];
    let err = ledger.store().append_many(twice).await.unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    let bad = vec![
        item(
            &s,
            ExpectedVersion::NoStream,
            request("a", vec![event("X", json!({}))]),
        ),
        item(
            &stream("memory-m4"),
            ExpectedVersion::NoStream,
            request("b", vec![event("bad type!", json!({}))]),
        ),
    ];
    assert_eq!(
        ledger.store().append_many(bad).await.unwrap_err().code(),
        "invalid_event"
    );
    assert_eq!(ledger.count_events().await, 0);
    ledger.finish().await;
}

async fn concurrent_append_many_on_shared_streams_stays_linear_and_never_deadlocks<H: Harness>() {
    const WRITERS: usize = 6;
    const EACH: usize = 15;
    let ledger = H::new().await;
    let (a, b) = (stream("memory-shared"), stream("plan-shared"));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::new(ledger.second_store().await);
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let own = stream(&format!("run-w{w}"));
            let mut written = 0usize;
            while written < EACH {
                let va = store
                    .stream_head(&a)
                    .await
                    .unwrap()
                    .map_or(0, |h| h.version);
                let vb = store
                    .stream_head(&b)
                    .await
                    .unwrap()
                    .map_or(0, |h| h.version);
                let vo = store
                    .stream_head(&own)
                    .await
                    .unwrap()
                    .map_or(0, |h| h.version);
                let tag = format!("w{w}-{written}");
                // Half the writers list the streams in the other order.
                let mut items = vec![
                    item(
                        &a,
                        ExpectedVersion::Exact(va),
                        request(&tag, vec![event("Tick", json!({"w": w}))]),
                    ),
                    item(
                        &b,
                        ExpectedVersion::Exact(vb),
                        request(&tag, vec![event("Tick", json!({"w": w}))]),
                    ),
                    item(
                        &own,
                        ExpectedVersion::Exact(vo),
                        request(&tag, vec![event("Tick", json!({"w": w}))]),
                    ),
                ];
                if w % 2 == 1 {
                    items.reverse();
                }
                match store.append_many(items).await {
                    Ok(outcomes) => {
                        assert!(outcomes.iter().all(|o| !o.deduplicated));
                        written += 1;
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every write reached both shared streams together, with no gaps and valid chains.
    assert_eq!(
        assert_chain(ledger.store(), &a).await,
        (WRITERS * EACH) as u64
    );
    assert_eq!(
        assert_chain(ledger.store(), &b).await,
        (WRITERS * EACH) as u64
    );
    let ea = ledger.store().read_stream(&a, 1, 10_000).await.unwrap();
    let eb = ledger.store().read_stream(&b, 1, 10_000).await.unwrap();
    let order_a: Vec<&str> = ea.iter().map(|e| e.request_id.as_str()).collect();
    let order_b: Vec<&str> = eb.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(
        order_a, order_b,
        "both streams saw the writes in the same order"
    );
    ledger.finish().await;
}

/// One `#[tokio::test]` per backend for each generic test: `postgres::NAME` and `sqlite::NAME`.
/// Group commit: the written items of one `append_batch` share one commit; a conflict, a
/// reused request id with other content and a repeated request are answered item by item and
/// leave the others written; two items of one stream chain in item order.
async fn append_batch_shares_one_commit_and_refuses_items_one_by_one<H: Harness>() {
    let ledger = H::new().await;
    let store = ledger.store();
    let streams: Vec<StreamId> = (0..4).map(|i| stream(&format!("run-b{i}"))).collect();
    for s in &streams {
        store
            .append(
                s,
                ExpectedVersion::NoStream,
                request("start", vec![event("A", json!({"n": 0}))]),
            )
            .await
            .unwrap();
    }
    let before = ledger.count_events().await;
    let item = |s: &StreamId, expected: u64, id: &str, n: u64| {
        StreamAppend::new(
            s.clone(),
            ExpectedVersion::Exact(expected),
            request(
                id,
                vec![event("B", json!({"n": n})), event("C", json!({"n": n}))],
            ),
        )
    };
    let outcomes = store
        .append_batch(vec![
            item(&streams[0], 1, "b-0", 0),
            // Stale: the stream is at version 1.
            item(&streams[1], 0, "b-1", 1),
            // The same request as the stream's first: repeated with other content.
            item(&streams[2], 1, "start", 2),
            item(&streams[3], 1, "b-3", 3),
            // A second item on stream 3 chains from the first.
            item(&streams[3], 3, "b-3-next", 4),
            // The first item again: a repeat inside the batch writes nothing.
            item(&streams[0], 1, "b-0", 0),
        ])
        .await;
    assert_eq!(outcomes.len(), 6);
    match &outcomes[1] {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => assert_eq!((*expected, *actual), (0, 1)),
        other => panic!("item 1 must conflict, got {other:?}"),
    }
    assert!(
        matches!(outcomes[2], Err(StoreError::RequestMismatch { .. })),
        "{:?}",
        outcomes[2]
    );
    let written: Vec<&AppendOutcome> = [0, 3, 4]
        .iter()
        .map(|&i| outcomes[i].as_ref().unwrap())
        .collect();
    assert!(written.iter().all(|o| !o.deduplicated));
    assert_eq!(
        written.iter().map(|o| o.last_version()).collect::<Vec<_>>(),
        vec![3, 3, 5]
    );
    let repeat = outcomes[5].as_ref().unwrap();
    assert!(repeat.deduplicated);
    assert_eq!(repeat.events, written[0].events);
    assert_eq!(
        ledger.count_events().await,
        before + 6,
        "3 items of 2 events"
    );
    // Items of different streams share one commit (a second item of a stream may take another
    // round on PostgreSQL).
    let commits: BTreeSet<u64> = written[..2]
        .iter()
        .flat_map(|o| o.events.iter().map(|e| e.position.commit))
        .collect();
    assert_eq!(commits.len(), 1, "the written items share one commit");
    for (i, s) in streams.iter().enumerate() {
        let expected = [3, 1, 1, 5][i];
        assert_eq!(assert_chain(store, s).await, expected, "{s}");
    }
    let stored = store.read_stream(&streams[3], 2, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.position).collect::<Vec<_>>(),
        [&written[1].events[..], &written[2].events[..]]
            .concat()
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        "the outcomes carry the stored positions"
    );
    ledger.finish().await;
}

/// `find_request` returns exactly the events a request appended to a stream, and nothing for
/// a request unknown there.
async fn find_request_returns_what_a_request_appended<H: Harness>() {
    let ledger = H::new().await;
    let store = ledger.store();
    let s = stream("run-f");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            request("one", vec![event("A", json!({"n": 1}))]),
        )
        .await
        .unwrap();
    let two = store
        .append(
            &s,
            ExpectedVersion::Exact(1),
            request(
                "two",
                vec![event("B", json!({"n": 2})), event("C", json!({"n": 3}))],
            ),
        )
        .await
        .unwrap();
    store
        .append(
            &s,
            ExpectedVersion::Exact(3),
            request("three", vec![event("D", json!({"n": 4}))]),
        )
        .await
        .unwrap();
    let found = store
        .find_request(&s, &RequestId::new("two").unwrap())
        .await
        .unwrap();
    assert_eq!(found, two.events);
    let none = store
        .find_request(&s, &RequestId::new("four").unwrap())
        .await
        .unwrap();
    assert!(none.is_empty());
    let elsewhere = store
        .find_request(&stream("run-g"), &RequestId::new("two").unwrap())
        .await
        .unwrap();
    assert!(elsewhere.is_empty());
    ledger.finish().await;
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name::<super::PgHarness>().await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name::<super::SqliteHarness>().await
                }
            )*
        }
    };
}

conformance_tests!(
    append_then_read_back_a_valid_chain,
    repeating_a_request_returns_the_original_and_writes_nothing,
    reusing_a_request_id_with_other_content_is_an_error,
    wrong_expected_version_is_a_conflict_carrying_the_actual_version,
    eight_concurrent_appenders_on_one_stream_never_fork_it,
    expected_any_appends_after_whatever_is_there,
    invalid_events_are_rejected_and_nothing_is_written,
    the_ledger_refuses_updates_and_deletes,
    migrate_is_idempotent,
    blobs_are_stored_by_content_and_exported,
    two_exports_of_the_same_ledger_are_byte_identical_and_verify,
    verify_catches_a_flipped_byte_anywhere_in_an_export,
    verify_names_the_first_bad_event,
    exporting_a_missing_stream_is_an_error,
    append_many_writes_every_stream_in_one_transaction,
    append_many_conflict_on_one_stream_writes_nothing_on_any,
    append_many_is_idempotent_per_stream,
    append_many_rejects_bad_requests_before_writing,
    concurrent_append_many_on_shared_streams_stays_linear_and_never_deadlocks,
    append_batch_shares_one_commit_and_refuses_items_one_by_one,
    find_request_returns_what_a_request_appended,
);
