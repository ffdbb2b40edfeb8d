//! The `rag` tool domain: `rag_source_list`, `rag_index_status`, `rag_trigger_index` and
//! `rag_query`, served to the agent loop of `task` nodes through [`ToolDomain`].
//!
//! Every tool answers from [`Rag`], so a tool call sees exactly what a `rag` node or
//! `runledger rag` sees: collections and index runs from the ledger, hits from the search
//! index of the last completed run. The loop validates arguments against the schemas below
//! before a call; what the schemas cannot say (a collection that does not exist, a bad glob)
//! comes back as a typed [`ToolCallError`] whose code the model and the `ToolCalled` event see.

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::ids::RequestId;
use runledger_contracts::rag::{CollectionSpec, IndexMode, MAX_NAME_LEN};
use runledger_ledger::EventStore;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::RagError;
use crate::indexer::IndexRequest;
use crate::registry::CollectionState;
use crate::service::{QueryRequest, Rag};

/// The tool names, as FLOWCHART-FORMAT.md fixes them.
pub const SOURCE_LIST: &str = "rag_source_list";
pub const INDEX_STATUS: &str = "rag_index_status";
pub const TRIGGER_INDEX: &str = "rag_trigger_index";
pub const QUERY: &str = "rag_query";

/// Most hits one `rag_query` may ask for (as `top_k` of a `rag` node).
pub const MAX_TOP_K: u32 = 100;

/// The `rag` tool domain over one [`Rag`] (the same one `rag` nodes use in this process).
pub struct RagTools<S> {
    rag: Arc<Rag<S>>,
}

impl<S: EventStore + 'static> RagTools<S> {
    pub fn new(rag: Arc<Rag<S>>) -> Self {
        Self { rag }
    }

    /// The domain as the agent loop holds it.
    pub fn shared(rag: Arc<Rag<S>>) -> Arc<dyn ToolDomain> {
        Arc::new(Self::new(rag))
    }
}

fn collection_schema() -> Value {
    json!({
        "type": "string",
        "description": "Collection name (see rag_source_list).",
        "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$",
        "minLength": 1,
        "maxLength": MAX_NAME_LEN,
    })
}

/// The four tools with their argument schemas.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: SOURCE_LIST.into(),
            description: "List the RAG collections (or one) with their sources: name, kind, \
                          path or repository, include/exclude globs, and the current index version."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": { "collection": collection_schema() },
                "additionalProperties": false,
            }),
            side_effects: false,
        },
        ToolSpec {
            name: INDEX_STATUS.into(),
            description: "Index status of a collection from the ledger: the last completed index \
                          run (version, mode, file and chunk counts, manifest digest), a run in \
                          progress or interrupted, and the last failure."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": { "collection": collection_schema() },
                "required": ["collection"],
                "additionalProperties": false,
            }),
            side_effects: false,
        },
        ToolSpec {
            name: TRIGGER_INDEX.into(),
            description: "Run an index of a collection and wait for it: `delta` (default) reads \
                          only new and changed files and drops deleted ones; `full` re-reads \
                          every file and rebuilds the search index."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "collection": collection_schema(),
                    "mode": { "type": "string", "enum": ["full", "delta"], "default": "delta" },
                },
                "required": ["collection"],
                "additionalProperties": false,
            }),
            side_effects: true,
        },
        ToolSpec {
            name: QUERY.into(),
            description: "Search a collection (BM25, fused with dense retrieval when the \
                          collection has an embedding model). Each hit has its source, path, \
                          line range, score, text and digests, and the index version it came from."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "collection": collection_schema(),
                    "query": { "type": "string", "minLength": 1, "maxLength": 4000 },
                    "top_k": { "type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5 },
                    "sources": {
                        "type": "array",
                        "items": { "type": "string", "minLength": 1, "maxLength": MAX_NAME_LEN },
                        "maxItems": runledger_contracts::rag::MAX_SOURCES,
                        "description": "Only hits from these sources."
                    },
                    "path_glob": {
                        "type": "string", "minLength": 1, "maxLength": 1000,
                        "description": "Only files whose `<source>/<path>` matches this glob."
                    },
                },
                "required": ["collection", "query"],
                "additionalProperties": false,
            }),
            side_effects: false,
        },
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    collection: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionArgs {
    collection: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerArgs {
    collection: String,
    #[serde(default)]
    mode: IndexMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryArgs {
    collection: String,
    query: String,
    #[serde(default = "default_top_k")]
    top_k: u32,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    path_glob: Option<String>,
}

fn default_top_k() -> u32 {
    5
}

fn parse<T: serde::de::DeserializeOwned>(arguments: Value) -> Result<T, ToolCallError> {
    serde_json::from_value(arguments).map_err(|e| ToolCallError::InvalidArguments {
        message: e.to_string(),
    })
}

/// The tool-facing code of a [`RagError`]: the agent's vocabulary (`unknown_collection`,
/// `never_indexed`) where the model can act on it, the crate's own code otherwise.
pub fn tool_error(e: RagError) -> ToolCallError {
    let code = match &e {
        RagError::Invalid(_) | RagError::BadGlob { .. } => {
            return ToolCallError::InvalidArguments {
                message: crate::error_chain(&e),
            };
        }
        RagError::NotFound { .. } => "unknown_collection",
        RagError::NotIndexed { .. } => "never_indexed",
        other => other.code(),
    };
    ToolCallError::Failed {
        code,
        message: crate::error_chain(&e),
        source: Some(Box::new(e)),
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, ToolCallError> {
    serde_json::to_value(value).map_err(|e| ToolCallError::Failed {
        code: "invalid_output",
        message: e.to_string(),
        source: Some(Box::new(e)),
    })
}

/// What `rag_source_list` says of one collection.
fn summary(state: &CollectionState, spec: &CollectionSpec) -> Value {
    json!({
        "name": spec.name,
        "description": spec.description,
        "version": state.version,
        "sources": spec.sources,
        "embedding_model": spec.embedding_model,
        "index_version": state.last_completed.as_ref().map(|c| c.version),
    })
}

/// What `rag_index_status` answers: the ledger's view of the collection's index runs.
pub fn status_view(name: &str, state: &CollectionState) -> Value {
    json!({
        "collection": name,
        "version": state.version,
        "indexed": state.last_completed.is_some(),
        "index_runs": state.index_runs,
        "last_completed": state.last_completed.as_ref().map(|c| json!({
            "index_version": c.version,
            "completed_at": c.completed_at,
            "index_run_id": c.event.index_run_id,
            "mode": c.event.mode,
            "files": c.event.files,
            "chunks_total": c.event.chunks_total,
            "manifest": c.event.manifest.to_hex(),
            "duration_ms": c.event.duration_ms,
        })),
        "running": state.running.as_ref().map(|r| json!({
            "index_run_id": r.index_run_id,
            "mode": r.mode,
            "base_version": r.base_version,
        })),
        "last_failed": state.last_failed.as_ref().map(|f| json!({
            "index_run_id": f.index_run_id,
            "error": f.error,
        })),
    })
}

impl<S: EventStore + 'static> RagTools<S> {
    async fn source_list(&self, args: ListArgs) -> Result<Value, ToolCallError> {
        let registry = self.rag.collections();
        let states = match &args.collection {
            Some(name) => vec![registry.require(name).await.map_err(tool_error)?],
            None => registry.list().await.map_err(tool_error)?,
        };
        let collections: Vec<Value> = states
            .iter()
            .filter_map(|s| s.spec.as_ref().map(|spec| summary(s, spec)))
            .collect();
        Ok(json!({ "collections": collections }))
    }

    async fn index_status(&self, args: CollectionArgs) -> Result<Value, ToolCallError> {
        let state = self
            .rag
            .status(&args.collection)
            .await
            .map_err(tool_error)?;
        Ok(status_view(&args.collection, &state))
    }

    async fn trigger_index(
        &self,
        ctx: &ToolCallContext,
        args: TriggerArgs,
    ) -> Result<Value, ToolCallError> {
        let outcome = self
            .rag
            .index(&IndexRequest {
                collection: args.collection,
                mode: args.mode,
                actor: format!("node_run:{}", ctx.node_run_id),
                node_run_id: Some(ctx.node_run_id),
                // A call the loop runs again (a retried attempt) answers the recorded run.
                request_id: RequestId::new(ctx.idempotency_key.as_str()).ok(),
            })
            .await
            .map_err(tool_error)?;
        to_value(&outcome)
    }

    async fn query(&self, args: QueryArgs) -> Result<Value, ToolCallError> {
        if args.top_k == 0 || args.top_k > MAX_TOP_K {
            return Err(ToolCallError::InvalidArguments {
                message: format!("top_k: must be 1 to {MAX_TOP_K}, not {}", args.top_k),
            });
        }
        if args.query.trim().is_empty() {
            return Err(ToolCallError::InvalidArguments {
                message: "query: must not be empty".into(),
            });
        }
        let result = self
            .rag
            .query(&QueryRequest {
                collection: args.collection,
                query: args.query,
                top_k: args.top_k,
                sources: args.sources,
                path_glob: args.path_glob,
            })
            .await
            .map_err(tool_error)?;
        to_value(&result)
    }
}

impl<S: EventStore + 'static> ToolDomain for RagTools<S> {
    fn domain(&self) -> &str {
        "rag"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        specs()
    }

    fn call<'a>(
        &'a self,
        ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(async move {
            match name {
                SOURCE_LIST => self.source_list(parse(arguments)?).await,
                INDEX_STATUS => self.index_status(parse(arguments)?).await,
                TRIGGER_INDEX => self.trigger_index(ctx, parse(arguments)?).await,
                QUERY => self.query(parse(arguments)?).await,
                other => Err(ToolCallError::Refused {
                    code: "unknown_tool",
                    message: format!("the rag domain has no tool `{other}`"),
                }),
            }
        })
    }
}
