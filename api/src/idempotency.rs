//! `Idempotency-Key` for run starts, kept in the ledger.
//!
//! The first start under a key appends `IdempotencyKeyRecorded` (the key's digest, the
//! request's digest, the run id) to the stream `idempotency-<key digest>` with
//! `ExpectedVersion::NoStream`, before the run starts. A repeat finds that event: the same
//! request digest gives back its run; another digest is `409 idempotency_key_reused`. Because the
//! record is written first, a start that crashed between the two writes is finished by the
//! repeat (the run id is already fixed).

use axum::http::HeaderMap;
use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::events::{DomainEvent, IdempotencyKeyRecorded};
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion, LedgerStore, StoreError};
use serde_json::Value;

use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";
const SCOPE_RUN_START: &str = "run_start";
const MAX_KEY_LEN: usize = 255;

/// What the key says about this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use: start `run_id`.
    Fresh(RunId),
    /// The same request was made before under this key: it names `run_id`.
    Replay(RunId),
}

/// The key from the request, if any: 1 to 255 visible ASCII characters.
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|k| {
        !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
    });
    match key {
        Some(k) => Ok(Some(k.to_owned())),
        None => Err(ApiError::bad_request(
            "invalid_header",
            "header `idempotency-key` must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// blake3 of the canonical JSON of a request body.
pub fn request_hash(body: &Value) -> Result<Digest, ApiError> {
    canonical::to_canonical_vec(body)
        .map(|bytes| Digest::of(&bytes))
        .map_err(|e| {
            ApiError::unprocessable(
                "invalid_body",
                format!("the body cannot be canonicalized: {e}"),
            )
        })
}

/// Claims `key` for this request, or finds what it was claimed for.
pub async fn claim(
    store: &LedgerStore,
    key: &str,
    request: Digest,
    proposed: RunId,
    request_id: &RequestId,
    correlation_id: &CorrelationId,
) -> Result<Claim, ApiError> {
    let key_hash = Digest::of(key.as_bytes());
    let stream = StreamId::new(format!("idempotency-{}", key_hash.to_hex()))
        .map_err(|e| ApiError::internal("internal_error", e))?;
    let event = DomainEvent::IdempotencyKeyRecorded(IdempotencyKeyRecorded {
        scope: SCOPE_RUN_START.into(),
        key_hash,
        request_hash: request,
        run_id: proposed,
    });
    let new = NewEvent::from_domain(&event).map_err(|e| ApiError::internal("internal_error", e))?;
    let append = AppendRequest::new(request_id.clone(), correlation_id.clone(), vec![new]);
    match store
        .append(&stream, ExpectedVersion::NoStream, append)
        .await
    {
        Ok(outcome) if !outcome.deduplicated => return Ok(Claim::Fresh(proposed)),
        Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::RequestMismatch { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let first = store.read_stream(&stream, 1, 1).await?;
    let recorded = first.into_iter().next().ok_or_else(|| {
        ApiError::internal(
            "ledger_corrupt",
            format!("{stream} exists but has no first event"),
        )
    })?;
    let earlier = match recorded.decode() {
        Ok(DomainEvent::IdempotencyKeyRecorded(e)) => e,
        Ok(other) => {
            return Err(ApiError::internal(
                "ledger_corrupt",
                format!("{stream} holds {}", other.event_type()),
            ));
        }
        Err(e) => return Err(ApiError::internal("ledger_corrupt", e)),
    };
    if earlier.scope == SCOPE_RUN_START && earlier.request_hash == request {
        Ok(Claim::Replay(earlier.run_id))
    } else {
        Err(ApiError::conflict(
            "idempotency_key_reused",
            format!(
                "this Idempotency-Key already started run {} with a different request body",
                earlier.run_id
            ),
        )
        .with_details(serde_json::json!({ "run_id": earlier.run_id })))
    }
}
