//! Large results of agent tool calls and the blob table. The engine moves a result larger than
//! [`MAX_INLINE_TOOL_RESULT`] to the blob table before it appends the call's `ToolCalled`
//! ([`offload`]); when a node run is handed to an executor again (the engine restarted, or a
//! running node run is re-submitted), the results of its recorded calls are read back from
//! the blob table into the work ([`restore`]), so that the loop answers a call it does not
//! apply again with the same result the model read the first time, not with a digest.

use runledger_contracts::canonical::to_canonical_vec;
use runledger_contracts::events::{BlobRef, ToolCalled};
use runledger_ledger::{Blob, EventStore, StoreError};
use serde_json::Value;

use crate::executor::NodeWork;

/// Results of agent tool calls larger than this (canonical JSON bytes) are kept in the blob
/// table; the `ToolCalled` names the blob.
pub const MAX_INLINE_TOOL_RESULT: usize = 16 * 1024;

/// Most bytes of blob results put back into one node run's work. The work may travel to a
/// remote executor as one NATS message (1 MiB by default), so past this budget a recorded
/// call keeps only its blob's name and the loop answers it with the digest.
pub const MAX_RESTORED_RESULT_BYTES: u64 = 512 * 1024;

/// Moves a large tool result of `call` to the blob table.
pub(crate) async fn offload<S: EventStore>(
    store: &S,
    call: &mut ToolCalled,
) -> Result<(), StoreError> {
    let (Some(output), Some(agent)) = (&call.output, call.agent.as_mut()) else {
        return Ok(());
    };
    let Ok(bytes) = to_canonical_vec(output) else {
        return Ok(());
    };
    if bytes.len() <= MAX_INLINE_TOOL_RESULT {
        return Ok(());
    }
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let hash = store
        .put_blob(Blob {
            media_type: "application/json".into(),
            data: bytes,
        })
        .await?;
    agent.result_blob = Some(BlobRef {
        hash,
        media_type: "application/json".into(),
        size,
    });
    call.output = None;
    Ok(())
}

/// Reads the results of `work`'s recorded calls that went to the blob table back into their
/// `output`, in call order, within [`MAX_RESTORED_RESULT_BYTES`]. A blob that cannot be read
/// (or is not JSON) is left out with a warning: the loop then answers that call with the
/// blob's digest, as it does past the budget.
pub(crate) async fn restore<S: EventStore>(store: &S, work: &mut NodeWork) {
    let mut budget = MAX_RESTORED_RESULT_BYTES;
    for call in &mut work.recorded_calls {
        if call.output.is_some() || call.error.is_some() {
            continue;
        }
        let Some(blob) = call.agent.as_ref().and_then(|a| a.result_blob.as_ref()) else {
            continue;
        };
        if blob.size > budget {
            continue;
        }
        match read(store, blob).await {
            Ok(value) => {
                budget -= blob.size;
                call.output = Some(value);
            }
            Err(reason) => tracing::warn!(
                run_id = %work.run_id,
                call = %call.idempotency_key,
                blob = %blob.hash,
                %reason,
                "a recorded tool result is not restored from its blob"
            ),
        }
    }
}

/// Why a recorded tool result is not read back from its blob.
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error("the blob table has no such blob")]
    Missing,
    #[error("the blob is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the blob cannot be read: {0}")]
    Store(#[source] StoreError),
}

async fn read<S: EventStore>(store: &S, blob: &BlobRef) -> Result<Value, RestoreError> {
    match store.get_blob(&blob.hash).await {
        Ok(Some(found)) => serde_json::from_slice(&found.data).map_err(RestoreError::NotJson),
        Ok(None) => Err(RestoreError::Missing),
        Err(e) => Err(RestoreError::Store(e)),
    }
}
