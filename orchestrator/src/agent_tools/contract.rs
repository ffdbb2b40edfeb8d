//! `node_output_validate` and `condition_validate`: contract checks a model can run before it
//! commits to an answer or proposes a condition. Read-only.
//!
//! `node_output_validate` compiles the node's `output_schema` with [`OutputSchema`], the
//! validator the task executor checks answers with; `condition_validate` is the parser of the
//! flowchart condition language, with the roots a condition may start from.

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::condition;
use runledger_contracts::flowchart::CONDITION_ROOTS;
use runledger_ledger::EventStore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{any, id, object, spec, string};
use super::{not_found, parse, run_flowchart, unknown_tool};
use crate::provider::OutputSchema;

pub struct ContractDomain<S> {
    store: Arc<S>,
}

impl<S> ContractDomain<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputArgs {
    #[serde(default)]
    node_id: Option<String>,
    output: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionArgs {
    condition: String,
}

/// Parses a condition: valid, with the paths it reads, or the first problem and its position.
pub fn check_condition(arguments: Value) -> Result<Value, ToolCallError> {
    let args: ConditionArgs = parse(arguments)?;
    Ok(match condition::parse(&args.condition) {
        Ok(parsed) => {
            let paths: Vec<String> = parsed.paths().iter().map(|p| p.to_string()).collect();
            let bad_roots: Vec<&str> = parsed
                .paths()
                .iter()
                .map(|p| p.root())
                .filter(|r| !CONDITION_ROOTS.contains(r))
                .collect();
            if bad_roots.is_empty() {
                json!({ "valid": true, "paths": paths })
            } else {
                json!({
                    "valid": false,
                    "paths": paths,
                    "error": {
                        "message": format!(
                            "paths must start with one of {}; found {}",
                            CONDITION_ROOTS.join(", "),
                            bad_roots.join(", ")
                        ),
                    },
                })
            }
        }
        Err(e) => json!({
            "valid": false,
            "error": { "position": e.position, "message": e.message },
        }),
    })
}

impl<S: EventStore> ContractDomain<S> {
    async fn validate_output(
        &self,
        ctx: &ToolCallContext,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let args: OutputArgs = parse(arguments)?;
        let node_id = args.node_id.unwrap_or_else(|| ctx.node_id.clone());
        let flowchart = run_flowchart(&*self.store, ctx).await?;
        let node = flowchart
            .node(&node_id)
            .ok_or_else(|| not_found(format!("the flowchart has no node `{node_id}`")))?;
        let Some(schema) = &node.output_schema else {
            return Ok(
                json!({ "node_id": node_id, "valid": true, "has_schema": false, "violations": [] }),
            );
        };
        let compiled = OutputSchema::compile(schema).map_err(|e| ToolCallError::Failed {
            code: "invalid_schema",
            message: format!("the output_schema of `{node_id}` does not compile: {e}"),
            source: Some(Box::new(e)),
        })?;
        let violations = compiled.violations(&args.output);
        Ok(json!({
            "node_id": node_id,
            "valid": violations.is_empty(),
            "has_schema": true,
            "violations": violations,
        }))
    }
}

impl<S: EventStore + 'static> ToolDomain for ContractDomain<S> {
    fn domain(&self) -> &str {
        "contract"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        vec![
            spec(
                "node_output_validate",
                "Check a value against a node's output_schema (default: the calling node's): every violation with its JSON Pointer.",
                object(
                    json!({
                        "node_id": id("A node of this run's flowchart (default: the calling node)."),
                        "output": any("The value to check."),
                    }),
                    &["output"],
                ),
                false,
            ),
            spec(
                "condition_validate",
                "Parse a condition of the flowchart condition language: valid with the paths it reads, or the first problem and its position.",
                object(
                    json!({ "condition": string("e.g. `latest_upstream.output.score >= 8`.") }),
                    &["condition"],
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
            match name {
                "node_output_validate" => self.validate_output(ctx, arguments).await,
                "condition_validate" => check_condition(arguments),
                other => Err(unknown_tool("contract", other)),
            }
        })
    }
}
