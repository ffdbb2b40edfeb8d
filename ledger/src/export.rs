//! The canonical export: JSON Lines that an auditor can verify with no database.
//!
//! Line 1 is the manifest, then every event of the exported streams (streams in byte order of
//! their ids, events in version order), then every blob those events refer to (by digest).
//! Every line is RFC 8785 canonical JSON, and nothing in the file depends on when or where it
//! was written, so exporting the same ledger twice gives the same bytes.
//!
//! The set of events is fixed by reading the stream heads first: events appended while the
//! export runs are not included, so the manifest always matches the lines below it. Streams are
//! read twice (once to list the blobs the manifest names up front, once to write the events);
//! export is an audit operation, and the first line must describe the whole file.

use std::collections::BTreeSet;

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::ids::StreamId;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::sign::{self, SigningKey};
use crate::{EventStore, StoreError, StreamHead};

/// The export format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// Events read per round trip while exporting.
const PAGE: usize = 1_000;

/// Which streams to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportScope {
    /// One stream (a run's stream is `run-<id>`).
    Stream(StreamId),
    /// Every stream in the ledger.
    All,
}

impl ExportScope {
    fn describe(&self) -> String {
        match self {
            ExportScope::Stream(id) => format!("stream:{id}"),
            ExportScope::All => "all".into(),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub streams: usize,
    pub events: u64,
    pub blobs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("stream `{0}` does not exist")]
    NoSuchStream(StreamId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("event {event} could not be canonicalized: {source}")]
    Canonical {
        event: String,
        #[source]
        source: canonical::CanonicalError,
    },
}

/// Writes the export of `scope` to `out`. `progress` is called after each page with the number
/// of events written so far and the total.
pub async fn export<S, W>(
    store: &S,
    scope: &ExportScope,
    out: &mut W,
    progress: impl FnMut(u64, u64),
) -> Result<ExportSummary, ExportError>
where
    S: EventStore,
    W: AsyncWrite + Unpin,
{
    export_signed(store, scope, out, progress, None).await
}

/// [`export`], with `key` adding the signature over the manifest line as the last line.
pub async fn export_signed<S, W>(
    store: &S,
    scope: &ExportScope,
    out: &mut W,
    mut progress: impl FnMut(u64, u64),
    key: Option<&SigningKey>,
) -> Result<ExportSummary, ExportError>
where
    S: EventStore,
    W: AsyncWrite + Unpin,
{
    let heads: Vec<StreamHead> = match scope {
        ExportScope::Stream(id) => match store.stream_head(id).await? {
            Some(head) => vec![head],
            None => return Err(ExportError::NoSuchStream(id.clone())),
        },
        ExportScope::All => store.list_streams("").await?,
    };
    let total: u64 = heads.iter().map(|h| h.version).sum();

    // Pass 1: the blobs the events refer to, so the manifest can list them up front.
    let mut blob_refs = BTreeSet::new();
    for head in &heads {
        let mut pages = StreamPages::new(store, head);
        while let Some(page) = pages.next_page().await? {
            blob_refs.extend(page.iter().flat_map(|e| e.blob_refs.iter().copied()));
        }
    }
    let mut blobs = Vec::with_capacity(blob_refs.len());
    for hash in &blob_refs {
        let blob = store.get_blob(hash).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("blob {hash} is referenced but not stored"))
        })?;
        blobs.push(BlobEntry {
            hash: *hash,
            media_type: blob.media_type,
            size: blob.data.len() as u64,
        });
    }
    let streams: Vec<StreamEntry> = heads
        .iter()
        .map(|h| StreamEntry {
            stream_id: h.stream_id.to_string(),
            events: h.version,
            head_hash: h.hash,
        })
        .collect();
    let manifest_line = write_line(
        out,
        &Value::Object(manifest(&scope.describe(), &streams, &blobs)),
        || "the manifest".to_owned(),
    )
    .await?;

    // Pass 2: the events, then the blobs.
    let mut written = 0u64;
    for head in &heads {
        let mut pages = StreamPages::new(store, head);
        while let Some(page) = pages.next_page().await? {
            for event in &page {
                let label = || format!("{}#{}", event.stream_id, event.stream_version);
                write_line(out, &Value::Object(event.export_object()), label).await?;
                written += 1;
            }
            progress(written, total);
        }
    }
    progress(written, total);
    for entry in &blobs {
        let blob = store.get_blob(&entry.hash).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("blob {} disappeared during the export", entry.hash))
        })?;
        write_line(
            out,
            &Value::Object(blob_line(&entry.hash, &blob.media_type, &blob.data)),
            || format!("blob {}", entry.hash),
        )
        .await?;
    }
    if let Some(key) = key {
        write_line(
            out,
            &Value::Object(sign::signature_line(&manifest_line, key)),
            || "the signature".to_owned(),
        )
        .await?;
    }
    out.flush().await?;
    Ok(ExportSummary {
        streams: heads.len(),
        events: written,
        blobs: blobs.len(),
    })
}

/// Reads one stream up to its head, page by page, checking versions are contiguous.
struct StreamPages<'a, S> {
    store: &'a S,
    head: &'a StreamHead,
    next: u64,
}

impl<'a, S: EventStore> StreamPages<'a, S> {
    fn new(store: &'a S, head: &'a StreamHead) -> Self {
        Self {
            store,
            head,
            next: 1,
        }
    }

    async fn next_page(&mut self) -> Result<Option<Vec<RecordedEvent>>, ExportError> {
        if self.next > self.head.version {
            return Ok(None);
        }
        let want = PAGE.min((self.head.version - self.next + 1) as usize);
        let page = self
            .store
            .read_stream(&self.head.stream_id, self.next, want)
            .await?;
        if page.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "stream `{}` ends before version {} of {}",
                self.head.stream_id, self.next, self.head.version
            ))
            .into());
        }
        for event in &page {
            if event.stream_version != self.next {
                return Err(StoreError::Corrupt(format!(
                    "stream `{}` has version {} where {} was expected",
                    self.head.stream_id, event.stream_version, self.next
                ))
                .into());
            }
            self.next += 1;
        }
        Ok(Some(page))
    }
}

/// One stream as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    pub stream_id: String,
    pub events: u64,
    pub head_hash: Digest,
}

/// One blob as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobEntry {
    pub hash: Digest,
    pub media_type: String,
    pub size: u64,
}

/// The manifest line. `verify` rebuilds it from what it checked and requires equality, so
/// every field of it is covered.
pub(crate) fn manifest(
    scope: &str,
    streams: &[StreamEntry],
    blobs: &[BlobEntry],
) -> Map<String, Value> {
    let events: u64 = streams.iter().map(|s| s.events).sum();
    let value = json!({
        "kind": "manifest",
        "format_version": FORMAT_VERSION,
        "scope": scope,
        "hash_algorithm": "blake3",
        "canonicalization": "rfc8785",
        "genesis_hash": Digest::GENESIS.to_hex(),
        "counts": { "streams": streams.len(), "events": events, "blobs": blobs.len() },
        "streams": streams.iter().map(|s| json!({
            "stream_id": s.stream_id,
            "events": s.events,
            "head_hash": s.head_hash.to_hex(),
        })).collect::<Vec<_>>(),
        "blobs": blobs.iter().map(|b| json!({
            "hash": b.hash.to_hex(),
            "media_type": b.media_type,
            "size": b.size,
        })).collect::<Vec<_>>(),
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(crate) fn blob_line(hash: &Digest, media_type: &str, data: &[u8]) -> Map<String, Value> {
    let mut line = Map::new();
    line.insert("kind".into(), Value::String("blob".into()));
    line.insert("hash".into(), Value::String(hash.to_hex()));
    line.insert("media_type".into(), Value::String(media_type.to_owned()));
    line.insert("encoding".into(), Value::String("base64".into()));
    line.insert("data".into(), Value::String(base64_encode(data)));
    line
}

/// One canonical line; `label` names the line in an error. Returns the line without its
/// newline.
async fn write_line<W: AsyncWrite + Unpin>(
    out: &mut W,
    value: &Value,
    label: impl FnOnce() -> String,
) -> Result<Vec<u8>, ExportError> {
    let mut bytes =
        canonical::to_canonical_vec(value).map_err(|source| ExportError::Canonical {
            event: label(),
            source,
        })?;
    bytes.push(b'\n');
    out.write_all(&bytes).await?;
    bytes.pop();
    Ok(bytes)
}

pub(crate) fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
