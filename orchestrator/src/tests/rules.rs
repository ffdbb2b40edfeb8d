//! One test per engine rule, each a real run with the in-process executor, on PostgreSQL and on
//! SQLite: every test is a function of the [`Backend`], instantiated for both by `on_both!` at
//! the end of the file (`rules::postgres::NAME`, `rules::sqlite::NAME`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use runledger_contracts::events::{Control, DomainEvent, NodeRunStatus};
use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::testing::{Backend, TestBackend};
use runledger_ledger::{EventStore, LedgerStore};
use serde_json::{Value, json};

use super::check_invariants;
use crate::DecideError;
use crate::decide::{ControlAction, StartRun};
use crate::engine::{
    Engine, EngineConfig, EngineError, FlowchartSource, NoFlowcharts, RunSummary, apply_control,
};
use crate::executor::{InProcessPool, Providers};
use crate::provider::ScriptedProvider;
use crate::state::RunStatus;

struct Harness {
    ledger: TestBackend,
    engine: Engine<LedgerStore>,
}

fn config() -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

async fn engine_on(
    ledger: &TestBackend,
    flowcharts: Arc<dyn FlowchartSource>,
) -> Engine<LedgerStore> {
    let store = ledger.second_store().await.unwrap();
    let pool = InProcessPool::new(Providers::scripted(ScriptedProvider::new()), 64);
    Engine::new(store, Arc::new(pool), flowcharts, config())
}

async fn harness(backend: Backend) -> Harness {
    let ledger = TestBackend::new(backend).await.unwrap();
    let engine = engine_on(&ledger, Arc::new(NoFlowcharts)).await;
    Harness { ledger, engine }
}

fn flowchart(yaml: &str) -> Arc<Flowchart> {
    Arc::new(load(yaml, SourceFormat::Yaml).unwrap_or_else(|e| panic!("{e:?}")))
}

fn example(name: &str) -> Arc<Flowchart> {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    flowchart(&std::fs::read_to_string(path).unwrap())
}

fn control(reason: &str) -> Control {
    Control {
        actor: "test".into(),
        reason: reason.into(),
    }
}

impl Harness {
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
    ) -> (RunSummary, Vec<DomainEvent>) {
        let run = self.start(flowchart, inputs).await;
        let summary = tokio::time::timeout(Duration::from_secs(30), self.engine.wait(run))
            .await
            .unwrap()
            .unwrap();
        (summary, self.events(run).await)
    }

    async fn wait(&self, run: RunId) -> (RunSummary, Vec<DomainEvent>) {
        let summary = tokio::time::timeout(Duration::from_secs(30), self.engine.wait(run))
            .await
            .unwrap()
            .unwrap();
        (summary, self.events(run).await)
    }

    async fn events(&self, run: RunId) -> Vec<DomainEvent> {
        let recorded = self
            .ledger
            .store
            .read_stream(&StreamId::for_run(run), 1, usize::MAX)
            .await
            .unwrap();
        recorded.iter().map(|e| e.decode().unwrap()).collect()
    }

    async fn version(&self, run: RunId) -> u64 {
        self.ledger
            .store
            .stream_head(&StreamId::for_run(run))
            .await
            .unwrap()
            .map_or(0, |h| h.version)
    }

    async fn control(
        &self,
        run: RunId,
        action: ControlAction,
    ) -> Result<crate::engine::ControlOutcome, EngineError> {
        self.engine
            .control(run, action, control("test"), RequestId::generate())
            .await
    }

    /// Waits until the run's events satisfy `done`.
    async fn until(&self, run: RunId, done: impl Fn(&[DomainEvent]) -> bool) -> Vec<DomainEvent> {
        for _ in 0..600 {
            let events = self.events(run).await;
            if done(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached: {:#?}", self.events(run).await);
    }

    async fn finish(self) {
        self.engine.store().close().await;
        self.ledger.finish().await.unwrap();
    }
}

/// Node runs per node id, in order: (node run id, status).
fn node_runs(events: &[DomainEvent]) -> HashMap<String, Vec<NodeRunStatus>> {
    let state = check_invariants(events);
    let mut runs: HashMap<String, Vec<NodeRunStatus>> = HashMap::new();
    for nr in &state.node_runs {
        runs.entry(state.node_id(nr.node).to_owned())
            .or_default()
            .extend(nr.status());
    }
    runs
}

fn scheduled<'a>(
    events: &'a [DomainEvent],
    node: &str,
) -> Vec<&'a runledger_contracts::events::NodeScheduled> {
    events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeScheduled(s) if s.node_id == node => Some(s),
            _ => None,
        })
        .collect()
}

fn position(events: &[DomainEvent], pred: impl Fn(&DomainEvent) -> bool) -> usize {
    events.iter().position(pred).expect("event present")
}

fn failure_code(events: &[DomainEvent]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            DomainEvent::RunFailed(f) => Some(f.error.code.clone()),
            _ => None,
        })
        .expect("RunFailed")
}

const OK: &str = "scripted: [{ output: { ok: true } }]";

async fn examples_run_to_completion(backend: Backend) {
    let h = harness(backend).await;
    for (name, inputs) in [
        ("review-loop.yaml", json!({ "topic": "owls" })),
        ("fan-in.yaml", json!({ "topic": "owls" })),
        ("fallback-route.yaml", json!({ "ticket": "help" })),
    ] {
        let (summary, events) = h.run(example(name), inputs).await;
        assert_eq!(summary.status, RunStatus::Completed, "{name}: {summary:?}");
        check_invariants(&events);
    }
    h.finish().await;
}

async fn fan_in_all_waits_for_every_parent(backend: Backend) {
    let h = harness(backend).await;
    let yaml = format!(
        "name: all\nnodes:\n  - {{ id: start, type: start }}\n  - {{ id: a, type: task, model: scripted, {OK} }}\n  - {{ id: b, type: task, model: scripted, scripted: [{{ delay_ms: 40, output: 2 }}] }}\n  - {{ id: join, type: task, model: scripted, {OK} }}\n  - {{ id: end, type: end }}\nconnectors:\n  - {{ id: sa, from: start, to: a }}\n  - {{ id: sb, from: start, to: b }}\n  - {{ id: aj, from: a, to: join }}\n  - {{ id: bj, from: b, to: join }}\n  - {{ id: je, from: join, to: end }}\n"
    );
    let (summary, events) = h.run(flowchart(&yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let join = scheduled(&events, "join");
    assert_eq!(join.len(), 1);
    let connectors: Vec<&str> = join[0]
        .consumed_tokens
        .iter()
        .map(|t| t.connector_id.as_str())
        .collect();
    assert_eq!(connectors, ["aj", "bj"]);
    let b_done = position(
        &events,
        |e| matches!(e, DomainEvent::NodeSucceeded(s) if s.node_id == "b"),
    );
    let join_at = position(
        &events,
        |e| matches!(e, DomainEvent::NodeScheduled(s) if s.node_id == "join"),
    );
    assert!(b_done < join_at);
    h.finish().await;
}

async fn fan_in_any_runs_on_the_first_token(backend: Backend) {
    let h = harness(backend).await;
    let yaml = format!(
        "name: any\nnodes:\n  - {{ id: start, type: start }}\n  - {{ id: a, type: task, model: scripted, {OK} }}\n  - {{ id: b, type: task, model: scripted, scripted: [{{ delay_ms: 500, output: 2 }}] }}\n  - {{ id: join, type: task, model: scripted, fan_in: any, {OK} }}\n  - {{ id: end, type: end }}\nconnectors:\n  - {{ id: sa, from: start, to: a }}\n  - {{ id: sb, from: start, to: b }}\n  - {{ id: aj, from: a, to: join }}\n  - {{ id: bj, from: b, to: join }}\n  - {{ id: je, from: join, to: end }}\n"
    );
    let (summary, events) = h.run(flowchart(&yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let join = scheduled(&events, "join");
    assert_eq!(join.len(), 1);
    assert_eq!(join[0].consumed_tokens.len(), 1);
    assert_eq!(join[0].consumed_tokens[0].connector_id, "aj");
    // b was still running when the end node completed the run.
    assert_eq!(node_runs(&events)["b"], [NodeRunStatus::Canceled]);
    h.finish().await;
}

async fn fan_in_custom_n_consumes_the_earliest_tokens_and_dotted_context_is_passed(
    backend: Backend,
) {
    let h = harness(backend).await;
    let (summary, events) = h
        .run(example("fan-in.yaml"), json!({ "topic": "owls" }))
        .await;
    assert_eq!(summary.status, RunStatus::Completed);
    let merge = scheduled(&events, "merge");
    assert_eq!(merge.len(), 1);
    let mut connectors: Vec<&str> = merge[0]
        .consumed_tokens
        .iter()
        .map(|t| t.connector_id.as_str())
        .collect();
    connectors.sort();
    assert_eq!(
        connectors,
        ["a_merge", "b_merge"],
        "the slow angle_c is not waited for"
    );
    h.finish().await;

    // Dotted context: `publish` sees angle_c's output when angle_c has finished first.
    let h = harness(backend).await;
    let yaml = "name: dotted\nnodes:\n  - { id: start, type: start }\n  - { id: c, type: task, model: scripted, scripted: [{ output: { text: legal } }] }\n  - { id: slow, type: task, model: scripted, scripted: [{ delay_ms: 50, output: 1 }] }\n  - { id: publish, type: task, model: scripted, prompt: 'notes: {{ context.c.output.text }}', scripted: [{ output: 2 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: s1, from: start, to: c }\n  - { id: s2, from: start, to: slow }\n  - { id: sp, from: slow, to: publish }\n  - { id: ctx, from: c, to: publish, mode: dotted }\n  - { id: pe, from: publish, to: end }\n";
    let (summary, events) = h.run(flowchart(yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let state = check_invariants(&events);
    let publish = state
        .node_runs
        .iter()
        .position(|nr| state.node_id(nr.node) == "publish")
        .unwrap();
    let context = state.input_context(publish);
    assert_eq!(context["context"]["c"]["output"]["text"], "legal");
    assert_eq!(context["latest_upstream"]["node_id"], "slow");
    assert_eq!(context["upstream"]["slow"]["status"], "succeeded");
    h.finish().await;
}

const DECISION: &str = "name: decide\nlimits: { max_node_executions: 20 }\nnodes:\n  - { id: start, type: start }\n  - { id: score, type: task, model: scripted, scripted: [{ output: SCORE }] }\n  - id: gate\n    type: decision\n    conditions:\n      - { connector: high, when: 'latest_upstream.output.v >= 5' }\n      - { connector: even, when: 'latest_upstream.output.v == 6' }\n    NOMATCH\n  - { id: x, type: task, model: scripted, scripted: [{ output: x }] }\n  - { id: y, type: task, model: scripted, scripted: [{ output: y }] }\n  - { id: z, type: task, model: scripted, scripted: [{ output: z }] }\n  - { id: end, type: end, fan_in: any }\nconnectors:\n  - { id: c1, from: start, to: score }\n  - { id: c2, from: score, to: gate }\n  - { id: high, from: gate, to: x }\n  - { id: even, from: gate, to: y }\n  - { id: other, from: gate, to: z }\n  - { id: xe, from: x, to: end }\n  - { id: ye, from: y, to: end }\n  - { id: ze, from: z, to: end }\n";

fn decision(score: &str, no_match: &str) -> Arc<Flowchart> {
    flowchart(
        &DECISION
            .replace("SCORE", score)
            .replace("NOMATCH", no_match),
    )
}

fn routing(events: &[DomainEvent]) -> &runledger_contracts::events::RoutingDecided {
    events
        .iter()
        .find_map(|e| match e {
            DomainEvent::RoutingDecided(r) => Some(r),
            _ => None,
        })
        .expect("RoutingDecided")
}

async fn decision_fires_every_matching_connector(backend: Backend) {
    let h = harness(backend).await;
    let (summary, events) = h.run(decision("{ v: 6 }", ""), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let r = routing(&events);
    assert_eq!(r.matched_connectors, ["high", "even"]);
    assert!(!r.no_match && r.fallback_connector.is_none());
    assert_eq!(r.evaluations.len(), 2);
    assert!(
        r.evaluations[0].reason.contains("6"),
        "{}",
        r.evaluations[0].reason
    );
    assert_eq!(scheduled(&events, "x").len(), 1);
    assert_eq!(scheduled(&events, "y").len(), 1);
    assert!(scheduled(&events, "z").is_empty());
    h.finish().await;
}

async fn decision_without_match_takes_the_fallback(backend: Backend) {
    let h = harness(backend).await;
    let (summary, events) = h
        .run(
            decision(
                "{ v: 1 }",
                "no_match: { policy: fallback, connector: other }",
            ),
            json!({}),
        )
        .await;
    assert_eq!(summary.status, RunStatus::Completed);
    let r = routing(&events);
    assert!(r.no_match);
    assert_eq!(r.fallback_connector.as_deref(), Some("other"));
    assert_eq!(r.matched_connectors, ["other"]);
    assert_eq!(scheduled(&events, "z").len(), 1);
    h.finish().await;

    let h = harness(backend).await;
    let (summary, events) = h
        .run(example("fallback-route.yaml"), json!({ "ticket": "?" }))
        .await;
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(
        routing(&events).fallback_connector.as_deref(),
        Some("to_triage")
    );
    h.finish().await;
}

async fn decision_without_match_or_fallback_fails_the_run(backend: Backend) {
    let h = harness(backend).await;
    let (summary, events) = h
        .run(
            decision("{ v: 1 }", "no_match: { policy: fail }"),
            json!({}),
        )
        .await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(failure_code(&events), "no_route_matched");
    assert_eq!(node_runs(&events)["gate"], [NodeRunStatus::Failed]);
    assert!(routing(&events).no_match);
    h.finish().await;
}

async fn route_key_fires_its_connector_and_an_unknown_one_fails_fast(backend: Backend) {
    let h = harness(backend).await;
    let (summary, events) = h
        .run(decision("{ v: 1, route_key: even }", ""), json!({}))
        .await;
    assert_eq!(summary.status, RunStatus::Completed);
    let r = routing(&events);
    assert!(r.route_key_matched);
    assert_eq!(r.matched_connectors, ["even"]);
    h.finish().await;

    let h = harness(backend).await;
    let (summary, events) = h
        .run(decision("{ v: 9, route_key: nowhere }", ""), json!({}))
        .await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(failure_code(&events), "unknown_route");
    let r = routing(&events);
    assert_eq!(r.route_key.as_deref(), Some("nowhere"));
    assert!(!r.route_key_matched && r.matched_connectors.is_empty());
    assert!(
        scheduled(&events, "x").is_empty(),
        "nothing fires when the route is invalid"
    );
    h.finish().await;
}

async fn a_loop_stops_at_max_node_executions(backend: Backend) {
    let h = harness(backend).await;
    let yaml = "name: forever\nlimits: { max_node_executions: 7 }\nnodes:\n  - { id: start, type: start }\n  - { id: draft, type: task, model: scripted, scripted: [{ output: { score: 1 } }] }\n  - id: gate\n    type: decision\n    conditions: [{ connector: approve, when: 'latest_upstream.output.score >= 8' }]\n    no_match: { policy: fallback, connector: revise }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: draft }\n  - { id: c2, from: draft, to: gate }\n  - { id: approve, from: gate, to: end }\n  - { id: revise, from: gate, to: draft }\n";
    let (summary, events) = h.run(flowchart(yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(failure_code(&events), "max_node_executions_exceeded");
    assert_eq!(summary.node_runs, 7);
    let drafts = scheduled(&events, "draft");
    assert_eq!(
        drafts.iter().map(|d| d.execution_index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    h.finish().await;
}

async fn a_timeout_is_retried_and_then_succeeds(backend: Backend) {
    let h = harness(backend).await;
    let yaml = "name: slow\nnodes:\n  - { id: start, type: start }\n  - id: t\n    type: task\n    model: scripted\n    timeout_s: 1\n    retry: { max_attempts: 2, backoff_ms: 20 }\n    scripted: [{ delay_ms: 2500, output: late }, { output: on time }]\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n";
    let (summary, events) = h.run(flowchart(yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(summary.output, Some(json!("on time")));
    assert_eq!(
        node_runs(&events)["t"],
        [NodeRunStatus::TimedOut, NodeRunStatus::Succeeded]
    );
    let retry = events.iter().find_map(|e| match e {
        DomainEvent::NodeRetryScheduled(r) => Some(r),
        _ => None,
    });
    assert_eq!(retry.map(|r| (r.next_attempt, r.backoff_ms)), Some((2, 20)));
    let attempts: Vec<u32> = scheduled(&events, "t").iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [1, 2]);
    // The late answer of attempt 1 arrives after the run ended and is recorded as ignored.
    let run = match &events[0] {
        DomainEvent::RunStarted(s) => s.run_id,
        _ => unreachable!(),
    };
    let events = h
        .until(run, |e| {
            e.iter()
                .any(|x| matches!(x, DomainEvent::NodeResultIgnored(_)))
        })
        .await;
    check_invariants(&events);
    h.finish().await;
}

async fn retries_are_exhausted_then_the_run_fails(backend: Backend) {
    let h = harness(backend).await;
    let yaml = "name: flaky\nnodes:\n  - { id: start, type: start }\n  - id: t\n    type: task\n    model: scripted\n    retry: { max_attempts: 3, backoff_ms: 5, backoff_multiplier: 3.0 }\n    scripted: [{ error: { code: provider_unavailable, message: '503', retryable: true } }]\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n";
    let (summary, events) = h.run(flowchart(yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(node_runs(&events)["t"], [NodeRunStatus::Failed; 3]);
    let backoffs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeRetryScheduled(r) => Some(r.backoff_ms),
            _ => None,
        })
        .collect();
    assert_eq!(backoffs, [5, 15]);
    let error = summary.error.unwrap();
    assert_eq!(error.code, "provider_unavailable");
    assert!(
        error.message.contains("after 3 attempts"),
        "{}",
        error.message
    );
    h.finish().await;

    // A non-retryable error is not retried.
    let h = harness(backend).await;
    let (summary, events) = h
        .run(
            flowchart(&yaml.replace("retryable: true", "retryable: false")),
            json!({}),
        )
        .await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(node_runs(&events)["t"], [NodeRunStatus::Failed]);
    h.finish().await;
}

async fn max_runtime_and_max_parallel_nodes_are_enforced(backend: Backend) {
    let h = harness(backend).await;
    let yaml = "name: long\nlimits: { max_runtime_s: 1 }\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ delay_ms: 3000, output: 1 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n";
    let (summary, events) = h.run(flowchart(yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(failure_code(&events), "max_runtime_exceeded");
    assert_eq!(node_runs(&events)["t"], [NodeRunStatus::Canceled]);
    h.finish().await;

    let h = harness(backend).await;
    let mut yaml = String::from(
        "name: wide\nlimits: { max_parallel_nodes: 2 }\nnodes:\n  - { id: start, type: start }\n  - { id: join, type: task, model: scripted, scripted: [{ output: 1 }] }\n  - { id: end, type: end }\n",
    );
    let mut connectors = String::from("connectors:\n  - { id: je, from: join, to: end }\n");
    for i in 0..5 {
        yaml += &format!(
            "  - {{ id: w{i}, type: task, model: scripted, scripted: [{{ delay_ms: 30, output: {i} }}] }}\n"
        );
        connectors += &format!(
            "  - {{ id: s{i}, from: start, to: w{i} }}\n  - {{ id: j{i}, from: w{i}, to: join }}\n"
        );
    }
    let (summary, events) = h.run(flowchart(&(yaml + &connectors)), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let (mut active, mut peak) = (0i32, 0i32);
    for e in &events {
        match e {
            DomainEvent::NodeStarted(_) => active += 1,
            DomainEvent::NodeSucceeded(s) if s.node_id.starts_with('w') || s.node_id == "join" => {
                active -= 1
            }
            _ => {}
        }
        peak = peak.max(active);
    }
    assert_eq!(peak, 2, "at most two work node runs at once");
    h.finish().await;
}

fn chain_with_slow_middle(delay_ms: u64) -> Arc<Flowchart> {
    flowchart(&format!(
        "name: chain\nnodes:\n  - {{ id: start, type: start }}\n  - {{ id: a, type: task, model: scripted, scripted: [{{ delay_ms: {delay_ms}, output: a }}] }}\n  - {{ id: b, type: task, model: scripted, {OK} }}\n  - {{ id: end, type: end }}\nconnectors:\n  - {{ id: c1, from: start, to: a }}\n  - {{ id: c2, from: a, to: b }}\n  - {{ id: c3, from: b, to: end }}\n"
    ))
}

async fn pause_holds_new_work_until_resume(backend: Backend) {
    let h = harness(backend).await;
    let run = h.start(chain_with_slow_middle(200), json!({})).await;
    h.control(run, ControlAction::Pause).await.unwrap();
    // `a` finishes while paused; `b` must not be scheduled.
    let events = h
        .until(run, |e| {
            e.iter()
                .any(|x| matches!(x, DomainEvent::NodeSucceeded(s) if s.node_id == "a"))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        scheduled(&h.events(run).await, "b").is_empty(),
        "{events:#?}"
    );
    let err = h.control(run, ControlAction::Pause).await.unwrap_err();
    assert_eq!(err.code(), "run_not_running");
    h.control(run, ControlAction::Resume).await.unwrap();
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let paused = position(&events, |e| matches!(e, DomainEvent::RunPaused(_)));
    let resumed = position(&events, |e| matches!(e, DomainEvent::RunResumed(_)));
    assert!(
        !events[paused..resumed]
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeScheduled(_)))
    );
    h.finish().await;
}

async fn graceful_cancel_lets_running_nodes_finish(backend: Backend) {
    let h = harness(backend).await;
    let run = h.start(chain_with_slow_middle(200), json!({})).await;
    h.control(run, ControlAction::Cancel { force: false })
        .await
        .unwrap();
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Canceled);
    let runs = node_runs(&events);
    assert_eq!(runs["a"], [NodeRunStatus::Succeeded]);
    assert!(
        !runs.contains_key("b"),
        "nothing new after the cancel request"
    );
    h.finish().await;
}

async fn forced_cancel_cancels_running_nodes_and_ignores_late_results(backend: Backend) {
    let h = harness(backend).await;
    let run = h.start(chain_with_slow_middle(200), json!({})).await;
    h.control(run, ControlAction::Cancel { force: true })
        .await
        .unwrap();
    let (summary, _) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Canceled);
    let events = h
        .until(run, |e| {
            e.iter()
                .any(|x| matches!(x, DomainEvent::NodeResultIgnored(_)))
        })
        .await;
    assert_eq!(node_runs(&events)["a"], [NodeRunStatus::Canceled]);
    h.finish().await;
}

fn fails_first(node_b: &str) -> Arc<Flowchart> {
    flowchart(&format!(
        "name: fails\nnodes:\n  - {{ id: start, type: start }}\n  - {{ id: a, type: task, model: scripted, scripted: [{{ output: {{ v: a1 }} }}, {{ output: {{ v: a2 }} }}] }}\n  - {{ id: b, type: task, model: scripted, scripted: {node_b} }}\n  - {{ id: end, type: end }}\nconnectors:\n  - {{ id: c1, from: start, to: a }}\n  - {{ id: c2, from: a, to: b }}\n  - {{ id: c3, from: b, to: end }}\n"
    ))
}

const BROKEN_THEN_OK: &str =
    "[{ error: { code: bad, message: broken } }, { output: { v: b2 } }, { output: { v: b3 } }]";

async fn retry_control_reruns_a_failed_node_with_its_inputs(backend: Backend) {
    let h = harness(backend).await;
    let (summary, events) = h.run(fails_first(BROKEN_THEN_OK), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    let run = summary.run_id;
    let failed_hash = scheduled(&events, "b")[0].input_context_hash;
    h.control(run, ControlAction::RetryNode { node: "b".into() })
        .await
        .unwrap();
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(summary.output, Some(json!({ "v": "b2" })));
    let runs = node_runs(&events);
    assert_eq!(
        runs["a"],
        [NodeRunStatus::Succeeded],
        "upstream is not re-executed"
    );
    assert_eq!(runs["b"], [NodeRunStatus::Failed, NodeRunStatus::Succeeded]);
    let b = scheduled(&events, "b");
    assert_eq!(b[1].input_context_hash, failed_hash, "same recorded inputs");
    assert!(b[1].retry_of.is_some());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeRetryScheduled(r) if r.control.is_some()))
    );
    h.finish().await;
}

async fn skip_control_supplies_the_output_and_downstream_continues(backend: Backend) {
    let h = harness(backend).await;
    let (summary, _) = h
        .run(
            fails_first("[{ error: { code: bad, message: broken } }]"),
            json!({}),
        )
        .await;
    assert_eq!(summary.status, RunStatus::Failed);
    let run = summary.run_id;
    h.control(
        run,
        ControlAction::SkipNode {
            node: "b".into(),
            output: json!({ "v": "by hand" }),
        },
    )
    .await
    .unwrap();
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(summary.output, Some(json!({ "v": "by hand" })));
    assert_eq!(
        node_runs(&events)["b"],
        [NodeRunStatus::Failed, NodeRunStatus::Skipped]
    );
    // A decision cannot be skipped.
    let err = h
        .control(
            run,
            ControlAction::SkipNode {
                node: "start".into(),
                output: json!(1),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "node_not_skippable");
    h.finish().await;
}

async fn rewind_reruns_the_node_and_everything_downstream_only(backend: Backend) {
    let h = harness(backend).await;
    let (summary, events) = h.run(fails_first(BROKEN_THEN_OK), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    let run = summary.run_id;
    let first_b = scheduled(&events, "b")[0].node_run_id;
    let outcome = h
        .control(run, ControlAction::RewindNode { node: "b".into() })
        .await
        .unwrap();
    assert!(!outcome.deduplicated);
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let runs = node_runs(&events);
    assert_eq!(runs["a"], [NodeRunStatus::Succeeded]);
    assert_eq!(runs["b"], [NodeRunStatus::Failed, NodeRunStatus::Succeeded]);
    let rewound = events.iter().find_map(|e| match e {
        DomainEvent::NodeRewound(r) => Some(r),
        _ => None,
    });
    assert_eq!(
        rewound.map(|r| r.invalidated_node_run_ids.clone()),
        Some(vec![first_b])
    );
    h.finish().await;

    // Rewinding a node upstream of finished work re-runs it all, keeping what is upstream.
    let h = harness(backend).await;
    let yaml = "name: three\nnodes:\n  - { id: start, type: start }\n  - { id: a, type: task, model: scripted, scripted: [{ output: a1 }, { output: a2 }] }\n  - { id: b, type: task, model: scripted, scripted: [{ output: b1 }, { output: b2 }] }\n  - { id: c, type: task, model: scripted, scripted: [{ error: { code: bad, message: once } }, { output: c2 }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: a }\n  - { id: c2, from: a, to: b }\n  - { id: c3, from: b, to: c }\n  - { id: c4, from: c, to: end }\n";
    let (summary, _) = h.run(flowchart(yaml), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    h.control(
        summary.run_id,
        ControlAction::RewindNode { node: "b".into() },
    )
    .await
    .unwrap();
    let (summary, events) = h.wait(summary.run_id).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let runs = node_runs(&events);
    assert_eq!(runs["a"].len(), 1, "upstream of the rewound node runs once");
    assert_eq!(runs["b"].len(), 2);
    assert_eq!(runs["c"].len(), 2);
    let state = check_invariants(&events);
    let invalidated: Vec<&str> = state
        .node_runs
        .iter()
        .filter(|nr| nr.invalidated)
        .map(|nr| state.node_id(nr.node))
        .collect();
    assert_eq!(invalidated, ["b", "c"]);
    h.finish().await;
}

async fn controls_that_do_not_apply_are_typed_errors_and_write_nothing(backend: Backend) {
    let h = harness(backend).await;
    let (summary, _) = h.run(chain_with_slow_middle(0), json!({})).await;
    assert_eq!(summary.status, RunStatus::Completed);
    let run = summary.run_id;
    let before = h.version(run).await;
    let cases = [
        (ControlAction::Pause, "run_not_running"),
        (ControlAction::Resume, "run_not_paused"),
        (ControlAction::Cancel { force: true }, "run_not_cancelable"),
        (
            ControlAction::RetryNode { node: "a".into() },
            "run_not_controllable",
        ),
        (
            ControlAction::RewindNode {
                node: "nope".into(),
            },
            "unknown_node",
        ),
        (
            ControlAction::SkipNode {
                node: "a".into(),
                output: json!(1),
            },
            "run_not_controllable",
        ),
    ];
    for (action, code) in cases {
        let name = action.name();
        let err = apply_control(
            &h.ledger.store,
            run,
            action,
            control("x"),
            RequestId::generate(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err}");
        assert!(
            matches!(err, EngineError::Decide(DecideError::NotApplicable { .. })),
            "{name}"
        );
    }
    assert_eq!(h.version(run).await, before, "nothing written");
    let missing = apply_control(
        &h.ledger.store,
        RunId::new_v7(),
        ControlAction::Pause,
        control("x"),
        RequestId::generate(),
    )
    .await;
    assert!(matches!(missing, Err(EngineError::RunNotFound(_))));

    // Retry of a node that did not fail is refused on a running run too.
    let run = h.start(chain_with_slow_middle(300), json!({})).await;
    let err = h
        .control(run, ControlAction::RetryNode { node: "a".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "node_busy");
    let err = h
        .control(run, ControlAction::RetryNode { node: "b".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "node_not_failed");
    h.wait(run).await;
    h.finish().await;
}

async fn a_control_applies_once_per_request_id(backend: Backend) {
    let h = harness(backend).await;
    let run = h.start(chain_with_slow_middle(300), json!({})).await;
    let request = RequestId::new("pause-1").unwrap();
    let first = apply_control(
        &h.ledger.store,
        run,
        ControlAction::Pause,
        control("x"),
        request.clone(),
    )
    .await
    .unwrap();
    assert!(!first.deduplicated);
    let again = apply_control(
        &h.ledger.store,
        run,
        ControlAction::Pause,
        control("x"),
        request.clone(),
    )
    .await
    .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.events.len(), first.events.len());
    let events = h.events(run).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, DomainEvent::RunPaused(_)))
            .count(),
        1
    );
    // The engine driving the run picks the CLI's pause up, and later its resume.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(scheduled(&h.events(run).await, "b").is_empty());
    apply_control(
        &h.ledger.store,
        run,
        ControlAction::Resume,
        control("x"),
        RequestId::generate(),
    )
    .await
    .unwrap();
    let (summary, _) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    h.finish().await;
}

struct Children(HashMap<String, Arc<Flowchart>>);

impl FlowchartSource for Children {
    fn resolve(
        &self,
        name: &str,
        _: Option<u32>,
    ) -> Result<(Arc<Flowchart>, Option<u32>), crate::engine::ResolveError> {
        self.0.get(name).cloned().map(|f| (f, None)).ok_or_else(|| {
            crate::engine::ResolveError::NotFound {
                name: name.to_owned(),
                what: "no flowchart of that name".into(),
            }
        })
    }
}

async fn a_subflow_node_runs_a_linked_child_run(backend: Backend) {
    let ledger = TestBackend::new(backend).await.unwrap();
    let child = flowchart(
        "name: child\nnodes:\n  - { id: start, type: start }\n  - { id: work, type: task, model: scripted, scripted: [{ output: { answer: 42 } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: work }\n  - { id: c2, from: work, to: end }\n",
    );
    let source = Children(HashMap::from([("child".to_owned(), child)]));
    let engine = engine_on(&ledger, Arc::new(source)).await;
    let h = Harness { ledger, engine };
    let parent = flowchart(
        "name: parent\nnodes:\n  - { id: start, type: start }\n  - { id: sub, type: flowchart, flowchart: child }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: sub }\n  - { id: c2, from: sub, to: end }\n",
    );
    let (summary, events) = h.run(parent, json!({ "q": 1 })).await;
    assert_eq!(summary.status, RunStatus::Completed, "{summary:?}");
    let link = events.iter().find_map(|e| match e {
        DomainEvent::ChildRunStarted(c) => Some(c.clone()),
        _ => None,
    });
    let link = link.expect("ChildRunStarted");
    let child_events = h.events(link.child_run_id).await;
    match &child_events[0] {
        DomainEvent::RunStarted(s) => {
            let parent = s.parent.as_ref().expect("the child names its parent");
            assert_eq!(
                (parent.run_id, parent.node_run_id),
                (summary.run_id, link.node_run_id)
            );
            assert_eq!(s.inputs, json!({ "q": 1 }));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        child_events
            .iter()
            .any(|e| matches!(e, DomainEvent::RunCompleted(_)))
    );
    assert_eq!(summary.output.unwrap()["output"], json!({ "answer": 42 }));
    check_invariants(&child_events);

    // A sub-flow that cannot be found fails its node with a clear code.
    let broken = flowchart(
        "name: parent2\nnodes:\n  - { id: start, type: start }\n  - { id: sub, type: flowchart, flowchart: missing }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: sub }\n  - { id: c2, from: sub, to: end }\n",
    );
    let (summary, events) = h.run(broken, json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(failure_code(&events), "subflow_unavailable");
    h.finish().await;
}

async fn two_engines_on_one_run_keep_the_stream_linear(backend: Backend) {
    let h = harness(backend).await;
    let second = engine_on(&h.ledger, Arc::new(NoFlowcharts)).await;
    let mut yaml = String::from(
        "name: long\nnodes:\n  - { id: start, type: start }\n  - { id: end, type: end }\n",
    );
    let mut connectors = String::from("connectors:\n");
    let mut prev = "start".to_owned();
    for i in 0..30 {
        yaml += &format!(
            "  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ delay_ms: 2, output: {i} }}] }}\n"
        );
        connectors += &format!("  - {{ id: c{i}, from: {prev}, to: t{i} }}\n");
        prev = format!("t{i}");
    }
    connectors += &format!("  - {{ id: last, from: {prev}, to: end }}\n");
    let run = h.start(flowchart(&(yaml + &connectors)), json!({})).await;
    second.ensure_driven(run).await.unwrap();
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    second.wait(run).await.unwrap();
    let runs = node_runs(&events);
    for i in 0..30 {
        let ok = runs[&format!("t{i}")]
            .iter()
            .filter(|s| **s == NodeRunStatus::Succeeded)
            .count();
        assert_eq!(ok, 1, "t{i}: {:?}", runs[&format!("t{i}")]);
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, DomainEvent::RunCompleted(_)))
            .count(),
        1
    );
    h.finish().await;
}

async fn bad_input_is_rejected_before_anything_is_written(backend: Backend) {
    let h = harness(backend).await;
    let start = StartRun {
        run_id: RunId::new_v7(),
        flowchart: chain_with_slow_middle(0),
        version: None,
        inputs: json!({ "big": 9_007_199_254_740_993u64 }),
        parent: None,
        actor: "test".into(),
    };
    let run = start.run_id;
    let err = h
        .engine
        .start(start, RequestId::generate(), CorrelationId::generate())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert_eq!(h.version(run).await, 0);
    h.finish().await;
}

/// The scripted model, counting its calls.
struct CountingModel {
    inner: ScriptedProvider,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl crate::provider::ModelProvider for CountingModel {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn complete<'a>(
        &'a self,
        request: crate::provider::ModelRequest<'a>,
    ) -> crate::provider::BoxFuture<
        'a,
        Result<crate::provider::ModelResponse, runledger_contracts::events::ErrorInfo>,
    > {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.complete(request)
    }
}

/// A harness whose scripted model answers from `script` (YAML, node id → responses) and counts
/// its calls.
async fn counting_harness(
    backend: Backend,
    script: &str,
) -> (Harness, Arc<std::sync::atomic::AtomicUsize>) {
    let ledger = TestBackend::new(backend).await.unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fixture = ScriptedProvider::parse_fixture(script).unwrap();
    let model = CountingModel {
        inner: ScriptedProvider::with_fixture(fixture),
        calls: calls.clone(),
    };
    let mut providers = Providers::scripted(ScriptedProvider::new());
    providers.insert(
        runledger_contracts::flowchart::SCRIPTED_MODEL,
        Arc::new(model),
    );
    let store = ledger.second_store().await.unwrap();
    let engine = Engine::new(
        store,
        Arc::new(InProcessPool::new(providers, 64)),
        Arc::new(NoFlowcharts),
        config(),
    );
    (Harness { ledger, engine }, calls)
}

fn node_failure<'a>(
    events: &'a [DomainEvent],
    node: &str,
) -> Vec<&'a runledger_contracts::events::ErrorInfo> {
    events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::NodeFailed(f) if f.node_id == node => Some(&f.error),
            _ => None,
        })
        .collect()
}

const RETRIED_TASK: &str = "name: nul\nnodes:\n  - { id: start, type: start }\n  - id: t\n    type: task\n    model: scripted\n    retry: { max_attempts: 3, backoff_ms: 5 }\n    scripted: [{ output: placeholder }]\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n";

async fn a_model_output_holding_u0000_fails_the_node_once_with_invalid_output(backend: Backend) {
    let (h, calls) = counting_harness(backend, "t: [{ output: { text: \"a\\0b\" } }]").await;
    let (summary, events) = h.run(flowchart(RETRIED_TASK), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(
        node_runs(&events)["t"],
        [NodeRunStatus::Failed],
        "invalid_output is not retried"
    );
    let errors = node_failure(&events, "t");
    assert_eq!(errors[0].code, "invalid_output");
    assert!(
        errors[0].message.contains("$.text") && errors[0].message.contains("U+0000"),
        "{}",
        errors[0].message
    );
    assert_eq!(
        summary.error.map(|e| e.code),
        Some("invalid_output".to_owned())
    );
    // Nothing calls the model again afterwards (no step retries, no driver restarts).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    h.finish().await;
}

async fn an_error_report_or_integer_the_ledger_cannot_store_fails_the_node_with_invalid_output(
    backend: Backend,
) {
    // A failure whose message holds U+0000, then an output with an integer beyond 2^53: each
    // ends its node run, and the retry policy (here: retryable provider errors) still applies.
    let script = "t: [{ error: { code: provider_unavailable, message: \"bad\\0byte\", retryable: true } }, { output: { n: 9007199254740993 } }]";
    let (h, calls) = counting_harness(backend, script).await;
    let (summary, events) = h.run(flowchart(RETRIED_TASK), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(
        node_runs(&events)["t"],
        [NodeRunStatus::Failed, NodeRunStatus::Failed]
    );
    let codes: Vec<&str> = node_failure(&events, "t")
        .iter()
        .map(|e| e.code.as_str())
        .collect();
    assert_eq!(codes, ["provider_unavailable", "invalid_output"]);
    assert!(
        node_failure(&events, "t")[0].message.contains('\u{FFFD}'),
        "the NUL is replaced, the rest kept"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    h.finish().await;
}

async fn unstorable_inputs_and_skip_outputs_are_refused_before_anything_is_written(
    backend: Backend,
) {
    let h = harness(backend).await;
    let start = StartRun {
        run_id: RunId::new_v7(),
        flowchart: chain_with_slow_middle(0),
        version: None,
        inputs: json!({ "topic": "nul\u{0}" }),
        parent: None,
        actor: "test".into(),
    };
    let run = start.run_id;
    let err = h
        .engine
        .start(start, RequestId::generate(), CorrelationId::generate())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert!(err.to_string().contains("$.topic"), "{err}");
    assert_eq!(h.version(run).await, 0);

    let (summary, _) = h
        .run(
            fails_first("[{ error: { code: bad, message: broken } }]"),
            json!({}),
        )
        .await;
    let run = summary.run_id;
    let before = h.version(run).await;
    let err = h
        .control(
            run,
            ControlAction::SkipNode {
                node: "b".into(),
                output: json!({ "v": "\u{0}" }),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert!(err.to_string().contains("U+0000"), "{err}");
    assert_eq!(h.version(run).await, before, "nothing written");
    h.finish().await;
}

async fn a_second_retry_while_the_first_is_pending_is_node_busy(backend: Backend) {
    let h = harness(backend).await;
    let (summary, _) = h.run(fails_first(BROKEN_THEN_OK), json!({})).await;
    assert_eq!(summary.status, RunStatus::Failed);
    let run = summary.run_id;
    // Straight on the ledger, as `runledger runs node RUN b retry` does with no engine driving
    // the run: the first retry is recorded and waits for an engine to run it.
    let retry = || ControlAction::RetryNode { node: "b".into() };
    apply_control(
        &h.ledger.store,
        run,
        retry(),
        control("x"),
        RequestId::generate(),
    )
    .await
    .unwrap();
    let before = h.version(run).await;
    let err = apply_control(
        &h.ledger.store,
        run,
        retry(),
        control("x"),
        RequestId::generate(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "node_busy", "{err}");
    assert_eq!(h.version(run).await, before, "nothing written");
    h.engine.ensure_driven(run).await.unwrap();
    let (summary, events) = h.wait(run).await;
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(
        node_runs(&events)["b"],
        [NodeRunStatus::Failed, NodeRunStatus::Succeeded]
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, DomainEvent::NodeRetryScheduled(_)))
            .count(),
        1
    );
    h.finish().await;
}

/// Each rule test once on PostgreSQL and once on SQLite.
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
    examples_run_to_completion,
    fan_in_all_waits_for_every_parent,
    fan_in_any_runs_on_the_first_token,
    fan_in_custom_n_consumes_the_earliest_tokens_and_dotted_context_is_passed,
    decision_fires_every_matching_connector,
    decision_without_match_takes_the_fallback,
    decision_without_match_or_fallback_fails_the_run,
    route_key_fires_its_connector_and_an_unknown_one_fails_fast,
    a_loop_stops_at_max_node_executions,
    a_timeout_is_retried_and_then_succeeds,
    retries_are_exhausted_then_the_run_fails,
    max_runtime_and_max_parallel_nodes_are_enforced,
    pause_holds_new_work_until_resume,
    graceful_cancel_lets_running_nodes_finish,
    forced_cancel_cancels_running_nodes_and_ignores_late_results,
    retry_control_reruns_a_failed_node_with_its_inputs,
    skip_control_supplies_the_output_and_downstream_continues,
    rewind_reruns_the_node_and_everything_downstream_only,
    controls_that_do_not_apply_are_typed_errors_and_write_nothing,
    a_control_applies_once_per_request_id,
    a_subflow_node_runs_a_linked_child_run,
    two_engines_on_one_run_keep_the_stream_linear,
    bad_input_is_rejected_before_anything_is_written,
    a_model_output_holding_u0000_fails_the_node_once_with_invalid_output,
    an_error_report_or_integer_the_ledger_cannot_store_fails_the_node_with_invalid_output,
    unstorable_inputs_and_skip_outputs_are_refused_before_anything_is_written,
    a_second_retry_while_the_first_is_pending_is_node_busy,
);
