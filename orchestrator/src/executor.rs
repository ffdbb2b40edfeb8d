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
use runledger_contracts::flowchart::{Flowchart, Node, NodeType};
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::decide::{NodeOutcome, NodeResult};
use crate::provider::{ModelProvider, ModelRequest, ScriptedProvider, render_prompt};
use crate::state::RunState;

/// `NodeStarted.executor` of node runs the in-process pool runs.
pub const INPROCESS: &str = "inprocess";
/// `NodeStarted.executor` of `flowchart` node runs: the engine runs them as child runs.
pub const SUBFLOW: &str = "subflow";

/// Everything an executor needs for one node run.
#[derive(Debug, Clone)]
pub struct NodeWork {
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub ordinal: u32,
    pub deadline: Option<Timestamp>,
    pub input_context: Value,
    pub flowchart: Arc<Flowchart>,
    pub node_index: usize,
}

impl NodeWork {
    pub fn node(&self) -> Option<&Node> {
        self.flowchart.node_at(self.node_index)
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
            flowchart: Arc::clone(&self.flowchart),
            node_index: nr.node,
        })
    }
}

/// Where executors send results: the run and what happened to its node run.
pub type ResultSender = mpsc::UnboundedSender<(RunId, NodeResult)>;

pub trait NodeExecutor: Send + Sync + 'static {
    /// Starts the work and returns at once; the result goes to `results` when it is known.
    fn submit(&self, work: NodeWork, results: ResultSender);
}

/// Model names to providers; `scripted` is always there.
#[derive(Clone)]
pub struct Providers {
    by_model: HashMap<String, Arc<dyn ModelProvider>>,
}

impl Providers {
    pub fn scripted(provider: ScriptedProvider) -> Self {
        let mut by_model: HashMap<String, Arc<dyn ModelProvider>> = HashMap::new();
        by_model.insert(runledger_contracts::flowchart::SCRIPTED_MODEL.to_owned(), Arc::new(provider));
        Self { by_model }
    }

    pub fn insert(&mut self, model: impl Into<String>, provider: Arc<dyn ModelProvider>) {
        self.by_model.insert(model.into(), provider);
    }

    pub fn get(&self, model: &str) -> Option<&Arc<dyn ModelProvider>> {
        self.by_model.get(model)
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
        Self { providers: Arc::new(providers), permits: Arc::new(Semaphore::new(concurrency.max(1))) }
    }
}

impl NodeExecutor for InProcessPool {
    fn submit(&self, work: NodeWork, results: ResultSender) {
        let providers = Arc::clone(&self.providers);
        let permits = Arc::clone(&self.permits);
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else { return };
            let result = run_node(&providers, &work).await;
            // The engine may have shut down; then the result is recovered on restart.
            let _ = results.send((work.run_id, result));
        });
    }
}

/// Runs one node run to its result.
pub async fn run_node(providers: &Providers, work: &NodeWork) -> NodeResult {
    let (outcome, tool_calls) = match work.node() {
        None => (NodeOutcome::Failed(error("unknown_node", "the node is not in the flowchart", false)), Vec::new()),
        Some(node) => match node.node_type {
            NodeType::Task => run_task(providers, work, node).await,
            NodeType::Memory | NodeType::Plan | NodeType::Milestone | NodeType::Rag => record_tool(work, node),
            other => (
                NodeOutcome::Failed(error(
                    "not_executable",
                    &format!("`{}` nodes are run by the engine, not an executor", other.as_str()),
                    false,
                )),
                Vec::new(),
            ),
        },
    };
    NodeResult { node_run_id: work.node_run_id, attempt: work.attempt, outcome, tool_calls }
}

fn error(code: &str, message: &str, retryable: bool) -> ErrorInfo {
    ErrorInfo { code: code.to_owned(), message: message.to_owned(), retryable, details: None }
}

fn hash_of(value: &Value) -> Digest {
    Digest::of(&canonical::to_canonical_vec(value).unwrap_or_default())
}

async fn run_task(providers: &Providers, work: &NodeWork, node: &Node) -> (NodeOutcome, Vec<ToolCalled>) {
    let model = node.model.as_deref().unwrap_or(runledger_contracts::flowchart::SCRIPTED_MODEL);
    let Some(provider) = providers.get(model) else {
        let e = error("unknown_model", &format!("no provider is configured for model `{model}`"), false);
        return (NodeOutcome::Failed(e), Vec::new());
    };
    let prompt = render_prompt(node.prompt.as_deref().unwrap_or_default(), &work.input_context);
    let input_hash = hash_of(&json!({ "model": model, "prompt": prompt }));
    let started_at = Timestamp::now();
    let clock = Instant::now();
    let request = ModelRequest {
        run_id: work.run_id,
        node_run_id: work.node_run_id,
        node,
        model,
        prompt,
        input_context: &work.input_context,
        ordinal: work.ordinal,
        attempt: work.attempt,
    };
    let answer = provider.complete(request).await;
    let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (input_tokens, output_tokens, failure) = match &answer {
        Ok(r) => (r.input_tokens, r.output_tokens, None),
        Err(e) => (None, None, Some(e.clone())),
    };
    let call = ToolCalled {
        run_id: work.run_id,
        node_id: node.id.clone(),
        node_run_id: work.node_run_id,
        tool: "provider".into(),
        operation: "complete".into(),
        idempotency_key: format!("{}:provider:1", work.node_run_id),
        input_hash,
        outcome: if failure.is_some() { ToolOutcome::Error } else { ToolOutcome::Ok },
        attempts: vec![ToolAttempt { attempt: 1, started_at, duration_ms, error: failure.clone() }],
        duration_ms,
        provider: Some(ProviderCall {
            provider: provider.name().to_owned(),
            model: model.to_owned(),
            latency_ms: duration_ms,
            input_tokens,
            output_tokens,
        }),
        output: None,
        error: failure,
    };
    let outcome = match answer {
        Ok(response) => NodeOutcome::Succeeded { output: response.output, warnings: Vec::new(), fallback_used: false },
        Err(e) => NodeOutcome::Failed(e),
    };
    (outcome, vec![call])
}

/// Memory, plan, milestone and rag nodes: the operation and its arguments are recorded as a
/// tool call and become the node's output. Their stores (event-sourced tool state) come with
/// the executor gateway; until then nothing is read or written beyond the ledger.
fn record_tool(work: &NodeWork, node: &Node) -> (NodeOutcome, Vec<ToolCalled>) {
    let (operation, args) = match node.node_type {
        NodeType::Memory => node.memory.as_ref().map(|c| (json!(c.operation), Value::Object(c.args.clone()))),
        NodeType::Plan => node.plan.as_ref().map(|c| (json!(c.operation), Value::Object(c.args.clone()))),
        NodeType::Milestone => node.milestone.as_ref().map(|c| (json!(c.operation), Value::Object(c.args.clone()))),
        NodeType::Rag => node.rag.as_ref().map(|c| {
            (json!("query"), json!({ "collection": c.collection, "query": render_prompt(&c.query, &work.input_context), "top_k": c.top_k }))
        }),
        _ => None,
    }
    .unwrap_or((Value::Null, Value::Null));
    let operation_name = operation.as_str().unwrap_or("unknown").to_owned();
    let output = json!({ "operation": operation, "args": args, "applied": false });
    let call = ToolCalled {
        run_id: work.run_id,
        node_id: node.id.clone(),
        node_run_id: work.node_run_id,
        tool: node.node_type.as_str().to_owned(),
        operation: operation_name.clone(),
        idempotency_key: format!("{}:{}:{operation_name}", work.node_run_id, node.node_type.as_str()),
        input_hash: hash_of(&args),
        outcome: ToolOutcome::Ok,
        attempts: vec![ToolAttempt { attempt: 1, started_at: Timestamp::now(), duration_ms: 0, error: None }],
        duration_ms: 0,
        provider: None,
        output: Some(output.clone()),
        error: None,
    };
    (NodeOutcome::Succeeded { output, warnings: Vec::new(), fallback_used: false }, vec![call])
}
