//! The built-in checkers: pure judgments of one event (or one node run) against what the claim
//! says. The claim_evidence projector calls them in ledger order and keeps the verdicts.

use std::collections::BTreeSet;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::{
    ArtifactPersisted, ErrorInfo, NodeRunStatus, NodeScheduled, RoutingDecided, TimeoutPhase,
    Warning,
};
use runledger_contracts::flowchart::{FanIn, Flowchart, NodeType};
use serde::Deserialize;
use serde_json::Value;

pub const ONE_ARTIFACT: &str = "node_run_has_one_artifact";
pub const IDS: &str = "events_carry_request_and_correlation_ids";
pub const ROUTING: &str = "routing_uses_node_connectors";
pub const AFTER_END: &str = "nothing_scheduled_after_run_end";
pub const FAN_IN: &str = "fan_in_satisfied_before_scheduling";
pub const FRONTIER: &str = "frontier_runs_use_http_provider";
pub const CONTRACT: &str = "artifact_payload_matches_contract";

/// What a checker found wrong with the thing it judged: one line for the claim's evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Violation(pub String);

impl From<&str> for Violation {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// Every checker a claim may name.
pub const CHECKERS: &[&str] = &[
    ONE_ARTIFACT,
    IDS,
    ROUTING,
    AFTER_END,
    FAN_IN,
    FRONTIER,
    CONTRACT,
];

/// The executor class whose node runs must call hosted providers over HTTP.
pub const FRONTIER_CLASS: &str = "frontier";
/// The built-in model that answers from a script instead of a provider.
pub const SCRIPTED_PROVIDER: &str = "scripted";

/// Both ids are present; an artifact repeats those of the append that recorded it.
pub(crate) fn check_ids(
    event: &RecordedEvent,
    artifact: Option<&ArtifactPersisted>,
) -> Result<(), Violation> {
    if event.request_id.as_str().is_empty() {
        return Err("the event has no request id".into());
    }
    if event.correlation_id.as_str().is_empty() {
        return Err("the event has no correlation id".into());
    }
    if let Some(a) = artifact {
        if a.request_id != event.request_id {
            return Err(Violation(format!(
                "artifact {} names request id `{}`, but the append that recorded it is `{}`",
                a.artifact_id, a.request_id, event.request_id
            )));
        }
        if a.correlation_id != event.correlation_id {
            return Err(Violation(format!(
                "artifact {} names correlation id `{}`, but the append that recorded it is `{}`",
                a.artifact_id, a.correlation_id, event.correlation_id
            )));
        }
    }
    Ok(())
}

/// Every connector the decision names leaves its node.
pub(crate) fn check_routing(flowchart: &Flowchart, e: &RoutingDecided) -> Result<(), Violation> {
    let Some(node) = flowchart.node_index(&e.node_id) else {
        return Err(Violation(format!(
            "node `{}` is not in the run's flowchart",
            e.node_id
        )));
    };
    let outgoing: BTreeSet<&str> = flowchart
        .solid_outgoing(node)
        .iter()
        .chain(flowchart.dotted_outgoing(node))
        .filter_map(|&c| flowchart.connector_at(c).map(|c| c.id.as_str()))
        .collect();
    let named = e
        .matched_connectors
        .iter()
        .chain(e.fallback_connector.iter())
        .chain(e.evaluations.iter().map(|ev| &ev.connector_id));
    let foreign: BTreeSet<&str> = named
        .map(String::as_str)
        .filter(|c| !outgoing.contains(c))
        .collect();
    if foreign.is_empty() {
        Ok(())
    } else {
        Err(Violation(format!(
            "decision `{}` names connector(s) {} that do not leave it",
            e.node_id,
            foreign
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// What the fan-in check needs to know about a token's source node run.
pub(crate) struct SourceRun<'a> {
    pub node_id: &'a str,
    /// How it ended, if it has.
    pub ended_status: Option<&'a str>,
}

/// The scheduling consumed tokens of solid connectors into the node, from finished successes of
/// each connector's source, and enough of them for the node's fan-in.
pub(crate) fn check_fan_in<'a>(
    flowchart: &Flowchart,
    e: &NodeScheduled,
    source: impl Fn(&runledger_contracts::ids::NodeRunId) -> Option<SourceRun<'a>>,
) -> Result<(), Violation> {
    let Some(node) = flowchart.node_index(&e.node_id) else {
        return Err(Violation(format!(
            "node `{}` is not in the run's flowchart",
            e.node_id
        )));
    };
    let mut problems = Vec::new();
    let mut connectors = BTreeSet::new();
    let mut loop_back = false;
    for token in &e.consumed_tokens {
        let Some(c) = flowchart.connector_index(&token.connector_id) else {
            problems.push(format!(
                "connector `{}` is not in the flowchart",
                token.connector_id
            ));
            continue;
        };
        let Some(connector) = flowchart.connector_at(c) else {
            continue;
        };
        if connector.to != e.node_id {
            problems.push(format!(
                "connector `{}` leads to `{}`, not `{}`",
                connector.id, connector.to, e.node_id
            ));
            continue;
        }
        if !connector.is_solid() {
            problems.push(format!(
                "connector `{}` is dotted (context only) and cannot trigger a node",
                connector.id
            ));
            continue;
        }
        match source(&token.from_node_run_id) {
            None => problems.push(format!(
                "token on `{}` comes from node run {}, which was never scheduled",
                connector.id, token.from_node_run_id
            )),
            Some(run) if run.node_id != connector.from => problems.push(format!(
                "token on `{}` comes from a node run of `{}`, not of its source `{}`",
                connector.id, run.node_id, connector.from
            )),
            Some(run)
                if !matches!(
                    run.ended_status,
                    Some("succeeded" | "success_with_warning" | "skipped")
                ) =>
            {
                problems.push(format!(
                    "token on `{}` comes from node run {} of `{}`, which had not succeeded ({})",
                    connector.id,
                    token.from_node_run_id,
                    connector.from,
                    run.ended_status.unwrap_or("still running")
                ))
            }
            Some(_) => {
                connectors.insert(c);
                loop_back |= flowchart.is_loop_back(c);
            }
        }
    }
    let fan_in = flowchart
        .node_at(node)
        .map(|n| n.fan_in_or_default())
        .unwrap_or_default();
    if fan_in == FanIn::All {
        // `all`: a token on every forward solid connector, or one token on a loop-back
        // connector, which triggers the next round of a loop on its own (docs/engine.md).
        let missing: Vec<&str> = flowchart
            .solid_incoming(node)
            .iter()
            .filter(|c| !flowchart.is_loop_back(**c) && !connectors.contains(*c))
            .filter_map(|&c| flowchart.connector_at(c).map(|c| c.id.as_str()))
            .collect();
        if !loop_back && !missing.is_empty() {
            problems.push(format!(
                "fan-in `all` of `{}` had no valid token on {}",
                e.node_id,
                missing
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    } else {
        let needed = flowchart.fan_in_threshold(node).unwrap_or(0);
        if connectors.len() < needed {
            problems.push(format!(
                "fan-in of `{}` needs {needed} solid parent(s), the scheduling consumed valid tokens of {}",
                e.node_id,
                connectors.len()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Violation(problems.join("; ")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputContract {
    output: Value,
    #[allow(dead_code)]
    warnings: Vec<Warning>,
    #[allow(dead_code)]
    fallback_used: bool,
    /// An agent node's lineage (`task_output` only; docs/agents.md).
    #[serde(default)]
    #[allow(dead_code)]
    agent: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailureContract {
    #[allow(dead_code)]
    error: ErrorInfo,
    #[serde(default)]
    routing: Option<RoutingDecided>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutContract {
    #[allow(dead_code)]
    phase: TimeoutPhase,
    #[allow(dead_code)]
    timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkippedContract {
    #[allow(dead_code)]
    output: Value,
    #[allow(dead_code)]
    actor: String,
    #[allow(dead_code)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanceledContract {
    #[allow(dead_code)]
    reason: String,
    #[allow(dead_code)]
    forced: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubflowOutput {
    #[allow(dead_code)]
    run_id: runledger_contracts::ids::RunId,
    #[allow(dead_code)]
    output: Value,
}

fn shape<T: for<'de> Deserialize<'de>>(
    artifact_type: &str,
    payload: &Value,
) -> Result<T, Violation> {
    T::deserialize(payload).map_err(|e| {
        Violation(format!(
            "`{artifact_type}` payload does not follow its contract: {e}"
        ))
    })
}

/// The artifact payload contracts of docs/events.md (contract version 1), checked by
/// structure: the generated JSON Schemas describe the event, whose `payload` is free JSON.
pub(crate) fn check_artifact_contract(a: &ArtifactPersisted) -> Result<(), Violation> {
    if a.contract_version != 1 {
        return Err(Violation(format!(
            "contract version {} of `{}` is unknown (known: 1)",
            a.contract_version, a.artifact_type
        )));
    }
    let hash = canonical::to_canonical_vec(&a.payload)
        .map(|bytes| Digest::of(&bytes))
        .map_err(|e| Violation(format!("payload is not canonicalizable: {e}")))?;
    if hash != a.content_hash {
        return Err(Violation(format!(
            "content_hash {} does not match the payload (it hashes to {})",
            a.content_hash, hash
        )));
    }
    let t = a.artifact_type.as_str();
    let success = matches!(
        a.status,
        NodeRunStatus::Succeeded | NodeRunStatus::SuccessWithWarning
    );
    let (statuses_ok, types_ok) = match t {
        "run_input" => (success, a.node_type == NodeType::Start),
        "run_output" => (success, a.node_type == NodeType::End),
        "task_output" => (success, a.node_type == NodeType::Task),
        "tool_result" => (
            success,
            matches!(
                a.node_type,
                NodeType::Memory | NodeType::Plan | NodeType::Milestone
            ),
        ),
        "retrieval" => (success, a.node_type == NodeType::Rag),
        "subflow_result" => (success, a.node_type == NodeType::Flowchart),
        "routing" => (success, a.node_type == NodeType::Decision),
        "failure" => (a.status == NodeRunStatus::Failed, true),
        "timeout" => (a.status == NodeRunStatus::TimedOut, true),
        "skipped" => (a.status == NodeRunStatus::Skipped, true),
        "canceled" => (a.status == NodeRunStatus::Canceled, true),
        other => return Err(Violation(format!("artifact type `{other}` is unknown"))),
    };
    if !statuses_ok {
        return Err(Violation(format!(
            "`{t}` artifact of a node run that ended as {}",
            crate::projector::status_name(a.status)
        )));
    }
    if !types_ok {
        return Err(Violation(format!(
            "`{t}` artifact of a `{}` node",
            a.node_type
        )));
    }
    match t {
        "routing" => {
            let mut rest = a.payload.clone();
            let output = rest.as_object_mut().and_then(|m| m.remove("output"));
            if output.is_none() {
                return Err("`routing` payload has no `output`".into());
            }
            let routing: RoutingDecided = shape(t, &rest)?;
            same_node_run(a, &routing)?;
        }
        "failure" => {
            let failure: FailureContract = shape(t, &a.payload)?;
            if let Some(routing) = &failure.routing {
                same_node_run(a, routing)?;
            }
        }
        "timeout" => {
            shape::<TimeoutContract>(t, &a.payload)?;
        }
        "skipped" => {
            shape::<SkippedContract>(t, &a.payload)?;
        }
        "canceled" => {
            shape::<CanceledContract>(t, &a.payload)?;
        }
        _ => {
            let out: OutputContract = shape(t, &a.payload)?;
            if t == "subflow_result" {
                SubflowOutput::deserialize(&out.output).map_err(|e| {
                    Violation(format!(
                        "`subflow_result` output must be {{ run_id, output }}: {e}"
                    ))
                })?;
            }
        }
    }
    Ok(())
}

fn same_node_run(a: &ArtifactPersisted, routing: &RoutingDecided) -> Result<(), Violation> {
    if routing.run_id != a.run_id
        || routing.node_run_id != a.node_run_id
        || routing.node_id != a.node_id
    {
        return Err("the routing decision in the payload is about another node run".into());
    }
    Ok(())
}
