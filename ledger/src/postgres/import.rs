//! Loading a verified export's streams into the store unchanged.

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::ids::{CausationId, StreamId};
use sqlx::Row;

use super::{PgEventStore, blob_refs_json, db_err};
use crate::{Blob, StoreError};

/// What importing one stream did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamImport {
    /// The events were written (`from`..=`to`); the store held versions before `from` already.
    Written { from: u64, to: u64 },
    /// The store already holds this history (a repeated import, or a stream that grew since):
    /// nothing was written.
    Unchanged,
}

const INSERT_EVENTS: &str = "
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, request_id,
                    correlation_id, causation_id, recorded_at, payload, blob_refs, prev_hash, hash)
SELECT e.event_id, $1, e.stream_version, e.event_type, e.schema_version, e.request_id,
       e.correlation_id, e.causation_id, e.recorded_at, e.payload::jsonb, e.blob_refs::jsonb,
       e.prev_hash, e.hash
  FROM UNNEST($2::uuid[], $3::bigint[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[],
              $9::timestamptz[], $10::text[], $11::text[], $12::bytea[], $13::bytea[])
       AS e(event_id, stream_version, event_type, schema_version, request_id, correlation_id,
            causation_id, recorded_at, payload, blob_refs, prev_hash, hash)";

const UPSERT_MARKER: &str = "
INSERT INTO import_markers (stream_id, version, head_hash) VALUES ($1, $2, $3)
ON CONFLICT (stream_id) DO UPDATE SET version = $2, head_hash = $3, imported_at = now()";

impl PgEventStore {
    /// Imports one stream's whole history (`events`, versions 1..=n of one stream, as a verified
    /// export holds them) with their ids, versions, hashes, request and correlation ids and
    /// times, plus the blobs they refer to. One transaction: all of it or nothing.
    ///
    /// When the store already has events of the stream, they must be a prefix of `events`
    /// (same hash at the store's head version) and only the rest is written; a store that holds
    /// a different history is refused with `Conflict` and nothing is written. The stream's
    /// import marker records the head reached.
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
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        // Two importers of one stream take turns; appenders are fenced by the unique index.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('runledger-import:' || $1, 0))")
            .bind(stream.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let head = sqlx::query("SELECT stream_version, hash FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1")
            .bind(stream.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let stored = match head {
            None => 0,
            Some(row) => {
                let version = row.try_get::<i64, _>("stream_version").map_err(db_err)? as u64;
                let hash: Vec<u8> = row.try_get("hash").map_err(db_err)?;
                let ours = match usize::try_from(version)
                    .ok()
                    .and_then(|v| events.get(v - 1))
                {
                    Some(event) => event.hash,
                    None => {
                        // The store is longer: it must hold the file's head where the file ends.
                        let at = sqlx::query_scalar::<_, Vec<u8>>(
                            "SELECT hash FROM events WHERE stream_id = $1 AND stream_version = $2",
                        )
                        .bind(stream.as_str())
                        .bind(last.stream_version as i64)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        if at.as_slice() != last.hash.as_bytes() {
                            return Err(conflict(stream, last.stream_version, version));
                        }
                        upsert_marker(&mut tx, stream, last.stream_version, &last.hash).await?;
                        tx.commit().await.map_err(db_err)?;
                        return Ok(StreamImport::Unchanged);
                    }
                };
                if hash.as_slice() != ours.as_bytes() {
                    return Err(conflict(stream, last.stream_version, version));
                }
                version
            }
        };
        let todo = &events[usize::try_from(stored)
            .unwrap_or(usize::MAX)
            .min(events.len())..];
        if !todo.is_empty() {
            insert_blobs(&mut tx, todo, blobs).await?;
            insert_events(&mut tx, stream, todo).await?;
        }
        upsert_marker(&mut tx, stream, last.stream_version, &last.hash).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(match todo.first() {
            Some(from) => StreamImport::Written {
                from: from.stream_version,
                to: last.stream_version,
            },
            None => StreamImport::Unchanged,
        })
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
               FROM import_markers m WHERE m.stream_id = $1",
        )
        .bind(stream.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let version = row.try_get::<i64, _>("version").map_err(db_err)? as u64;
        let hash: Vec<u8> = row.try_get("head_hash").map_err(db_err)?;
        let hash = Digest::from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("an import marker's hash is not 32 bytes".into()))?;
        Ok(Some((
            version,
            hash,
            row.try_get("current").map_err(db_err)?,
        )))
    }
}

fn conflict(stream: &StreamId, expected: u64, actual: u64) -> StoreError {
    StoreError::Conflict {
        stream_id: stream.clone(),
        expected,
        actual,
    }
}

async fn upsert_marker(
    tx: &mut sqlx::PgConnection,
    stream: &StreamId,
    version: u64,
    head: &Digest,
) -> Result<(), StoreError> {
    sqlx::query(UPSERT_MARKER)
        .bind(stream.as_str())
        .bind(version as i64)
        .bind(head.as_bytes().as_slice())
        .execute(tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn insert_blobs(
    tx: &mut sqlx::PgConnection,
    events: &[RecordedEvent],
    blobs: &[Blob],
) -> Result<(), StoreError> {
    let mut wanted: Vec<Digest> = events
        .iter()
        .flat_map(|e| e.blob_refs.iter().copied())
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut hashes = Vec::new();
    let mut types = Vec::new();
    let mut data = Vec::new();
    for digest in &wanted {
        let blob = blobs
            .iter()
            .find(|b| b.hash() == *digest)
            .ok_or_else(|| StoreError::MissingBlob { hash: *digest })?;
        hashes.push(digest.as_bytes().to_vec());
        types.push(blob.media_type.as_str());
        data.push(blob.data.as_slice());
    }
    if hashes.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO blobs (hash, media_type, data) SELECT * FROM UNNEST($1::bytea[], $2::text[], $3::bytea[])
         ON CONFLICT (hash) DO NOTHING",
    )
    .bind(&hashes)
    .bind(&types)
    .bind(&data)
    .execute(tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn insert_events(
    tx: &mut sqlx::PgConnection,
    stream: &StreamId,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut schemas = Vec::with_capacity(events.len());
    let mut requests = Vec::with_capacity(events.len());
    let mut correlations = Vec::with_capacity(events.len());
    let mut causations = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut refs = Vec::with_capacity(events.len());
    let mut prevs = Vec::with_capacity(events.len());
    let mut hashes = Vec::with_capacity(events.len());
    for e in events {
        ids.push(e.event_id.0);
        versions.push(e.stream_version as i64);
        types.push(e.event_type.as_str());
        schemas.push(e.schema_version as i32);
        requests.push(e.request_id.as_str());
        correlations.push(e.correlation_id.as_str());
        causations.push(e.causation_id.as_ref().map(CausationId::as_str));
        times.push(e.recorded_at.as_datetime());
        payloads.push(
            runledger_contracts::canonical::to_canonical_string(&e.payload).map_err(|err| {
                StoreError::InvalidEvent {
                    index: (e.stream_version - 1) as usize,
                    reason: err.to_string(),
                }
            })?,
        );
        refs.push(blob_refs_json(&e.blob_refs));
        prevs.push(e.prev_hash.as_bytes().to_vec());
        hashes.push(e.hash.as_bytes().to_vec());
    }
    let written = sqlx::query(INSERT_EVENTS)
        .bind(stream.as_str())
        .bind(&ids)
        .bind(&versions)
        .bind(&types)
        .bind(&schemas)
        .bind(&requests)
        .bind(&correlations)
        .bind(&causations)
        .bind(&times)
        .bind(&payloads)
        .bind(&refs)
        .bind(&prevs)
        .bind(&hashes)
        .execute(tx)
        .await;
    match written {
        Ok(_) => Ok(()),
        // A concurrent append wrote the next version first.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict {
            stream_id: stream.clone(),
            expected: events[0].stream_version - 1,
            actual: events[0].stream_version,
        }),
        Err(e) => Err(db_err(e)),
    }
}
