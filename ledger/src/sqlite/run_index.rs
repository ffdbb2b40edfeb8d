//! The runs of a SQLite ledger that have not ended (`run_index`, kept by triggers in the
//! transaction of each append that starts, ends or reopens a run: migration
//! `0002_run_index_sqlite2.sql`). The one engine on the file reads it when it starts, to drive
//! again the runs a killed process left behind, and while `runledger dev` runs, to take the
//! runs `runledger run` recorded without driving them.

use runledger_contracts::ids::RunId;

use super::{SqliteEventStore, db_err};
use crate::StoreError;

impl SqliteEventStore {
    /// Every run started (or reopened) and not ended, oldest start first.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunId>, StoreError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT run_id FROM run_index ORDER BY started_at, run_id")
                .fetch_all(&self.readers)
                .await
                .map_err(db_err)?;
        // The trigger indexes only streams named `run-<uuid>`, so every id parses; an id that
        // did not would name no run the engine could load, and is left out.
        Ok(ids
            .iter()
            .filter_map(|id| id.parse::<RunId>().ok())
            .collect())
    }
}
