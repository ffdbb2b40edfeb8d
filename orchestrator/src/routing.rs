//! How a decision node routes: its conditions evaluated in order over the input context, then
//! `latest_upstream.output.route_key` matched against its connectors, then the no-match policy.
//!
//! A pure function of the flowchart, the node and the context, shared by the decider (which
//! records the result as `RoutingDecided`) and the agent's connector tools (which show a model
//! what a decision would do without recording anything), so both always agree.

use std::collections::BTreeSet;

use runledger_contracts::events::{ConditionEvaluation, ConditionOutcome, ErrorInfo};
use runledger_contracts::flowchart::{Flowchart, NoMatchRoute};
use serde_json::Value;

/// What a decision node's routing came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// Each condition, in order, with its outcome and reason.
    pub evaluations: Vec<ConditionEvaluation>,
    /// `latest_upstream.output.route_key`, when it is a string.
    pub route_key: Option<String>,
    pub route_key_matched: bool,
    /// Indexes of the connectors that fire (empty when `failure` is set).
    pub fired: BTreeSet<usize>,
    /// Neither a condition nor the route key chose a connector.
    pub no_match: bool,
    /// The fallback connector taken on no match.
    pub fallback_connector: Option<usize>,
    /// `unknown_route` or `no_route_matched`: the decision fails.
    pub failure: Option<ErrorInfo>,
}

/// Routes decision node `node` of `flowchart` over its input `context`.
pub fn route(flowchart: &Flowchart, node: usize, context: &Value) -> Routing {
    let node_id = flowchart
        .node_at(node)
        .map(|n| n.id.clone())
        .unwrap_or_default();
    let mut fired = BTreeSet::new();
    let mut evaluations = Vec::new();
    for condition in flowchart.conditions(node) {
        let evaluation = condition.when.evaluate_explained(context);
        let outcome = match evaluation.outcome {
            Ok(true) => {
                fired.insert(condition.connector);
                ConditionOutcome::Matched
            }
            Ok(false) => ConditionOutcome::NotMatched,
            Err(_) => ConditionOutcome::Error,
        };
        evaluations.push(ConditionEvaluation {
            connector_id: connector_id(flowchart, condition.connector),
            condition: condition.when.source().to_owned(),
            outcome,
            reason: evaluation.reason,
        });
    }
    let upstream_output = context.get("latest_upstream").and_then(|l| l.get("output"));
    let route_key = upstream_output.and_then(|o| o.get("route_key"));
    let mut failure = None;
    let mut route_key_text = None;
    let mut route_key_matched = false;
    match route_key {
        None | Some(Value::Null) => {}
        Some(Value::String(key)) => {
            route_key_text = Some(key.clone());
            let own = flowchart
                .solid_outgoing(node)
                .iter()
                .copied()
                .find(|&c| flowchart.connector_at(c).is_some_and(|k| &k.id == key));
            match own {
                Some(c) => {
                    route_key_matched = true;
                    fired.insert(c);
                }
                None => {
                    let known: Vec<String> = flowchart
                        .solid_outgoing(node)
                        .iter()
                        .map(|&c| connector_id(flowchart, c))
                        .collect();
                    failure = Some(ErrorInfo {
                        code: "unknown_route".into(),
                        message: format!(
                            "route_key `{key}` names no connector of decision `{node_id}` (its connectors: {})",
                            known.join(", ")
                        ),
                        retryable: false,
                        details: None,
                    });
                }
            }
        }
        Some(other) => {
            failure = Some(ErrorInfo {
                code: "unknown_route".into(),
                message: format!("route_key must be a string, got {other}"),
                retryable: false,
                details: None,
            });
        }
    }
    if failure.is_some() {
        fired.clear();
    }
    let no_match = failure.is_none() && fired.is_empty();
    let mut fallback_connector = None;
    if no_match {
        match flowchart.no_match(node) {
            NoMatchRoute::Fallback { connector } => {
                fired.insert(connector);
                fallback_connector = Some(connector);
            }
            NoMatchRoute::Fail => {
                failure = Some(ErrorInfo {
                    code: "no_route_matched".into(),
                    message: format!(
                        "no condition of decision `{node_id}` matched and it has no fallback"
                    ),
                    retryable: false,
                    details: None,
                });
            }
        }
    }
    Routing {
        evaluations,
        route_key: route_key_text,
        route_key_matched,
        fired,
        no_match,
        fallback_connector,
        failure,
    }
}

/// The id of connector `connector` (empty for an index the flowchart does not have).
pub fn connector_id(flowchart: &Flowchart, connector: usize) -> String {
    flowchart
        .connector_at(connector)
        .map(|c| c.id.clone())
        .unwrap_or_default()
}
