//! The engine's rules, each run end to end on real PostgreSQL (`rules`), a property test of the
//! pure decider over random flowcharts (`property`), and the recorded ledgers (`fixtures`).

mod agent_tools;
mod contexts;
mod fixtures;
mod property;
mod refusals;
mod remote_order;
mod remote_start;
mod rules;
mod wakes;
mod workspace_holder;

use std::collections::HashMap;

use runledger_contracts::events::DomainEvent;
use runledger_contracts::ids::NodeRunId;

use crate::state::RunState;

/// The core invariant over a run's events: every node run has exactly one terminal event and
/// exactly one artifact, the artifact comes after the terminal event, and replaying the events
/// through `evolve` works. Returns the replayed state.
pub(crate) fn check_invariants(events: &[DomainEvent]) -> RunState {
    #[derive(Default, Debug)]
    struct Seen {
        terminal: u32,
        artifacts: u32,
        artifact_before_end: bool,
    }
    let mut seen: HashMap<NodeRunId, Seen> = HashMap::new();
    for event in events {
        match event {
            DomainEvent::NodeScheduled(e) => {
                assert!(
                    seen.insert(e.node_run_id, Seen::default()).is_none(),
                    "node run scheduled twice"
                );
            }
            DomainEvent::NodeSucceeded(e) => terminal(&mut seen, &e.node_run_id),
            DomainEvent::NodeFailed(e) => terminal(&mut seen, &e.node_run_id),
            DomainEvent::NodeTimedOut(e) => terminal(&mut seen, &e.node_run_id),
            DomainEvent::NodeSkipped(e) => terminal(&mut seen, &e.node_run_id),
            DomainEvent::NodeCanceled(e) => terminal(&mut seen, &e.node_run_id),
            DomainEvent::ArtifactPersisted(e) => {
                let s = seen
                    .get_mut(&e.node_run_id)
                    .expect("artifact of an unknown node run");
                if s.terminal == 0 {
                    s.artifact_before_end = true;
                }
                s.artifacts += 1;
            }
            _ => {}
        }
    }
    fn terminal(seen: &mut HashMap<NodeRunId, Seen>, id: &NodeRunId) {
        seen.get_mut(id)
            .expect("end of an unknown node run")
            .terminal += 1;
    }
    for (id, s) in &seen {
        assert_eq!(
            (s.terminal, s.artifacts, s.artifact_before_end),
            (1, 1, false),
            "node run {id}: {s:?}"
        );
    }
    RunState::replay(events).expect("the events replay")
}
