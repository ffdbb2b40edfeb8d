//! The projector contract and what every projector shares: decoding a batch through the
//! contracts catalog (so upcasting applies) and moving rows to the database: PostgreSQL in few
//! round trips, SQLite as one JSON document per row beside its key columns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::{DomainEvent, NodeRunStatus};
use runledger_contracts::ids::RunId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, SqliteConnection};

use crate::db::ProjectionTx;
use crate::error::ApplyError;

pub type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ApplyError>> + Send + 'a>>;

/// One read model: a name, the tables it owns, and how a batch of events changes them.
///
/// The runner calls [`Projector::apply`] inside the transaction that also moves the projector's
/// checkpoint past the batch, so the tables and the checkpoint always agree. A batch holds whole
/// ledger transactions (never half an append), in the ledger's commit-safe order.
///
/// `apply` must be deterministic: the same events give the same rows whatever the batch
/// boundaries (a rebuild from zero equals the live tables), and nothing may depend on the wall
/// clock. An event that cannot be applied is an [`ApplyError::Event`] naming its index: the
/// runner stops the projector there rather than skip it.
pub trait Projector: Send + Sync + 'static {
    /// Stable name: the checkpoint row, `projections rebuild NAME`, metrics labels.
    fn name(&self) -> &'static str;
    /// Every table this projector writes; a rebuild truncates exactly these.
    fn tables(&self) -> &'static [&'static str];
    fn apply<'a>(
        &'a self,
        tx: &'a mut ProjectionTx,
        events: &'a [RecordedEvent],
    ) -> ApplyFuture<'a>;
}

/// The built-in projectors, in the order they are run.
pub fn builtin() -> Vec<Arc<dyn Projector>> {
    vec![
        Arc::new(crate::run_detail::RunDetailProjector),
        Arc::new(crate::artifact_history::ArtifactHistoryProjector),
        Arc::new(crate::claims::ClaimEvidenceProjector::default()),
    ]
}

/// Names of the built-in projectors.
pub const PROJECTOR_NAMES: [&str; 3] = ["run_detail", "artifact_history", "claim_evidence"];

/// Decodes every event of a batch into the current catalog types (upcasting older versions).
/// An unknown type or a payload that does not fit its schema stops the projector there.
pub(crate) fn decode_all(events: &[RecordedEvent]) -> Result<Vec<DomainEvent>, ApplyError> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            event
                .decode()
                .map_err(|e| ApplyError::event(index, format!("cannot decode: {e}")))
        })
        .collect()
}

/// The run an event belongs to, for events about runs; `None` for anything else the catalog
/// may hold (flowchart registry events, ...), which run projectors ignore.
pub(crate) fn run_of(event: &DomainEvent) -> Option<RunId> {
    Some(match event {
        DomainEvent::RunStarted(e) => e.run_id,
        DomainEvent::RunForked(e) => e.run_id,
        DomainEvent::RunForkedTo(e) => e.run_id,
        DomainEvent::RunCompleted(e) => e.run_id,
        DomainEvent::RunFailed(e) => e.run_id,
        DomainEvent::RunPaused(e) => e.run_id,
        DomainEvent::RunResumed(e) => e.run_id,
        DomainEvent::RunCancelRequested(e) => e.run_id,
        DomainEvent::RunCanceled(e) => e.run_id,
        DomainEvent::ChildRunStarted(e) => e.run_id,
        DomainEvent::NodeScheduled(e) => e.run_id,
        DomainEvent::NodeDispatched(e) => e.run_id,
        DomainEvent::NodeStarted(e) => e.run_id,
        DomainEvent::NodeSucceeded(e) => e.run_id,
        DomainEvent::NodeFailed(e) => e.run_id,
        DomainEvent::NodeTimedOut(e) => e.run_id,
        DomainEvent::NodeRetryScheduled(e) => e.run_id,
        DomainEvent::NodeSkipped(e) => e.run_id,
        DomainEvent::NodeCanceled(e) => e.run_id,
        DomainEvent::NodeRewound(e) => e.run_id,
        DomainEvent::NodeResultIgnored(e) => e.run_id,
        DomainEvent::RoutingDecided(e) => e.run_id,
        DomainEvent::ToolCalled(e) => e.run_id,
        DomainEvent::ArtifactPersisted(e) => e.run_id,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// The recorded name of a node run ending.
pub fn status_name(status: NodeRunStatus) -> &'static str {
    match status {
        NodeRunStatus::Succeeded => "succeeded",
        NodeRunStatus::SuccessWithWarning => "success_with_warning",
        NodeRunStatus::Failed => "failed",
        NodeRunStatus::TimedOut => "timed_out",
        NodeRunStatus::Skipped => "skipped",
        NodeRunStatus::Canceled => "canceled",
    }
}

/// Rows as one JSON array: statements read them with `json_populate_recordset`, so a whole
/// batch of rows is one bind and one round trip.
pub(crate) fn rows_json<T: Serialize>(rows: &[T]) -> Result<String, ApplyError> {
    serde_json::to_string(rows).map_err(|e| ApplyError::Encode(e.to_string()))
}

/// Runs `sql` with the rows as `$1` unless there are none.
pub(crate) async fn write_rows<T: Serialize>(
    conn: &mut PgConnection,
    sql: &'static str,
    rows: &[T],
) -> Result<(), ApplyError> {
    if rows.is_empty() {
        return Ok(());
    }
    let json = rows_json(rows)?;
    sqlx::query(sql).bind(json).execute(conn).await?;
    Ok(())
}

/// Reads rows selected as `to_json(t)::text` into their structs.
pub(crate) fn parse_rows<T: DeserializeOwned>(texts: Vec<String>) -> Result<Vec<T>, ApplyError> {
    texts
        .into_iter()
        .map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| ApplyError::Encode(format!("stored row does not decode: {e}")))
        })
        .collect()
}

/// A row as stored in a SQLite read-model table's `doc` column.
pub(crate) fn doc<T: Serialize>(row: &T) -> Result<String, ApplyError> {
    serde_json::to_string(row).map_err(|e| ApplyError::Encode(e.to_string()))
}

/// The `doc`s selected by `sql`, whose one parameter is a JSON array of keys (read with
/// `json_each`), decoded; nothing is read for no keys.
pub(crate) async fn load_docs<T: DeserializeOwned>(
    conn: &mut SqliteConnection,
    sql: &'static str,
    keys: &[String],
) -> Result<Vec<T>, ApplyError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let keys = serde_json::to_string(keys).map_err(|e| ApplyError::Encode(e.to_string()))?;
    let texts: Vec<String> = sqlx::query_scalar(sql).bind(keys).fetch_all(conn).await?;
    parse_rows(texts)
}
