//! A run started by the pure decider as an engine with NATS dispatch starts it: work nodes stay
//! scheduled until their dispatch and start are reported. Shared by the decider tests of remote
//! report ordering and of the workspace holder.

use std::sync::Arc;

use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::{SourceFormat, load};
use runledger_contracts::ids::{ArtifactId, CorrelationId, NodeRunId, RequestId, RunId};
use runledger_contracts::time::Timestamp;
use serde_json::json;
use uuid::Uuid;

use crate::decide::{self, Cause, Env, RemoteDispatch, Settings, StartRun};
use crate::state::RunState;

/// A fixed clock and counting ids.
pub struct FixedEnv(pub u128);

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

pub fn remote_settings() -> Settings {
    Settings {
        executor: "nats".into(),
        remote: Some(RemoteDispatch {
            dispatch_timeout_ms: 60_000,
        }),
    }
}

pub fn cause() -> Cause {
    Cause {
        request_id: RequestId::new("req").unwrap(),
        correlation_id: CorrelationId::new("corr").unwrap(),
    }
}

/// Starts run `run_id` of the YAML flowchart `yaml` with empty inputs.
pub fn start_remote(yaml: &str, run_id: RunId, env: &mut FixedEnv) -> (RunState, Vec<DomainEvent>) {
    let start = StartRun {
        run_id,
        flowchart: Arc::new(load(yaml, SourceFormat::Yaml).unwrap()),
        version: None,
        inputs: json!({}),
        parent: None,
        actor: "test".into(),
    };
    decide::start_run(start, env, &cause(), &remote_settings()).unwrap()
}
