//! The outcome of a `decision` node, recorded as a tool call (`tool: decision`, operation
//! `record_outcome`) in the same append as its `RoutingDecided`.
//!
//! `RoutingDecided` says how each condition evaluated; this record says what was chosen and,
//! when the upstream output scored the options (`scores: { <connector id>: <number>, ... }`,
//! next to `route_key`), those scores and their ranking, so an audit sees the options weighed
//! and the one taken side by side. Built by the decider from recorded data only, so a replay
//! reproduces it.

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    ErrorInfo, RoutingDecided, ToolAttempt, ToolCalled, ToolOutcome,
};
use runledger_contracts::time::Timestamp;
use serde_json::{Map, Value, json};

pub const TOOL: &str = "decision";
pub const OPERATION: &str = "record_outcome";

/// The decision's outcome record. `upstream_output` is what the decision routed on;
/// `failure` is set when the decision failed (`unknown_route`, `no_route_matched`).
pub fn outcome_call(
    routing: &RoutingDecided,
    upstream_output: Option<&Value>,
    failure: Option<&ErrorInfo>,
    now: Timestamp,
) -> ToolCalled {
    let via = if failure.is_some() {
        "none"
    } else if routing.fallback_connector.is_some() {
        "fallback"
    } else if routing.route_key_matched
        && routing
            .evaluations
            .iter()
            .all(|e| e.outcome != runledger_contracts::events::ConditionOutcome::Matched)
    {
        "route_key"
    } else if routing.route_key_matched {
        "conditions_and_route_key"
    } else {
        "conditions"
    };
    let mut output = Map::new();
    output.insert(
        "status".into(),
        json!(if failure.is_some() {
            "failed"
        } else {
            "routed"
        }),
    );
    output.insert("chosen".into(), json!(routing.matched_connectors));
    output.insert("via".into(), json!(via));
    if let Some(scores) = scores(upstream_output) {
        let mut ranked: Vec<(&String, f64)> = scores
            .iter()
            .filter_map(|(k, v)| v.as_f64().map(|n| (k, n)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        output.insert(
            "ranked".into(),
            json!(ranked.iter().map(|(k, _)| k).collect::<Vec<_>>()),
        );
        output.insert("scores".into(), Value::Object(scores));
    }
    let input = upstream_output.cloned().unwrap_or(Value::Null);
    ToolCalled {
        run_id: routing.run_id,
        node_id: routing.node_id.clone(),
        node_run_id: routing.node_run_id,
        tool: TOOL.into(),
        operation: OPERATION.into(),
        idempotency_key: format!("{}:{TOOL}:{OPERATION}", routing.node_run_id),
        input_hash: Digest::of(&canonical::to_canonical_vec(&input).unwrap_or_default()),
        outcome: if failure.is_some() {
            ToolOutcome::Error
        } else {
            ToolOutcome::Ok
        },
        attempts: vec![ToolAttempt {
            attempt: 1,
            started_at: now,
            duration_ms: 0,
            error: failure.cloned(),
        }],
        duration_ms: 0,
        provider: None,
        output: Some(Value::Object(output)),
        error: failure.cloned(),
        agent: None,
    }
}

/// The numeric entries of the upstream output's `scores` object, if it has one.
fn scores(upstream_output: Option<&Value>) -> Option<Map<String, Value>> {
    let Value::Object(given) = upstream_output?.get("scores")? else {
        return None;
    };
    let numeric: Map<String, Value> = given
        .iter()
        .filter(|(_, v)| v.is_number())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!numeric.is_empty()).then_some(numeric)
}
