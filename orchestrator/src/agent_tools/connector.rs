//! `branch_evaluate`, `connector_conditions_get`, `connector_conditions_validate`,
//! `next_nodes_resolve`: the calling run's flowchart, its connectors and how its decisions
//! route, without recording anything.
//!
//! Routing is [`crate::routing::route`], the function the decider records `RoutingDecided`
//! from, so what a model is told a decision would do is what it does. Validation of proposed
//! conditions is the flowchart's own save-time validation over a copy of the document.

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::flowchart::{
    ConditionDoc, Flowchart, NoMatch, NoMatchRoute, NodeType, validate,
};
use runledger_ledger::EventStore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{any, id, object, one_of, spec, string};
use super::{invalid, not_found, parse, run_flowchart, unknown_tool};
use crate::routing::{self, connector_id};

pub struct ConnectorDomain<S> {
    store: Arc<S>,
}

impl<S> ConnectorDomain<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateArgs {
    node_id: String,
    context: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeArgs {
    #[serde(default)]
    node_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateArgs {
    node_id: String,
    conditions: Vec<ConditionDoc>,
    #[serde(default)]
    no_match: Option<NoMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveArgs {
    node_id: String,
    #[serde(default)]
    context: Option<Value>,
}

fn node_index(flowchart: &Flowchart, node_id: &str) -> Result<usize, ToolCallError> {
    flowchart
        .node_index(node_id)
        .ok_or_else(|| not_found(format!("the flowchart has no node `{node_id}`")))
}

fn node_id_of(flowchart: &Flowchart, node: usize) -> String {
    flowchart
        .node_at(node)
        .map(|n| n.id.clone())
        .unwrap_or_default()
}

fn target_of(flowchart: &Flowchart, connector: usize) -> String {
    flowchart
        .connector_target(connector)
        .map(|t| node_id_of(flowchart, t))
        .unwrap_or_default()
}

/// A node's outgoing connectors, with the decision conditions that fire them.
fn conditions_json(flowchart: &Flowchart, node: usize) -> Value {
    let conditions = flowchart.conditions(node);
    let solid: Vec<Value> = flowchart
        .solid_outgoing(node)
        .iter()
        .map(|&c| {
            let when: Vec<&str> = conditions
                .iter()
                .filter(|k| k.connector == c)
                .map(|k| k.when.source())
                .collect();
            json!({
                "connector_id": connector_id(flowchart, c),
                "to": target_of(flowchart, c),
                "mode": "solid",
                "conditions": when,
            })
        })
        .collect();
    let dotted: Vec<Value> = flowchart
        .dotted_outgoing(node)
        .iter()
        .map(|&c| json!({ "connector_id": connector_id(flowchart, c), "to": target_of(flowchart, c), "mode": "dotted" }))
        .collect();
    let node_type = flowchart.node_at(node).map(|n| n.node_type);
    let no_match = match (node_type, flowchart.no_match(node)) {
        (Some(NodeType::Decision), NoMatchRoute::Fallback { connector }) => {
            json!({ "policy": "fallback", "connector": connector_id(flowchart, connector) })
        }
        (Some(NodeType::Decision), NoMatchRoute::Fail) => json!({ "policy": "fail" }),
        _ => Value::Null,
    };
    json!({
        "node_id": node_id_of(flowchart, node),
        "node_type": node_type,
        "connectors": solid.into_iter().chain(dotted).collect::<Vec<_>>(),
        "no_match": no_match,
    })
}

fn routing_json(flowchart: &Flowchart, node: usize, context: &Value) -> Value {
    let routed = routing::route(flowchart, node, context);
    let connectors: Vec<String> = routed
        .fired
        .iter()
        .map(|&c| connector_id(flowchart, c))
        .collect();
    let next: Vec<String> = routed
        .fired
        .iter()
        .map(|&c| target_of(flowchart, c))
        .collect();
    json!({
        "node_id": node_id_of(flowchart, node),
        "evaluations": routed.evaluations,
        "route_key": routed.route_key,
        "route_key_matched": routed.route_key_matched,
        "matched_connectors": connectors,
        "no_match": routed.no_match,
        "fallback_connector": routed.fallback_connector.map(|c| connector_id(flowchart, c)),
        "failure": routed.failure,
        "next_nodes": next,
    })
}

fn decision_node(flowchart: &Flowchart, node_id: &str) -> Result<usize, ToolCallError> {
    let node = node_index(flowchart, node_id)?;
    if flowchart.node_at(node).map(|n| n.node_type) != Some(NodeType::Decision) {
        return Err(invalid(format!(
            "node_id: `{node_id}` is not a decision node"
        )));
    }
    Ok(node)
}

/// The proposed conditions checked by the flowchart's validation: the run's document with the
/// node's `conditions` (and `no_match`) replaced.
fn validate_conditions(flowchart: &Flowchart, args: ValidateArgs) -> Result<Value, ToolCallError> {
    let node = decision_node(flowchart, &args.node_id)?;
    let mut doc = flowchart.doc().clone();
    let Some(target) = doc.nodes.get_mut(node) else {
        return Err(not_found(format!(
            "the flowchart has no node `{}`",
            args.node_id
        )));
    };
    target.conditions = Some(args.conditions);
    if args.no_match.is_some() {
        target.no_match = args.no_match;
    }
    Ok(match validate(doc) {
        Ok(_) => json!({ "valid": true, "errors": [] }),
        Err(errors) => {
            let errors: Vec<Value> = errors
                .iter()
                .map(|e| json!({ "code": e.code.as_str(), "path": e.path, "message": e.message }))
                .collect();
            json!({ "valid": false, "errors": errors })
        }
    })
}

fn resolve_next(flowchart: &Flowchart, args: ResolveArgs) -> Result<Value, ToolCallError> {
    let node = node_index(flowchart, &args.node_id)?;
    let is_decision = flowchart.node_at(node).map(|n| n.node_type) == Some(NodeType::Decision);
    let dotted: Vec<String> = flowchart
        .dotted_outgoing(node)
        .iter()
        .map(|&c| target_of(flowchart, c))
        .collect();
    if is_decision {
        let context = args.context.ok_or_else(|| {
            invalid("context: required for a decision node (its conditions are evaluated over it)")
        })?;
        let mut routed = routing_json(flowchart, node, &context);
        if let Value::Object(map) = &mut routed {
            map.insert("context_only".into(), json!(dotted));
        }
        return Ok(routed);
    }
    let connectors: Vec<String> = flowchart
        .solid_outgoing(node)
        .iter()
        .map(|&c| connector_id(flowchart, c))
        .collect();
    let next: Vec<String> = flowchart
        .solid_outgoing(node)
        .iter()
        .map(|&c| target_of(flowchart, c))
        .collect();
    Ok(json!({
        "node_id": args.node_id,
        "matched_connectors": connectors,
        "next_nodes": next,
        "context_only": dotted,
    }))
}

impl<S: EventStore + 'static> ToolDomain for ConnectorDomain<S> {
    fn domain(&self) -> &str {
        "connector"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        let condition = object(
            json!({ "connector": id("A solid connector out of the node."), "when": string("A condition.") }),
            &["connector", "when"],
        );
        vec![
            spec(
                "branch_evaluate",
                "Evaluate a decision node of this run's flowchart over an input context: each condition's outcome and reason, the connectors that would fire and the nodes they lead to. Records nothing.",
                object(
                    json!({
                        "node_id": id("A decision node."),
                        "context": any("An input context (`inputs`, `upstream`, `latest_upstream`, `context`, `run`, `node`)."),
                    }),
                    &["node_id", "context"],
                ),
                false,
            ),
            spec(
                "connector_conditions_get",
                "The outgoing connectors of a node (or of every decision node) with their conditions and the no-match policy.",
                object(
                    json!({ "node_id": id("One node; default every decision node.") }),
                    &[],
                ),
                false,
            ),
            spec(
                "connector_conditions_validate",
                "Check proposed conditions (and no_match) for a decision node against the flowchart's save-time rules.",
                object(
                    json!({
                        "node_id": id("A decision node."),
                        "conditions": { "type": "array", "items": condition },
                        "no_match": object(
                            json!({
                                "policy": one_of(&["fail", "fallback"], "What happens when nothing matches."),
                                "connector": id("The fallback connector (with `fallback`)."),
                            }),
                            &["policy"],
                        ),
                    }),
                    &["node_id", "conditions"],
                ),
                false,
            ),
            spec(
                "next_nodes_resolve",
                "The nodes a node leads to: for a decision node, those its routing over `context` fires; otherwise every solid target. Dotted targets are listed as context_only.",
                object(
                    json!({
                        "node_id": id("A node of the flowchart."),
                        "context": any("The input context (required for a decision node)."),
                    }),
                    &["node_id"],
                ),
                false,
            ),
        ]
    }

    fn call<'a>(
        &'a self,
        ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(async move {
            let flowchart = match name {
                "branch_evaluate"
                | "connector_conditions_get"
                | "connector_conditions_validate"
                | "next_nodes_resolve" => run_flowchart(&*self.store, ctx).await?,
                other => return Err(unknown_tool("connector", other)),
            };
            match name {
                "branch_evaluate" => {
                    let args: EvaluateArgs = parse(arguments)?;
                    let node = decision_node(&flowchart, &args.node_id)?;
                    Ok(routing_json(&flowchart, node, &args.context))
                }
                "connector_conditions_get" => {
                    let args: NodeArgs = parse(arguments)?;
                    let nodes: Vec<Value> = match &args.node_id {
                        Some(id) => vec![conditions_json(&flowchart, node_index(&flowchart, id)?)],
                        None => flowchart
                            .nodes_of_type(NodeType::Decision)
                            .map(|n| conditions_json(&flowchart, n))
                            .collect(),
                    };
                    Ok(json!({ "nodes": nodes }))
                }
                "connector_conditions_validate" => {
                    validate_conditions(&flowchart, parse(arguments)?)
                }
                _ => resolve_next(&flowchart, parse(arguments)?),
            }
        })
    }
}
