//! How far each projector is behind the ledger (for `/metrics`, `projections status`).

use runledger_contracts::time::Timestamp;
use runledger_ledger::SqliteEventStore;
use serde::Serialize;
use sqlx::postgres::PgPool;
use time::OffsetDateTime;

use crate::db::{DbRef, ReadSource};
use crate::error::QueryError;
use crate::projector::PROJECTOR_NAMES;
use crate::runner::parse_xid;

/// One projector's position and distance from the ledger's end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectorLag {
    pub name: String,
    /// Events in the ledger after the checkpoint (committed ones, including those still above
    /// the read horizon).
    pub events_behind: u64,
    /// Age of the oldest event not applied yet; 0 when caught up.
    pub seconds_behind: f64,
    /// The checkpoint: the last applied event's transaction id and global position.
    pub checkpoint_tx_id: u64,
    pub checkpoint_global_position: u64,
    /// Events applied since the last rebuild.
    pub events_applied: u64,
    /// When the checkpoint last moved; `None` before the projector first ran.
    pub updated_at: Option<Timestamp>,
    /// Why the projector is stopped (the event it cannot apply); `None` when healthy.
    pub error: Option<String>,
}

/// name, checkpoint (tx, global), applied, updated, error, events behind, age of the oldest.
type LagRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<OffsetDateTime>,
    Option<String>,
    i64,
    Option<f64>,
);

/// Lag of every built-in projector, in their run order. Counting is an index range scan over
/// the events after each checkpoint, so it costs in proportion to the lag.
pub async fn lag(db: &(impl ReadSource + ?Sized)) -> Result<Vec<ProjectorLag>, QueryError> {
    match db.db() {
        DbRef::Postgres(pool) => lag_pg(pool).await,
        DbRef::Sqlite(store) => lag_sqlite(store).await,
    }
}

/// name's checkpoint (tx, global), applied, updated (micros), error, events behind, oldest
/// event's time (micros).
type SqliteLagRow = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
    Option<i64>,
);

async fn lag_sqlite(store: &SqliteEventStore) -> Result<Vec<ProjectorLag>, QueryError> {
    let mut tx = store.readers().begin().await?;
    let now = Timestamp::now().unix_micros();
    let mut lags = Vec::with_capacity(PROJECTOR_NAMES.len());
    for name in PROJECTOR_NAMES {
        let (tx_id, global, applied, updated_at, error, behind, oldest): SqliteLagRow =
            sqlx::query_as(
                "SELECT c.tx_id, c.global_position, c.events_applied, c.updated_at, c.error,
                        (SELECT count(*) FROM events e
                          WHERE (e.tx_id, e.global_position) > (COALESCE(c.tx_id, 0), COALESCE(c.global_position, 0))),
                        (SELECT e.recorded_at FROM events e
                          WHERE (e.tx_id, e.global_position) > (COALESCE(c.tx_id, 0), COALESCE(c.global_position, 0))
                          ORDER BY e.tx_id, e.global_position LIMIT 1)
                   FROM (SELECT ?1 AS name) n
                   LEFT JOIN projection_checkpoints c ON c.name = n.name",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        lags.push(ProjectorLag {
            name: name.to_owned(),
            events_behind: behind.max(0) as u64,
            seconds_behind: oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6),
            checkpoint_tx_id: tx_id.unwrap_or(0).max(0) as u64,
            checkpoint_global_position: global.unwrap_or(0).max(0) as u64,
            events_applied: applied.unwrap_or(0).max(0) as u64,
            updated_at: updated_at.and_then(Timestamp::from_unix_micros),
            error,
        });
    }
    tx.commit().await?;
    Ok(lags)
}

async fn lag_pg(pool: &PgPool) -> Result<Vec<ProjectorLag>, QueryError> {
    let names: Vec<&str> = PROJECTOR_NAMES.to_vec();
    let rows: Vec<LagRow> = sqlx::query_as(
            "SELECT n.name, c.tx_id::text, c.global_position, c.events_applied, c.updated_at, c.error,
                    (SELECT count(*) FROM events e
                      WHERE (e.tx_id, e.global_position) > (COALESCE(c.tx_id, '0'::xid8), COALESCE(c.global_position, 0))),
                    (SELECT EXTRACT(EPOCH FROM (clock_timestamp() - e.recorded_at))::float8 FROM events e
                      WHERE (e.tx_id, e.global_position) > (COALESCE(c.tx_id, '0'::xid8), COALESCE(c.global_position, 0))
                      ORDER BY e.tx_id, e.global_position LIMIT 1)
               FROM unnest($1::text[]) WITH ORDINALITY AS n(name, ord)
               LEFT JOIN projection_checkpoints c ON c.name = n.name
              ORDER BY n.ord",
        )
        .bind(&names)
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(
            |(name, tx, global, applied, updated_at, error, behind, age)| {
                let tx = match tx {
                    Some(t) => parse_xid(&t).map_err(|e| QueryError::corrupt("a checkpoint", e))?,
                    None => 0,
                };
                Ok(ProjectorLag {
                    name,
                    events_behind: behind.max(0) as u64,
                    seconds_behind: age.unwrap_or(0.0).max(0.0),
                    checkpoint_tx_id: tx,
                    checkpoint_global_position: global.unwrap_or(0).max(0) as u64,
                    events_applied: applied.unwrap_or(0).max(0) as u64,
                    updated_at: updated_at.map(Timestamp::from_datetime),
                    error,
                })
            },
        )
        .collect()
}
