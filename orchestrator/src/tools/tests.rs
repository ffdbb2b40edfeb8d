//! The tools through real runs on PostgreSQL: every operation of every tool, the transaction
//! they share with the node's end, conflicts, re-execution after a crash, fallbacks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{NewEvent, Position, RecordedEvent};
use runledger_contracts::events::{
    ArtifactPersisted, DomainEvent, MemoryEntryCreated, NodeRunStatus, ToolCalled, ToolOutcome,
};
use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{
    AppendOutcome, AppendRequest, Blob, EventStore, ExpectedVersion, GlobalPage, PgEventStore,
    StoreError, StreamAppend, StreamHead,
};
use serde_json::{Value, json};

use super::ToolCall;
use super::cache::ToolCache;
use crate::decide::StartRun;
use crate::engine::{Engine, EngineConfig, NoFlowcharts, RunSummary};
use crate::executor::{InProcessPool, Providers};
use crate::provider::ScriptedProvider;
use crate::state::RunStatus;
use crate::tests::check_invariants;

// ---- a ledger that misbehaves on purpose ---------------------------------------------------

/// The PostgreSQL ledger with faults injected into `append_many`, the path tool node runs
/// commit through.
struct Faulty {
    inner: PgEventStore,
    /// Another process's connection, used to write to a tool stream behind the engine's back.
    intruder: PgEventStore,
    faults: Arc<Faults>,
}

/// The knobs, shared with the test while the engine uses the store.
#[derive(Default)]
struct Faults {
    /// `append_many` calls before which another writer appends to the call's tool stream.
    intrude: AtomicU32,
    /// `append_many` calls that commit, then report a lost connection (the ack is lost).
    lose_ack: AtomicU32,
    /// `append_many` calls that fail before writing anything.
    fail: AtomicU32,
    intrusions: AtomicU32,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl EventStore for Faulty {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.append(stream, expected, request).await
    }

    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        if take(&self.faults.fail) {
            return Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused (injected)",
            ))));
        }
        if take(&self.faults.intrude) {
            for item in items
                .iter()
                .filter(|i| !i.stream.as_str().starts_with("run-"))
            {
                let n = self.faults.intrusions.fetch_add(1, Ordering::SeqCst);
                let event = intruder_event(item, n);
                let request = AppendRequest::new(
                    RequestId::new(format!("intruder-{n}")).unwrap(),
                    CorrelationId::generate(),
                    vec![event],
                );
                self.intruder
                    .append(&item.stream, ExpectedVersion::Any, request)
                    .await?;
            }
        }
        let outcome = self.inner.append_many(items).await?;
        if take(&self.faults.lose_ack) {
            return Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset after commit (injected)",
            ))));
        }
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from_version, limit).await
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

/// A valid memory event from another writer: a new entry of its own.
fn intruder_event(item: &StreamAppend, n: u32) -> NewEvent {
    let scope = item
        .stream
        .as_str()
        .trim_start_matches("memory-")
        .to_owned();
    let run_id = RunId::new_v7();
    let node_run_id = runledger_contracts::ids::NodeRunId::new_v7();
    let event: DomainEvent = MemoryEntryCreated {
        run_id,
        node_id: "elsewhere".into(),
        node_run_id,
        idempotency_key: format!("{node_run_id}:memory:create"),
        scope,
        key: format!("intruder-{n}"),
        value: json!(n),
        revision: 1,
    }
    .into();
    NewEvent::from_domain(&event).unwrap()
}

// ---- harness -----------------------------------------------------------------------------

struct Harness<S: EventStore + 'static> {
    ledger: TestLedger,
    engine: Engine<S>,
}

fn config() -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

fn pool() -> Arc<InProcessPool> {
    Arc::new(InProcessPool::new(
        Providers::scripted(ScriptedProvider::new()),
        16,
    ))
}

async fn harness() -> Harness<PgEventStore> {
    let ledger = TestLedger::new().await.unwrap();
    let store = ledger.second_store().await.unwrap();
    let engine = Engine::new(store, pool(), Arc::new(NoFlowcharts), config());
    Harness { ledger, engine }
}

async fn faulty_harness() -> (Harness<Faulty>, Arc<Faults>) {
    let ledger = TestLedger::new().await.unwrap();
    let faults = Arc::new(Faults::default());
    let faulty = Faulty {
        inner: ledger.second_store().await.unwrap(),
        intruder: ledger.second_store().await.unwrap(),
        faults: Arc::clone(&faults),
    };
    let engine = Engine::new(faulty, pool(), Arc::new(NoFlowcharts), config());
    (Harness { ledger, engine }, faults)
}

fn flowchart(yaml: &str) -> Arc<Flowchart> {
    Arc::new(load(yaml, SourceFormat::Yaml).unwrap_or_else(|e| panic!("{e:?}")))
}

/// A chain `start -> nodes... -> end`; each node is a YAML flow mapping.
fn chain(name: &str, nodes: &[&str]) -> Arc<Flowchart> {
    let mut yaml = format!(
        "name: {name}\nlimits: {{ max_node_executions: 100 }}\nnodes:\n  - {{ id: start, type: start }}\n"
    );
    for node in nodes {
        yaml.push_str(&format!("  - {node}\n"));
    }
    yaml.push_str("  - { id: end, type: end }\nconnectors:\n");
    let ids: Vec<String> = std::iter::once("start".to_owned())
        .chain(nodes.iter().map(|n| node_id(n)))
        .chain(std::iter::once("end".to_owned()))
        .collect();
    for (i, pair) in ids.windows(2).enumerate() {
        yaml.push_str(&format!(
            "  - {{ id: c{i}, from: {}, to: {} }}\n",
            pair[0], pair[1]
        ));
    }
    flowchart(&yaml)
}

fn node_id(node: &str) -> String {
    let start = node.find("id: ").unwrap() + 4;
    node[start..].split([',', ' ']).next().unwrap().to_owned()
}

impl<S: EventStore + 'static> Harness<S> {
    async fn start(&self, flowchart: Arc<Flowchart>, inputs: Value) -> RunId {
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

    async fn run(
        &self,
        flowchart: Arc<Flowchart>,
        inputs: Value,
    ) -> (RunSummary, Vec<RecordedEvent>) {
        let run = self.start(flowchart, inputs).await;
        self.wait(run).await
    }

    async fn wait(&self, run: RunId) -> (RunSummary, Vec<RecordedEvent>) {
        let summary = tokio::time::timeout(Duration::from_secs(30), self.engine.wait(run))
            .await
            .unwrap()
            .unwrap();
        (summary, self.recorded(&StreamId::for_run(run)).await)
    }

    async fn recorded(&self, stream: &StreamId) -> Vec<RecordedEvent> {
        self.ledger
            .store
            .read_stream(stream, 1, usize::MAX)
            .await
            .unwrap()
    }

    async fn tool_events(&self, stream: &str) -> Vec<(RecordedEvent, DomainEvent)> {
        let recorded = self.recorded(&StreamId::new(stream).unwrap()).await;
        recorded
            .into_iter()
            .map(|r| (r.clone(), r.decode().unwrap()))
            .collect()
    }

    async fn finish(self) {
        self.ledger.drop_schema().await.unwrap();
    }
}

fn decoded(recorded: &[RecordedEvent]) -> Vec<DomainEvent> {
    let events: Vec<DomainEvent> = recorded.iter().map(|e| e.decode().unwrap()).collect();
    check_invariants(&events);
    events
}

/// The output of each node's last successful node run.
fn outputs(events: &[DomainEvent]) -> HashMap<String, Value> {
    events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeSucceeded(s) => Some((s.node_id.clone(), s.output.clone())),
            _ => None,
        })
        .collect()
}

fn tool_calls<'a>(events: &'a [DomainEvent], node: &str) -> Vec<&'a ToolCalled> {
    events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::ToolCalled(c) if c.node_id == node => Some(c),
            _ => None,
        })
        .collect()
}

fn artifact<'a>(events: &'a [DomainEvent], node: &str) -> &'a ArtifactPersisted {
    events
        .iter()
        .find_map(|e| match e {
            DomainEvent::ArtifactPersisted(a) if a.node_id == node => Some(a),
            _ => None,
        })
        .expect("artifact")
}

fn node_status(events: &[DomainEvent], node: &str) -> NodeRunStatus {
    artifact(events, node).status
}

/// The commit (transaction) of the run event that ended `node`'s node run.
fn end_commit(recorded: &[RecordedEvent], node: &str) -> (u64, String) {
    recorded
        .iter()
        .find(|r| {
            matches!(r.event_type.as_str(), "NodeSucceeded" | "NodeFailed")
                && r.payload["node_id"] == node
        })
        .map(|r| {
            (
                r.position.commit,
                r.payload["node_run_id"].as_str().unwrap().to_owned(),
            )
        })
        .expect("node end")
}

// ---- every operation ---------------------------------------------------------------------------

#[tokio::test]
async fn memory_operations_run_as_tools_and_commit_with_the_node() {
    let h = harness().await;
    let fc = chain(
        "memory-ops",
        &[
            r#"{ id: create, type: memory, memory: { operation: create, args: { scope: "{{ inputs.scope }}", key: topic, value: { name: "{{ inputs.topic }}", tags: "{{ inputs.tags }}" } } } }"#,
            r#"{ id: note, type: memory, memory: { operation: create, args: { scope: "{{ inputs.scope }}", key: note, value: "owls hunt at night" } } }"#,
            r#"{ id: get, type: memory, memory: { operation: get, args: { scope: "{{ inputs.scope }}", key: topic } } }"#,
            r#"{ id: update, type: memory, memory: { operation: update, args: { scope: "{{ inputs.scope }}", key: topic, value: "{{ latest_upstream.output.value.tags }}", expected_revision: 1 } } }"#,
            r#"{ id: list, type: memory, memory: { operation: list, args: { scope: "{{ inputs.scope }}" } } }"#,
            r#"{ id: search, type: memory, memory: { operation: search, args: { scope: "{{ inputs.scope }}", query: "OWLS night" } } }"#,
            r#"{ id: delete, type: memory, memory: { operation: delete, args: { scope: "{{ inputs.scope }}", key: topic } } }"#,
        ],
    );
    let (summary, recorded) = h
        .run(
            fc,
            json!({ "scope": "proj-1", "topic": "owls", "tags": ["birds", "night"] }),
        )
        .await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    let out = outputs(&events);
    assert_eq!(
        out["create"],
        json!({ "scope": "proj-1", "key": "topic", "value": { "name": "owls", "tags": ["birds", "night"] }, "revision": 1 })
    );
    assert_eq!(out["get"]["value"]["name"], "owls");
    // A whole-string template takes the value as JSON (here an array), not as text.
    assert_eq!(
        out["update"],
        json!({ "scope": "proj-1", "key": "topic", "value": ["birds", "night"], "revision": 2 })
    );
    assert_eq!(out["list"]["total"], 2);
    assert_eq!(out["list"]["entries"][0]["key"], "note");
    // Every term must occur: by now `topic` holds ["birds", "night"], which has no `owls`.
    assert_eq!(out["search"]["total"], 1);
    assert_eq!(out["search"]["entries"][0]["key"], "note");
    assert_eq!(
        out["delete"],
        json!({ "scope": "proj-1", "key": "topic", "revision": 2, "deleted": true })
    );

    // The scope's stream: one event per write, each naming its node run, keyed by its
    // idempotency key, and committed in the same transaction as that node run's end.
    let tool = h.tool_events("memory-proj-1").await;
    let kinds: Vec<&str> = tool.iter().map(|(r, _)| r.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "MemoryEntryCreated",
            "MemoryEntryCreated",
            "MemoryEntryUpdated",
            "MemoryEntryDeleted"
        ]
    );
    for ((r, _), node) in tool.iter().zip(["create", "note", "update", "delete"]) {
        let (commit, node_run_id) = end_commit(&recorded, node);
        assert_eq!(
            r.position.commit, commit,
            "{node}: the tool event commits with the node's end"
        );
        assert_eq!(r.payload["node_run_id"], node_run_id.as_str());
        assert_eq!(r.payload["run_id"], summary.run_id.to_string());
        let key = format!(
            "{node_run_id}:memory:{}",
            if node == "note" { "create" } else { node }
        );
        assert_eq!(r.payload["idempotency_key"], key.as_str());
        assert_eq!(
            r.request_id.as_str(),
            key,
            "the idempotency key is the append's request id"
        );
        assert_eq!(
            r.causation_id.as_ref().map(|c| c.as_str().to_owned()),
            Some(format!("result-{node_run_id}"))
        );
        assert_eq!(r.correlation_id, recorded[0].correlation_id);
    }
    // One ToolCalled per node run, with its trace.
    for node in ["create", "get", "list", "search", "delete"] {
        let calls = tool_calls(&events, node);
        assert_eq!(calls.len(), 1, "{node}");
        assert_eq!(
            (calls[0].tool.as_str(), calls[0].outcome),
            ("memory", ToolOutcome::Ok)
        );
        assert_eq!(calls[0].attempts.len(), 1);
        assert_eq!(calls[0].output.as_ref(), Some(&out[node]));
        assert!(
            calls[0]
                .idempotency_key
                .ends_with(&format!(":memory:{node}"))
        );
    }
    assert_eq!(node_status(&events, "search"), NodeRunStatus::Succeeded);
    assert_eq!(artifact(&events, "search").artifact_type, "tool_result");
    h.finish().await;
}

#[tokio::test]
async fn plan_operations_run_as_tools() {
    let h = harness().await;
    let fc = chain(
        "plan-ops",
        &[
            r#"{ id: create, type: plan, plan: { operation: create, args: { plan_id: essay, title: Essay, description: "about owls", stages: [{ id: draft, title: Draft }, { id: review, title: Review }, { id: ship, title: Ship }] } } }"#,
            r#"{ id: other, type: plan, plan: { operation: create, args: { plan_id: other, title: Other } } }"#,
            r#"{ id: get, type: plan, plan: { operation: get, args: { plan_id: essay } } }"#,
            r#"{ id: update, type: plan, plan: { operation: update, args: { plan_id: essay, title: "Essay v2" } } }"#,
            r#"{ id: reorder, type: plan, plan: { operation: reorder_stages, args: { plan_id: essay, order: [review, draft, ship] } } }"#,
            r#"{ id: status, type: plan, plan: { operation: set_stage_status, args: { plan_id: essay, stage_id: review, status: in_progress } } }"#,
            r#"{ id: list, type: plan, plan: { operation: list } }"#,
            r#"{ id: delete, type: plan, plan: { operation: delete, args: { plan_id: other } } }"#,
            r#"{ id: list_after, type: plan, plan: { operation: list, args: { limit: 10 } } }"#,
        ],
    );
    let (summary, recorded) = h.run(fc, json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    let out = outputs(&events);
    assert_eq!(
        out["create"]["stages"][2],
        json!({ "id": "ship", "title": "Ship", "status": "pending" })
    );
    assert_eq!(out["get"]["description"], "about owls");
    assert_eq!(
        (
            out["update"]["title"].as_str(),
            out["update"]["revision"].as_u64()
        ),
        (Some("Essay v2"), Some(2))
    );
    let order: Vec<&str> = out["reorder"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["review", "draft", "ship"]);
    assert_eq!(out["status"]["stages"][0]["status"], "in_progress");
    assert_eq!(out["list"]["total"], 2);
    assert_eq!(out["delete"]["deleted"], true);
    assert_eq!(out["list_after"]["total"], 1);
    assert_eq!(out["list_after"]["plans"][0]["plan_id"], "essay");
    let kinds: Vec<String> = h
        .tool_events("plan-essay")
        .await
        .iter()
        .map(|(r, _)| r.event_type.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "PlanCreated",
            "PlanUpdated",
            "PlanStagesReordered",
            "PlanStageStatusSet"
        ]
    );
    let (_, last) = h.tool_events("plan-essay").await.pop().unwrap();
    assert!(
        matches!(last, DomainEvent::PlanStageStatusSet(e) if e.previous == runledger_contracts::events::StageStatus::Pending)
    );
    assert_eq!(h.tool_events("plan-other").await.len(), 2);
    // Loaded again from the ledger, as the CLI does.
    let plans = super::plan::load_plans(&h.ledger.store).await.unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].to_json(), out["status"]);
    h.finish().await;
}

#[tokio::test]
async fn milestone_operations_run_as_tools() {
    let h = harness().await;
    let fc = chain(
        "milestone-ops",
        &[
            r#"{ id: create, type: milestone, milestone: { operation: create, args: { milestone_id: beta, title: Beta, plan_id: essay, due: "2026-03-01" } } }"#,
            r#"{ id: create2, type: milestone, milestone: { operation: create, args: { milestone_id: launch, title: Launch } } }"#,
            r#"{ id: get, type: milestone, milestone: { operation: get, args: { milestone_id: beta } } }"#,
            r#"{ id: update, type: milestone, milestone: { operation: update, args: { milestone_id: beta, description: "first public build" } } }"#,
            r#"{ id: status, type: milestone, milestone: { operation: set_status, args: { milestone_id: beta, status: achieved } } }"#,
            r#"{ id: evidence, type: milestone, milestone: { operation: attach_evidence, args: { milestone_id: beta, summary: "build is green", reference: "{{ run.id }}", data: { checks: 12 } } } }"#,
            r#"{ id: list, type: milestone, milestone: { operation: list, args: { status: achieved } } }"#,
            r#"{ id: delete, type: milestone, milestone: { operation: delete, args: { milestone_id: launch } } }"#,
            r#"{ id: list_all, type: milestone, milestone: { operation: list } }"#,
        ],
    );
    let (summary, recorded) = h.run(fc, json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    let out = outputs(&events);
    assert_eq!(out["create"]["status"], "pending");
    assert_eq!(out["get"]["due"], "2026-03-01");
    assert_eq!(out["update"]["description"], "first public build");
    assert_eq!(out["status"]["status"], "achieved");
    let evidence = &out["evidence"]["evidence"][0];
    assert_eq!(evidence["summary"], "build is green");
    assert_eq!(evidence["reference"], summary.run_id.to_string());
    assert_eq!(evidence["data"]["checks"], 12);
    assert_eq!(
        evidence["node_run_id"],
        end_commit(&recorded, "evidence").1.as_str()
    );
    assert_eq!(out["list"]["total"], 1);
    assert_eq!(out["delete"]["deleted"], true);
    assert_eq!(out["list_all"]["total"], 1);
    let kinds: Vec<String> = h
        .tool_events("milestone-beta")
        .await
        .iter()
        .map(|(r, _)| r.event_type.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "MilestoneCreated",
            "MilestoneUpdated",
            "MilestoneStatusSet",
            "MilestoneEvidenceAttached"
        ]
    );
    let beta = super::milestone::load_milestone(&h.ledger.store, "beta")
        .await
        .unwrap();
    assert_eq!(beta.to_json(), out["evidence"]);
    h.finish().await;
}

#[tokio::test]
async fn the_example_flowchart_runs_every_tool() {
    let h = harness().await;
    let path = format!(
        "{}/../examples/project-tools.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let fc = flowchart(&std::fs::read_to_string(path).unwrap());
    let (summary, recorded) = h
        .run(fc, json!({ "project": "owls", "topic": "owls" }))
        .await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    let out = outputs(&events);
    assert_eq!(out["recall"]["total"], 1);
    assert_eq!(
        out["evidence"]["evidence"][0]["summary"],
        "draft stage is done"
    );
    let (scope_version, scope) = super::memory::load_scope(&h.ledger.store, "owls")
        .await
        .unwrap();
    assert_eq!(
        (scope_version, scope.entries["topic"].value.clone()),
        (1, json!("owls"))
    );
    h.finish().await;
}

// ---- failures and fallbacks --------------------------------------------------------------------

#[tokio::test]
async fn a_failed_call_fails_the_node_with_the_tools_code() {
    let h = harness().await;
    let fc = chain(
        "missing",
        &[r#"{ id: get, type: memory, memory: { operation: get, args: { key: nothing } } }"#],
    );
    let (summary, recorded) = h.run(fc, json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(
        summary.error.as_ref().map(|e| e.code.as_str()),
        Some("tool_not_found")
    );
    let events = decoded(&recorded);
    assert_eq!(node_status(&events, "get"), NodeRunStatus::Failed);
    assert_eq!(
        artifact(&events, "get").payload["error"]["code"],
        "tool_not_found"
    );
    let call = tool_calls(&events, "get")[0];
    assert_eq!(call.outcome, ToolOutcome::Error);
    assert_eq!(
        call.error.as_ref().map(|e| e.code.as_str()),
        Some("tool_not_found")
    );
    assert_eq!(call.attempts.len(), 1, "a logical error is not retried");
    // Arguments that do not fit the operation's schema fail before anything is read, naming
    // the argument.
    let fc = chain(
        "bad-args",
        &[
            r#"{ id: put, type: memory, memory: { operation: create, args: { key: k, value: 1, ttl: 5 } } }"#,
        ],
    );
    let (summary, _) = h.run(fc, json!({})).await;
    let error = summary.error.unwrap();
    assert_eq!(error.code, "tool_invalid_input");
    assert!(error.message.contains("ttl"), "{}", error.message);
    let fc = chain(
        "bad-template",
        &[
            r#"{ id: put, type: memory, memory: { operation: create, args: { key: k, value: "{{ inputs.nope }}" } } }"#,
        ],
    );
    let (summary, _) = h.run(fc, json!({})).await;
    let error = summary.error.unwrap();
    assert_eq!(error.code, "tool_invalid_input");
    assert!(
        error.message.contains("args.value:") && error.message.contains("inputs.nope"),
        "{}",
        error.message
    );
    assert!(
        h.ledger
            .store
            .list_streams("memory-")
            .await
            .unwrap()
            .is_empty(),
        "bad input writes nothing"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_node_that_allows_fallback_succeeds_with_a_warning() {
    let h = harness().await;
    let fc = chain(
        "fallback",
        &[
            r#"{ id: given, type: plan, plan: { operation: get, args: { plan_id: nope }, allow_fallback: true, fallback_output: { plan_id: nope, stages: [] } } }"#,
            r#"{ id: default, type: milestone, milestone: { operation: set_status, args: { milestone_id: nope, status: missed }, allow_fallback: true } }"#,
        ],
    );
    let (summary, recorded) = h.run(fc, json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    let out = outputs(&events);
    assert_eq!(out["given"], json!({ "plan_id": "nope", "stages": [] }));
    assert_eq!(out["default"]["fallback"], true);
    assert_eq!(out["default"]["error"]["code"], "tool_not_found");
    for node in ["given", "default"] {
        let succeeded = events
            .iter()
            .find_map(|e| match e {
                DomainEvent::NodeSucceeded(s) if s.node_id == node => Some(s),
                _ => None,
            })
            .unwrap();
        assert!(succeeded.fallback_used);
        assert_eq!(succeeded.warnings[0].code, "tool_not_found");
        let artifact = artifact(&events, node);
        assert_eq!(artifact.status, NodeRunStatus::SuccessWithWarning);
        assert_eq!(artifact.payload["fallback_used"], true);
        assert_eq!(artifact.payload["warnings"][0]["code"], "tool_not_found");
        assert_eq!(tool_calls(&events, node)[0].outcome, ToolOutcome::Error);
    }
    assert!(
        h.ledger
            .store
            .list_streams("milestone-")
            .await
            .unwrap()
            .is_empty()
    );
    h.finish().await;
}

// ---- concurrency, crashes, idempotency -----------------------------------------------------------

const SEED_AND_UPDATE: [&str; 2] = [
    r#"{ id: seed, type: memory, memory: { operation: create, args: { scope: shared, key: k, value: 1 } } }"#,
    r#"{ id: bump, type: memory, memory: { operation: update, args: { scope: shared, key: k, value: 2 } } }"#,
];

#[tokio::test]
async fn a_concurrent_write_to_the_tool_stream_is_retried() {
    let (h, faulty) = faulty_harness().await;
    // Seed first, then race the update once: another writer appends to the scope right before
    // the update's commit.
    let (summary, _) = h.run(chain("seed", &SEED_AND_UPDATE[..1]), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    faulty.intrude.store(1, Ordering::SeqCst);
    let (summary, recorded) = h.run(chain("bump", &SEED_AND_UPDATE[1..]), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    let call = tool_calls(&events, "bump")[0];
    assert_eq!(call.outcome, ToolOutcome::Ok);
    assert_eq!(call.attempts.len(), 2, "{call:?}");
    assert_eq!(
        call.attempts[0].error.as_ref().map(|e| e.code.as_str()),
        Some("tool_conflict")
    );
    assert!(call.attempts[1].error.is_none());
    assert_eq!(
        call.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    // The update was decided again on the state that includes the other writer's event.
    let kinds: Vec<String> = h
        .tool_events("memory-shared")
        .await
        .iter()
        .map(|(r, _)| r.event_type.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "MemoryEntryCreated",
            "MemoryEntryCreated",
            "MemoryEntryUpdated"
        ]
    );
    assert_eq!(outputs(&events)["bump"]["revision"], 2);
    assert_eq!(faulty.intrusions.load(Ordering::SeqCst), 1);
    h.finish().await;
}

#[tokio::test]
async fn a_tool_stream_that_keeps_moving_ends_in_tool_conflict() {
    let (h, faulty) = faulty_harness().await;
    h.run(chain("seed", &SEED_AND_UPDATE[..1]), json!({})).await;
    faulty.intrude.store(u32::MAX, Ordering::SeqCst);
    let (summary, recorded) = h.run(chain("bump", &SEED_AND_UPDATE[1..]), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    let events = decoded(&recorded);
    let call = tool_calls(&events, "bump")[0];
    assert_eq!(call.outcome, ToolOutcome::Conflict);
    assert_eq!(call.attempts.len(), super::MAX_TOOL_ATTEMPTS as usize);
    assert!(
        call.attempts
            .iter()
            .all(|a| a.error.as_ref().is_some_and(|e| e.code == "tool_conflict"))
    );
    assert_eq!(
        summary.error.as_ref().map(|e| e.code.as_str()),
        Some("tool_conflict")
    );
    assert_eq!(
        artifact(&events, "bump").payload["error"]["retryable"],
        true
    );
    // The update never landed; only the other writer's events did.
    let tool = h.tool_events("memory-shared").await;
    assert!(
        tool.iter()
            .all(|(r, _)| r.event_type == "MemoryEntryCreated"),
        "{tool:?}"
    );
    // With a fallback the same race ends in success_with_warning.
    let fallback = r#"{ id: bump, type: memory, memory: { operation: update, args: { scope: shared, key: k, value: 2 }, allow_fallback: true } }"#;
    let (summary, recorded) = h.run(chain("bump-fallback", &[fallback]), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let events = decoded(&recorded);
    assert_eq!(
        node_status(&events, "bump"),
        NodeRunStatus::SuccessWithWarning
    );
    assert_eq!(outputs(&events)["bump"]["error"]["code"], "tool_conflict");
    faulty.intrude.store(0, Ordering::SeqCst);
    h.finish().await;
}

#[tokio::test]
async fn a_node_run_re_executed_after_a_lost_commit_applies_once() {
    let (h, faulty) = faulty_harness().await;
    // The commit of `seed` succeeds but its reply is lost: the driver sees an error, rebuilds
    // the run from the ledger and finds the node run ended; nothing is applied twice.
    faulty.lose_ack.store(1, Ordering::SeqCst);
    let (summary, recorded) = h.run(chain("seed", &SEED_AND_UPDATE[..1]), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    assert_eq!(tool_calls(&events, "seed").len(), 1);
    assert_eq!(h.tool_events("memory-shared").await.len(), 1);
    assert_eq!(faulty.lose_ack.load(Ordering::SeqCst), 0, "the fault fired");

    // Executing the same node run again (an engine that crashed before it saw the commit)
    // finds its idempotency key in the stream: the recorded output, and nothing to append.
    let recorded_output = outputs(&events)["seed"].clone();
    let state = crate::state::RunState::replay(&events).unwrap();
    let index = state
        .node_runs
        .iter()
        .position(|nr| state.node_id(nr.node) == "seed")
        .unwrap();
    let work = state.work(index).unwrap();
    let call = ToolCall::of(&work).unwrap();
    let again = super::attempt(&h.ledger.store, &mut ToolCache::new(), &call)
        .await
        .unwrap();
    assert_eq!(again.output, recorded_output);
    assert!(again.append.is_none());
    h.finish().await;
}

#[tokio::test]
async fn a_node_run_whose_commit_failed_runs_again_after_a_restart() {
    let (h, faulty) = faulty_harness().await;
    // Every commit of the tool node fails: the first engine gives up on the run, with the node
    // run started and nothing of it in the tool stream.
    faulty.fail.store(u32::MAX, Ordering::SeqCst);
    let run = h
        .start(chain("seed", &SEED_AND_UPDATE[..1]), json!({}))
        .await;
    for _ in 0..200 {
        if faulty.fail.load(Ordering::SeqCst) < u32::MAX - 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.tool_events("memory-shared").await.is_empty());
    faulty.fail.store(0, Ordering::SeqCst);
    // A new engine (a restart) resumes the run and executes the node run once.
    let store = h.ledger.second_store().await.unwrap();
    let engine = Engine::new(store, pool(), Arc::new(NoFlowcharts), config());
    let summary = tokio::time::timeout(Duration::from_secs(30), engine.wait(run))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&h.recorded(&StreamId::for_run(run)).await);
    assert_eq!(tool_calls(&events, "seed").len(), 1);
    assert_eq!(h.tool_events("memory-shared").await.len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn parallel_tool_nodes_of_one_run_do_not_race_each_other() {
    let h = harness().await;
    let mut yaml = String::from("name: fan\nnodes:\n  - { id: start, type: start }\n");
    for i in 0..6 {
        yaml.push_str(&format!(
            "  - {{ id: w{i}, type: memory, memory: {{ operation: create, args: {{ scope: fan, key: k{i}, value: {i} }} }} }}\n"
        ));
    }
    yaml.push_str("  - { id: join, type: memory, memory: { operation: list, args: { scope: fan } } }\n  - { id: end, type: end }\nconnectors:\n");
    for i in 0..6 {
        yaml.push_str(&format!(
            "  - {{ id: s{i}, from: start, to: w{i} }}\n  - {{ id: j{i}, from: w{i}, to: join }}\n"
        ));
    }
    yaml.push_str("  - { id: je, from: join, to: end }\n");
    let (summary, recorded) = h.run(flowchart(&yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    for i in 0..6 {
        assert_eq!(
            tool_calls(&events, &format!("w{i}"))[0].attempts.len(),
            1,
            "no conflicts within one run"
        );
    }
    assert_eq!(outputs(&events)["join"]["total"], 6);
    let versions: Vec<u64> = h
        .tool_events("memory-fan")
        .await
        .iter()
        .map(|(r, _)| r.stream_version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    h.finish().await;
}

#[tokio::test]
async fn two_runs_writing_one_scope_at_once_both_land() {
    let h = harness().await;
    // Conflicts between runs are retried by the tool (3 tries), then by the node's retry
    // policy (`tool_conflict` is retryable): every write lands exactly once.
    let mut runs = Vec::new();
    for r in 0..4 {
        let nodes: Vec<String> = (0..5)
            .map(|i| format!("{{ id: w{i}, type: memory, retry: {{ max_attempts: 6, backoff_ms: 5 }}, memory: {{ operation: create, args: {{ scope: busy, key: r{r}-{i}, value: {i} }} }} }}"))
            .collect();
        let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
        runs.push(
            h.start(chain(&format!("writer-{r}"), &refs), json!({}))
                .await,
        );
    }
    for run in runs {
        let (summary, _) = h.wait(run).await;
        assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    }
    let (version, scope) = super::memory::load_scope(&h.ledger.store, "busy")
        .await
        .unwrap();
    assert_eq!((version, scope.entries.len()), (20, 20));
    h.finish().await;
}

// ---- decisions ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_decision_records_its_outcome_and_scores_next_to_its_routing() {
    let h = harness().await;
    let yaml = r#"
name: scored
nodes:
  - { id: start, type: start }
  - id: judge
    type: task
    model: scripted
    scripted: [{ output: { route_key: publish, scores: { publish: 0.8, revise: 0.3, note: "n/a" } } }]
  - { id: gate, type: decision }
  - { id: done, type: end }
  - { id: again, type: end }
connectors:
  - { id: c1, from: start, to: judge }
  - { id: c2, from: judge, to: gate }
  - { id: publish, from: gate, to: done }
  - { id: revise, from: gate, to: again }
"#;
    let (summary, recorded) = h.run(flowchart(yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let events = decoded(&recorded);
    let at = |kind: &str| {
        recorded
            .iter()
            .position(|r| r.event_type == kind && r.payload["node_id"] == "gate")
            .unwrap()
    };
    let (routing, outcome, end) = (at("RoutingDecided"), at("ToolCalled"), at("NodeSucceeded"));
    assert_eq!(
        (outcome, end),
        (routing + 1, routing + 2),
        "the outcome sits between the routing and the node's end"
    );
    assert_eq!(
        recorded[routing].request_id, recorded[outcome].request_id,
        "one append"
    );
    let call = tool_calls(&events, "gate")[0];
    assert_eq!(
        (call.tool.as_str(), call.operation.as_str(), call.outcome),
        ("decision", "record_outcome", ToolOutcome::Ok)
    );
    let output = call.output.as_ref().unwrap();
    assert_eq!(output["chosen"], json!(["publish"]));
    assert_eq!(output["via"], "route_key");
    assert_eq!(output["ranked"], json!(["publish", "revise"]));
    assert_eq!(output["scores"], json!({ "publish": 0.8, "revise": 0.3 }));
    h.finish().await;
}
