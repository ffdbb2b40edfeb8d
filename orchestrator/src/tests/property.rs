//! Property test of the pure decider: random valid flowcharts, random scripted outcomes
//! (outputs, retryable and fatal errors, answers slower than the timeout), random operator
//! controls and stale results, driven by a simulated clock. Every run must end terminal, every
//! node run must have exactly one terminal event and one artifact, and replaying the events
//! through `evolve` must give exactly the decider's state.

use std::sync::Arc;

use runledger_contracts::events::Control;
use runledger_contracts::flowchart::{SourceFormat, load};
use runledger_contracts::ids::{ArtifactId, CorrelationId, NodeRunId, RequestId, RunId};
use runledger_contracts::time::Timestamp;
use serde_json::{Value, json};
use uuid::Uuid;

use super::check_invariants;
use crate::decide::{
    self, Cause, Command, ControlAction, Env, NodeOutcome, NodeResult, Settings, StartRun, add_ms,
};
use crate::state::{Phase, RunState, RunStatus};

/// splitmix64: small, seedable, good enough to pick shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct SimEnv {
    now: Timestamp,
    ids: u128,
}

impl Env for SimEnv {
    fn now(&self) -> Timestamp {
        self.now
    }
    fn node_run_id(&mut self) -> NodeRunId {
        self.ids += 1;
        NodeRunId(Uuid::from_u128(self.ids))
    }
    fn artifact_id(&mut self) -> ArtifactId {
        self.ids += 1;
        ArtifactId(Uuid::from_u128(self.ids))
    }
}

/// A random layered flowchart: start, 1-4 layers of tasks and decisions, end; optional loop,
/// dotted connectors, random fan-in, retries, timeouts and scripted answers.
fn random_flowchart(rng: &mut Rng) -> String {
    let layers: Vec<Vec<String>> = (0..1 + rng.below(4))
        .enumerate()
        .map(|(l, _)| (0..1 + rng.below(3)).map(|i| format!("n{l}_{i}")).collect())
        .collect();
    let mut nodes = vec!["  - { id: start, type: start }".to_owned()];
    let mut connectors: Vec<String> = Vec::new();
    let mut next_connector = 0;
    let mut connect = |from: &str, to: &str, mode: &str, connectors: &mut Vec<String>| {
        next_connector += 1;
        let id = format!("k{next_connector}");
        connectors.push(format!("  - {{ id: {id}, from: {from}, to: {to}{mode} }}"));
        id
    };
    for first in &layers[0] {
        connect("start", first, "", &mut connectors);
    }
    for (l, layer) in layers.iter().enumerate() {
        let next: Vec<String> = layers
            .get(l + 1)
            .cloned()
            .unwrap_or_else(|| vec!["end".to_owned()]);
        let mut fed = vec![false; next.len()];
        for id in layer {
            let fan_in = match rng.below(4) {
                0 => "fan_in: any, ".to_owned(),
                1 => "fan_in: { custom: 1 }, ".to_owned(),
                _ => String::new(),
            };
            let is_decision = l + 1 < layers.len() && rng.chance(30);
            let targets: Vec<usize> = {
                let mut t: Vec<usize> = (0..next.len()).filter(|_| rng.chance(50)).collect();
                if t.is_empty() {
                    t.push(rng.below(next.len() as u64) as usize);
                }
                t
            };
            let mut outgoing = Vec::new();
            for &t in &targets {
                fed[t] = true;
                outgoing.push(connect(id, &next[t], "", &mut connectors));
            }
            if is_decision {
                let conditions: Vec<String> = outgoing
                    .iter()
                    .map(|c| {
                        format!(
                            "{{ connector: {c}, when: 'latest_upstream.output.v >= {}' }}",
                            rng.below(10)
                        )
                    })
                    .collect();
                let no_match = if rng.chance(50) {
                    format!("{{ policy: fallback, connector: {} }}", outgoing[0])
                } else {
                    "{ policy: fail }".to_owned()
                };
                nodes.push(format!("  - {{ id: {id}, type: decision, {fan_in}conditions: [{}], no_match: {no_match} }}", conditions.join(", ")));
            } else {
                let answers: Vec<String> = (0..1 + rng.below(3))
                    .map(|_| match rng.below(20) {
                        0..=13 => format!("{{ output: {{ v: {} }} }}", rng.below(10)),
                        14..=16 => {
                            "{ error: { code: flaky, message: try again, retryable: true } }"
                                .to_owned()
                        }
                        17 => "{ error: { code: fatal, message: no } }".to_owned(),
                        _ => "{ delay_ms: 5000, output: { v: 9 } }".to_owned(),
                    })
                    .collect();
                let retry = format!(
                    "{{ max_attempts: {}, backoff_ms: {} }}",
                    1 + rng.below(3),
                    rng.below(50)
                );
                nodes.push(format!(
                    "  - {{ id: {id}, type: task, {fan_in}model: scripted, timeout_s: 1, retry: {retry}, scripted: [{}] }}",
                    answers.join(", ")
                ));
            }
        }
        for (t, was_fed) in fed.iter().enumerate() {
            if !was_fed {
                let from = &layer[rng.below(layer.len() as u64) as usize];
                // Decisions route only through their conditions; feed from them anyway: an
                // unrouted connector is legal and simply never fires.
                connect(from, &next[t], "", &mut connectors);
            }
        }
    }
    if layers.len() > 1 && rng.chance(40) {
        let last = layers.last().map(|l| l[0].clone()).unwrap_or_default();
        connect(&last, &layers[0][0], "", &mut connectors);
    }
    if layers.len() > 1 && rng.chance(50) {
        let to = layers.last().map(|l| l[0].clone()).unwrap_or_default();
        connect(&layers[0][0], &to, ", mode: dotted", &mut connectors);
    }
    nodes.push("  - { id: end, type: end, fan_in: any }".to_owned());
    let parallel = match rng.below(3) {
        0 => ", max_parallel_nodes: 1",
        1 => ", max_parallel_nodes: 2",
        _ => "",
    };
    format!(
        "name: random\nlimits: {{ max_node_executions: 40{parallel} }}\nnodes:\n{}\nconnectors:\n{}\n",
        nodes.join("\n"),
        connectors.join("\n")
    )
}

/// What the scripted model answers for a node run: `None` when it is slower than the timeout.
fn answer(state: &RunState, index: usize) -> Option<NodeOutcome> {
    let nr = &state.node_runs[index];
    let node = state.flowchart.node_at(nr.node)?;
    let responses = node.scripted.as_deref()?;
    let response = responses.get((nr.ordinal as usize).min(responses.len() - 1))?;
    if response.delay_ms.unwrap_or(0) > 1000 {
        return None;
    }
    Some(match &response.error {
        Some(e) => NodeOutcome::Failed(runledger_contracts::events::ErrorInfo {
            code: e.code.clone(),
            message: e.message.clone(),
            retryable: e.retryable,
            details: None,
        }),
        None => NodeOutcome::Succeeded {
            output: response.output.clone().unwrap_or(Value::Null),
            warnings: vec![],
            fallback_used: false,
            agent: None,
        },
    })
}

fn random_control(rng: &mut Rng, state: &RunState) -> ControlAction {
    let nodes = state.flowchart.nodes();
    let node = nodes[rng.below(nodes.len() as u64) as usize].id.clone();
    match rng.below(7) {
        0 => ControlAction::Pause,
        1 => ControlAction::Resume,
        2 => ControlAction::Cancel {
            force: rng.chance(50),
        },
        3 | 4 => ControlAction::RetryNode { node },
        5 => ControlAction::SkipNode {
            node,
            output: json!({ "v": 7 }),
        },
        _ => ControlAction::RewindNode { node },
    }
}

/// Runs one random flowchart to its end. Returns whether it was valid.
fn simulate(seed: u64) -> bool {
    let mut rng = Rng(seed);
    let yaml = random_flowchart(&mut rng);
    let Ok(flowchart) = load(&yaml, SourceFormat::Yaml) else {
        return false;
    };
    let mut env = SimEnv {
        now: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
        ids: u128::from(seed) << 64,
    };
    let cause = Cause {
        request_id: RequestId::new("req").unwrap(),
        correlation_id: CorrelationId::new("corr").unwrap(),
    };
    let settings = Settings::default();
    let start = StartRun {
        run_id: RunId(Uuid::from_u128(u128::from(seed))),
        flowchart: Arc::new(flowchart),
        version: Some(1),
        inputs: json!({ "seed": seed }),
        parent: None,
        actor: "property".into(),
    };
    let (mut state, mut events) =
        decide::start_run(start, &mut env, &cause, &settings).expect("start");
    let control = Control {
        actor: "property".into(),
        reason: "random".into(),
    };
    let mut ended: Vec<(NodeRunId, u32)> = Vec::new();
    for _ in 0..3_000 {
        if state.status.is_terminal() {
            break;
        }
        let ready: Vec<usize> = state
            .active
            .iter()
            .copied()
            .filter(|&i| state.node_runs[i].phase == Phase::Running && answer(&state, i).is_some())
            .collect();
        let command = if rng.chance(4) {
            Command::Control {
                action: random_control(&mut rng, &state),
                control: control.clone(),
            }
        } else if !ended.is_empty() && rng.chance(3) {
            // A duplicate or late result: must be recorded as ignored and change nothing else.
            let (node_run_id, attempt) = ended[rng.below(ended.len() as u64) as usize];
            let outcome = NodeOutcome::Succeeded {
                output: json!({ "v": 1 }),
                warnings: vec![],
                fallback_used: false,
                agent: None,
            };
            Command::RecordResult(NodeResult {
                node_run_id,
                attempt,
                outcome,
                tool_calls: vec![],
            })
        } else if !ready.is_empty() {
            let i = ready[rng.below(ready.len() as u64) as usize];
            env.now = add_ms(env.now, rng.below(20));
            let nr = &state.node_runs[i];
            let outcome = answer(&state, i).expect("ready");
            Command::RecordResult(NodeResult {
                node_run_id: nr.id,
                attempt: nr.attempt,
                outcome,
                tool_calls: vec![],
            })
        } else if let Some(timer) = state.next_timer() {
            if timer.at > env.now {
                env.now = timer.at;
            }
            Command::Settle
        } else if state.status == RunStatus::Paused {
            Command::Control {
                action: ControlAction::Resume,
                control: control.clone(),
            }
        } else {
            panic!(
                "seed {seed}: the run is {} with nothing to do\n{yaml}",
                state.status.as_str()
            );
        };
        let is_control = matches!(command, Command::Control { .. });
        match decide::decide(&mut state, command, &mut env, &cause, &settings) {
            Ok(more) => {
                events.extend(more);
                // As the engine does: a control is followed by scheduling what it made possible.
                if is_control {
                    events.extend(
                        decide::decide(&mut state, Command::Settle, &mut env, &cause, &settings)
                            .expect("settle"),
                    );
                }
            }
            Err(decide::DecideError::NotApplicable { .. }) => {}
            Err(e) => panic!("seed {seed}: {e}\n{yaml}"),
        }
        ended = state
            .node_runs
            .iter()
            .filter(|nr| !nr.is_active())
            .map(|nr| (nr.id, nr.attempt))
            .collect();
    }
    assert!(
        state.status.is_terminal(),
        "seed {seed}: run did not end ({})\n{yaml}",
        state.status.as_str()
    );
    let replayed = check_invariants(&events);
    assert!(
        replayed == state,
        "seed {seed}: replay differs from the decider's state\n{yaml}"
    );
    true
}

#[test]
fn random_runs_end_terminal_and_replay_to_the_same_state() {
    let seeds = std::env::var("RUNLEDGER_PROPERTY_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400u64);
    let valid = (1..=seeds).filter(|&seed| simulate(seed)).count() as u64;
    assert!(
        valid * 2 >= seeds,
        "only {valid} of {seeds} random flowcharts were valid"
    );
}
