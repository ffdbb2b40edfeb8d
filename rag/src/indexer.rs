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

use std::path::{Path, PathBuf};
use std::time::Instant;

use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    DomainEvent, ErrorInfo, IndexFileCounts, RagIndexCompleted, RagIndexFailed, RagIndexStarted,
};
use runledger_contracts::ids::{NodeRunId, RequestId};
use runledger_contracts::rag::{CollectionSpec, IndexMode};
use runledger_ledger::{Blob, EventStore, ExpectedVersion};
use serde::Serialize;

use crate::chunk::chunk;
use crate::error::RagError;
use crate::extract::{self, kind_of};
use crate::manifest::{self, FileEntry, Manifest};
use crate::registry::{ChangeRequest, CollectionState, Collections};
use crate::search::{SearchIndex, Writer};
use crate::walk::{self, Filter};

/// What to index, and who asks.
#[derive(Debug, Clone)]
pub struct IndexRequest {
    pub collection: String,
    pub mode: IndexMode,
    pub actor: String,
    pub node_run_id: Option<NodeRunId>,
}

/// A completed index run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexOutcome {
    /// Stream version of the `RagIndexCompleted`: the new index version.
    pub index_version: u64,
    /// Whether the local search index was rebuilt from scratch.
    pub rebuilt: bool,
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
    let local_current = is_current(&search, &state)?;
    let rebuild = request.mode == IndexMode::Full || !local_current;

    let index_run_id = uuid::Uuid::now_v7().to_string();
    let started = registry
        .append(
            &spec.name,
            ExpectedVersion::Exact(state.version),
            &ChangeRequest {
                request_id: request_id(&index_run_id, "started")?,
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
    let scanned = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        let scan = scan(&scan_spec, &filters, &base, &mut writer, rebuild)?;
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
        request_id: request_id(&index_run_id, "finished")?,
        actor: request.actor.clone(),
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
        completed,
    })
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

/// What a scan found and did.
struct Scan {
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
    filters: &[Filter],
    base: &Manifest,
    writer: &mut Writer,
    rebuild: bool,
) -> Result<Scan, RagError> {
    let mut out = Scan {
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
    for (source, filter) in spec.sources.iter().zip(filters) {
        let root = PathBuf::from(&source.path);
        for (relative, path) in walk::list(&source.name, &root, filter)? {
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
            }
        }
    }
    Ok(out)
}

/// Rebuilds the search index from a manifest and the sources: the files whose bytes still
/// have the manifest's digest are indexed, the others (changed since) are left out and
/// counted. Used when a query finds no current local index (a new executor, a lost disk).
pub fn rebuild_from_manifest(
    spec: &CollectionSpec,
    manifest: &Manifest,
    mut writer: Writer,
) -> Result<u64, RagError> {
    writer.delete_all()?;
    let mut stale = 0;
    for (key, entry) in &manifest.files {
        if entry.skipped.is_some() {
            continue;
        }
        let Some((source_name, relative)) = key.split_once('/') else {
            stale += 1;
            continue;
        };
        let Some(source) = spec.sources.iter().find(|s| s.name == source_name) else {
            stale += 1;
            continue;
        };
        let path = Path::new(&source.path).join(relative);
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
            writer.add_file(source_name, relative, &entry.digest, &chunk(kind, &text))?;
        }
    }
    writer.commit(&manifest.digest().to_hex())?;
    Ok(stale)
}
