//! What every backend does to an append before and after it talks to its database: check the
//! request, canonicalize each payload once (those bytes are stored and hashed), fingerprint the
//! request, chain the events' hashes from a head, and build the recorded events. One copy, so
//! the PostgreSQL and SQLite stores cannot disagree on what an append means or how it hashes.

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{ChainBody, Position, RecordedEvent};
use runledger_contracts::ids::{EventId, StreamId};
use runledger_contracts::storable;
use runledger_contracts::time::Timestamp;
use uuid::Uuid;

use crate::{AppendRequest, Blob, MAX_EVENTS_PER_APPEND, StoreError};

/// What an append computed before talking to the database; reused across retries.
pub(crate) struct Prepared {
    pub payloads: Vec<Vec<u8>>,
    pub blob_hashes: Vec<Digest>,
    pub fingerprint: Digest,
}

/// What the store assigned to one event of a written request.
pub(crate) struct Assigned {
    pub event_id: EventId,
    pub prev_hash: Digest,
    pub hash: Digest,
    pub position: Position,
}

/// Checks what can be checked without the database, before anything is sent, and computes
/// what every retry round reuses: each payload's canonical bytes (which also proves it is
/// I-JSON; those bytes are what is stored and hashed), each blob's digest, and the request
/// fingerprint.
pub(crate) fn prepare(request: &AppendRequest) -> Result<Prepared, StoreError> {
    if request.events.is_empty() {
        return Err(StoreError::InvalidRequest(
            "a request must append at least one event".into(),
        ));
    }
    if request.events.len() > MAX_EVENTS_PER_APPEND {
        return Err(StoreError::InvalidRequest(format!(
            "a request may append at most {MAX_EVENTS_PER_APPEND} events, not {}",
            request.events.len()
        )));
    }
    let mut payloads = Vec::with_capacity(request.events.len());
    for (index, event) in request.events.iter().enumerate() {
        let invalid = |reason: String| StoreError::InvalidEvent { index, reason };
        if event.event_type.is_empty()
            || event.event_type.len() > 100
            || !event
                .event_type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(invalid(format!(
                "event_type `{}` must be 1 to 100 characters of A-Z a-z 0-9 _ .",
                event.event_type
            )));
        }
        if event.schema_version == 0 {
            return Err(invalid("schema_version must be at least 1".into()));
        }
        let bytes = storable::storable_bytes(&event.payload)
            .map_err(|e| invalid(format!("payload: {e}")))?;
        payloads.push(bytes);
    }
    let blob_hashes: Vec<Digest> = request.blobs.iter().map(Blob::hash).collect();
    let fingerprint = request.fingerprint(&payloads, &blob_hashes);
    Ok(Prepared {
        payloads,
        blob_hashes,
        fingerprint,
    })
}

/// Gives each event of `request` its id and chains its hash from `prev`, the head at version
/// `expected`. Positions are left at [`Position::START`] for the store to fill in.
pub(crate) fn chain(
    stream: &StreamId,
    expected: u64,
    prev: Digest,
    request: &AppendRequest,
    prepared: &Prepared,
    recorded_at: Timestamp,
) -> Vec<Assigned> {
    let mut head = prev;
    request
        .events
        .iter()
        .zip(&prepared.payloads)
        .enumerate()
        .map(|(i, (event, payload))| {
            let event_id = EventId(Uuid::now_v7());
            let hash = ChainBody {
                event_id,
                stream_id: stream,
                stream_version: expected + 1 + i as u64,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                request_id: &request.request_id,
                correlation_id: &request.correlation_id,
                causation_id: request.causation_id.as_ref(),
                recorded_at,
                payload: &event.payload,
                blob_refs: &event.blob_refs,
                prev_hash: head,
            }
            .hash_with_canonical_payload(payload);
            let assigned = Assigned {
                event_id,
                prev_hash: head,
                hash,
                position: Position::START,
            };
            head = hash;
            assigned
        })
        .collect()
}

/// Builds the recorded events of a written request, moving the payloads out of it.
pub(crate) fn recorded_events(
    stream: &StreamId,
    request: AppendRequest,
    recorded_at: Timestamp,
    first_version: u64,
    assigned: Vec<Assigned>,
) -> Vec<RecordedEvent> {
    let AppendRequest {
        request_id,
        correlation_id,
        causation_id,
        events,
        ..
    } = request;
    events
        .into_iter()
        .zip(assigned)
        .enumerate()
        .map(|(i, (event, a))| RecordedEvent {
            event_id: a.event_id,
            stream_id: stream.clone(),
            stream_version: first_version + i as u64,
            position: a.position,
            event_type: event.event_type,
            schema_version: event.schema_version,
            request_id: request_id.clone(),
            correlation_id: correlation_id.clone(),
            causation_id: causation_id.clone(),
            recorded_at,
            payload: event.payload,
            blob_refs: event.blob_refs,
            prev_hash: a.prev_hash,
            hash: a.hash,
        })
        .collect()
}

/// `["<hex>", …]`: the stored form of an event's blob references.
pub(crate) fn blob_refs_json(refs: &[Digest]) -> String {
    let mut out = String::with_capacity(2 + refs.len() * 67);
    out.push('[');
    for (i, r) in refs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(&r.to_hex());
        out.push('"');
    }
    out.push(']');
    out
}
