//! The loop of a `task` node: model -> tool calls -> results -> model, until a final answer or
//! the turn budget (`max_turns`, default 20) runs out.
//!
//! Each model call is a turn. A turn that asks for tools gets every call served in call order
//! (parallel calls included; see [`super::calls`]) and their results sent back on the next
//! turn. A final answer goes through the node's `output_schema` and up to
//! `schema_repair_attempts` repair turns, as for any task node. A node that lists no `tools`
//! and no `mcp_servers` is the same loop with nothing to offer: one call plus its repairs, its
//! calls recorded with its end, exactly as before agents existed. An agent node's calls (model
//! and tool) go to the [`CallReporter`] as they happen, so they reach the ledger even if the
//! node later fails or its process dies.

use std::time::Instant;

use runledger_contracts::agent_tool::ToolCallContext;
use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    AgentCall, ErrorInfo, ProviderCall, ToolAttempt, ToolCalled, ToolOutcome,
};
use runledger_contracts::flowchart::{DEFAULT_MAX_TURNS, Node, SCRIPTED_MODEL};
use runledger_contracts::time::Timestamp;
use serde_json::{Value, json};

use super::calls::{CallSite, idempotency_key};
use super::prompt::compose;
use super::registry::ToolRegistry;
use super::transcript::Transcript;
use super::{CallReporter, is_agent};
use crate::decide::NodeOutcome;
use crate::executor::{NodeWork, Providers, hash_of};
use crate::provider::{
    Answer, DEFAULT_SCHEMA_REPAIR_ATTEMPTS, ModelRequest, OutputSchema, RepairTurn,
    SchemaViolation, Turn, repair_feedback,
};

/// What the loop ends with: the outcome and the calls not yet reported (every call for a node
/// without tools, none for an agent node whose calls went to the reporter).
pub struct TaskRun {
    pub outcome: NodeOutcome,
    pub unreported: Vec<ToolCalled>,
}

/// Runs a `task` node run to its outcome.
pub async fn run_task(
    providers: &Providers,
    registry: &ToolRegistry,
    reporter: Option<&dyn CallReporter>,
    work: &NodeWork,
    node: &Node,
) -> TaskRun {
    let agent = is_agent(node);
    let live = agent.then_some(reporter).flatten();
    let mut unreported = Vec::new();
    let mut record = |call: ToolCalled| match live {
        Some(r) => r.report(call),
        None => unreported.push(call),
    };
    let outcome = drive(providers, registry, work, node, agent, &mut record).await;
    TaskRun {
        outcome,
        unreported,
    }
}

async fn drive(
    providers: &Providers,
    registry: &ToolRegistry,
    work: &NodeWork,
    node: &Node,
    agent: bool,
    record: &mut (dyn FnMut(ToolCalled) + Send),
) -> NodeOutcome {
    let model = node.model.as_deref().unwrap_or(SCRIPTED_MODEL);
    let Some(provider) = providers.resolve(model).await else {
        return NodeOutcome::Failed(error(
            "unknown_model",
            format!("no provider is configured for model `{model}`"),
        ));
    };
    let schema = match node
        .output_schema
        .as_ref()
        .map(OutputSchema::compile)
        .transpose()
    {
        Ok(schema) => schema,
        Err(reason) => {
            return NodeOutcome::Failed(error(
                "invalid_output_schema",
                format!("the node's output_schema is not a usable JSON Schema: {reason}"),
            ));
        }
    };
    let max_repairs = match schema {
        Some(_) => node
            .schema_repair_attempts
            .unwrap_or(DEFAULT_SCHEMA_REPAIR_ATTEMPTS),
        None => 0,
    };
    let max_turns = node.max_turns.unwrap_or(DEFAULT_MAX_TURNS);
    let prompt = compose(node, &work.input_context);
    let prompt_digest = prompt.digest();
    let allowed = registry.resolve(
        node.tools.as_deref().unwrap_or_default(),
        node.mcp_servers.as_deref().unwrap_or_default(),
    );
    let mut transcript = Transcript::default();
    let mut repairs: u32 = 0;
    loop {
        let turn = transcript.model_calls() + 1;
        if agent && turn > max_turns {
            let mut e = error(
                "max_turns_exceeded",
                format!("the model made {max_turns} turn(s) (max_turns) without a final answer"),
            );
            e.details = Some(transcript.with_turns(prompt_digest));
            return NodeOutcome::Failed(e);
        }
        let input_hash = request_hash(model, &prompt.system, &prompt.user, &transcript.turns);
        transcript.request_digests.push(input_hash);
        let started_at = Timestamp::now();
        let clock = Instant::now();
        let request = ModelRequest {
            run_id: work.run_id,
            node_run_id: work.node_run_id,
            node,
            model,
            prompt: prompt.user.clone(),
            agent_system: prompt.system.as_deref(),
            input_context: &work.input_context,
            ordinal: work.ordinal,
            attempt: work.attempt,
            turns: &transcript.turns,
            tools: &allowed.offered,
            deadline: work.deadline,
        };
        let answer = provider.complete(request).await;
        let call = ModelCall {
            work,
            node,
            provider: provider.name(),
            model,
            turn,
            agent,
            input_hash,
            started_at,
            duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                record(call.event(None, Some(e.clone())));
                return NodeOutcome::Failed(with_lineage(e, agent, &transcript, prompt_digest));
            }
        };
        let tokens = Some((response.input_tokens, response.output_tokens));
        if !response.tool_calls.is_empty() {
            record(call.event(tokens, None));
            let text = response.text();
            let calls = response.tool_calls;
            let mut results = Vec::with_capacity(calls.len());
            for (index, request) in calls.iter().enumerate() {
                let call_index = u32::try_from(index).unwrap_or(u32::MAX);
                let site = CallSite {
                    work,
                    registry,
                    allowed: &allowed,
                    context: ToolCallContext {
                        run_id: work.run_id,
                        node_id: node.id.clone(),
                        node_run_id: work.node_run_id,
                        turn,
                        call_index,
                        idempotency_key: idempotency_key(work, turn, call_index),
                        workspace: work.workspace.clone(),
                        git_policy: node
                            .git_policy
                            .as_ref()
                            .map(|p| p.policy())
                            .or_else(|| work.git_policy.clone()),
                    },
                };
                let outcome = site.call(request).await;
                transcript.tool_calls += 1;
                transcript.tools_used.insert(request.name.clone());
                if let Some(event) = outcome.event {
                    record(event);
                }
                results.push(outcome.result);
            }
            transcript.turns.push(Turn::ToolCalls { text, calls });
            transcript.turns.push(Turn::ToolResults { results });
            continue;
        }
        let violations = match (&response.answer, &schema) {
            (Answer::Json(output), Some(schema)) => schema.violations(output),
            (Answer::Json(_), None) => Vec::new(),
            (Answer::NotJson { error, .. }, _) => vec![SchemaViolation {
                path: String::new(),
                message: format!("the answer is not JSON: {error}"),
            }],
        };
        if violations.is_empty()
            && let Answer::Json(output) = response.answer
        {
            record(call.event(tokens, None));
            return NodeOutcome::Succeeded {
                output,
                warnings: Vec::new(),
                fallback_used: false,
                agent: agent.then(|| transcript.lineage(prompt_digest)),
            };
        }
        let rejection = rejected_answer(
            model,
            schema.is_some(),
            &violations,
            repairs,
            transcript.model_calls(),
        );
        record(call.event(tokens, Some(rejection.clone())));
        if rejection.code != "output_schema_invalid" || repairs >= max_repairs {
            return NodeOutcome::Failed(with_lineage(rejection, agent, &transcript, prompt_digest));
        }
        repairs += 1;
        transcript.turns.push(Turn::Repair(RepairTurn {
            answer: response.answer.text(),
            feedback: repair_feedback(&response.answer, &violations),
        }));
    }
}

/// The digest of one model request. For a node without agent keys or tool turns it is the
/// digest recorded before agents existed (`{model, prompt}`, then `repairs`), so such nodes
/// record exactly what they did.
fn request_hash(model: &str, system: &Option<String>, user: &str, turns: &[Turn]) -> Digest {
    let repairs: Option<Vec<&RepairTurn>> = turns
        .iter()
        .map(|t| match t {
            Turn::Repair(r) => Some(r),
            _ => None,
        })
        .collect();
    match (system, repairs) {
        (None, Some(r)) if r.is_empty() => hash_of(&json!({ "model": model, "prompt": user })),
        (None, Some(r)) => hash_of(&json!({ "model": model, "prompt": user, "repairs": r })),
        _ => hash_of(&json!({ "model": model, "system": system, "prompt": user, "turns": turns })),
    }
}

/// An agent node's failure carries its lineage (turns, tools, digests) in `details.agent`.
fn with_lineage(
    mut e: ErrorInfo,
    agent: bool,
    transcript: &Transcript,
    prompt_digest: Digest,
) -> ErrorInfo {
    if !agent {
        return e;
    }
    let lineage = transcript.lineage(prompt_digest);
    match &mut e.details {
        Some(Value::Object(map)) => {
            map.insert("agent".into(), lineage);
        }
        Some(_) => {}
        None => e.details = Some(json!({ "agent": lineage })),
    }
    e
}

fn error(code: &str, message: String) -> ErrorInfo {
    ErrorInfo {
        code: code.to_owned(),
        message,
        retryable: false,
        details: None,
    }
}

/// Why an answer was rejected: `output_schema_invalid` (the node has a schema; details list
/// the violations) or `invalid_output` (no schema, and the answer is not JSON). Neither is
/// retryable by the node's retry policy: `schema_repair_attempts` is how a node asks again.
fn rejected_answer(
    model: &str,
    has_schema: bool,
    violations: &[SchemaViolation],
    repairs: u32,
    calls: u32,
) -> ErrorInfo {
    let listed: Vec<String> = violations
        .iter()
        .map(|v| {
            format!(
                "{}: {}",
                if v.path.is_empty() { "(root)" } else { &v.path },
                v.message
            )
        })
        .collect();
    if !has_schema {
        return error(
            "invalid_output",
            format!(
                "model `{model}` did not answer JSON ({})",
                listed.join("; ")
            ),
        );
    }
    let mut e = error(
        "output_schema_invalid",
        format!(
            "the answer of model `{model}` does not satisfy the output_schema after {repairs} repair attempt(s): {}",
            listed.join("; ")
        ),
    );
    e.details = Some(
        json!({ "violations": violations, "repair_attempts": repairs, "provider_calls": calls }),
    );
    e
}

/// What one model call of a task node run is recorded with.
struct ModelCall<'a> {
    work: &'a NodeWork,
    node: &'a Node,
    provider: &'a str,
    model: &'a str,
    /// 1 for the first call of the node run, +1 per further turn.
    turn: u32,
    agent: bool,
    input_hash: Digest,
    started_at: Timestamp,
    duration_ms: u64,
}

impl ModelCall<'_> {
    /// The `ToolCalled` of the call (`tool: provider`, key `<node_run>:provider:<turn>`):
    /// `tokens` when the provider answered, `failure` when the call failed or its answer was
    /// rejected.
    fn event(
        &self,
        tokens: Option<(Option<u64>, Option<u64>)>,
        failure: Option<ErrorInfo>,
    ) -> ToolCalled {
        let (input_tokens, output_tokens) = tokens.unwrap_or_default();
        ToolCalled {
            run_id: self.work.run_id,
            node_id: self.node.id.clone(),
            node_run_id: self.work.node_run_id,
            tool: "provider".into(),
            operation: "complete".into(),
            idempotency_key: format!("{}:provider:{}", self.work.node_run_id, self.turn),
            input_hash: self.input_hash,
            outcome: if failure.is_some() {
                ToolOutcome::Error
            } else {
                ToolOutcome::Ok
            },
            attempts: vec![ToolAttempt {
                attempt: 1,
                started_at: self.started_at,
                duration_ms: self.duration_ms,
                error: failure.clone(),
            }],
            duration_ms: self.duration_ms,
            provider: Some(ProviderCall {
                provider: self.provider.to_owned(),
                model: self.model.to_owned(),
                latency_ms: self.duration_ms,
                input_tokens,
                output_tokens,
            }),
            output: None,
            error: failure,
            agent: self.agent.then_some(AgentCall {
                turn: self.turn,
                call_index: None,
                arguments: None,
                side_effects: false,
                result_blob: None,
            }),
        }
    }
}
