//! `rag` nodes: the node's config becomes a [`RagRequest`] (its `query` rendered from the
//! input context like a prompt) for a [`RagBackend`], which retrieves or indexes and answers
//! the node's output. The backend lives in the `runledger-rag` crate; the engine and the
//! executor worker are given one by the binary. Without one, a `rag` node fails with
//! `rag_unavailable` rather than pretending to have retrieved something.
//!
//! The call is recorded as one `ToolCalled` (`tool: rag`, `operation: query | index`, the
//! idempotency key `<node_run_id>:rag:<operation>`); the hits themselves are the node's output
//! and hence its artifact.

use std::time::Instant;

use runledger_contracts::events::{ErrorInfo, ToolAttempt, ToolCalled, ToolOutcome};
use runledger_contracts::flowchart::{Node, RagOperation};
use runledger_contracts::ids::NodeRunId;
use runledger_contracts::rag::IndexMode;
use runledger_contracts::time::Timestamp;
use serde_json::{Value, json};

use crate::decide::NodeOutcome;
use crate::executor::{NodeWork, Providers};
use crate::provider::{BoxFuture, render_prompt};

/// What a `rag` node asks of its backend.
#[derive(Debug, Clone, PartialEq)]
pub struct RagRequest {
    pub collection: String,
    pub operation: RagOperation,
    /// The rendered query (`query` only).
    pub query: String,
    pub top_k: u32,
    pub mode: IndexMode,
    pub sources: Vec<String>,
    pub path_glob: Option<String>,
    pub node_run_id: NodeRunId,
}

/// Retrieval and indexing for `rag` nodes. `Err` carries the node's failure (typed code,
/// whether a retry may help).
pub trait RagBackend: Send + Sync {
    fn run(&self, request: RagRequest) -> BoxFuture<'_, Result<Value, ErrorInfo>>;
}

fn failure(code: &str, message: String) -> ErrorInfo {
    ErrorInfo {
        code: code.to_owned(),
        message,
        retryable: false,
        details: None,
    }
}

/// Runs a `rag` node run through the providers' backend.
pub(crate) async fn run_rag(
    providers: &Providers,
    work: &NodeWork,
    node: &Node,
) -> (NodeOutcome, Vec<ToolCalled>) {
    let Some(config) = node.rag.as_ref() else {
        let e = failure(
            "invalid_node",
            format!("node `{}` has no `rag` config", node.id),
        );
        return (NodeOutcome::Failed(e), Vec::new());
    };
    let request = RagRequest {
        collection: config.collection.clone(),
        operation: config.operation,
        query: config
            .query
            .as_deref()
            .map(|q| render_prompt(q, &work.input_context))
            .unwrap_or_default(),
        top_k: config.top_k,
        mode: config.mode.unwrap_or_default(),
        sources: config.sources.clone(),
        path_glob: config.path_glob.clone(),
        node_run_id: work.node_run_id,
    };
    let args = match config.operation {
        RagOperation::Query => json!({
            "collection": request.collection, "query": request.query, "top_k": request.top_k,
            "sources": request.sources, "path_glob": request.path_glob,
        }),
        RagOperation::Index => json!({ "collection": request.collection, "mode": request.mode }),
    };
    let started_at = Timestamp::now();
    let clock = Instant::now();
    let answer = match providers.rag() {
        Some(backend) => backend.run(request).await,
        None => Err(failure(
            "rag_unavailable",
            "this process has no RAG backend (set --rag-data-dir)".into(),
        )),
    };
    let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let operation = config.operation.as_str();
    let (outcome, summary, error) = match answer {
        Ok(output) => {
            let summary = json!({
                "index_version": output.get("index_version"),
                "hits": output.get("hits").and_then(Value::as_array).map(Vec::len),
                "files": output.get("files"),
            });
            (
                NodeOutcome::Succeeded {
                    output,
                    warnings: Vec::new(),
                    fallback_used: false,
                    agent: None,
                },
                Some(summary),
                None,
            )
        }
        Err(e) => (NodeOutcome::Failed(e.clone()), None, Some(e)),
    };
    let call = ToolCalled {
        run_id: work.run_id,
        node_id: node.id.clone(),
        node_run_id: work.node_run_id,
        tool: "rag".into(),
        operation: operation.to_owned(),
        idempotency_key: format!("{}:rag:{operation}", work.node_run_id),
        input_hash: crate::executor::hash_of(&args),
        outcome: if error.is_some() {
            ToolOutcome::Error
        } else {
            ToolOutcome::Ok
        },
        attempts: vec![ToolAttempt {
            attempt: 1,
            started_at,
            duration_ms,
            error: error.clone(),
        }],
        duration_ms,
        provider: None,
        output: summary,
        error,
        agent: None,
    };
    (outcome, vec![call])
}
