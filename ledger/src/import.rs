//! `runledger import`: load verified exports into the store unchanged.
//!
//! Each file is verified first; then every stream in it is checked against the store before
//! anything is written, so a file with a stream whose stored history differs writes nothing.
//! Streams are then imported one transaction each, with a per-stream marker of the head they
//! reached ([`StreamImporter::import_stream`]): a backfill interrupted by a crash is resumed by
//! importing the same files again, which writes only what is missing.

use std::future::Future;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::ids::StreamId;

use crate::export_file::{ExportFileError, read_export};
pub use crate::postgres::StreamImport;
use crate::{Blob, EventStore, PgEventStore, SqliteEventStore, StoreError};

/// A store that can take streams in unchanged (both backends; the rules are
/// [`PgEventStore::import_stream`]'s).
pub trait StreamImporter: EventStore {
    /// Imports one stream's whole history in one transaction; see
    /// [`PgEventStore::import_stream`].
    fn import_stream(
        &self,
        events: &[RecordedEvent],
        blobs: &[Blob],
    ) -> impl Future<Output = Result<StreamImport, StoreError>> + Send;

    /// The import marker of a stream (version, head hash, whether the stream still holds it).
    fn import_marker(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<(u64, Digest, bool)>, StoreError>> + Send;
}

impl StreamImporter for PgEventStore {
    async fn import_stream(
        &self,
        events: &[RecordedEvent],
        blobs: &[Blob],
    ) -> Result<StreamImport, StoreError> {
        PgEventStore::import_stream(self, events, blobs).await
    }

    async fn import_marker(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(u64, Digest, bool)>, StoreError> {
        PgEventStore::import_marker(self, stream).await
    }
}

impl StreamImporter for SqliteEventStore {
    async fn import_stream(
        &self,
        events: &[RecordedEvent],
        blobs: &[Blob],
    ) -> Result<StreamImport, StoreError> {
        SqliteEventStore::import_stream(self, events, blobs).await
    }

    async fn import_marker(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(u64, Digest, bool)>, StoreError> {
        SqliteEventStore::import_marker(self, stream).await
    }
}

/// What importing one file did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportSummary {
    pub streams: usize,
    /// Events written now.
    pub written: u64,
    /// Streams the store held already, entirely.
    pub unchanged: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    File(#[from] ExportFileError),
    #[error(
        "stream `{stream_id}` in the store holds a different history than the file (they differ at or before version {version}); nothing was written"
    )]
    Diverged { stream_id: StreamId, version: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verifies and imports one export.
pub async fn import_export(
    store: &impl StreamImporter,
    bytes: &[u8],
) -> Result<ImportSummary, ImportError> {
    let file = read_export(bytes)?;
    let streams: Vec<&[RecordedEvent]> = file
        .events
        .chunk_by(|a, b| a.stream_id == b.stream_id)
        .collect();
    for events in &streams {
        check_prefix(store, events).await?;
    }
    let mut summary = ImportSummary {
        streams: streams.len(),
        ..ImportSummary::default()
    };
    for events in &streams {
        match StreamImporter::import_stream(store, events, &file.blobs).await {
            Ok(StreamImport::Written { from, to }) => summary.written += to - from + 1,
            Ok(StreamImport::Unchanged) => summary.unchanged += 1,
            Err(StoreError::Conflict {
                stream_id, actual, ..
            }) => {
                return Err(ImportError::Diverged {
                    stream_id,
                    version: actual,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(summary)
}

/// The store's events of the stream must be a prefix of the file's, or the file a prefix of
/// the store's: compared by the hash at the shorter one's head (the chain covers the rest).
async fn check_prefix(
    store: &impl StreamImporter,
    events: &[RecordedEvent],
) -> Result<(), ImportError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(());
    };
    let Some(head) = store.stream_head(&first.stream_id).await? else {
        return Ok(());
    };
    let at = head.version.min(last.stream_version);
    let stored = store.read_stream(&first.stream_id, at, 1).await?;
    let ours = usize::try_from(at).ok().and_then(|v| events.get(v - 1));
    match (stored.first(), ours) {
        (Some(s), Some(o)) if s.hash == o.hash => Ok(()),
        _ => Err(ImportError::Diverged {
            stream_id: first.stream_id.clone(),
            version: at,
        }),
    }
}
