//! The run's workspace holder: the executor of the first node run with a successful workspace
//! call, passed to later workspace nodes of the run so another executor refuses them.

use runledger_contracts::digest::Digest;
use runledger_contracts::events::{AgentCall, DomainEvent, ToolCalled, ToolOutcome};
use runledger_contracts::ids::{NodeRunId, RunId};
use uuid::Uuid;

use std::sync::Arc;

use runledger_contracts::flowchart::{SourceFormat, load};
use serde_json::json;

use super::remote_start::{FixedEnv, cause, remote_settings, start_remote};
use crate::decide::{self, Command, NodeOutcome, NodeResult, Settings, StartRun};
use crate::executor::refuse_workspace_elsewhere;
use crate::state::RunState;

fn call(
    run_id: RunId,
    (node_id, node_run_id): (&str, NodeRunId),
    tool: &str,
    outcome: ToolOutcome,
) -> DomainEvent {
    DomainEvent::ToolCalled(ToolCalled {
        run_id,
        node_id: node_id.into(),
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

const PARALLEL: &str = "name: ws\nnodes:\n  - { id: start, type: start }\n  - { id: a, type: task, model: scripted, tools: [workspace_write], scripted: [{ output: {} }] }\n  - { id: b, type: task, model: scripted, tools: ['git_*'], scripted: [{ output: {} }] }\n  - { id: c, type: task, model: scripted, tools: [memory_get], scripted: [{ output: {} }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: a }\n  - { id: c2, from: start, to: b }\n  - { id: c3, from: start, to: c }\n  - { id: c4, from: a, to: end }\n";

fn index_of(state: &RunState, node: &str) -> Option<usize> {
    state
        .node_runs
        .iter()
        .position(|nr| state.flowchart.node_at(nr.node).unwrap().id == node)
}

fn step(state: &mut RunState, command: Command) -> Vec<DomainEvent> {
    decide::decide(
        state,
        command,
        &mut FixedEnv(1_000),
        &cause(),
        &remote_settings(),
    )
    .unwrap()
}

fn started(node_run_id: NodeRunId, executor: &str) -> Command {
    Command::Started {
        node_run_id,
        attempt: 1,
        executor: executor.into(),
    }
}

fn record(event: DomainEvent) -> Command {
    let DomainEvent::ToolCalled(call) = event else {
        panic!("not a tool call: {event:?}");
    };
    Command::RecordToolCall(Box::new(call))
}

#[test]
fn the_first_executor_with_a_workspace_call_holds_the_workspace() {
    // Two parallel task nodes with workspace tools and one without.
    let run_id = RunId(Uuid::from_u128(1));
    let (mut state, _) = start_remote(PARALLEL, run_id, &mut FixedEnv(100));
    let a = index_of(&state, "a").unwrap();
    let c = index_of(&state, "c").unwrap();
    assert_eq!(
        index_of(&state, "b"),
        None,
        "over NATS, b waits until the run's workspace has a holder"
    );
    let a_id = state.node_runs[a].id;
    assert_eq!(state.work(a).unwrap().workspace_holder, None);

    // a's calls arrive before its NodeStarted; a failed one makes no workspace.
    step(
        &mut state,
        record(call(run_id, ("a", a_id), "git_status", ToolOutcome::Error)),
    );
    step(
        &mut state,
        record(call(
            run_id,
            ("a", a_id),
            "workspace_write",
            ToolOutcome::Ok,
        )),
    );
    assert_eq!(state.workspace_holder, None, "not started yet");
    assert_eq!(index_of(&state, "b"), None);
    let events = step(&mut state, started(a_id, "exec-a"));
    assert_eq!(state.workspace_holder.as_deref(), Some("exec-a"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeScheduled(s) if s.node_id == "b")),
        "b goes out in the step that made the holder known: {events:?}"
    );
    let b = index_of(&state, "b").unwrap();
    let b_id = state.node_runs[b].id;
    // Later calls elsewhere do not move it.
    step(&mut state, started(b_id, "exec-b"));
    step(
        &mut state,
        record(call(run_id, ("b", b_id), "git_status", ToolOutcome::Ok)),
    );
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

/// A workspace node waiting for a holder goes out when the first one ends without making a
/// workspace, and in-process runs (one executor) never wait.
#[test]
fn a_waiting_workspace_node_goes_out_when_the_first_ends_and_in_process_never_waits() {
    let run_id = RunId(Uuid::from_u128(2));
    let (mut state, _) = start_remote(PARALLEL, run_id, &mut FixedEnv(100));
    let a_id = state.node_runs[index_of(&state, "a").unwrap()].id;
    step(&mut state, started(a_id, "exec-a"));
    assert_eq!(index_of(&state, "b"), None);
    step(
        &mut state,
        Command::RecordResult(NodeResult {
            node_run_id: a_id,
            attempt: 1,
            outcome: NodeOutcome::Succeeded {
                output: json!({}),
                warnings: Vec::new(),
                fallback_used: false,
                agent: None,
            },
            tool_calls: Vec::new(),
        }),
    );
    assert_eq!(state.workspace_holder, None);
    assert!(index_of(&state, "b").is_some(), "b went out once a ended");

    let start = StartRun {
        run_id: RunId(Uuid::from_u128(3)),
        flowchart: Arc::new(load(PARALLEL, SourceFormat::Yaml).unwrap()),
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "test".into(),
    };
    let (local, _) =
        decide::start_run(start, &mut FixedEnv(100), &cause(), &Settings::default()).unwrap();
    assert!(index_of(&local, "a").is_some() && index_of(&local, "b").is_some());
}
