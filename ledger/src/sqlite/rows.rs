//! SQLite rows back into ledger types. Anything that does not decode is `Corrupt`, naming the
//! event: the file was written by something other than this store.

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::ids::{CausationId, CorrelationId, EventId, RequestId, StreamId};
use runledger_contracts::time::Timestamp;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::db_err;
use crate::{StoreError, StreamHead};

pub(super) fn position_of(row: &SqliteRow) -> Result<Position, StoreError> {
    let tx: i64 = row.try_get("tx_id").map_err(db_err)?;
    let global: i64 = row.try_get("global_position").map_err(db_err)?;
    Ok(Position {
        commit: tx.max(0) as u64,
        global: global.max(0) as u64,
    })
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let stream_id: String = row.try_get("stream_id").map_err(db_err)?;
    let version: i64 = row.try_get("stream_version").map_err(db_err)?;
    let at = || format!("event {stream_id}#{version}");
    let payload: String = row.try_get("payload").map_err(db_err)?;
    let refs: String = row.try_get("blob_refs").map_err(db_err)?;
    let prev: Vec<u8> = row.try_get("prev_hash").map_err(db_err)?;
    let hash: Vec<u8> = row.try_get("hash").map_err(db_err)?;
    let micros: i64 = row.try_get("recorded_at").map_err(db_err)?;
    let schema_version: i64 = row.try_get("schema_version").map_err(db_err)?;
    let causation: Option<String> = row.try_get("causation_id").map_err(db_err)?;
    let event_id: Uuid = row.try_get("event_id").map_err(db_err)?;
    Ok(RecordedEvent {
        event_id: EventId(event_id),
        stream_id: StreamId::new(stream_id.clone()).map_err(|e| corrupt(&at(), &e))?,
        stream_version: version.max(0) as u64,
        position: position_of(row)?,
        event_type: row.try_get("event_type").map_err(db_err)?,
        schema_version: u32::try_from(schema_version).map_err(|e| corrupt(&at(), &e))?,
        request_id: RequestId::new(row.try_get::<String, _>("request_id").map_err(db_err)?)
            .map_err(|e| corrupt(&at(), &e))?,
        correlation_id: CorrelationId::new(
            row.try_get::<String, _>("correlation_id").map_err(db_err)?,
        )
        .map_err(|e| corrupt(&at(), &e))?,
        causation_id: causation
            .map(CausationId::new)
            .transpose()
            .map_err(|e| corrupt(&at(), &e))?,
        recorded_at: Timestamp::from_unix_micros(micros)
            .ok_or_else(|| corrupt(&at(), &"recorded_at is out of range"))?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt(&at(), &e))?,
        blob_refs: serde_json::from_str(&refs).map_err(|e| corrupt(&at(), &e))?,
        prev_hash: Digest::from_slice(&prev)
            .ok_or_else(|| corrupt(&at(), &"prev_hash is not 32 bytes"))?,
        hash: Digest::from_slice(&hash).ok_or_else(|| corrupt(&at(), &"hash is not 32 bytes"))?,
    })
}

pub(super) fn head_from_row(
    stream_id: StreamId,
    row: &SqliteRow,
) -> Result<StreamHead, StoreError> {
    let version: i64 = row.try_get("version").map_err(db_err)?;
    let hash: Vec<u8> = row.try_get("head_hash").map_err(db_err)?;
    let hash = Digest::from_slice(&hash).ok_or_else(|| {
        StoreError::Corrupt(format!("head hash of `{stream_id}` is not 32 bytes"))
    })?;
    Ok(StreamHead {
        stream_id,
        version: version.max(0) as u64,
        hash,
    })
}
