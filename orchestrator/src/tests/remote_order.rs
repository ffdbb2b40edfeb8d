//! Reports of a node run dispatched over NATS arrive in any order: the outbox's dispatch report
//! and the executor's `started` and result travel separately. A result of the current attempt
//! that overtakes them is the node run's result, not a stale one (the scale-out scenario lost
//! such results and the nodes waited for their execution timeout).

use runledger_contracts::events::DomainEvent;
use runledger_contracts::ids::RunId;
use serde_json::json;
use uuid::Uuid;

use super::remote_start::{FixedEnv, cause, remote_settings, start_remote};
use crate::decide::{self, Command, NodeOutcome, NodeResult};
use crate::state::{Phase, RunStatus};

#[test]
fn a_result_that_overtakes_its_dispatch_report_is_recorded() {
    let settings = remote_settings();
    let cause = cause();
    let mut env = FixedEnv(100);
    let (mut state, _) = start_remote(
        "name: remote\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, scripted: [{ output: { v: 1 } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: t }\n  - { id: c2, from: t, to: end }\n",
        RunId(Uuid::from_u128(1)),
        &mut env,
    );
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
