//! The input contexts a step keeps for the node runs it scheduled ([`decide::Decided`]) are
//! what the engine hands to executors instead of building them again: each must be exactly the
//! context [`RunState::input_context`] builds for that node run, and its hash the one
//! `NodeScheduled` recorded.

use std::sync::Arc;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::{SourceFormat, load};
use runledger_contracts::ids::RunId;
use serde_json::json;
use uuid::Uuid;

use super::remote_start::{FixedEnv, cause, remote_settings};
use crate::decide::{self, Command, NodeOutcome, NodeResult, Settings, StartRun};
use crate::state::RunState;

const FLOW: &str = "name: ctx\nnodes:\n  - { id: start, type: start }\n  - { id: a, type: task, model: scripted, scripted: [{ output: { v: 1 } }] }\n  - { id: b, type: task, model: scripted, scripted: [{ output: { v: 2 } }] }\n  - { id: c, type: task, model: scripted, scripted: [{ output: { v: 3 } }] }\n  - { id: end, type: end }\nconnectors:\n  - { id: c1, from: start, to: a }\n  - { id: c2, from: start, to: b }\n  - { id: c3, from: a, to: c }\n  - { id: c4, from: b, to: c }\n  - { id: c5, from: c, to: end }\n";

fn succeed(state: &RunState, node: &str, output: serde_json::Value) -> Command {
    let nr = state
        .node_runs
        .iter()
        .find(|nr| nr.is_active() && state.node_id(nr.node) == node)
        .unwrap();
    Command::RecordResult(NodeResult {
        node_run_id: nr.id,
        attempt: nr.attempt,
        outcome: NodeOutcome::Succeeded {
            output,
            warnings: vec![],
            fallback_used: false,
            agent: None,
        },
        tool_calls: vec![],
    })
}

/// Checks every kept context against the state and the recorded hash; returns how many.
fn check(state: &RunState, decided: &decide::Decided) -> usize {
    for (i, context) in &decided.contexts {
        assert_eq!(context, &state.input_context(*i), "node run {i}");
        let hash = Digest::of(&canonical::to_canonical_vec(context).unwrap());
        let recorded = decided.events.iter().find_map(|e| match e {
            DomainEvent::NodeScheduled(s) if s.node_run_id == state.node_runs[*i].id => {
                Some(s.input_context_hash)
            }
            _ => None,
        });
        assert_eq!(recorded, Some(hash), "node run {i}");
        assert_eq!(
            state.work_with(*i, Some(context.clone())),
            state.work(*i),
            "node run {i}"
        );
    }
    decided.contexts.len()
}

fn run(settings: &Settings) {
    let cause = cause();
    let mut env = FixedEnv(10);
    let start = StartRun {
        run_id: RunId(Uuid::from_u128(7)),
        flowchart: Arc::new(load(FLOW, SourceFormat::Yaml).unwrap()),
        version: None,
        inputs: json!({ "topic": "x" }),
        parent: None,
        actor: "test".into(),
    };
    let (mut state, _) = decide::start_run(start, &mut env, &cause, settings).unwrap();
    let mut kept = 0;
    // `a` ends: `c` waits for `b` (fan-in all), nothing is scheduled.
    let command = succeed(&state, "a", json!({ "v": 1 }));
    let decided = decide::decide_step(&mut state, command, &mut env, &cause, settings).unwrap();
    kept += check(&state, &decided);
    assert!(decided.contexts.is_empty());
    // `b` ends: `c` is scheduled with both upstream outputs in its context.
    let command = succeed(&state, "b", json!({ "v": 2 }));
    let decided = decide::decide_step(&mut state, command, &mut env, &cause, settings).unwrap();
    kept += check(&state, &decided);
    let [(c, context)] = decided.contexts.as_slice() else {
        panic!("one context kept, got {:?}", decided.contexts);
    };
    assert_eq!(state.node_id(state.node_runs[*c].node), "c");
    assert_eq!(context["upstream"]["a"]["output"], json!({ "v": 1 }));
    assert_eq!(context["upstream"]["b"]["output"], json!({ "v": 2 }));
    // `c` ends: only the end node, which no executor runs, is scheduled.
    let command = succeed(&state, "c", json!({ "v": 3 }));
    let decided = decide::decide_step(&mut state, command, &mut env, &cause, settings).unwrap();
    kept += check(&state, &decided);
    assert!(decided.contexts.is_empty());
    assert_eq!(kept, 1);
}

#[test]
fn kept_contexts_are_the_ones_work_would_build_in_process() {
    run(&Settings::default());
}

#[test]
fn kept_contexts_are_the_ones_work_would_build_for_remote_dispatch() {
    run(&remote_settings());
}
