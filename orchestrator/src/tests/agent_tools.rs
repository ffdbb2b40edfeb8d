//! The ledger-backed agent tool domains on real PostgreSQL and SQLite (each test instantiated
//! for both by `on_both!` at the end of the file): every domain, calls of every tool
//! group, workflow controls that really pause, resume and retry a run, observability refusing
//! cross-run reads without a limit, and no secret in the model tools' answers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use runledger_contracts::agent_tool::{ToolCallContext, ToolCallError, ToolDomain};
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::events::{DomainEvent, ModelCreated};
use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, NodeRunId, RequestId, RunId, StreamId};
use runledger_contracts::model::{ModelSpec, ProviderKind};
use runledger_ledger::testing::{Backend, TestBackend};
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion, LedgerStore};
use serde_json::{Value, json};

use crate::agent_tools::{LedgerToolDeps, ledger_domains};
use crate::decide::StartRun;
use crate::engine::{Engine, EngineConfig, NoFlowcharts, load_run};
use crate::executor::{InProcessPool, Providers};
use crate::provider::ScriptedProvider;
use crate::state::RunStatus;

/// The prefixes of the catalog's tools that other crates serve: `rag_*` (runledger-rag) and
/// `workspace_*`, `git_*`, `command_*` (runledger-tools).
const SERVED_ELSEWHERE: &[&str] = &["rag_", "workspace_", "git_", "command_"];

/// Every tool the ledger domains must serve: the rest of the catalog, whose names
/// FLOWCHART-FORMAT.md fixes.
fn ledger_tool_names() -> BTreeSet<String> {
    runledger_contracts::tool_catalog::TOOL_NAMES
        .iter()
        .filter(|name| !SERVED_ELSEWHERE.iter().any(|p| name.starts_with(p)))
        .map(|name| (*name).to_owned())
        .collect()
}

struct Harness {
    ledger: TestBackend,
    engine: Engine<LedgerStore>,
    domains: Vec<Arc<dyn ToolDomain>>,
}

async fn harness(backend: Backend) -> Harness {
    let ledger = TestBackend::new(backend).await.unwrap();
    let store = ledger.second_store().await.unwrap();
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 16);
    let config = EngineConfig {
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let engine = Engine::new(store, Arc::new(pool), Arc::new(NoFlowcharts), config);
    let domains = ledger_domains(LedgerToolDeps {
        store: Arc::new(ledger.second_store().await.unwrap()),
        waker: Arc::new(engine.clone()),
    });
    Harness {
        ledger,
        engine,
        domains,
    }
}

fn flowchart(yaml: &str) -> Arc<Flowchart> {
    Arc::new(load(yaml, SourceFormat::Yaml).unwrap_or_else(|e| panic!("{e:?}")))
}

fn ctx(run_id: RunId, node_id: &str, turn: u32) -> ToolCallContext {
    let node_run_id = NodeRunId::new_v7();
    ToolCallContext {
        run_id,
        node_id: node_id.into(),
        node_run_id,
        turn,
        call_index: 0,
        idempotency_key: format!("{node_run_id}:{turn}:0"),
        workspace: None,
        git_policy: None,
    }
}

impl Harness {
    async fn start(&self, flowchart: Arc<Flowchart>) -> RunId {
        let start = StartRun {
            run_id: RunId::new_v7(),
            flowchart,
            version: None,
            inputs: json!({ "topic": "tools" }),
            parent: None,
            actor: "test".into(),
        };
        self.engine
            .start(start, RequestId::generate(), CorrelationId::generate())
            .await
            .unwrap()
    }

    async fn finish(&self, run: RunId) -> RunStatus {
        tokio::time::timeout(Duration::from_secs(30), self.engine.wait(run))
            .await
            .unwrap()
            .unwrap()
            .status
    }

    /// Calls a tool as the agent loop does: arguments checked against the tool's schema first.
    async fn call(
        &self,
        ctx: &ToolCallContext,
        name: &str,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let (domain, spec) = self
            .domains
            .iter()
            .find_map(|d| {
                d.specs()
                    .into_iter()
                    .find(|s| s.name == name)
                    .map(|s| (d, s))
            })
            .unwrap_or_else(|| panic!("no domain serves {name}"));
        let validator = jsonschema::validator_for(&spec.parameters).unwrap();
        assert!(
            validator.is_valid(&arguments),
            "{name}: {arguments} does not fit its schema"
        );
        domain.call(ctx, name, arguments).await
    }

    /// Calls a tool with arguments its schema refuses (as if the loop had not checked them):
    /// the domain refuses them too.
    async fn call_unchecked(
        &self,
        ctx: &ToolCallContext,
        name: &str,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let (domain, spec) = self
            .domains
            .iter()
            .find_map(|d| {
                d.specs()
                    .into_iter()
                    .find(|s| s.name == name)
                    .map(|s| (d, s))
            })
            .unwrap_or_else(|| panic!("no domain serves {name}"));
        let validator = jsonschema::validator_for(&spec.parameters).unwrap();
        assert!(
            !validator.is_valid(&arguments),
            "{name}: the schema takes {arguments}"
        );
        domain.call(ctx, name, arguments).await
    }

    async fn ok(&self, ctx: &ToolCallContext, name: &str, arguments: Value) -> Value {
        self.call(ctx, name, arguments)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    async fn stream(&self, stream: &str) -> Vec<DomainEvent> {
        self.ledger
            .store
            .read_stream(&StreamId::new(stream).unwrap(), 1, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.decode().unwrap())
            .collect()
    }

    async fn run_events(&self, run: RunId) -> Vec<DomainEvent> {
        self.stream(StreamId::for_run(run).as_str()).await
    }

    /// A run that has ended, for calls that need one to exist.
    async fn finished_run(&self) -> RunId {
        let run = self.start(flowchart(SIMPLE)).await;
        assert_eq!(self.finish(run).await, RunStatus::Completed);
        run
    }
}

const SIMPLE: &str = "name: simple\nnodes:\n  - { id: start, type: start }\n  - { id: work, type: task, model: scripted, output_schema: { type: object, required: [score], properties: { score: { type: number } } }, scripted: [{ output: { score: 9 } }] }\n  - id: gate\n    type: decision\n    conditions:\n      - { connector: approve, when: 'latest_upstream.output.score >= 8' }\n      - { connector: revise, when: 'latest_upstream.output.score < 8' }\n    no_match: { policy: fail }\n  - { id: done, type: end }\n  - { id: redo, type: task, model: scripted, scripted: [{ output: again }] }\n  - { id: end2, type: end }\nconnectors:\n  - { id: c1, from: start, to: work }\n  - { id: c2, from: work, to: gate }\n  - { id: approve, from: gate, to: done }\n  - { id: revise, from: gate, to: redo }\n  - { id: c5, from: redo, to: end2 }\n  - { id: notes, from: work, to: redo, mode: dotted }\n";

fn code(result: Result<Value, ToolCallError>) -> &'static str {
    match result {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.code(),
    }
}

async fn every_tool_has_its_fixed_name_a_strict_schema_and_a_writer_flag(backend: Backend) {
    let h = harness(backend).await;
    let mut seen = BTreeSet::new();
    let mut domains = BTreeSet::new();
    for domain in &h.domains {
        assert!(
            domains.insert(domain.domain().to_owned()),
            "one domain per prefix"
        );
        for spec in domain.specs() {
            assert!(
                seen.insert(spec.name.clone()),
                "{} is served twice",
                spec.name
            );
            assert!(
                !spec.name.is_empty()
                    && spec.name.len() <= 64
                    && spec
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                spec.name
            );
            assert!(!spec.description.is_empty());
            let p = &spec.parameters;
            assert_eq!(p["type"], "object", "{}", spec.name);
            assert_eq!(p["additionalProperties"], false, "{}", spec.name);
            jsonschema::validator_for(p).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            let writer = spec.name.ends_with("_create")
                || spec.name.ends_with("_update")
                || spec.name.ends_with("_delete")
                || spec.name.starts_with("workflow_")
                || [
                    "node_retry",
                    "node_skip",
                    "node_rewind",
                    "plan_reorder_stages",
                    "plan_set_stage_status",
                    "milestone_set_status",
                    "milestone_attach_evidence",
                    "decision_score_options",
                    "decision_record_outcome",
                ]
                .contains(&spec.name.as_str());
            assert_eq!(spec.side_effects, writer, "{}", spec.name);
        }
    }
    assert_eq!(seen, ledger_tool_names());
    assert_eq!(
        domains,
        [
            "connector",
            "contract",
            "decision",
            "memory",
            "milestone",
            "model",
            "observability",
            "plan",
            "workflow"
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    );
    h.engine.store().close().await;
    h.ledger.finish().await.unwrap();
}

async fn memory_plan_and_milestone_calls_write_the_tool_events_once(backend: Backend) {
    let h = harness(backend).await;
    let run = h.finished_run().await;
    let first = ctx(run, "agent", 1);
    let created = h
        .ok(
            &first,
            "memory_create",
            json!({ "scope": "notes", "key": "k1", "value": { "v": 1 } }),
        )
        .await;
    assert_eq!(
        (created["revision"].as_u64(), created["value"]["v"].as_u64()),
        (Some(1), Some(1))
    );
    // The same call again (a re-run after a crash) applies nothing and answers the same.
    let again = h
        .ok(
            &first,
            "memory_create",
            json!({ "scope": "notes", "key": "k1", "value": { "v": 1 } }),
        )
        .await;
    assert_eq!(again, created);
    let events = h.stream("memory-notes").await;
    assert_eq!(events.len(), 1);
    match &events[0] {
        DomainEvent::MemoryEntryCreated(e) => {
            assert_eq!((e.run_id, e.node_id.as_str()), (run, "agent"));
            assert_eq!(e.idempotency_key, first.idempotency_key);
        }
        other => panic!("{other:?}"),
    }
    // Another call creating the same key: the node operation's own refusal.
    let second = ctx(run, "agent", 2);
    assert_eq!(
        code(
            h.call(
                &second,
                "memory_create",
                json!({ "scope": "notes", "key": "k1", "value": 2 })
            )
            .await
        ),
        "already_exists"
    );
    h.ok(
        &ctx(run, "agent", 3),
        "memory_update",
        json!({ "scope": "notes", "key": "k1", "value": "blue sky", "expected_revision": 1 }),
    )
    .await;
    assert_eq!(
        code(
            h.call(
                &ctx(run, "agent", 4),
                "memory_update",
                json!({ "scope": "notes", "key": "k1", "value": 3, "expected_revision": 1 })
            )
            .await
        ),
        "conflict"
    );
    let found = h
        .ok(
            &ctx(run, "agent", 5),
            "memory_search",
            json!({ "scope": "notes", "query": "BLUE" }),
        )
        .await;
    assert_eq!(found["entries"][0]["key"], "k1", "{found}");
    assert_eq!(
        code(
            h.call(
                &ctx(run, "agent", 6),
                "memory_get",
                json!({ "scope": "notes", "key": "nope" })
            )
            .await
        ),
        "not_found"
    );
    let listed = h
        .ok(
            &ctx(run, "agent", 7),
            "memory_list",
            json!({ "scope": "notes" }),
        )
        .await;
    assert_eq!(
        listed["entries"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    h.ok(
        &ctx(run, "agent", 8),
        "memory_delete",
        json!({ "scope": "notes", "key": "k1" }),
    )
    .await;
    assert_eq!(
        h.stream("memory-notes").await.len(),
        3,
        "create, update, delete"
    );

    let plan = h
        .ok(&ctx(run, "agent", 9), "plan_create", json!({ "plan_id": "p1", "title": "Ship", "stages": [{ "id": "a", "title": "A" }, { "id": "b", "title": "B" }] }))
        .await;
    assert_eq!(plan["stages"][0]["status"], "pending");
    h.ok(
        &ctx(run, "agent", 10),
        "plan_reorder_stages",
        json!({ "plan_id": "p1", "order": ["b", "a"] }),
    )
    .await;
    let set = h
        .ok(
            &ctx(run, "agent", 11),
            "plan_set_stage_status",
            json!({ "plan_id": "p1", "stage_id": "a", "status": "done" }),
        )
        .await;
    assert_eq!(
        (
            set["stages"][0]["id"].as_str(),
            set["stages"][1]["status"].as_str()
        ),
        (Some("b"), Some("done")),
        "{set}"
    );
    assert_eq!(
        code(
            h.call(
                &ctx(run, "agent", 12),
                "plan_reorder_stages",
                json!({ "plan_id": "p1", "order": ["a"] })
            )
            .await
        ),
        "invalid_operation"
    );
    let plans = h.ok(&ctx(run, "agent", 13), "plan_list", json!({})).await;
    assert_eq!(plans["total"], 1, "{plans}");
    assert_eq!(h.stream("plan-p1").await.len(), 3);

    h.ok(
        &ctx(run, "agent", 14),
        "milestone_create",
        json!({ "milestone_id": "m1", "title": "Beta", "plan_id": "p1" }),
    )
    .await;
    let proof = ctx(run, "agent", 15);
    let attached = h
        .ok(
            &proof,
            "milestone_attach_evidence",
            json!({ "milestone_id": "m1", "summary": "tests pass", "data": { "passed": 12 } }),
        )
        .await;
    assert_eq!(
        attached["evidence"][0]["node_run_id"],
        json!(proof.node_run_id)
    );
    let status = h
        .ok(
            &ctx(run, "agent", 16),
            "milestone_set_status",
            json!({ "milestone_id": "m1", "status": "achieved" }),
        )
        .await;
    assert_eq!(status["status"], "achieved");
    let listed = h
        .ok(
            &ctx(run, "agent", 17),
            "milestone_list",
            json!({ "status": "achieved" }),
        )
        .await;
    assert_eq!(listed["total"], 1);
    assert_eq!(
        code(
            h.call(
                &ctx(run, "agent", 18),
                "milestone_get",
                json!({ "milestone_id": "zz" })
            )
            .await
        ),
        "not_found"
    );
    assert_eq!(
        code(
            h.call_unchecked(
                &ctx(run, "agent", 19),
                "plan_get",
                json!({ "plan_id": "../x" })
            )
            .await
        ),
        "invalid_arguments"
    );
    h.engine.store().close().await;
    h.ledger.finish().await.unwrap();
}

async fn decisions_are_event_sourced_and_conditions_evaluate(backend: Backend) {
    let h = harness(backend).await;
    let run = h.finished_run().await;
    let opened = h
        .ok(&ctx(run, "agent", 1), "decision_create", json!({
            "decision_id": "db",
            "question": "Which database?",
            "options": [{ "id": "pg", "description": "PostgreSQL" }, { "id": "lite", "description": "SQLite" }],
            "criteria": ["durability", "ops cost"],
            "context": { "users": 1000 },
        }))
        .await;
    assert_eq!(opened["status"], "open");
    assert_eq!(
        code(
            h.call(
                &ctx(run, "agent", 2),
                "decision_score_options",
                json!({ "decision_id": "db", "scores": [{ "option_id": "mongo", "score": 1 }] })
            )
            .await
        ),
        "invalid_arguments"
    );
    h.ok(&ctx(run, "agent", 3), "decision_score_options", json!({ "decision_id": "db", "scores": [{ "option_id": "pg", "score": 8.5, "rationale": "durable" }, { "option_id": "lite", "score": 6 }] })).await;
    let options = h
        .ok(
            &ctx(run, "agent", 4),
            "decision_list_options",
            json!({ "decision_id": "db" }),
        )
        .await;
    assert_eq!(options["ranking"], json!(["pg", "lite"]));
    assert_eq!(options["options"][0]["score"], 8.5);
    let decided = h
        .ok(
            &ctx(run, "agent", 5),
            "decision_record_outcome",
            json!({ "decision_id": "db", "option_id": "pg", "rationale": "best score" }),
        )
        .await;
    assert_eq!(
        (
            decided["status"].as_str(),
            decided["outcome"]["option_id"].as_str()
        ),
        (Some("decided"), Some("pg"))
    );
    assert_eq!(
        code(
            h.call(
                &ctx(run, "agent", 6),
                "decision_record_outcome",
                json!({ "decision_id": "db", "option_id": "lite" })
            )
            .await
        ),
        "already_exists"
    );
    assert_eq!(
        h.ok(
            &ctx(run, "agent", 7),
            "decision_list",
            json!({ "status": "decided" })
        )
        .await["total"],
        1
    );
    assert_eq!(
        h.ok(
            &ctx(run, "agent", 8),
            "decision_list",
            json!({ "status": "open" })
        )
        .await["total"],
        0
    );
    assert_eq!(
        h.ok(
            &ctx(run, "agent", 9),
            "decision_get",
            json!({ "decision_id": "db" })
        )
        .await["criteria"][1],
        "ops cost"
    );
    let types: Vec<&str> = h
        .stream("decision-db")
        .await
        .iter()
        .map(|e| e.event_type().as_str())
        .collect();
    assert_eq!(
        types,
        [
            "DecisionCreated",
            "DecisionOptionsScored",
            "DecisionOutcomeRecorded"
        ]
    );

    let c = ctx(run, "agent", 10);
    let yes = h.ok(&c, "decision_evaluate", json!({ "condition": "score >= 8 and exists(notes)", "context": { "score": 9, "notes": "ok" } })).await;
    assert_eq!(yes["matched"], true, "{yes}");
    let missing = h
        .ok(
            &c,
            "decision_evaluate",
            json!({ "condition": "score >= 8", "context": {} }),
        )
        .await;
    assert_eq!(missing["matched"], Value::Null, "{missing}");
    assert_eq!(
        code(
            h.call(
                &c,
                "decision_evaluate",
                json!({ "condition": "score >=", "context": {} })
            )
            .await
        ),
        "invalid_arguments"
    );
    h.engine.store().close().await;
    h.ledger.finish().await.unwrap();
}

const PAUSABLE: &str = "name: pausable\nnodes:\n  - { id: start, type: start }\n  - { id: work, type: task, model: scripted, scripted: [{ delay_ms: 700, output: w }] }\n  - { id: after, type: task, model: scripted, scripted: [{ output: a }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: work }\n  - { id: c2, from: work, to: after }\n  - { id: c3, from: after, to: end }\n";

async fn workflow_tools_pause_and_resume_the_callers_run_as_operator_controls(backend: Backend) {
    let h = harness(backend).await;
    let run = h.start(flowchart(PAUSABLE)).await;
    let pause = ctx(run, "work", 1);
    let paused = h
        .ok(
            &pause,
            "workflow_pause",
            json!({ "reason": "waiting for review" }),
        )
        .await;
    assert_eq!(
        (paused["control"].as_str(), paused["deduplicated"].as_bool()),
        (Some("pause"), Some(false))
    );
    assert_eq!(paused["events"], json!(["RunPaused"]));
    // The same call again writes nothing.
    let again = h
        .ok(
            &pause,
            "workflow_pause",
            json!({ "reason": "waiting for review" }),
        )
        .await;
    assert_eq!(again["deduplicated"], true);
    // `work` finishes, but nothing new is scheduled while the run is paused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = h.run_events(run).await;
        if events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeSucceeded(s) if s.node_id == "work"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "work never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = h.run_events(run).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeScheduled(s) if s.node_id == "after"))
    );
    let control = events.iter().find_map(|e| match e {
        DomainEvent::RunPaused(p) => Some(p.control.clone()),
        _ => None,
    });
    assert_eq!(
        control.map(|c| (c.actor, c.reason)),
        Some(("node:work".into(), "waiting for review".into()))
    );
    let state = load_run(&h.ledger.store, run).await.unwrap().state;
    assert_eq!(state.status, RunStatus::Paused);

    assert_eq!(
        code(
            h.call(
                &ctx(run, "work", 2),
                "workflow_pause",
                json!({ "reason": "twice" })
            )
            .await
        ),
        "run_not_running"
    );
    h.ok(
        &ctx(run, "work", 3),
        "workflow_resume",
        json!({ "reason": "approved" }),
    )
    .await;
    assert_eq!(h.finish(run).await, RunStatus::Completed);
    let resumed = h.run_events(run).await.into_iter().find_map(|e| match e {
        DomainEvent::RunResumed(r) => Some(r.control.actor),
        _ => None,
    });
    assert_eq!(resumed.as_deref(), Some("node:work"));
    assert_eq!(
        code(
            h.call(
                &ctx(run, "work", 4),
                "node_skip",
                json!({ "node_id": "ghost", "output": 1, "reason": "x" })
            )
            .await
        ),
        "not_found"
    );
    h.engine.store().close().await;
    h.ledger.finish().await.unwrap();
}

const FLAKY: &str = "name: flaky\nnodes:\n  - { id: start, type: start }\n  - { id: flaky, type: task, model: scripted, scripted: [{ error: { code: bad_answer, message: broken, retryable: false } }, { output: fixed }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: flaky }\n  - { id: c2, from: flaky, to: end }\n";

async fn node_retry_reruns_a_failed_node_and_observability_traces_the_failure(backend: Backend) {
    let h = harness(backend).await;
    let run = h.start(flowchart(FLAKY)).await;
    assert_eq!(h.finish(run).await, RunStatus::Failed);
    let c = ctx(run, "flaky", 1);

    let trace = h.ok(&c, "failure_trace_get", json!({})).await;
    assert_eq!(trace["status"], "failed");
    assert_eq!(trace["failed_node_runs"][0]["node_id"], "flaky", "{trace}");
    assert_eq!(trace["failed_node_runs"][0]["error"]["code"], "bad_answer");
    let failed_node_run = trace["failed_node_runs"][0]["node_run_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let retried = h
        .ok(
            &c,
            "node_retry",
            json!({ "node_id": "flaky", "reason": "transient" }),
        )
        .await;
    assert!(
        retried["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "NodeRetryScheduled"),
        "{retried}"
    );
    assert_eq!(h.finish(run).await, RunStatus::Completed);
    let retry = h.run_events(run).await.into_iter().find_map(|e| match e {
        DomainEvent::NodeRetryScheduled(r) => r.control,
        _ => None,
    });
    assert_eq!(retry.map(|c| c.actor).as_deref(), Some("node:flaky"));

    // Observability of the caller's own run.
    let got = h.ok(&c, "run_get", json!({})).await;
    assert_eq!(
        (got["status"].as_str(), got["node_run_count"].as_u64()),
        (Some("completed"), Some(4)),
        "{got}"
    );
    let runs = h
        .ok(&c, "node_run_get", json!({ "node_id": "flaky" }))
        .await;
    assert_eq!(runs["total"], 2);
    assert_eq!(
        runs["node_runs"][0]["status"], "succeeded",
        "newest first: {runs}"
    );
    let one = h
        .ok(
            &c,
            "node_run_get",
            json!({ "node_run_id": failed_node_run }),
        )
        .await;
    assert_eq!(one["status"], "failed");
    let logs = h
        .ok(
            &c,
            "logs_get",
            json!({ "event_types": ["NodeFailed", "NodeRetryScheduled"] }),
        )
        .await;
    let types: Vec<&str> = logs["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert_eq!(types, ["NodeFailed", "NodeRetryScheduled"]);
    let page = h.ok(&c, "logs_get", json!({ "limit": 2 })).await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["next_after_version"], 2);
    let calls = h
        .ok(
            &c,
            "tool_calls_get",
            json!({ "node_run_id": failed_node_run }),
        )
        .await;
    assert_eq!(
        calls["tool_calls"][0]["call"]["tool"], "provider",
        "{calls}"
    );
    let artifact = h
        .ok(
            &c,
            "artifact_get",
            json!({ "node_run_id": failed_node_run }),
        )
        .await;
    assert_eq!(artifact["artifact"]["status"], "failed", "{artifact}");
    assert_eq!(
        code(
            h.call(
                &c,
                "artifact_get",
                json!({ "artifact_id": RunId::new_v7().to_string() })
            )
            .await
        ),
        "not_found"
    );

    // Another run: refused without an explicit limit, served with one.
    let other = h.finished_run().await;
    let refused = h
        .call(&c, "run_get", json!({ "run_id": other.to_string() }))
        .await;
    assert!(
        matches!(&refused, Err(ToolCallError::Refused { .. })),
        "{refused:?}"
    );
    assert_eq!(code(refused), "cross_run_refused");
    assert_eq!(
        code(
            h.call(&c, "logs_get", json!({ "run_id": other.to_string() }))
                .await
        ),
        "cross_run_refused"
    );
    let read = h
        .ok(
            &c,
            "run_get",
            json!({ "run_id": other.to_string(), "limit": 1 }),
        )
        .await;
    assert_eq!(
        (
            read["status"].as_str(),
            read["node_runs"].as_array().map(Vec::len)
        ),
        (Some("completed"), Some(1))
    );
    assert_eq!(read["truncated"], true);
    assert_eq!(
        code(
            h.call(
                &c,
                "run_get",
                json!({ "run_id": RunId::new_v7().to_string(), "limit": 5 })
            )
            .await
        ),
        "not_found"
    );
    h.engine.store().close().await;
    h.ledger.finish().await.unwrap();
}

async fn connector_and_contract_tools_agree_with_the_recorded_routing(backend: Backend) {
    let h = harness(backend).await;
    let run = h.finished_run().await;
    let recorded = h
        .run_events(run)
        .await
        .into_iter()
        .find_map(|e| match e {
            DomainEvent::RoutingDecided(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let c = ctx(run, "agent", 1);
    let context = json!({ "latest_upstream": { "node_id": "work", "output": { "score": 9 } } });
    let branch = h
        .ok(
            &c,
            "branch_evaluate",
            json!({ "node_id": "gate", "context": context }),
        )
        .await;
    assert_eq!(
        branch["matched_connectors"],
        json!(recorded.matched_connectors)
    );
    assert_eq!(branch["next_nodes"], json!(["done"]));
    assert_eq!(
        branch["evaluations"],
        serde_json::to_value(&recorded.evaluations).unwrap()
    );
    let low = h.ok(&c, "branch_evaluate", json!({ "node_id": "gate", "context": { "latest_upstream": { "output": { "score": 2 } } } })).await;
    assert_eq!(low["next_nodes"], json!(["redo"]));
    let nothing = h
        .ok(
            &c,
            "branch_evaluate",
            json!({ "node_id": "gate", "context": {} }),
        )
        .await;
    assert_eq!(nothing["failure"]["code"], "no_route_matched", "{nothing}");
    assert_eq!(
        code(
            h.call(
                &c,
                "branch_evaluate",
                json!({ "node_id": "work", "context": {} })
            )
            .await
        ),
        "invalid_arguments"
    );

    let got = h.ok(&c, "connector_conditions_get", json!({})).await;
    assert_eq!(got["nodes"][0]["node_id"], "gate");
    assert_eq!(got["nodes"][0]["no_match"]["policy"], "fail");
    let valid = h.ok(&c, "connector_conditions_validate", json!({ "node_id": "gate", "conditions": [{ "connector": "approve", "when": "latest_upstream.output.score > 5" }], "no_match": { "policy": "fallback", "connector": "revise" } })).await;
    assert_eq!(valid["valid"], true, "{valid}");
    let invalid = h.ok(&c, "connector_conditions_validate", json!({ "node_id": "gate", "conditions": [{ "connector": "nowhere", "when": "score >" }] })).await;
    assert_eq!(invalid["valid"], false);
    assert!(
        invalid["errors"].as_array().unwrap().len() >= 2,
        "{invalid}"
    );
    let next = h
        .ok(&c, "next_nodes_resolve", json!({ "node_id": "work" }))
        .await;
    assert_eq!(
        (next["next_nodes"].clone(), next["context_only"].clone()),
        (json!(["gate"]), json!(["redo"]))
    );
    assert_eq!(
        code(
            h.call(&c, "next_nodes_resolve", json!({ "node_id": "gate" }))
                .await
        ),
        "invalid_arguments"
    );

    let good = h
        .ok(
            &c,
            "node_output_validate",
            json!({ "node_id": "work", "output": { "score": 3 } }),
        )
        .await;
    assert_eq!(good["valid"], true);
    let bad = h
        .ok(
            &c,
            "node_output_validate",
            json!({ "node_id": "work", "output": { "score": "high" } }),
        )
        .await;
    assert_eq!(
        (
            bad["valid"].as_bool(),
            bad["violations"][0]["path"].as_str()
        ),
        (Some(false), Some("/score")),
        "{bad}"
    );
    assert_eq!(
        code(
            h.call(&c, "node_output_validate", json!({ "output": 1 }))
                .await
        ),
        "not_found",
        "`agent` is no node of the flowchart"
    );
    let parsed = h
        .ok(
            &c,
            "condition_validate",
            json!({ "condition": "latest_upstream.output.score >= 8" }),
        )
        .await;
    assert_eq!(parsed["paths"], json!(["latest_upstream.output.score"]));
    let broken = h
        .ok(&c, "condition_validate", json!({ "condition": "a ==" }))
        .await;
    assert_eq!(
        (
            broken["valid"].as_bool(),
            broken["error"]["position"].as_u64()
        ),
        (Some(false), Some(4)),
        "{broken}"
    );
    let rootless = h
        .ok(
            &c,
            "condition_validate",
            json!({ "condition": "score >= 8" }),
        )
        .await;
    assert_eq!(rootless["valid"], false);
    h.engine.store().close().await;
    h.ledger.finish().await.unwrap();
}

async fn model_tools_read_the_registry_and_never_show_a_secret(backend: Backend) {
    let h = harness(backend).await;
    let run = h.finished_run().await;
    // A model whose key variable is one this process has: its value must never come back.
    let mut spec = ModelSpec::new("gpt", ProviderKind::OpenaiCompatible, "gpt-4o");
    spec.api_key_env = Some("PATH".into());
    spec.validate().unwrap();
    let event = NewEvent::from_domain(&DomainEvent::from(ModelCreated {
        model: spec.normalized(),
        actor: "test".into(),
    }))
    .unwrap();
    h.ledger
        .store
        .append(
            &ModelSpec::stream_id("gpt").unwrap(),
            ExpectedVersion::NoStream,
            AppendRequest::new(
                RequestId::generate(),
                CorrelationId::generate(),
                vec![event],
            ),
        )
        .await
        .unwrap();
    let secret = std::env::var("PATH").unwrap();
    let c = ctx(run, "agent", 1);
    let mut answers = Vec::new();
    let model = h.ok(&c, "model_get", json!({ "name": "gpt" })).await;
    assert_eq!(
        (
            model["provider"].as_str(),
            model["executor_class"].as_str(),
            model["version"].as_u64()
        ),
        (Some("openai_compatible"), Some("frontier"), Some(1))
    );
    assert_eq!(model["api_key_env"], "PATH");
    answers.push(model);
    let list = h.ok(&c, "model_list", json!({})).await;
    assert_eq!(list["total"], 2, "scripted and gpt: {list}");
    answers.push(list);
    let providers = h.ok(&c, "provider_list", json!({})).await;
    assert_eq!(providers["providers"].as_array().map(Vec::len), Some(4));
    answers.push(providers);
    let anthropic = h
        .ok(&c, "provider_get", json!({ "provider": "anthropic" }))
        .await;
    assert_eq!(anthropic["requires_api_key_env"], true);
    let openai = h
        .ok(
            &c,
            "provider_get",
            json!({ "provider": "openai_compatible" }),
        )
        .await;
    assert_eq!(openai["models"], json!(["gpt"]));
    answers.push(openai);
    let pasted = h.ok(&c, "model_validate_provider_settings", json!({ "spec": { "name": "x", "provider": "anthropic", "model_id": "claude", "api_key_env": "sk-live-SECRET123" } })).await;
    assert_eq!(
        (pasted["valid"].as_bool(), pasted["error"]["field"].as_str()),
        (Some(false), Some("api_key_env"))
    );
    assert!(!pasted.to_string().contains("SECRET123"), "{pasted}");
    let ok = h.ok(&c, "model_validate_provider_settings", json!({ "spec": { "name": "x", "provider": "anthropic", "model_id": "claude", "api_key_env": "ANTHROPIC_API_KEY", "settings": { "temperature": 0.5 } } })).await;
    assert_eq!(ok["valid"], true, "{ok}");
    let shape = h.ok(&c, "model_validate_provider_settings", json!({ "spec": { "name": "x", "provider": "anthropic", "model_id": "c", "api_key": "sk-live-SECRET123" } })).await;
    assert!(
        shape["valid"] == false && !shape.to_string().contains("SECRET123"),
        "{shape}"
    );
    for answer in &answers {
        assert!(
            !answer.to_string().contains(&secret),
            "a model tool returned the key: {answer}"
        );
    }
    assert_eq!(
        code(h.call(&c, "model_get", json!({ "name": "missing" })).await),
        "not_found"
    );
    h.engine.store().close().await;
    h.ledger.finish().await.unwrap();
}

async fn workflow_cancel_with_force_ends_the_callers_run(backend: Backend) {
    let h = harness(backend).await;
    let run = h.start(flowchart(PAUSABLE)).await;
    let canceled = h
        .ok(
            &ctx(run, "work", 1),
            "workflow_cancel",
            json!({ "reason": "the task is moot", "force": true }),
        )
        .await;
    assert_eq!(canceled["control"], "cancel --force");
    assert_eq!(h.finish(run).await, RunStatus::Canceled);
    let events = h.run_events(run).await;
    let requested = events.iter().find_map(|e| match e {
        DomainEvent::RunCancelRequested(r) => Some(r.control.actor.clone()),
        _ => None,
    });
    assert_eq!(requested.as_deref(), Some("node:work"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeCanceled(c) if c.node_id == "work" && c.forced)),
        "the calling node's own run is canceled too"
    );
    assert_eq!(
        code(
            h.call(
                &ctx(run, "work", 2),
                "workflow_resume",
                json!({ "reason": "too late" })
            )
            .await
        ),
        "run_not_paused"
    );
    h.engine.store().close().await;
    h.ledger.finish().await.unwrap();
}

/// Each test once on PostgreSQL and once on SQLite.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
    };
}

on_both!(
    every_tool_has_its_fixed_name_a_strict_schema_and_a_writer_flag,
    memory_plan_and_milestone_calls_write_the_tool_events_once,
    decisions_are_event_sourced_and_conditions_evaluate,
    workflow_tools_pause_and_resume_the_callers_run_as_operator_controls,
    node_retry_reruns_a_failed_node_and_observability_traces_the_failure,
    connector_and_contract_tools_agree_with_the_recorded_routing,
    model_tools_read_the_registry_and_never_show_a_secret,
    workflow_cancel_with_force_ends_the_callers_run,
);
