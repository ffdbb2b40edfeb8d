//! Run leases, the run index and live engine instances (tables of `migrations/0004_run_leases.sql`).
//!
//! The ledger decides nothing here: it keeps who holds which run until when, and answers in
//! single statements whose conditions make each change of hands atomic. Expiry is compared with
//! the database's clock only, so instances with skewed clocks still agree on who holds a run.
//! Why a lease table rather than advisory locks or the event stream itself:
//! docs/adr/0002-run-leases.md.

use std::time::Duration;

use runledger_contracts::ids::RunId;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool};

use crate::StoreError;

/// The NOTIFY channel woken when a run enters the run index or a lease is handed back; the
/// payload is the schema, so instances on other schemas of the database ignore it.
pub const RUNS_CHANNEL: &str = "runledger_runs";

/// The NOTIFY channel that wakes a run's owner after someone else wrote to the run (a report
/// recorded by an instance that does not own it, a control applied straight to the ledger);
/// the payload is `<schema> <run id>`.
pub const RUN_WAKE_CHANNEL: &str = "runledger_run_wake";

/// What a [`RunWakeups`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// A run entered the run index or a lease was handed back.
    Runs,
    /// Someone other than its owner wrote to this run.
    Run(RunId),
    /// The listening connection broke and is reconnecting: notifications sent meanwhile are
    /// lost, so the listener should look at everything it waits for once.
    Lost,
}

/// A lease this instance now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub run_id: RunId,
    /// The fencing epoch: grows by one each time the run changes hands.
    pub epoch: u64,
    /// Who held it before, when someone did (an expired or handed-back lease).
    pub previous_owner: Option<String>,
    /// False when this instance already held the lease (a renewal, nothing changed hands).
    pub changed_hands: bool,
}

/// A run's lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub owner: Option<String>,
    pub epoch: u64,
    /// Whether the lease is held and not expired right now.
    pub live: bool,
}

/// The lease and run-index statements, on the ledger's pool (and schema).
#[derive(Clone)]
pub struct LeaseStore {
    pool: PgPool,
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e)
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn run_id_of(row: &sqlx::postgres::PgRow) -> Result<RunId, StoreError> {
    let id: uuid::Uuid = row.try_get("run_id").map_err(db_err)?;
    Ok(RunId(id))
}

fn epoch_of(row: &sqlx::postgres::PgRow) -> Result<u64, StoreError> {
    let epoch: i64 = row.try_get("epoch").map_err(db_err)?;
    u64::try_from(epoch)
        .map_err(|_| StoreError::Corrupt(format!("lease epoch {epoch} is negative")))
}

impl LeaseStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Records the instance as live until `ttl` from now and extends every lease it holds by
    /// the same. Returns the runs it still holds: a run missing from the answer was taken over
    /// (its lease expired first) and must not be driven here any more. One statement.
    pub async fn heartbeat(
        &self,
        instance: &str,
        ttl: Duration,
        draining: bool,
    ) -> Result<Vec<RunId>, StoreError> {
        let rows = sqlx::query(
            "WITH live AS (
                 INSERT INTO engine_instances (instance_id, expires_at, draining)
                 VALUES ($1, now() + $2 * interval '1 millisecond', $3)
                 ON CONFLICT (instance_id) DO UPDATE
                    SET expires_at = EXCLUDED.expires_at, draining = EXCLUDED.draining
             ), gone AS (
                 DELETE FROM engine_instances WHERE expires_at < now() - interval '1 hour'
             )
             UPDATE run_leases SET expires_at = now() + $2 * interval '1 millisecond'
              WHERE owner = $1
             RETURNING run_id",
        )
        .bind(instance)
        .bind(millis(ttl))
        .bind(draining)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(run_id_of).collect()
    }

    /// Takes the lease of one run when it is free, expired or already this instance's.
    /// `None`: another instance holds it.
    pub async fn acquire(
        &self,
        instance: &str,
        run_id: RunId,
        ttl: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let row = sqlx::query(
            "WITH before AS (SELECT owner FROM run_leases WHERE run_id = $2)
             INSERT INTO run_leases (run_id, owner, expires_at)
             VALUES ($2, $1, now() + $3 * interval '1 millisecond')
             ON CONFLICT (run_id) DO UPDATE
                SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at,
                    epoch = run_leases.epoch
                          + CASE WHEN run_leases.owner IS NOT DISTINCT FROM EXCLUDED.owner THEN 0 ELSE 1 END
              WHERE run_leases.owner = EXCLUDED.owner OR run_leases.owner IS NULL
                 OR run_leases.expires_at <= now()
             RETURNING epoch, (SELECT owner FROM before) AS previous",
        )
        .bind(instance)
        .bind(run_id.0)
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let previous: Option<String> = row.try_get("previous").map_err(db_err)?;
        let changed_hands = previous.as_deref() != Some(instance);
        Ok(Some(Claim {
            run_id,
            epoch: epoch_of(&row)?,
            previous_owner: previous.filter(|p| p != instance),
            changed_hands,
        }))
    }

    /// Takes up to `limit` runs of the run index that nobody holds (new, handed back, or whose
    /// owner stopped renewing), oldest first. Runs another instance is claiming at the same
    /// moment are skipped, not waited for. Costs nothing that grows with finished runs: it
    /// reads only the index of unfinished ones.
    pub async fn claim_unowned(
        &self,
        instance: &str,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "WITH candidates AS (
                 SELECT i.run_id, l.owner AS previous
                   FROM run_index i LEFT JOIN run_leases l ON l.run_id = i.run_id
                  WHERE l.run_id IS NULL OR l.owner IS NULL OR l.expires_at <= now()
                  ORDER BY i.started_at
                  LIMIT $3
                  FOR UPDATE OF i SKIP LOCKED
             ), claimed AS (
                 INSERT INTO run_leases (run_id, owner, expires_at)
                 SELECT run_id, $1, now() + $2 * interval '1 millisecond' FROM candidates
                 ON CONFLICT (run_id) DO UPDATE
                    SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, epoch = run_leases.epoch + 1
                  WHERE run_leases.owner IS NULL OR run_leases.expires_at <= now()
                 RETURNING run_id, epoch
             )
             SELECT c.run_id, c.epoch, k.previous FROM claimed c JOIN candidates k USING (run_id)",
        )
        .bind(instance)
        .bind(millis(ttl))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let previous: Option<String> = row.try_get("previous").map_err(db_err)?;
                Ok(Claim {
                    run_id: run_id_of(row)?,
                    epoch: epoch_of(row)?,
                    changed_hands: previous.as_deref() != Some(instance),
                    previous_owner: previous.filter(|p| p != instance),
                })
            })
            .collect()
    }

    /// Hands leases back at once (the epoch stays; the next holder raises it). With `wake`, idle
    /// instances are notified so they take the runs over without waiting for their next look.
    pub async fn release(
        &self,
        instance: &str,
        runs: &[RunId],
        wake: bool,
    ) -> Result<usize, StoreError> {
        if runs.is_empty() {
            return Ok(0);
        }
        let ids: Vec<uuid::Uuid> = runs.iter().map(|r| r.0).collect();
        let released: i64 = sqlx::query_scalar(
            "WITH released AS (
                 UPDATE run_leases SET owner = NULL, expires_at = now()
                  WHERE owner = $1 AND run_id = ANY($2)
                 RETURNING run_id
             )
             SELECT count(*) FROM released
              WHERE NOT $3 OR pg_notify('runledger_runs', current_schema()) IS NOT NULL",
        )
        .bind(instance)
        .bind(&ids)
        .bind(wake)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(usize::try_from(released).unwrap_or(0))
    }

    /// Hands back every lease of the instance and removes it from the live instances
    /// (a drained shutdown). Wakes the other instances.
    pub async fn deregister(&self, instance: &str) -> Result<usize, StoreError> {
        let released: i64 = sqlx::query_scalar(
            "WITH released AS (
                 UPDATE run_leases SET owner = NULL, expires_at = now() WHERE owner = $1 RETURNING run_id
             ), gone AS (
                 DELETE FROM engine_instances WHERE instance_id = $1
             )
             SELECT count(*) FROM released WHERE pg_notify('runledger_runs', current_schema()) IS NOT NULL",
        )
        .bind(instance)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(usize::try_from(released).unwrap_or(0))
    }

    /// How many instances are live and not draining (whether anything will drive a new run).
    pub async fn live_instances(&self) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM engine_instances WHERE expires_at > now() AND NOT draining",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The lease of a run, if it ever had one.
    pub async fn lease_of(&self, run_id: RunId) -> Result<Option<LeaseInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT owner, epoch, (owner IS NOT NULL AND expires_at > now()) AS live FROM run_leases WHERE run_id = $1",
        )
        .bind(run_id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(LeaseInfo {
            owner: row.try_get("owner").map_err(db_err)?,
            epoch: epoch_of(&row)?,
            live: row.try_get("live").map_err(db_err)?,
        }))
    }

    /// Whether the run is in the run index (started and not ended).
    pub async fn is_indexed(&self, run_id: RunId) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM run_index WHERE run_id = $1)")
            .bind(run_id.0)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)
    }

    /// Wakes the owner of `run_id` (whichever instance that is) to read what was just written
    /// to the run. Sent after the write commits; one small statement.
    pub async fn wake_owner(&self, run_id: RunId) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, current_schema() || ' ' || $2)")
            .bind(RUN_WAKE_CHANNEL)
            .bind(run_id.0.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// A connection listening for [`RUN_WAKE_CHANNEL`] and, with `runs`, [`RUNS_CHANNEL`]; see
    /// [`RunWakeups::next`].
    pub async fn wakeups(&self, runs: bool) -> Result<RunWakeups, StoreError> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(db_err)?;
        let mut channels = vec![RUN_WAKE_CHANNEL];
        if runs {
            channels.push(RUNS_CHANNEL);
        }
        listener.listen_all(channels).await.map_err(db_err)?;
        Ok(RunWakeups { listener, schema })
    }
}

/// Notifications that a run may be waiting for an owner, or that an owned run was written to.
pub struct RunWakeups {
    listener: PgListener,
    schema: String,
}

impl RunWakeups {
    /// Returns the next notification for this schema. [`Wakeup::Lost`] means the connection
    /// broke (the next call reconnects); an error means reconnecting failed (callers keep
    /// polling and call again later).
    pub async fn next(&mut self) -> Result<Wakeup, StoreError> {
        loop {
            let Some(note) = self.listener.try_recv().await.map_err(db_err)? else {
                return Ok(Wakeup::Lost);
            };
            if note.channel() == RUNS_CHANNEL {
                if note.payload() == self.schema {
                    return Ok(Wakeup::Runs);
                }
                continue;
            }
            let Some((schema, run)) = note.payload().split_once(' ') else {
                continue;
            };
            if schema != self.schema {
                continue;
            }
            if let Ok(id) = uuid::Uuid::parse_str(run) {
                return Ok(Wakeup::Run(RunId(id)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
