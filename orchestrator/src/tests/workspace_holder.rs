//! The run's workspace holder: the executor of the first node run with a successful workspace
//! call, passed to later workspace nodes of the run so another executor refuses them.

use runledger_contracts::digest::Digest;
use runledger_contracts::events::{AgentCall, DomainEvent, NodeStarted, ToolCalled, ToolOutcome};
use runledger_contracts::ids::{NodeRunId, RunId};
use uuid::Uuid;

use super::remote_start::{FixedEnv, start_remote};
use crate::decide::NodeOutcome;
use crate::executor::refuse_workspace_elsewhere;

fn call(run_id: RunId, node_run_id: NodeRunId, tool: &str, outcome: ToolOutcome) -> DomainEvent {
    DomainEvent::ToolCalled(ToolCalled {
        run_id,
        node_id: "a".into(),
        node_run_id,
        tool: tool.into(),
        operation: tool.into(),
        idempotency_key: format!("{node_run_id}:0:0:{tool}"),
        input_hash: Digest::of(b"{}"),
        outcome,
        attempts: Vec::new(),
        duration_ms: 1,
        provider: None,
        output: None,
        error: None,
        agent: Some(AgentCall {
            turn: 0,
            call_index: Some(0),
            arguments: None,
            side_effects: true,
            result_blob: None,
        }),
    })
}

#[test]
fn the_first_executor_with_a_workspace_call_holds_the_workspace() {
    // Two parallel task nodes with workspace tools and one without.
    let run_id = RunId(Uuid::from_u128(1));
    let (mut state, _) = start_remote(
        "name: ws\nnodes:\n  - { id: start, type: start }\n  - { id: a, type: task, model: scripted, tools: [workspace_write], scripted: [{ output: {} }] }\n  - { id: b, type: task, model: scripted, tools: ['git_*'], scripted: [{ output: {} }] }\n  - { id: c, type: task, model: scripted, tools: [memory_get], scripted: [{ output: {} }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: a }\n  - { id: c2, from: start, to: b }\n  - { id: c3, from: start, to: c }\n  - { id: c4, from: a, to: end }\n",
        run_id,
        &mut FixedEnv(100),
    );
    let index_of = |state: &crate::state::RunState, node: &str| {
        state
            .node_runs
            .iter()
            .position(|nr| state.flowchart.node_at(nr.node).unwrap().id == node)
            .unwrap()
    };
    let (a, b, c) = (
        index_of(&state, "a"),
        index_of(&state, "b"),
        index_of(&state, "c"),
    );
    let a_id = state.node_runs[a].id;
    let b_id = state.node_runs[b].id;
    assert_eq!(state.work(b).unwrap().workspace_holder, None);

    // b's failed git call makes no workspace; a's calls arrive before its NodeStarted.
    let started = |id: NodeRunId, node: &str, executor: &str| {
        DomainEvent::NodeStarted(NodeStarted {
            run_id,
            node_id: node.into(),
            node_run_id: id,
            attempt: 1,
            executor: executor.into(),
            deadline: None,
        })
    };
    state.evolve(&started(b_id, "b", "exec-b")).unwrap();
    state
        .evolve(&call(run_id, b_id, "git_status", ToolOutcome::Error))
        .unwrap();
    assert_eq!(state.workspace_holder, None);
    state
        .evolve(&call(run_id, a_id, "workspace_write", ToolOutcome::Ok))
        .unwrap();
    assert_eq!(state.workspace_holder, None, "not started yet");
    state.evolve(&started(a_id, "a", "exec-a")).unwrap();
    assert_eq!(state.workspace_holder.as_deref(), Some("exec-a"));
    // Later calls elsewhere do not move it.
    state
        .evolve(&call(run_id, b_id, "git_status", ToolOutcome::Ok))
        .unwrap();
    assert_eq!(state.workspace_holder.as_deref(), Some("exec-a"));

    let b_work = state.work(b).unwrap();
    assert_eq!(b_work.workspace_holder.as_deref(), Some("exec-a"));
    assert_eq!(
        state.work(c).unwrap().workspace_holder,
        None,
        "a node without workspace tools runs anywhere"
    );
    assert!(refuse_workspace_elsewhere(&b_work, "exec-a").is_none());
    let refusal = refuse_workspace_elsewhere(&b_work, "exec-b").unwrap();
    let NodeOutcome::Failed(error) = refusal.outcome else {
        panic!("expected a failure, got {:?}", refusal.outcome);
    };
    assert_eq!(error.code, "workspace_elsewhere");
    assert_eq!(error.details.unwrap()["holder"], "exec-a");
    assert!(refusal.tool_calls.is_empty());

    // The holder is part of the dispatch wire form, and an old message without it decodes.
    let wire = serde_json::to_value(&b_work).unwrap();
    assert_eq!(wire["workspace_holder"], "exec-a");
    let mut old = wire.clone();
    old.as_object_mut().unwrap().remove("workspace_holder");
    let decoded: crate::executor::NodeWork = serde_json::from_value(old).unwrap();
    assert_eq!(decoded.workspace_holder, None);
}
