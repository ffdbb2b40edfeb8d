//! Dense retrieval: chunk vectors from the collection's embedding model (a registry model
//! served at `/v1/embeddings`), kept beside the tantivy index as a derived read model, and
//! reciprocal rank fusion of the dense and BM25 rankings.
//!
//! The vectors never reach the ledger: `<data_dir>/<collection>/vectors-v1.json` holds, per
//! file key, the chunks the search index holds with their vectors, and the digest of the
//! manifest it reflects (as the tantivy commit payload does). When that digest is not the
//! ledger's current manifest, the index is rebuilt (and re-embedded) like a lost tantivy index.
//! Search is exact (cosine over every vector that passes the filters): right for collections
//! of up to some 100,000 chunks, which is what an agent's collection holds; an ANN index is
//! the way past that.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use runledger_executor_gateway::models::ModelRegistry;
use runledger_executor_gateway::providers::embeddings::Embeddings;
use runledger_ledger::EventStore;
use serde::{Deserialize, Serialize};

use crate::error::RagError;
use crate::search::{Filters, Hit};

/// The file of a collection's vectors, under its data directory.
pub const VECTORS_FILE: &str = "vectors-v1.json";
/// Inputs per `/v1/embeddings` request.
const BATCH: usize = 64;
/// The `k` of reciprocal rank fusion: `score = Σ 1 / (k + rank)` (the usual 60).
pub const RRF_K: f32 = 60.0;

/// One chunk and its vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenseChunk {
    pub hit: Hit,
    pub vector: Vec<f32>,
}

/// The vectors of one collection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Vectors {
    pub model: String,
    /// Hex digest of the manifest these vectors reflect.
    pub manifest: String,
    pub files: BTreeMap<String, Vec<DenseChunk>>,
}

pub fn path(collection_dir: &Path) -> PathBuf {
    collection_dir.join(VECTORS_FILE)
}

impl Vectors {
    /// The stored vectors, if the file is there and readable.
    pub fn load(collection_dir: &Path) -> Option<Vectors> {
        let bytes = std::fs::read(path(collection_dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the file whole (a temporary file renamed over it, so a reader never sees half).
    pub fn save(&self, collection_dir: &Path) -> Result<(), RagError> {
        let target = path(collection_dir);
        let temporary = collection_dir.join(format!("{VECTORS_FILE}.tmp"));
        let io = |e: std::io::Error| RagError::Index {
            path: target.clone(),
            source: e.into(),
        };
        let bytes = serde_json::to_vec(self).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(&temporary, bytes).map_err(io)?;
        std::fs::rename(&temporary, &target).map_err(io)
    }

    /// Whether these vectors reflect `manifest_hex`, embedded with `model`.
    pub fn is_current(collection_dir: &Path, model: &str, manifest_hex: &str) -> bool {
        Vectors::load(collection_dir)
            .is_some_and(|v| v.model == model && v.manifest == manifest_hex)
    }

    /// The best `limit` chunks by cosine similarity to `query`, among those `filters` keep.
    pub fn search(&self, query: &[f32], limit: usize, filters: &Filters) -> Vec<Hit> {
        let keys = filters.keys.as_ref().map(|k| {
            k.iter()
                .map(String::as_str)
                .collect::<std::collections::HashSet<_>>()
        });
        let mut scored: Vec<(f32, &Hit)> = self
            .files
            .iter()
            .filter(|(key, _)| keys.as_ref().is_none_or(|k| k.contains(key.as_str())))
            .flat_map(|(_, chunks)| chunks)
            .filter(|c| filters.sources.is_empty() || filters.sources.contains(&c.hit.source))
            .map(|c| (cosine(query, &c.vector), &c.hit))
            .filter(|(score, _)| *score > 0.0)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(limit)
            .map(|(score, hit)| Hit {
                score,
                ..hit.clone()
            })
            .collect()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Reciprocal rank fusion of rankings: a chunk's score is `Σ 1 / (RRF_K + rank)` over the
/// rankings it appears in (rank from 1); the best `top_k`, each chunk text once.
pub fn fuse(rankings: &[Vec<Hit>], top_k: usize) -> Vec<Hit> {
    let mut fused: Vec<(f32, Hit)> = Vec::new();
    let mut at: HashMap<(String, String, String, u64), usize> = HashMap::new();
    for ranking in rankings {
        for (rank, hit) in ranking.iter().enumerate() {
            let share = 1.0 / (RRF_K + rank as f32 + 1.0);
            let id = (
                hit.source.clone(),
                hit.path.clone(),
                hit.chunk_digest.clone(),
                hit.start_line,
            );
            match at.get(&id) {
                Some(&i) => fused[i].0 += share,
                None => {
                    at.insert(id, fused.len());
                    fused.push((share, hit.clone()));
                }
            }
        }
    }
    fused.sort_by(|a, b| b.0.total_cmp(&a.0));
    // One text once and a few chunks per file, as BM25 answers it (the dense ranking does
    // not collapse copies).
    let mut diverse = crate::search::Diverse::default();
    fused
        .into_iter()
        .filter(|(_, hit)| diverse.admit(hit))
        .take(top_k)
        .map(|(score, hit)| Hit { score, ..hit })
        .collect()
}

/// The collection's embedding model, resolved from the model registry now.
pub async fn embedder<S: EventStore>(
    store: &S,
    collection: &str,
    model: &str,
) -> Result<Embeddings, RagError> {
    let registered = ModelRegistry::new(store)
        .get(model)
        .await
        .map_err(|e| RagError::Embedding {
            collection: collection.to_owned(),
            model: model.to_owned(),
            code: e.code(),
            retryable: false,
            message: e.to_string(),
        })?
        .ok_or_else(|| RagError::Embedding {
            collection: collection.to_owned(),
            model: model.to_owned(),
            code: "model_not_found",
            retryable: false,
            message: "no such model in the model registry".into(),
        })?;
    Embeddings::new(registered.spec).map_err(|e| provider_error(collection, model, &e))
}

fn provider_error(
    collection: &str,
    model: &str,
    e: &runledger_executor_gateway::providers::ProviderError,
) -> RagError {
    RagError::Embedding {
        collection: collection.to_owned(),
        model: model.to_owned(),
        code: e.code(),
        retryable: e.retryable(),
        message: e.to_string(),
    }
}

/// Embeds `texts` in batches.
pub async fn embed(
    embeddings: &Embeddings,
    collection: &str,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, RagError> {
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(BATCH) {
        let vectors = embeddings
            .embed(batch)
            .await
            .map_err(|e| provider_error(collection, embeddings.model(), &e))?;
        out.extend(vectors);
    }
    Ok(out)
}

/// Brings `vectors` to what an index run wrote: drops the files in `removed`, embeds and adds
/// `added`, and marks the result as reflecting `manifest_hex`.
pub async fn update(
    embeddings: &Embeddings,
    collection: &str,
    mut vectors: Vectors,
    removed: &[String],
    added: Vec<(String, Vec<Hit>)>,
    manifest_hex: String,
) -> Result<Vectors, RagError> {
    for key in removed {
        vectors.files.remove(key);
    }
    let texts: Vec<String> = added
        .iter()
        .flat_map(|(_, hits)| hits.iter().map(chunk_input))
        .collect();
    let mut embedded = embed(embeddings, collection, texts).await?.into_iter();
    for (key, hits) in added {
        let mut chunks = Vec::with_capacity(hits.len());
        for hit in hits {
            let vector = embedded.next().ok_or_else(|| RagError::Embedding {
                collection: collection.to_owned(),
                model: embeddings.model().to_owned(),
                code: "provider_bad_response",
                retryable: false,
                message: "fewer embeddings than chunks".into(),
            })?;
            chunks.push(DenseChunk { hit, vector });
        }
        vectors.files.insert(key, chunks);
    }
    vectors.model = embeddings.model().to_owned();
    vectors.manifest = manifest_hex;
    Ok(vectors)
}

/// What is embedded of a chunk: its section title and text.
fn chunk_input(hit: &Hit) -> String {
    if hit.title.is_empty() {
        hit.text.clone()
    } else {
        format!("{}\n\n{}", hit.title, hit.text)
    }
}
