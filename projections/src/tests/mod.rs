//! Tests of the projections on real PostgreSQL: each read model over real runs of the engine
//! (in-process executor, `scripted` model), the runner (live, rebuild, stops), and the claims,
//! including ledgers broken on purpose by appending events directly.

mod artifacts;
mod claims;
mod run_detail;
mod runner;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::events::{
    ArtifactPersisted, DomainEvent, FlowchartRef, NodeRunStatus, RunStarted,
};
use runledger_contracts::flowchart::{Flowchart, NodeType, SourceFormat, load};
use runledger_contracts::ids::{ArtifactId, CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion, PgEventStore};
use runledger_orchestrator::StartRun;
use runledger_orchestrator::engine::{Engine, EngineConfig, NoFlowcharts, RunSummary};
use runledger_orchestrator::executor::{InProcessPool, Providers};
use runledger_orchestrator::provider::ScriptedProvider;
use serde_json::{Value, json};
use sqlx::postgres::PgPool;

use crate::Projections;

pub(crate) struct Harness {
    pub ledger: TestLedger,
    pub engine: Engine<PgEventStore>,
}

pub(crate) async fn harness() -> Harness {
    let ledger = TestLedger::new().await.unwrap();
    let store = ledger.second_store().await.unwrap();
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 64);
    let config = EngineConfig {
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let engine = Engine::new(store, Arc::new(pool), Arc::new(NoFlowcharts), config);
    Harness { ledger, engine }
}

pub(crate) fn flowchart(yaml: &str) -> Arc<Flowchart> {
    Arc::new(load(yaml, SourceFormat::Yaml).unwrap_or_else(|e| panic!("{e:?}")))
}

pub(crate) fn example(name: &str) -> Arc<Flowchart> {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    flowchart(&std::fs::read_to_string(path).unwrap())
}

impl Harness {
    pub fn pool(&self) -> PgPool {
        self.ledger.store.pool().clone()
    }

    pub fn projections(&self) -> Projections {
        Projections::new(self.pool())
    }

    pub async fn start(&self, flowchart: Arc<Flowchart>, inputs: Value) -> RunId {
        let start = StartRun {
            run_id: RunId::new_v7(),
            flowchart,
            version: None,
            inputs,
            parent: None,
            actor: "test".into(),
        };
        self.engine
            .start(start, RequestId::generate(), CorrelationId::generate())
            .await
            .unwrap()
    }

    pub async fn wait(&self, run: RunId) -> RunSummary {
        tokio::time::timeout(Duration::from_secs(30), self.engine.wait(run))
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn run(&self, flowchart: Arc<Flowchart>, inputs: Value) -> RunId {
        let run = self.start(flowchart, inputs).await;
        self.wait(run).await;
        run
    }

    /// Every event of a run, decoded.
    pub async fn events(
        &self,
        run: RunId,
    ) -> Vec<(runledger_contracts::envelope::RecordedEvent, DomainEvent)> {
        let recorded = self
            .ledger
            .store
            .read_stream(&StreamId::for_run(run), 1, usize::MAX)
            .await
            .unwrap();
        recorded
            .into_iter()
            .map(|e| {
                let d = e.decode().unwrap();
                (e, d)
            })
            .collect()
    }

    /// Waits until a late result of the run was recorded as ignored (the engine is done with it).
    pub async fn until_result_ignored(&self, run: RunId) {
        for _ in 0..500 {
            let events = self.events(run).await;
            if events
                .iter()
                .any(|(_, d)| matches!(d, DomainEvent::NodeResultIgnored(_)))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no NodeResultIgnored in run {run}");
    }

    pub async fn catch_up(&self) {
        self.projections().catch_up().await.unwrap();
    }

    pub async fn finish(self) {
        self.ledger.drop_schema().await.unwrap();
    }
}

/// Every row of every projection table, as canonical JSON, sorted: equal dumps mean equal tables.
pub(crate) async fn dump(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for p in crate::builtin() {
        for table in p.tables() {
            let sql = format!("SELECT to_jsonb(t)::text FROM {table} t");
            let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
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

/// Appends events straight to the ledger (no engine): how tests write ledgers the engine never
/// would.
pub(crate) async fn append(store: &PgEventStore, stream: &StreamId, events: Vec<DomainEvent>) {
    append_as(
        store,
        stream,
        events,
        RequestId::generate(),
        CorrelationId::new("broken").unwrap(),
    )
    .await;
}

pub(crate) async fn append_as(
    store: &PgEventStore,
    stream: &StreamId,
    events: Vec<DomainEvent>,
    request: RequestId,
    correlation: CorrelationId,
) {
    let events = events
        .iter()
        .map(|e| NewEvent::from_domain(e).unwrap())
        .collect();
    store
        .append(
            stream,
            ExpectedVersion::Any,
            AppendRequest::new(request, correlation, events),
        )
        .await
        .unwrap();
}

pub(crate) const TWO_STEP: &str = "name: two-step\nnodes:\n  - { id: start, type: start }\n  - { id: work, type: task, model: scripted, scripted: [{ output: { ok: true } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: work }\n  - { id: c2, from: work, to: end }\n";

/// A RunStarted for `flowchart`, as the engine would write it.
pub(crate) fn run_started(run: RunId, flowchart: &Flowchart) -> DomainEvent {
    let definition = serde_json::to_value(flowchart.doc()).unwrap();
    let definition_hash = Digest::of(&canonical::to_canonical_vec(&definition).unwrap());
    RunStarted {
        run_id: run,
        flowchart: FlowchartRef {
            name: flowchart.name().to_owned(),
            version: None,
            definition_hash,
        },
        definition,
        inputs: json!({}),
        parent: None,
        deadline: None,
        actor: "test".into(),
    }
    .into()
}

pub(crate) fn scheduled(
    run: RunId,
    node: &str,
    node_type: NodeType,
    id: NodeRunId,
    tokens: Vec<(&str, NodeRunId)>,
) -> DomainEvent {
    runledger_contracts::events::NodeScheduled {
        run_id: run,
        node_id: node.into(),
        node_run_id: id,
        node_type,
        attempt: 1,
        execution_index: 0,
        input_context_hash: Digest::of(b"{}"),
        consumed_tokens: tokens
            .into_iter()
            .map(|(c, from)| runledger_contracts::events::ConsumedToken {
                connector_id: c.into(),
                from_node_run_id: from,
            })
            .collect(),
        retry_of: None,
    }
    .into()
}

pub(crate) fn succeeded(run: RunId, node: &str, id: NodeRunId, output: Value) -> DomainEvent {
    runledger_contracts::events::NodeSucceeded {
        run_id: run,
        node_id: node.into(),
        node_run_id: id,
        attempt: 1,
        output,
        warnings: vec![],
        fallback_used: false,
    }
    .into()
}

/// The artifact the engine writes for a success, under the given request and correlation ids.
pub(crate) fn artifact(
    run: RunId,
    node: &str,
    node_type: NodeType,
    id: NodeRunId,
    output: Value,
    request: &str,
    correlation: &str,
) -> DomainEvent {
    let artifact_type = match node_type {
        NodeType::Start => "run_input",
        NodeType::End => "run_output",
        _ => "task_output",
    };
    let payload = json!({ "output": output, "warnings": [], "fallback_used": false });
    ArtifactPersisted {
        run_id: run,
        node_id: node.into(),
        node_run_id: id,
        node_type,
        artifact_id: ArtifactId::new_v7(),
        artifact_type: artifact_type.into(),
        contract_version: 1,
        status: NodeRunStatus::Succeeded,
        content_hash: Digest::of(&canonical::to_canonical_vec(&payload).unwrap()),
        payload,
        content: None,
        idempotency_key: format!("{id}:artifact"),
        request_id: RequestId::new(request).unwrap(),
        correlation_id: CorrelationId::new(correlation).unwrap(),
    }
    .into()
}
