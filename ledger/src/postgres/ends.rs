//! Where the ledger ends: the positions live tails start from and catch-ups aim for, and the
//! last global position (a cheap gauge). Each is one index probe on `events_commit_order` or
//! the primary key, never a scan.
//!
//! ORDER BY names the table's columns (`events.tx_id`): a bare `tx_id` would sort by the
//! `tx_id::text` output column, putting "9" after "10" (text order) and missing the index.

use runledger_contracts::envelope::Position;

use super::{PgEventStore, db_err, position_of};
use crate::StoreError;

const LAST_COMMITTED: &str = "SELECT tx_id::text AS tx_id, global_position FROM events
     ORDER BY events.tx_id DESC, events.global_position DESC LIMIT 1";

const LAST_BELOW_HORIZON: &str = "SELECT tx_id::text AS tx_id, global_position FROM events
     WHERE events.tx_id < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY events.tx_id DESC, events.global_position DESC LIMIT 1";

impl PgEventStore {
    /// The last committed event in the commit-safe order `(tx_id, global_position)`, also when
    /// an older transaction still running keeps it above the read horizon: what a catch-up
    /// must reach to cover every event committed before the call.
    pub async fn last_committed_position(&self) -> Result<Option<Position>, StoreError> {
        let row = sqlx::query(LAST_COMMITTED)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(position_of).transpose()
    }

    /// The last event below the read horizon: a reader starting after it reads only events
    /// appended (or committed) later, and skips none of them. A live tail starts here.
    pub async fn horizon_position(&self) -> Result<Position, StoreError> {
        let row = sqlx::query(LAST_BELOW_HORIZON)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        Ok(row
            .as_ref()
            .map(position_of)
            .transpose()?
            .unwrap_or(Position::START))
    }

    /// The highest global position handed out so far (0 for an empty ledger); events are
    /// never deleted, so this is also how many events were ever appended, read from the
    /// primary key's end rather than counted.
    pub async fn last_global_position(&self) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(global_position) FROM events")
            .fetch_one(self.pool())
            .await
            .map_err(db_err)?;
        Ok(last.unwrap_or(0).max(0) as u64)
    }
}
