//! [`Rag`]: the one entry point the binary, the API and `rag` nodes use. It owns a ledger
//! handle and the data directory of the derived search indexes, and keeps each collection's
//! index open (with its reader) while the ledger's current manifest is the one it holds, so a
//! query costs one stream read and one search.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use runledger_contracts::events::ErrorInfo;
use runledger_contracts::flowchart::RagOperation;
use runledger_ledger::EventStore;
use runledger_orchestrator::provider::BoxFuture;
use runledger_orchestrator::rag::{RagBackend, RagRequest};
use serde::Serialize;
use serde_json::Value;
use tantivy::IndexReader;

use crate::error::RagError;
use crate::indexer::{
    IndexOutcome, IndexRequest, collection_dir, load_manifest, rebuild_from_manifest, run_index,
};
use crate::manifest::Manifest;
use crate::registry::{CollectionState, Collections, CompletedIndex};
use crate::search::{Filters, Hit, SearchIndex};

/// A query of one collection.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    pub collection: String,
    pub query: String,
    pub top_k: u32,
    pub sources: Vec<String>,
    pub path_glob: Option<String>,
}

/// Hits, and the index version they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryResult {
    pub operation: &'static str,
    pub collection: String,
    pub query: String,
    /// Stream version of the `RagIndexCompleted` whose index answered.
    pub index_version: u64,
    /// blake3 of that index run's manifest blob.
    pub manifest: String,
    pub hits: Vec<Hit>,
}

struct Opened {
    manifest_hex: String,
    manifest: Manifest,
    /// With an embedding model: the chunks' vectors.
    vectors: Option<crate::dense::Vectors>,
    search: SearchIndex,
    reader: IndexReader,
}

pub struct Rag<S> {
    store: S,
    data_dir: PathBuf,
    open: Mutex<HashMap<String, Arc<Opened>>>,
}

impl<S: EventStore> Rag<S> {
    pub fn new(store: S, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            store,
            data_dir: data_dir.into(),
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn collections(&self) -> Collections<'_, S> {
        Collections::new(&self.store)
    }

    /// One index run (see [`crate::indexer`]).
    pub async fn index(&self, request: &IndexRequest) -> Result<IndexOutcome, RagError> {
        self.forget(&request.collection);
        let outcome = run_index(&self.store, &self.data_dir, request).await;
        self.forget(&request.collection);
        outcome
    }

    fn forget(&self, collection: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(collection);
        }
    }

    /// The collection's state from the ledger (spec, last completed, running, failed).
    pub async fn status(&self, collection: &str) -> Result<CollectionState, RagError> {
        self.collections().require(collection).await
    }

    /// The `top_k` best chunks for the query, from the last completed index.
    pub async fn query(&self, request: &QueryRequest) -> Result<QueryResult, RagError> {
        let state = self.collections().require(&request.collection).await?;
        let (Some(spec), Some(done)) = (&state.spec, &state.last_completed) else {
            return Err(RagError::NotIndexed {
                name: request.collection.clone(),
            });
        };
        for source in &request.sources {
            if !spec.sources.iter().any(|s| &s.name == source) {
                return Err(RagError::UnknownSource {
                    collection: spec.name.clone(),
                    source_name: source.clone(),
                });
            }
        }
        let glob = match &request.path_glob {
            Some(g) => Some(
                crate::walk::glob(g)
                    .map_err(|source| RagError::BadGlob {
                        field: "path_glob".into(),
                        glob: g.clone(),
                        source,
                    })?
                    .compile_matcher(),
            ),
            None => None,
        };
        let opened = self.opened(spec, done).await?;
        let keys = glob.map(|g| {
            opened
                .manifest
                .files
                .keys()
                .filter(|k| g.is_match(k.as_str()))
                .cloned()
                .collect()
        });
        let filters = Filters {
            sources: request.sources.clone(),
            keys,
        };
        let top_k = usize::try_from(request.top_k).unwrap_or(usize::MAX);
        let hits = match (&opened.vectors, &spec.embedding_model) {
            (Some(vectors), Some(model)) => {
                // Each ranking looks deeper than top_k, so fusion can promote a chunk that
                // only one of them ranks high.
                let depth = top_k.saturating_mul(4).max(50);
                let lexical =
                    opened
                        .search
                        .search(&opened.reader, &request.query, depth, &filters)?;
                let embeddings = crate::dense::embedder(&self.store, &spec.name, model).await?;
                let query =
                    crate::dense::embed(&embeddings, &spec.name, vec![request.query.clone()])
                        .await?
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                let semantic = vectors.search(&query, depth, &filters);
                crate::dense::fuse(&[lexical, semantic], top_k)
            }
            _ => opened
                .search
                .search(&opened.reader, &request.query, top_k, &filters)?,
        };
        Ok(QueryResult {
            operation: "query",
            collection: spec.name.clone(),
            query: request.query.clone(),
            index_version: done.version,
            manifest: opened.manifest_hex.clone(),
            hits,
        })
    }

    /// The collection's open index, if it reflects `done`; else opened again, and rebuilt
    /// from the manifest and the sources when the files on disk are not that index.
    async fn opened(
        &self,
        spec: &runledger_contracts::rag::CollectionSpec,
        done: &CompletedIndex,
    ) -> Result<Arc<Opened>, RagError> {
        let hex = done.event.manifest.to_hex();
        if let Ok(open) = self.open.lock()
            && let Some(o) = open.get(&spec.name)
            && o.manifest_hex == hex
        {
            return Ok(Arc::clone(o));
        }
        let manifest = load_manifest(&self.store, &spec.name, &done.event.manifest).await?;
        let dir = collection_dir(&self.data_dir, &spec.name);
        let search = SearchIndex::open(&dir)?;
        let vectors_current = spec
            .embedding_model
            .as_ref()
            .is_none_or(|model| crate::dense::Vectors::is_current(&dir, model, &hex));
        if search.manifest_digest()?.as_deref() != Some(hex.as_str()) || !vectors_current {
            // Resolved first: without its embedding model the index cannot be rebuilt whole.
            let embeddings = match &spec.embedding_model {
                Some(model) => Some(crate::dense::embedder(&self.store, &spec.name, model).await?),
                None => None,
            };
            let writer = search.writer(&spec.name)?;
            let (spec_c, manifest_c) = (spec.clone(), manifest.clone());
            let commits = done.event.commits.clone();
            let rebuild_dir = dir.clone();
            let dense = embeddings.is_some();
            let (stale, added) = tokio::task::spawn_blocking(move || {
                rebuild_from_manifest(&spec_c, &manifest_c, &commits, &rebuild_dir, writer, dense)
            })
            .await
            .map_err(|e| RagError::Corrupt {
                name: spec.name.clone(),
                reason: format!("the rebuild task ended abnormally: {e}"),
            })??;
            if let Some(embeddings) = &embeddings {
                crate::dense::update(
                    embeddings,
                    &spec.name,
                    crate::dense::Vectors::default(),
                    &[],
                    added,
                    hex.clone(),
                )
                .await?
                .save(&dir)?;
            }
            tracing::info!(
                collection = %spec.name,
                stale,
                "rebuilt the search index from the ledger's manifest and the sources"
            );
        }
        let reader = search.reader()?;
        reader
            .reload()
            .map_err(|e| RagError::index(search.path(), e))?;
        let vectors = match spec.embedding_model {
            Some(_) => crate::dense::Vectors::load(&dir),
            None => None,
        };
        let opened = Arc::new(Opened {
            manifest_hex: hex,
            manifest,
            vectors,
            search,
            reader,
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(spec.name.clone(), Arc::clone(&opened));
        }
        Ok(opened)
    }
}

fn node_error(e: &RagError) -> ErrorInfo {
    ErrorInfo {
        code: e.code().to_owned(),
        message: crate::error_chain(e),
        retryable: e.retryable(),
        details: e.field().map(|f| serde_json::json!({ "field": f })),
    }
}

/// `rag` nodes run through [`Rag`]: their output is the [`QueryResult`] or the
/// [`IndexOutcome`] as JSON.
impl<S: EventStore + 'static> RagBackend for Rag<S> {
    fn run(&self, request: RagRequest) -> BoxFuture<'_, Result<Value, ErrorInfo>> {
        Box::pin(async move {
            let output = match request.operation {
                RagOperation::Query => {
                    let result = self
                        .query(&QueryRequest {
                            collection: request.collection,
                            query: request.query,
                            top_k: request.top_k,
                            sources: request.sources,
                            path_glob: request.path_glob,
                        })
                        .await
                        .map_err(|e| node_error(&e))?;
                    serde_json::to_value(result)
                }
                RagOperation::Index => {
                    let outcome = self
                        .index(&IndexRequest {
                            collection: request.collection,
                            mode: request.mode,
                            actor: format!("node_run:{}", request.node_run_id),
                            node_run_id: Some(request.node_run_id),
                            request_id: None,
                        })
                        .await
                        .map_err(|e| node_error(&e))?;
                    serde_json::to_value(outcome).map(|mut v| {
                        v["operation"] = Value::from("index");
                        v
                    })
                }
            };
            output.map_err(|e| ErrorInfo {
                code: "invalid_output".into(),
                message: e.to_string(),
                retryable: false,
                details: None,
            })
        })
    }
}
