//! How the engine treats an append the ledger refuses: a permanent refusal is never retried
//! (executor results become `invalid_output` failures, once), a transient one is retried with
//! backoff. Real PostgreSQL, with refusals injected in front of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use runledger_contracts::agent_tool::ToolCallContext;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::events::{DomainEvent, NodeRunStatus};
use runledger_contracts::flowchart::{SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{
    AppendOutcome, AppendRequest, Blob, EventStore, ExpectedVersion, GlobalPage, PgEventStore,
    StoreError, StreamAppend, StreamHead,
};
use serde_json::json;

use super::check_invariants;
use crate::agent_tools::{LedgerToolDeps, ledger_domains};
use crate::decide::StartRun;
use crate::engine::{Engine, EngineConfig, NoFlowcharts};
use crate::executor::{InProcessPool, Providers};
use crate::provider::ScriptedProvider;
use crate::state::RunStatus;

/// The PostgreSQL ledger, refusing some appends before they reach it.
struct Refusing {
    inner: PgEventStore,
    /// Appends carrying this text anywhere in an event, or an event of this type, are refused
    /// as invalid, for good (on both `append` and `append_many`).
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
        self.check(&request)?;
        self.inner.append(stream, expected, request).await
    }

    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        for item in &items {
            self.check(&item.request)?;
        }
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

impl Refusing {
    fn check(&self, request: &AppendRequest) -> Result<(), StoreError> {
        let poisoned = request.events.iter().position(|e| {
            e.event_type == self.poison || e.payload.to_string().contains(self.poison)
        });
        match poisoned {
            Some(index) => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::InvalidEvent {
                    index,
                    reason: "refused (injected)".into(),
                })
            }
            None => Ok(()),
        }
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
    let script = format!("t: [{{ output: {{ text: {text} }} }}]");
    run_flowchart(store, ledger, TASK, &script, drop_connection).await
}

/// Runs `yaml` with the scripted model answering `script`.
async fn run_flowchart(
    store: Arc<Refusing>,
    ledger: &TestLedger,
    yaml: &str,
    script: &str,
    drop_connection: u32,
) -> (crate::engine::RunSummary, Vec<DomainEvent>) {
    let config = EngineConfig {
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let script = ScriptedProvider::parse_fixture(script).unwrap();
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
    let flowchart = Arc::new(load(yaml, SourceFormat::Yaml).unwrap());
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
        .expect("the run ends (a driver that stopped leaves it running)")
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
    refusing_with(ledger, "refuse-me").await
}

async fn refusing_with(ledger: &TestLedger, poison: &'static str) -> Arc<Refusing> {
    Arc::new(Refusing {
        inner: ledger.second_store().await.unwrap(),
        poison,
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

const MEMORY: &str = "name: refused-memory\nnodes:\n  - { id: start, type: start }\n  - id: remember\n    type: memory\n    memory:\n      operation: create\n      args: { scope: refusals, key: topic, value: owls }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: remember }\n  - { id: c2, from: remember, to: end }\n";

#[tokio::test]
async fn a_tool_nodes_refused_write_fails_the_node_once_without_its_tool_events() {
    // The memory node's tool event is refused for good. Before, the `invalid_output` failure
    // that replaced its result still carried the tool event, was refused again, and the
    // driver stopped with the run left `running`.
    let ledger = TestLedger::new().await.unwrap();
    let store = refusing_with(&ledger, "MemoryEntryCreated").await;
    let (summary, events) = run_flowchart(store.clone(), &ledger, MEMORY, "{}", 0).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(
        store.refused.load(Ordering::SeqCst),
        1,
        "refused once, never retried"
    );
    let errors: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeFailed(f) if f.node_id == "remember" => Some(f.error.code.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors, ["invalid_output"]);
    let memory = ledger.store.list_streams("memory-").await.unwrap();
    assert!(memory.is_empty(), "no tool event written: {memory:?}");
    check_invariants(&events);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn a_settle_step_refused_for_good_fails_the_run_instead_of_stopping_its_driver() {
    // A settle step is refused for good: the one that schedules the second attempt when its
    // retry timer fires (no executor result in it to turn into a node failure). Before, the
    // driver stopped with the error and left the run `running` (under leases: taken again,
    // refused again, for ever).
    let ledger = TestLedger::new().await.unwrap();
    let store = refusing_with(&ledger, "\"attempt\":2").await;
    let script = "t: [{ error: { code: provider_unavailable, message: busy, retryable: true } }, { output: { text: fine } }]";
    let (summary, events) = run_flowchart(store.clone(), &ledger, TASK, script, 0).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(
        store.refused.load(Ordering::SeqCst),
        1,
        "refused once, never retried"
    );
    let failed = events
        .iter()
        .find_map(|e| match e {
            DomainEvent::RunFailed(f) => Some(f.error.clone()),
            _ => None,
        })
        .expect("RunFailed");
    assert_eq!(failed.code, "ledger_refused");
    assert!(!failed.retryable);
    assert_eq!(
        failed.details,
        Some(json!({ "store_code": "invalid_event" })),
        "{failed:?}"
    );
    assert!(
        failed.message.contains("refused (injected)"),
        "{}",
        failed.message
    );
    check_invariants(&events);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn an_agent_tool_call_whose_write_is_refused_for_good_is_not_called_unavailable() {
    // Before, the model was told `unavailable` ("the ledger could not be reached"), which
    // invites it to try the same write again.
    let ledger = TestLedger::new().await.unwrap();
    let store = refusing_with(&ledger, "MemoryEntryCreated").await;
    let (summary, _) = run_on(store.clone(), &ledger, "fine", 0).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 1);
    let engine = Engine::new(
        ArcStore(store.clone()),
        Arc::new(pool),
        Arc::new(NoFlowcharts),
        EngineConfig::default(),
    );
    let domains = ledger_domains(LedgerToolDeps {
        store: Arc::new(ArcStore(store.clone())),
        waker: Arc::new(engine.clone()),
    });
    let node_run_id = NodeRunId::new_v7();
    let ctx = ToolCallContext {
        run_id: summary.run_id,
        node_id: "agent".into(),
        node_run_id,
        turn: 1,
        call_index: 0,
        idempotency_key: format!("{node_run_id}:1:0"),
        workspace: None,
        git_policy: None,
    };
    let domain = domains
        .iter()
        .find(|d| d.specs().iter().any(|s| s.name == "memory_create"))
        .expect("a domain serves memory_create");
    let err = domain
        .call(
            &ctx,
            "memory_create",
            json!({ "scope": "notes", "key": "k", "value": 1 }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ledger_refused", "{err}");
    assert_eq!(store.refused.load(Ordering::SeqCst), 1, "tried once");
}
