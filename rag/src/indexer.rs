//! Index runs: full or delta, event-sourced.
//!
//! A run appends `RagIndexStarted` at the collection's current version (the fence against a
//! second indexer), scans the sources, updates the search index, commits it with the new
//! manifest's digest as payload, stores the manifest as a blob and appends
//! `RagIndexCompleted` (or `RagIndexFailed`).
//!
//! Delta: a file whose size and modification time equal the last completed manifest's is not
//! read; a file read whose digest is unchanged is not re-indexed; new, changed and deleted
//! files are. A delta over unchanged sources reads no file and writes nothing to the search
//! index. Full: every file is read and the search index is rebuilt. A delta whose local
//! search index is not the one the ledger names (first run on this machine, a run interrupted
//! after its commit, a deleted data directory) rebuilds it like a full run, while its counts
//! still compare with the last completed manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    DomainEvent, ErrorInfo, IndexFileCounts, RagIndexCompleted, RagIndexFailed, RagIndexStarted,
};
use runledger_contracts::ids::{NodeRunId, RequestId};
use runledger_contracts::rag::{CollectionSpec, IndexMode, SourceKind};
use runledger_ledger::{Blob, EventStore, ExpectedVersion};
use serde::Serialize;

use crate::chunk::chunk;
use crate::dense;
use crate::error::RagError;
use crate::extract::{self, kind_of};
use crate::git;
use crate::manifest::{self, FileEntry, Manifest};
use crate::registry::{ChangeRequest, CollectionState, Collections};
use crate::search::Hit;
use crate::search::{SearchIndex, Writer};
use crate::walk::{self, Filter};

/// What to index, and who asks.
#[derive(Debug, Clone)]
pub struct IndexRequest {
    pub collection: String,
    pub mode: IndexMode,
    pub actor: String,
    pub node_run_id: Option<NodeRunId>,
    /// Makes the trigger idempotent (the API's `X-Request-ID`): a request id whose run
    /// completed answers that run again and writes nothing. Without one, every call is a run.
    pub request_id: Option<RequestId>,
}

/// A completed index run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexOutcome {
    /// Stream version of the `RagIndexCompleted`: the new index version.
    pub index_version: u64,
    /// Whether the local search index was rebuilt from scratch.
    pub rebuilt: bool,
    /// The request id had already completed this run: nothing was read or written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deduplicated: bool,
    #[serde(flatten)]
    pub completed: RagIndexCompleted,
}

/// The directory of a collection's derived data under `data_dir`.
pub fn collection_dir(data_dir: &Path, collection: &str) -> PathBuf {
    data_dir.join(collection)
}

/// Reads the manifest blob `digest` of `collection`.
pub async fn load_manifest<S: EventStore>(
    store: &S,
    collection: &str,
    digest: &Digest,
) -> Result<Manifest, RagError> {
    let missing = || RagError::Manifest {
        name: collection.to_owned(),
        digest: digest.to_hex(),
    };
    let blob = store.get_blob(digest).await?.ok_or_else(missing)?;
    Manifest::from_bytes(&blob.data).ok_or_else(missing)
}

fn request_id(index_run_id: &str, step: &str) -> Result<RequestId, RagError> {
    RequestId::new(format!("rag-index-{index_run_id}-{step}")).map_err(|e| RagError::Corrupt {
        name: index_run_id.to_owned(),
        reason: e.to_string(),
    })
}

/// The request ids of a run's two appends: from the caller's request id when there is one
/// (hashed when it would be too long), else from the run's own id.
fn step_ids(caller: Option<&RequestId>, index_run_id: &str) -> Result<[RequestId; 2], RagError> {
    let base = match caller {
        Some(id) if id.as_str().len() <= 100 => format!("{}:", id.as_str()),
        Some(id) => format!("{}:", &blake3::hash(id.as_str().as_bytes()).to_hex()[..32]),
        None => {
            return Ok([
                request_id(index_run_id, "started")?,
                request_id(index_run_id, "finished")?,
            ]);
        }
    };
    let make = |step: &str| {
        RequestId::new(format!("{base}rag-index-{step}")).map_err(|e| RagError::Corrupt {
            name: index_run_id.to_owned(),
            reason: e.to_string(),
        })
    };
    Ok([make("started")?, make("finished")?])
}

/// What a caller's request id already did on the collection's stream: the completed run it
/// recorded, or a refusal when it asked for something else (another mode, or a create or
/// delete of the collection) or its run never completed (failed or interrupted).
async fn recorded_run<S: EventStore>(
    store: &S,
    collection: &str,
    ids: &[RequestId; 2],
    caller: &RequestId,
    mode: IndexMode,
) -> Result<Option<IndexOutcome>, RagError> {
    let stream = CollectionSpec::stream_id(collection).map_err(|e| RagError::Corrupt {
        name: collection.to_owned(),
        reason: e.to_string(),
    })?;
    let reused = || RagError::RequestReused {
        name: collection.to_owned(),
        request_id: caller.to_string(),
    };
    if !store.find_request(&stream, caller).await?.is_empty() {
        return Err(reused());
    }
    for event in store.find_request(&stream, &ids[1]).await? {
        if let Ok(DomainEvent::RagIndexCompleted(completed)) = event.decode() {
            if completed.mode != mode {
                return Err(reused());
            }
            return Ok(Some(IndexOutcome {
                index_version: event.stream_version,
                rebuilt: false,
                deduplicated: true,
                completed,
            }));
        }
    }
    if !store.find_request(&stream, &ids[0]).await?.is_empty() {
        return Err(RagError::RequestReused {
            name: collection.to_owned(),
            request_id: caller.to_string(),
        });
    }
    Ok(None)
}

/// Runs one index run of `request.collection` with derived data under `data_dir`.
pub async fn run_index<S: EventStore>(
    store: &S,
    data_dir: &Path,
    request: &IndexRequest,
) -> Result<IndexOutcome, RagError> {
    let clock = Instant::now();
    let registry = Collections::new(store);
    let state = registry.require(&request.collection).await?;
    let Some(spec) = state.spec.clone() else {
        return Err(RagError::NotFound {
            name: request.collection.clone(),
        });
    };
    let index_run_id = uuid::Uuid::now_v7().to_string();
    let [started_id, finished_id] = step_ids(request.request_id.as_ref(), &index_run_id)?;
    if let Some(caller) = &request.request_id
        && let Some(done) = recorded_run(
            store,
            &spec.name,
            &[started_id.clone(), finished_id.clone()],
            caller,
            request.mode,
        )
        .await?
    {
        return Ok(done);
    }
    let filters = spec
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| Filter::new(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    let base = match &state.last_completed {
        Some(done) => load_manifest(store, &spec.name, &done.event.manifest).await?,
        None => Manifest::default(),
    };
    // Take the writer lock before writing to the ledger: a busy index writes nothing.
    let dir = collection_dir(data_dir, &spec.name);
    let search = SearchIndex::open(&dir)?;
    let writer = search.writer(&spec.name)?;
    // The embedding model is resolved before anything is recorded: a missing one writes nothing.
    let embedder = match &spec.embedding_model {
        Some(model) => Some(dense::embedder(store, &spec.name, model).await?),
        None => None,
    };
    let vectors_current = match (&spec.embedding_model, &state.last_completed) {
        (None, _) => true,
        (Some(model), Some(done)) => {
            dense::Vectors::is_current(&dir, model, &done.event.manifest.to_hex())
        }
        (Some(_), None) => false,
    };
    let local_current = is_current(&search, &state)? && vectors_current;
    let rebuild = request.mode == IndexMode::Full || !local_current;

    let started = registry
        .append(
            &spec.name,
            ExpectedVersion::Exact(state.version),
            &ChangeRequest {
                request_id: started_id,
                actor: request.actor.clone(),
            },
            DomainEvent::from(RagIndexStarted {
                collection: spec.name.clone(),
                index_run_id: index_run_id.clone(),
                mode: request.mode,
                base_version: state.last_completed.as_ref().map(|c| c.version),
                actor: request.actor.clone(),
                node_run_id: request.node_run_id,
            }),
            None,
        )
        .await?;

    let scan_spec = spec.clone();
    let scan_dir = dir.clone();
    let dense = embedder.is_some();
    let scanned = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        let (roots, commits) = source_roots(&scan_dir, &scan_spec)?;
        let mut scan = scan(
            &scan_spec,
            &roots,
            &filters,
            &base,
            &mut writer,
            rebuild,
            dense,
        )?;
        scan.commits = commits;
        let digest = scan.manifest.digest();
        if rebuild || digest != base.digest() {
            writer.commit(&digest.to_hex())?;
        }
        Ok::<_, RagError>(scan)
    })
    .await
    .unwrap_or_else(|e| {
        Err(RagError::Corrupt {
            name: spec.name.clone(),
            reason: format!("the indexing task ended abnormally: {e}"),
        })
    });
    let finish = ChangeRequest {
        request_id: finished_id,
        actor: request.actor.clone(),
    };
    let scanned = match (scanned, &embedder) {
        (Ok(scan), Some(embeddings)) => {
            embed_scan(embeddings, &spec.name, &dir, scan, rebuild).await
        }
        (other, _) => other,
    };
    let scan = match scanned {
        Ok(scan) => scan,
        Err(e) => {
            let failed = DomainEvent::from(RagIndexFailed {
                collection: spec.name.clone(),
                index_run_id,
                error: ErrorInfo {
                    code: e.code().to_owned(),
                    message: crate::error_chain(&e),
                    retryable: e.retryable(),
                    details: None,
                },
            });
            // Best effort: if this append fails too, the run reads as interrupted.
            let _ = registry
                .append(
                    &spec.name,
                    ExpectedVersion::Exact(started.version),
                    &finish,
                    failed,
                    None,
                )
                .await;
            return Err(e);
        }
    };
    let bytes = scan.manifest.to_bytes();
    let blob = Blob {
        media_type: manifest::MEDIA_TYPE.to_owned(),
        data: bytes,
    };
    let completed = RagIndexCompleted {
        collection: spec.name.clone(),
        index_run_id,
        mode: request.mode,
        files: scan.files,
        chunks_added: scan.chunks_added,
        chunks_deleted: scan.chunks_deleted,
        chunks_total: scan.manifest.chunks(),
        bytes_read: scan.bytes_read,
        manifest: blob.hash(),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        commits: scan.commits,
    };
    let done = registry
        .append(
            &spec.name,
            ExpectedVersion::Exact(started.version),
            &finish,
            DomainEvent::from(completed.clone()),
            Some(blob),
        )
        .await?;
    Ok(IndexOutcome {
        index_version: done.version,
        rebuilt: rebuild,
        deduplicated: false,
        completed,
    })
}

/// Embeds what a scan wrote and saves the collection's vectors beside the search index.
async fn embed_scan(
    embeddings: &runledger_executor_gateway::providers::embeddings::Embeddings,
    collection: &str,
    dir: &Path,
    mut scan: Scan,
    rebuild: bool,
) -> Result<Scan, RagError> {
    let base = if rebuild {
        dense::Vectors::default()
    } else {
        dense::Vectors::load(dir).unwrap_or_default()
    };
    let added = std::mem::take(&mut scan.dense_added);
    let vectors = dense::update(
        embeddings,
        collection,
        base,
        &scan.dense_removed,
        added,
        scan.manifest.digest().to_hex(),
    )
    .await?;
    vectors.save(dir)?;
    Ok(scan)
}

/// Whether the search index on disk reflects the collection's last completed index run.
pub fn is_current(search: &SearchIndex, state: &CollectionState) -> Result<bool, RagError> {
    let payload = search.manifest_digest()?;
    Ok(match (&state.last_completed, payload) {
        (Some(done), Some(p)) => p == done.event.manifest.to_hex(),
        (None, None) => true,
        _ => false,
    })
}

/// The directory each source is walked from (a git source: the checkout of its ref, fetched
/// now), and the commit of each git source.
fn source_roots(
    dir: &Path,
    spec: &CollectionSpec,
) -> Result<(Vec<PathBuf>, BTreeMap<String, String>), RagError> {
    let mut roots = Vec::with_capacity(spec.sources.len());
    let mut commits = BTreeMap::new();
    for source in &spec.sources {
        match source.kind {
            SourceKind::Directory => roots.push(PathBuf::from(&source.path)),
            SourceKind::Git => {
                let (commit, tree) = git::checkout(dir, source)?;
                commits.insert(source.name.clone(), commit);
                roots.push(tree);
            }
        }
    }
    Ok((roots, commits))
}

/// What a scan found and did.
struct Scan {
    /// With an embedding model: the chunks written, by file key, to embed.
    dense_added: Vec<(String, Vec<Hit>)>,
    /// Files whose chunks were removed (changed or deleted).
    dense_removed: Vec<String>,
    commits: BTreeMap<String, String>,
    manifest: Manifest,
    files: IndexFileCounts,
    chunks_added: u64,
    chunks_deleted: u64,
    bytes_read: u64,
}

fn mtime_of(meta: &std::fs::Metadata) -> String {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
        .unwrap_or_default()
}

/// Scans every source against `base`, writing what changed (or, with `rebuild`, everything).
fn scan(
    spec: &CollectionSpec,
    roots: &[PathBuf],
    filters: &[Filter],
    base: &Manifest,
    writer: &mut Writer,
    rebuild: bool,
    dense: bool,
) -> Result<Scan, RagError> {
    let mut out = Scan {
        dense_added: Vec::new(),
        dense_removed: Vec::new(),
        commits: BTreeMap::new(),
        manifest: Manifest::default(),
        files: IndexFileCounts::default(),
        chunks_added: 0,
        chunks_deleted: 0,
        bytes_read: 0,
    };
    if rebuild {
        writer.delete_all()?;
        out.chunks_deleted = base.chunks();
    }
    for ((source, filter), root) in spec.sources.iter().zip(filters).zip(roots) {
        for (relative, path) in walk::list(&source.name, root, filter)? {
            let key = format!("{}/{relative}", source.name);
            out.files.scanned += 1;
            let previous = base.files.get(&key);
            let meta = std::fs::metadata(&path).ok();
            let mtime = meta.as_ref().map(mtime_of).unwrap_or_default();
            let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            if !rebuild
                && let Some(prev) = previous
                && prev.bytes == size
                && prev.mtime == mtime
                && !mtime.is_empty()
            {
                out.files.unchanged += 1;
                out.files.skipped += u64::from(prev.skipped.is_some());
                out.manifest.files.insert(key, prev.clone());
                continue;
            }
            let bytes = match kind_of(&relative) {
                None => Err(extract::Skip::Binary.to_string()),
                Some(_) if size > extract::MAX_FILE_BYTES => {
                    Err(extract::Skip::TooLarge.to_string())
                }
                Some(_) => std::fs::read(&path).map_err(|e| format!("unreadable: {e}")),
            };
            let digest = match &bytes {
                Ok(b) => {
                    out.files.read += 1;
                    out.bytes_read += b.len() as u64;
                    blake3::hash(b).to_hex().to_string()
                }
                // Not read: the digest of what is known (size and time), so a change shows.
                Err(_) => format!("unread:{size}:{mtime}"),
            };
            let same = previous.is_some_and(|p| p.digest == digest);
            match previous {
                None => out.files.added += 1,
                Some(_) if same => out.files.unchanged += 1,
                Some(_) => out.files.changed += 1,
            }
            if same && !rebuild {
                let mut entry = previous.cloned().unwrap_or_else(|| FileEntry {
                    digest: digest.clone(),
                    bytes: size,
                    mtime: String::new(),
                    chunks: 0,
                    skipped: None,
                });
                entry.mtime = mtime;
                out.files.skipped += u64::from(entry.skipped.is_some());
                out.manifest.files.insert(key, entry);
                continue;
            }
            if !rebuild && let Some(prev) = previous {
                writer.delete_file(&key);
                out.chunks_deleted += prev.chunks;
                out.dense_removed.push(key.clone());
            }
            let mut entry = FileEntry {
                digest,
                bytes: size,
                mtime,
                chunks: 0,
                skipped: None,
            };
            let text = bytes.and_then(|b| {
                let kind = kind_of(&relative).unwrap_or(extract::DocKind::Text);
                extract::extract(kind, &b)
                    .map(|t| (kind, t))
                    .map_err(|s| s.to_string())
            });
            match text {
                Ok((kind, text)) => {
                    let chunks = chunk(kind, &text);
                    writer.add_file(&source.name, &relative, &entry.digest, &chunks)?;
                    if dense {
                        let hits = chunks
                            .iter()
                            .map(|c| Hit {
                                source: source.name.clone(),
                                path: relative.clone(),
                                start_line: c.start_line,
                                end_line: c.end_line,
                                score: 0.0,
                                title: c.title.clone(),
                                text: c.text.clone(),
                                chunk_digest: c.digest.clone(),
                                file_digest: entry.digest.clone(),
                            })
                            .collect();
                        out.dense_added.push((key.clone(), hits));
                    }
                    entry.chunks = chunks.len() as u64;
                    out.chunks_added += entry.chunks;
                }
                Err(reason) => {
                    entry.skipped = Some(reason);
                    out.files.skipped += 1;
                }
            }
            out.manifest.files.insert(key, entry);
        }
    }
    for (key, prev) in &base.files {
        if !out.manifest.files.contains_key(key) {
            out.files.deleted += 1;
            if !rebuild {
                writer.delete_file(key);
                out.chunks_deleted += prev.chunks;
                out.dense_removed.push(key.clone());
            }
        }
    }
    Ok(out)
}

/// Each file's path and the chunks it gave, for embedding.
type ChunksByFile = Vec<(String, Vec<Hit>)>;

/// Rebuilds the search index from a manifest and the sources: the files whose bytes still
/// have the manifest's digest are indexed, the others (changed since) are left out and
/// counted. Used when a query finds no current local index (a new executor, a lost disk).
pub fn rebuild_from_manifest(
    spec: &CollectionSpec,
    manifest: &Manifest,
    commits: &BTreeMap<String, String>,
    dir: &Path,
    mut writer: Writer,
    dense: bool,
) -> Result<(u64, ChunksByFile), RagError> {
    // Git sources: the work tree at the commit the ledger recorded.
    let mut roots = BTreeMap::new();
    for source in &spec.sources {
        let root = match (source.kind, commits.get(&source.name)) {
            (SourceKind::Git, Some(commit)) => git::checkout_commit(dir, source, commit)?,
            (SourceKind::Git, None) => git::paths(dir, &source.name).1,
            (SourceKind::Directory, _) => PathBuf::from(&source.path),
        };
        roots.insert(source.name.as_str(), root);
    }
    writer.delete_all()?;
    let mut stale = 0;
    let mut added = Vec::new();
    for (key, entry) in &manifest.files {
        if entry.skipped.is_some() {
            continue;
        }
        let Some((source_name, relative)) = key.split_once('/') else {
            stale += 1;
            continue;
        };
        let Some(root) = roots.get(source_name) else {
            stale += 1;
            continue;
        };
        let path = root.join(relative);
        let Ok(bytes) = std::fs::read(&path) else {
            stale += 1;
            continue;
        };
        if blake3::hash(&bytes).to_hex().as_str() != entry.digest {
            stale += 1;
            continue;
        }
        let kind = kind_of(relative).unwrap_or(extract::DocKind::Text);
        if let Ok(text) = extract::extract(kind, &bytes) {
            let chunks = chunk(kind, &text);
            writer.add_file(source_name, relative, &entry.digest, &chunks)?;
            if dense {
                let hits = chunks
                    .into_iter()
                    .map(|c| Hit {
                        source: source_name.to_owned(),
                        path: relative.to_owned(),
                        start_line: c.start_line,
                        end_line: c.end_line,
                        score: 0.0,
                        title: c.title,
                        text: c.text,
                        chunk_digest: c.digest,
                        file_digest: entry.digest.clone(),
                    })
                    .collect();
                added.push((key.clone(), hits));
            }
        }
    }
    writer.commit(&manifest.digest().to_hex())?;
    Ok((stale, added))
}
