//! How the engine treats an append the ledger refuses: a permanent refusal is never retried
//! (executor results become `invalid_output` failures, once), a transient one is retried with
//! backoff. Real PostgreSQL, with refusals injected in front of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::events::{DomainEvent, NodeRunStatus};
use runledger_contracts::flowchart::{SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{
    AppendOutcome, AppendRequest, Blob, EventStore, ExpectedVersion, GlobalPage, PgEventStore,
    StoreError, StreamAppend, StreamHead,
};
use serde_json::json;

use super::check_invariants;
use crate::decide::StartRun;
use crate::engine::{Engine, EngineConfig, NoFlowcharts};
use crate::executor::{InProcessPool, Providers};
use crate::provider::ScriptedProvider;
use crate::state::RunStatus;

/// The PostgreSQL ledger, refusing some appends before they reach it.
struct Refusing {
    inner: PgEventStore,
    /// Appends carrying this text anywhere in an event are refused as invalid, for good.
    poison: &'static str,
    /// Appends refused so far for the poison.
    refused: AtomicU32,
    /// The next this many appends fail with a lost connection, writing nothing.
    drop_connection: AtomicU32,
}

impl EventStore for Refusing {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        if self
            .drop_connection
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let lost = std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset (injected)",
            );
            return Err(StoreError::Database(sqlx::Error::Io(lost)));
        }
        if let Some(index) = request
            .events
            .iter()
            .position(|e| e.payload.to_string().contains(self.poison))
        {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::InvalidEvent {
                index,
                reason: "refused (injected)".into(),
            });
        }
        self.inner.append(stream, expected, request).await
    }

    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.inner.append_many(items).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<GlobalPage, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn stream_head(&self, stream: &StreamId) -> Result<Option<StreamHead>, StoreError> {
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

const TASK: &str = "name: refused\nnodes:\n  - { id: start, type: start }\n  - id: t\n    type: task\n    model: scripted\n    retry: { max_attempts: 3, backoff_ms: 5 }\n    scripted: [{ output: { text: placeholder } }]\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n";

/// Runs TASK with the model answering `text`; `drop_connection` appends after the start fail.
async fn run_on(
    store: Arc<Refusing>,
    ledger: &TestLedger,
    text: &str,
    drop_connection: u32,
) -> (crate::engine::RunSummary, Vec<DomainEvent>) {
    let config = EngineConfig {
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let script =
        ScriptedProvider::parse_fixture(&format!("t: [{{ output: {{ text: {text} }} }}]")).unwrap();
    let pool = InProcessPool::new(
        Providers::scripted(ScriptedProvider::with_fixture(script)),
        8,
    );
    let engine = Engine::new(
        ArcStore(store.clone()),
        Arc::new(pool),
        Arc::new(NoFlowcharts),
        config,
    );
    let flowchart = Arc::new(load(TASK, SourceFormat::Yaml).unwrap());
    let start = StartRun {
        run_id: RunId::new_v7(),
        flowchart,
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "test".into(),
    };
    let run = engine
        .start(start, RequestId::generate(), CorrelationId::generate())
        .await
        .unwrap();
    store
        .drop_connection
        .store(drop_connection, Ordering::SeqCst);
    let summary = tokio::time::timeout(Duration::from_secs(30), engine.wait(run))
        .await
        .unwrap()
        .unwrap();
    let recorded = ledger
        .store
        .read_stream(&StreamId::for_run(run), 1, usize::MAX)
        .await
        .unwrap();
    (
        summary,
        recorded.iter().map(|e| e.decode().unwrap()).collect(),
    )
}

/// Shares the refusing store between the engine and the test.
struct ArcStore(Arc<Refusing>);

impl EventStore for ArcStore {
    async fn append(
        &self,
        s: &StreamId,
        e: ExpectedVersion,
        r: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        self.0.append(s, e, r).await
    }
    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.0.append_many(items).await
    }
    async fn read_stream(
        &self,
        s: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_stream(s, from, limit).await
    }
    async fn read_all(&self, after: Position, limit: usize) -> Result<GlobalPage, StoreError> {
        self.0.read_all(after, limit).await
    }
    async fn stream_head(&self, s: &StreamId) -> Result<Option<StreamHead>, StoreError> {
        self.0.stream_head(s).await
    }
    async fn list_streams(&self, prefix: &str) -> Result<Vec<StreamHead>, StoreError> {
        self.0.list_streams(prefix).await
    }
    async fn put_blob(&self, blob: Blob) -> Result<Digest, StoreError> {
        self.0.put_blob(blob).await
    }
    async fn get_blob(&self, hash: &Digest) -> Result<Option<Blob>, StoreError> {
        self.0.get_blob(hash).await
    }
}

async fn refusing(ledger: &TestLedger) -> Arc<Refusing> {
    Arc::new(Refusing {
        inner: ledger.second_store().await.unwrap(),
        poison: "refuse-me",
        refused: AtomicU32::new(0),
        drop_connection: AtomicU32::new(0),
    })
}

#[tokio::test]
async fn a_permanently_refused_result_is_recorded_once_as_invalid_output_and_never_retried() {
    let ledger = TestLedger::new().await.unwrap();
    let store = refusing(&ledger).await;
    let (summary, events) = run_on(store.clone(), &ledger, "refuse-me", 0).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(
        store.refused.load(Ordering::SeqCst),
        1,
        "the refused append is not tried again"
    );
    let state = check_invariants(&events);
    let t: Vec<_> = state
        .node_runs
        .iter()
        .filter(|nr| state.node_id(nr.node) == "t")
        .filter_map(|nr| nr.status())
        .collect();
    assert_eq!(t, [NodeRunStatus::Failed], "invalid_output is not retried");
    let error = events
        .iter()
        .find_map(|e| match e {
            DomainEvent::NodeFailed(f) => Some(f.error.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(error.code, "invalid_output");
    assert!(
        error.message.contains("refused (injected)"),
        "{}",
        error.message
    );
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn a_lost_connection_is_retried_and_the_run_completes() {
    let ledger = TestLedger::new().await.unwrap();
    let store = refusing(&ledger).await;
    let (summary, events) = run_on(store.clone(), &ledger, "fine", 3).await;
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(
        store.drop_connection.load(Ordering::SeqCst),
        0,
        "every injected fault was hit"
    );
    check_invariants(&events);
    ledger.drop_schema().await.unwrap();
}
