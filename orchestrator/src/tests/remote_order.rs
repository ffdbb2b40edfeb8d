//! Reports of a node run dispatched over NATS arrive in any order: the outbox's dispatch report
//! and the executor's `started` and result travel separately. A result of the current attempt
//! that overtakes them is the node run's result, not a stale one (the scale-out scenario lost
//! such results and the nodes waited for their execution timeout).

use std::sync::Arc;

use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::{SourceFormat, load};
use runledger_contracts::ids::{ArtifactId, CorrelationId, NodeRunId, RequestId, RunId};
use runledger_contracts::time::Timestamp;
use serde_json::json;
use uuid::Uuid;

use crate::decide::{
    self, Cause, Command, Env, NodeOutcome, NodeResult, RemoteDispatch, Settings, StartRun,
};
use crate::state::{Phase, RunStatus};

struct FixedEnv(u128);

impl Env for FixedEnv {
    fn now(&self) -> Timestamp {
        Timestamp::parse("2026-01-01T00:00:00Z").unwrap()
    }
    fn node_run_id(&mut self) -> NodeRunId {
        self.0 += 1;
        NodeRunId(Uuid::from_u128(self.0))
    }
    fn artifact_id(&mut self) -> ArtifactId {
        self.0 += 1;
        ArtifactId(Uuid::from_u128(self.0))
    }
}

#[test]
fn a_result_that_overtakes_its_dispatch_report_is_recorded() {
    let flowchart = load(
        "name: remote\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ output: { v: 1 } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n",
        SourceFormat::Yaml,
    )
    .unwrap();
    let settings = Settings {
        executor: "nats".into(),
        remote: Some(RemoteDispatch {
            dispatch_timeout_ms: 60_000,
        }),
    };
    let cause = Cause {
        request_id: RequestId::new("req").unwrap(),
        correlation_id: CorrelationId::new("corr").unwrap(),
    };
    let mut env = FixedEnv(100);
    let start = StartRun {
        run_id: RunId(Uuid::from_u128(1)),
        flowchart: Arc::new(flowchart),
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "test".into(),
    };
    let (mut state, _) = decide::start_run(start, &mut env, &cause, &settings).unwrap();
    let t = state
        .node_runs
        .iter()
        .find(|nr| nr.is_active())
        .cloned()
        .unwrap();
    assert_eq!(
        t.phase,
        Phase::Scheduled,
        "remote work waits for its dispatch"
    );
    assert!(!t.dispatched);

    let result = NodeResult {
        node_run_id: t.id,
        attempt: t.attempt,
        outcome: NodeOutcome::Succeeded {
            output: json!({ "v": 1 }),
            warnings: vec![],
            fallback_used: false,
            agent: None,
        },
        tool_calls: vec![],
    };
    let events = decide::decide(
        &mut state,
        Command::RecordResult(result.clone()),
        &mut env,
        &cause,
        &settings,
    )
    .unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeSucceeded(s) if s.node_run_id == t.id)),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeResultIgnored(_)))
    );
    assert_eq!(state.status, RunStatus::Completed);

    // The overtaken reports, and a redelivered copy of the result, change nothing.
    let late = [
        Command::Dispatched {
            node_run_id: t.id,
            attempt: t.attempt,
            executor_class: "frontier".into(),
            message_id: "m1".into(),
            stream_sequence: Some(1),
        },
        Command::Started {
            node_run_id: t.id,
            attempt: t.attempt,
            executor: "exec-1".into(),
        },
        Command::RecordResult(result),
    ];
    for command in late {
        let events = decide::decide(&mut state, command, &mut env, &cause, &settings).unwrap();
        assert!(events.is_empty(), "{events:#?}");
    }
}
