//! Executors: where node runs that do work (`task`, `memory`, `plan`, `milestone`, `rag`) run.
//!
//! The engine hands each started node run to a [`NodeExecutor`] as [`NodeWork`] and gets a
//! [`NodeResult`] back on a channel, whenever it comes. The in-process pool here is one
//! implementation; the NATS gateway is another behind the same trait. Results are fenced by
//! attempt in the decider, so an executor may deliver late or twice without harm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::events::{ErrorInfo, ProviderCall, ToolAttempt, ToolCalled, ToolOutcome};
use runledger_contracts::flowchart::{Node, NodeType};
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::decide::{NodeOutcome, NodeResult};
use crate::delivery::Receipt;
use crate::provider::{
    Answer, BoxFuture, DEFAULT_SCHEMA_REPAIR_ATTEMPTS, ModelProvider, ModelRequest, OutputSchema,
    RepairTurn, SchemaViolation, ScriptedProvider, render_prompt, repair_feedback,
};
use crate::rag::RagBackend;
use crate::state::RunState;

/// `NodeStarted.executor` of node runs the in-process pool runs.
pub const INPROCESS: &str = "inprocess";
/// `NodeStarted.executor` of `flowchart` node runs: the engine runs them as child runs.
pub const SUBFLOW: &str = "subflow";

/// Node types whose work goes to remote executors when the engine dispatches over NATS; the
/// others run in the engine's process.
pub fn remote_work(node_type: NodeType) -> bool {
    matches!(node_type, NodeType::Task | NodeType::Rag)
}

/// Everything an executor needs for one node run. It carries the node's definition, not the
/// flowchart, so it can travel to a remote executor as one small message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeWork {
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub ordinal: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub input_context: Value,
    pub node: Arc<Node>,
}

impl NodeWork {
    pub fn node(&self) -> Option<&Node> {
        Some(&self.node)
    }
}

impl RunState {
    /// The work of the node run at `index`, with its input context.
    pub fn work(&self, index: usize) -> Option<NodeWork> {
        let nr = self.node_runs.get(index)?;
        Some(NodeWork {
            run_id: self.run_id,
            node_run_id: nr.id,
            attempt: nr.attempt,
            ordinal: nr.ordinal,
            deadline: nr.deadline,
            input_context: self.input_context(index),
            node: Arc::new(self.flowchart.node_at(nr.node)?.clone()),
        })
    }
}

/// What an executor tells the engine about one node run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// The work was published to an executor queue (`NodeDispatched`).
    Dispatched {
        node_run_id: NodeRunId,
        attempt: u32,
        executor_class: String,
        message_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_sequence: Option<u64>,
    },
    /// An executor took the work (`NodeStarted`).
    Started {
        node_run_id: NodeRunId,
        attempt: u32,
        executor: String,
    },
    /// The node run's result.
    Finished(NodeResult),
    /// An executor took the work and finished it before it had said so: `Started` and
    /// `Finished` in one message, so a fast node costs one report, not two.
    Ran {
        executor: String,
        result: NodeResult,
    },
}

impl Report {
    pub fn node_run_id(&self) -> NodeRunId {
        match self {
            Report::Dispatched { node_run_id, .. } | Report::Started { node_run_id, .. } => {
                *node_run_id
            }
            Report::Finished(result) | Report::Ran { result, .. } => result.node_run_id,
        }
    }
}

/// One report on its way to the run's driver.
#[derive(Debug)]
pub struct Delivery {
    pub run_id: RunId,
    pub report: Report,
    /// The message that carried it (`Nats-Msg-Id`), used as the append's request id.
    pub message_id: Option<String>,
    /// Answered with what became of the report once the engine knows (in the ledger, a
    /// duplicate, refused for good, or to be tried again), so a queue acks, terminates or
    /// redelivers its message by that. Dropped unanswered means "try again".
    pub receipt: Option<Receipt>,
}

impl Delivery {
    pub fn finished(run_id: RunId, result: NodeResult) -> Self {
        Self {
            run_id,
            report: Report::Finished(result),
            message_id: None,
            receipt: None,
        }
    }
}

/// Where executors send what happens to node runs.
pub type ResultSender = mpsc::UnboundedSender<Delivery>;

pub trait NodeExecutor: Send + Sync + 'static {
    /// Starts the work and returns at once; reports go to `results` as they are known.
    fn submit(&self, work: NodeWork, results: ResultSender);
}

/// Where providers of models that are not in the fixed table come from: the model registry,
/// which changes while an engine or executor runs. `None`: no such model.
pub trait ModelSource: Send + Sync {
    fn provider<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Option<Arc<dyn ModelProvider>>>;
}

/// Model names to providers; `scripted` is always there. Models not in the table are asked of
/// the [`ModelSource`], if there is one.
#[derive(Clone)]
pub struct Providers {
    by_model: HashMap<String, Arc<dyn ModelProvider>>,
    source: Option<Arc<dyn ModelSource>>,
    rag: Option<Arc<dyn RagBackend>>,
}

impl Providers {
    pub fn scripted(provider: ScriptedProvider) -> Self {
        let mut by_model: HashMap<String, Arc<dyn ModelProvider>> = HashMap::new();
        by_model.insert(
            runledger_contracts::flowchart::SCRIPTED_MODEL.to_owned(),
            Arc::new(provider),
        );
        Self {
            by_model,
            source: None,
            rag: None,
        }
    }

    pub fn insert(&mut self, model: impl Into<String>, provider: Arc<dyn ModelProvider>) {
        self.by_model.insert(model.into(), provider);
    }

    /// Asks `source` for every model the table does not hold.
    pub fn with_source(mut self, source: Arc<dyn ModelSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Serves `rag` nodes with `backend`.
    pub fn with_rag(mut self, backend: Arc<dyn RagBackend>) -> Self {
        self.rag = Some(backend);
        self
    }

    pub fn rag(&self) -> Option<&Arc<dyn RagBackend>> {
        self.rag.as_ref()
    }

    pub fn get(&self, model: &str) -> Option<&Arc<dyn ModelProvider>> {
        self.by_model.get(model)
    }

    /// The provider of `model`: from the table, else from the source.
    pub async fn resolve(&self, model: &str) -> Option<Arc<dyn ModelProvider>> {
        if let Some(provider) = self.by_model.get(model) {
            return Some(Arc::clone(provider));
        }
        match &self.source {
            Some(source) => source.provider(model).await,
            None => None,
        }
    }
}

/// Runs node work on the engine's tokio runtime, at most `concurrency` at a time.
pub struct InProcessPool {
    providers: Arc<Providers>,
    permits: Arc<Semaphore>,
}

impl InProcessPool {
    pub const DEFAULT_CONCURRENCY: usize = 256;

    pub fn new(providers: Providers, concurrency: usize) -> Self {
        Self {
            providers: Arc::new(providers),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }
}

impl NodeExecutor for InProcessPool {
    fn submit(&self, work: NodeWork, results: ResultSender) {
        let providers = Arc::clone(&self.providers);
        let permits = Arc::clone(&self.permits);
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let result = run_node(&providers, &work).await;
            // The engine may have shut down; then the result is recovered on restart.
            let _ = results.send(Delivery::finished(work.run_id, result));
        });
    }
}

/// Runs one node run to its result.
pub async fn run_node(providers: &Providers, work: &NodeWork) -> NodeResult {
    let (outcome, tool_calls) = match work.node() {
        None => (
            NodeOutcome::Failed(error(
                "unknown_node",
                "the node is not in the flowchart",
                false,
            )),
            Vec::new(),
        ),
        Some(node) => match node.node_type {
            NodeType::Task => run_task(providers, work, node).await,
            NodeType::Rag => crate::rag::run_rag(providers, work, node).await,
            // Their tools keep state in the ledger: the run's driver executes them
            // (crate::tools), so their events commit with the node's end.
            NodeType::Memory | NodeType::Plan | NodeType::Milestone => (
                NodeOutcome::Failed(error(
                    "not_executable",
                    &format!(
                        "`{}` nodes are run by the engine's tools, not an executor",
                        node.node_type.as_str()
                    ),
                    false,
                )),
                Vec::new(),
            ),
            other => (
                NodeOutcome::Failed(error(
                    "not_executable",
                    &format!(
                        "`{}` nodes are run by the engine, not an executor",
                        other.as_str()
                    ),
                    false,
                )),
                Vec::new(),
            ),
        },
    };
    NodeResult {
        node_run_id: work.node_run_id,
        attempt: work.attempt,
        outcome,
        tool_calls,
    }
}

fn error(code: &str, message: &str, retryable: bool) -> ErrorInfo {
    ErrorInfo {
        code: code.to_owned(),
        message: message.to_owned(),
        retryable,
        details: None,
    }
}

pub(crate) fn hash_of(value: &Value) -> Digest {
    Digest::of(&canonical::to_canonical_vec(value).unwrap_or_default())
}

/// A `task` node run: render the prompt, call the node's model, and check the answer. An
/// answer that is not JSON, or (with `output_schema`) does not satisfy the schema, is sent back
/// to the model with what was wrong, up to `schema_repair_attempts` times; then the node fails
/// with `output_schema_invalid` (or `invalid_output` without a schema, where non-JSON answers
/// are not repaired). Every call, repair calls included, is one `ToolCalled` with its own
/// idempotency key `<node_run_id>:provider:<n>`. A provider error ends the node run at once
/// with that error: no further call, no other model.
async fn run_task(
    providers: &Providers,
    work: &NodeWork,
    node: &Node,
) -> (NodeOutcome, Vec<ToolCalled>) {
    let model = node
        .model
        .as_deref()
        .unwrap_or(runledger_contracts::flowchart::SCRIPTED_MODEL);
    let Some(provider) = providers.resolve(model).await else {
        let e = error(
            "unknown_model",
            &format!("no provider is configured for model `{model}`"),
            false,
        );
        return (NodeOutcome::Failed(e), Vec::new());
    };
    let schema = match node
        .output_schema
        .as_ref()
        .map(OutputSchema::compile)
        .transpose()
    {
        Ok(schema) => schema,
        Err(reason) => {
            let message = format!("the node's output_schema is not a usable JSON Schema: {reason}");
            return (
                NodeOutcome::Failed(error("invalid_output_schema", &message, false)),
                Vec::new(),
            );
        }
    };
    let max_repairs = match schema {
        Some(_) => node
            .schema_repair_attempts
            .unwrap_or(DEFAULT_SCHEMA_REPAIR_ATTEMPTS),
        None => 0,
    };
    let prompt = render_prompt(
        node.prompt.as_deref().unwrap_or_default(),
        &work.input_context,
    );
    let mut repairs: Vec<RepairTurn> = Vec::new();
    let mut calls = Vec::new();
    loop {
        let input_hash = if repairs.is_empty() {
            hash_of(&json!({ "model": model, "prompt": prompt }))
        } else {
            hash_of(&json!({ "model": model, "prompt": prompt, "repairs": repairs }))
        };
        let started_at = Timestamp::now();
        let clock = Instant::now();
        let request = ModelRequest {
            run_id: work.run_id,
            node_run_id: work.node_run_id,
            node,
            model,
            prompt: prompt.clone(),
            input_context: &work.input_context,
            ordinal: work.ordinal,
            attempt: work.attempt,
            repairs: &repairs,
            deadline: work.deadline,
        };
        let answer = provider.complete(request).await;
        let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let call = ProviderCallRecord {
            work,
            node,
            provider: provider.name(),
            model,
            number: calls.len() + 1,
            input_hash,
            started_at,
            duration_ms,
        };
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                calls.push(call.event(None, Some(e.clone())));
                return (NodeOutcome::Failed(e), calls);
            }
        };
        let tokens = Some((response.input_tokens, response.output_tokens));
        let violations = match (&response.answer, &schema) {
            (Answer::Json(output), Some(schema)) => schema.violations(output),
            (Answer::Json(_), None) => Vec::new(),
            (Answer::NotJson { error, .. }, _) => {
                vec![SchemaViolation {
                    path: String::new(),
                    message: format!("the answer is not JSON: {error}"),
                }]
            }
        };
        if violations.is_empty()
            && let Answer::Json(output) = response.answer
        {
            calls.push(call.event(tokens, None));
            return (
                NodeOutcome::Succeeded {
                    output,
                    warnings: Vec::new(),
                    fallback_used: false,
                },
                calls,
            );
        }
        let rejection = rejected_answer(
            model,
            schema.is_some(),
            &violations,
            repairs.len(),
            calls.len() + 1,
        );
        calls.push(call.event(tokens, Some(rejection.clone())));
        if rejection.code != "output_schema_invalid"
            || repairs.len() >= usize::try_from(max_repairs).unwrap_or(usize::MAX)
        {
            return (NodeOutcome::Failed(rejection), calls);
        }
        repairs.push(RepairTurn {
            answer: response.answer.text(),
            feedback: repair_feedback(&response.answer, &violations),
        });
    }
}

/// Why an answer was rejected: `output_schema_invalid` (the node has a schema; details list
/// the violations) or `invalid_output` (no schema, and the answer is not JSON). Neither is
/// retryable by the node's retry policy: `schema_repair_attempts` is how a node asks again.
fn rejected_answer(
    model: &str,
    has_schema: bool,
    violations: &[SchemaViolation],
    repairs: usize,
    calls: usize,
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
        return ErrorInfo {
            code: "invalid_output".into(),
            message: format!(
                "model `{model}` did not answer JSON ({})",
                listed.join("; ")
            ),
            retryable: false,
            details: None,
        };
    }
    ErrorInfo {
        code: "output_schema_invalid".into(),
        message: format!(
            "the answer of model `{model}` does not satisfy the output_schema after {repairs} repair attempt(s): {}",
            listed.join("; ")
        ),
        retryable: false,
        details: Some(
            json!({ "violations": violations, "repair_attempts": repairs, "provider_calls": calls }),
        ),
    }
}

/// What one provider call of a task node run is recorded with.
struct ProviderCallRecord<'a> {
    work: &'a NodeWork,
    node: &'a Node,
    provider: &'a str,
    model: &'a str,
    /// 1 for the first call of the node run, +1 per repair call.
    number: usize,
    input_hash: Digest,
    started_at: Timestamp,
    duration_ms: u64,
}

impl ProviderCallRecord<'_> {
    /// The `ToolCalled` of the call: `tokens` when the provider answered, `failure` when the
    /// call failed or its answer was rejected.
    fn event(
        self,
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
            idempotency_key: format!("{}:provider:{}", self.work.node_run_id, self.number),
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
        }
    }
}
