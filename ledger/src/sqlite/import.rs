//! Loading a verified export's streams into a SQLite ledger unchanged: the same rules as
//! `postgres/import.rs` (all of a stream or nothing, a prefix already there is kept, another
//! history is refused, a marker records the head reached). The write lock of `BEGIN IMMEDIATE`
//! makes importers and appenders take turns, as PostgreSQL's advisory lock does.

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::ids::{CausationId, StreamId};
use runledger_contracts::time::Timestamp;
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use super::{SqliteEventStore, db_err, head_on, insert_blob, next_tx_id};
use crate::import::StreamImport;
use crate::prepare::blob_refs_json;
use crate::{Blob, StoreError};

impl SqliteEventStore {
    /// Imports one stream's whole history (versions 1..=n of one stream, as a verified export
    /// holds them) with their ids, versions, hashes and times, plus the blobs they refer to.
    /// One transaction: all of it or nothing. A store holding a different history is refused
    /// with `Conflict` and nothing is written.
    pub async fn import_stream(
        &self,
        events: &[RecordedEvent],
        blobs: &[Blob],
    ) -> Result<StreamImport, StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Err(StoreError::InvalidRequest(
                "an import needs at least one event".into(),
            ));
        };
        let stream = &first.stream_id;
        if events
            .iter()
            .enumerate()
            .any(|(i, e)| &e.stream_id != stream || e.stream_version != i as u64 + 1)
        {
            return Err(StoreError::InvalidRequest(format!(
                "the events of `{stream}` must be its versions 1, 2, 3, … in order"
            )));
        }
        let mut tx = self.begin_write().await?;
        let result = import_locked(&mut tx, stream, events, last, blobs).await;
        match result {
            Ok(outcome) => {
                tx.commit().await.map_err(db_err)?;
                Ok(outcome)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// The import marker of a stream, if it has one, and whether the stream still holds that
    /// head (a stale marker does not).
    pub async fn import_marker(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(u64, Digest, bool)>, StoreError> {
        let row = sqlx::query(
            "SELECT m.version, m.head_hash,
                    EXISTS (SELECT 1 FROM events e WHERE e.stream_id = m.stream_id
                               AND e.stream_version = m.version AND e.hash = m.head_hash) AS current
               FROM import_markers m WHERE m.stream_id = ?1",
        )
        .bind(stream.as_str())
        .fetch_optional(self.readers())
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let version = row.try_get::<i64, _>("version").map_err(db_err)?.max(0) as u64;
        let hash: Vec<u8> = row.try_get("head_hash").map_err(db_err)?;
        let hash = Digest::from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("an import marker's hash is not 32 bytes".into()))?;
        let current: bool = row.try_get("current").map_err(db_err)?;
        Ok(Some((version, hash, current)))
    }
}

async fn import_locked(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    events: &[RecordedEvent],
    last: &RecordedEvent,
    blobs: &[Blob],
) -> Result<StreamImport, StoreError> {
    let (stored, head) = head_on(&mut *conn, stream).await?;
    if stored > 0 {
        match usize::try_from(stored).ok().and_then(|v| events.get(v - 1)) {
            Some(ours) if ours.hash == head => {}
            Some(_) => return Err(conflict(stream, last.stream_version, stored)),
            None => {
                // The store is longer: it must hold the file's head where the file ends.
                let at: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT hash FROM events WHERE stream_id = ?1 AND stream_version = ?2",
                )
                .bind(stream.as_str())
                .bind(last.stream_version as i64)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?;
                if at.as_deref() != Some(last.hash.as_bytes().as_slice()) {
                    return Err(conflict(stream, last.stream_version, stored));
                }
                upsert_marker(&mut *conn, stream, last.stream_version, &last.hash).await?;
                return Ok(StreamImport::Unchanged);
            }
        }
    }
    let todo = &events[usize::try_from(stored)
        .unwrap_or(usize::MAX)
        .min(events.len())..];
    if !todo.is_empty() {
        insert_blobs(&mut *conn, todo, blobs).await?;
        let tx_id = next_tx_id(&mut *conn).await?;
        for e in todo {
            insert_event(&mut *conn, tx_id, e).await?;
        }
    }
    upsert_marker(&mut *conn, stream, last.stream_version, &last.hash).await?;
    Ok(match todo.first() {
        Some(from) => StreamImport::Written {
            from: from.stream_version,
            to: last.stream_version,
        },
        None => StreamImport::Unchanged,
    })
}

fn conflict(stream: &StreamId, expected: u64, actual: u64) -> StoreError {
    StoreError::Conflict {
        stream_id: stream.clone(),
        expected,
        actual,
    }
}

async fn upsert_marker(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    version: u64,
    head: &Digest,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO import_markers (stream_id, version, head_hash, imported_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (stream_id) DO UPDATE
            SET version = excluded.version, head_hash = excluded.head_hash,
                imported_at = excluded.imported_at",
    )
    .bind(stream.as_str())
    .bind(version as i64)
    .bind(head.as_bytes().as_slice())
    .bind(Timestamp::now().unix_micros())
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn insert_blobs(
    conn: &mut SqliteConnection,
    events: &[RecordedEvent],
    blobs: &[Blob],
) -> Result<(), StoreError> {
    let mut wanted: Vec<Digest> = events
        .iter()
        .flat_map(|e| e.blob_refs.iter().copied())
        .collect();
    wanted.sort();
    wanted.dedup();
    for digest in &wanted {
        let blob = blobs
            .iter()
            .find(|b| b.hash() == *digest)
            .ok_or(StoreError::MissingBlob { hash: *digest })?;
        insert_blob(&mut *conn, digest, blob).await?;
    }
    Ok(())
}

async fn insert_event(
    conn: &mut SqliteConnection,
    tx_id: i64,
    e: &RecordedEvent,
) -> Result<(), StoreError> {
    let payload =
        runledger_contracts::canonical::to_canonical_string(&e.payload).map_err(|err| {
            StoreError::InvalidEvent {
                index: e.stream_version.saturating_sub(1) as usize,
                reason: err.to_string(),
            }
        })?;
    let written = sqlx::query(
        "INSERT INTO events (tx_id, event_id, stream_id, stream_version, event_type,
                             schema_version, request_id, correlation_id, causation_id,
                             recorded_at, payload, blob_refs, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .bind(tx_id)
    .bind(e.event_id.0)
    .bind(e.stream_id.as_str())
    .bind(e.stream_version as i64)
    .bind(e.event_type.as_str())
    .bind(i64::from(e.schema_version))
    .bind(e.request_id.as_str())
    .bind(e.correlation_id.as_str())
    .bind(e.causation_id.as_ref().map(CausationId::as_str))
    .bind(e.recorded_at.unix_micros())
    .bind(payload)
    .bind(blob_refs_json(&e.blob_refs))
    .bind(e.prev_hash.as_bytes().as_slice())
    .bind(e.hash.as_bytes().as_slice())
    .execute(conn)
    .await;
    match written {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(err)) if err.is_unique_violation() => Err(StoreError::Conflict {
            stream_id: e.stream_id.clone(),
            expected: e.stream_version - 1,
            actual: e.stream_version,
        }),
        Err(err) => Err(db_err(err)),
    }
}
