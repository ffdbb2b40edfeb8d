//! The replay `Env`: the recorded clock and ids of one step.

use std::collections::VecDeque;

use runledger_contracts::events::DomainEvent;
use runledger_contracts::ids::{ArtifactId, NodeRunId};
use runledger_contracts::time::Timestamp;

use crate::decide::Env;

/// Returns the step's recorded time (the engine records the clock reading it decided with as
/// `recorded_at`, see [`crate::decide::StepEnv`]) and hands out the ids the step recorded, in
/// the order it recorded them. A decider that asks for more ids than were recorded gets fresh
/// ones; the events carrying them then differ from the recording, which is the divergence.
pub struct ReplayEnv {
    now: Timestamp,
    node_run_ids: VecDeque<NodeRunId>,
    artifact_ids: VecDeque<ArtifactId>,
}

impl ReplayEnv {
    pub fn for_step(recorded_at: Timestamp, events: &[DomainEvent]) -> Self {
        let mut node_run_ids = VecDeque::new();
        let mut artifact_ids = VecDeque::new();
        for event in events {
            match event {
                DomainEvent::NodeScheduled(e) => node_run_ids.push_back(e.node_run_id),
                DomainEvent::ArtifactPersisted(e) => artifact_ids.push_back(e.artifact_id),
                _ => {}
            }
        }
        Self {
            now: recorded_at,
            node_run_ids,
            artifact_ids,
        }
    }
}

impl Env for ReplayEnv {
    fn now(&self) -> Timestamp {
        self.now
    }
    fn node_run_id(&mut self) -> NodeRunId {
        self.node_run_ids
            .pop_front()
            .unwrap_or_else(NodeRunId::new_v7)
    }
    fn artifact_id(&mut self) -> ArtifactId {
        self.artifact_ids
            .pop_front()
            .unwrap_or_else(ArtifactId::new_v7)
    }
}
