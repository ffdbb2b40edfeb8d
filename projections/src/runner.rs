//! Runs projectors over the ledger: one batch at a time, each in one transaction with the
//! projector's checkpoint; live (woken by LISTEN/NOTIFY on PostgreSQL, polling as a backstop,
//! and polling alone on SQLite); catch-up; and rebuild from position zero.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::time::Timestamp;
use runledger_ledger::{EventStore, LedgerStore};
use sqlx::postgres::PgListener;

use crate::db::{ProjectionTx, ReadDb};
use crate::error::{ApplyError, EventRef, ProjectionError};
use crate::projector::{self, Projector};

/// The channel the ledger's `events` trigger notifies after each append (payload: the schema).
pub const NOTIFY_CHANNEL: &str = "runledger_events";

/// Events read per batch, unless one ledger transaction is bigger.
pub const DEFAULT_BATCH_SIZE: usize = 2_000;

/// How long a live runner sleeps between polls when no notification arrives.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The poll of a live runner on SQLite, which has no notifications: a look is one indexed
/// read of a local file, so it can be frequent.
pub const SQLITE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a catch-up waits for older transactions to end so it can read to the ledger's end.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(60);

/// How long a live runner waits before looking again at a projector stopped at an event it
/// cannot apply (only a newer runledger or a repaired ledger changes that).
const STOPPED_RETRY: Duration = Duration::from_secs(30);

/// First wait after a transient failure (a dropped connection, a database restart): short,
/// so one cut connection costs the API milliseconds of staleness, not a parking period.
const TRANSIENT_RETRY_FIRST: Duration = Duration::from_millis(5);

/// Longest wait between retries of a transient failure (the wait doubles up to this).
const TRANSIENT_RETRY_CAP: Duration = Duration::from_secs(2);

/// The projectors of one database schema and how to drive them.
#[derive(Clone)]
pub struct Projections {
    db: ReadDb,
    store: Arc<LedgerStore>,
    projectors: Vec<Arc<dyn Projector>>,
    batch_size: usize,
    poll_interval: Duration,
    patience: Duration,
}

/// A batch read ahead, and the checkpoint it starts after.
struct Ahead {
    after: Position,
    events: Vec<RecordedEvent>,
}

/// Progress of a catch-up or rebuild, reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub projector: &'static str,
    /// Events applied so far by this call.
    pub applied: u64,
    /// Events in the ledger when the call began (a rebuild's goal; catch-up may apply more).
    pub total: u64,
}

/// What one projector did in a catch-up or rebuild.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub projector: &'static str,
    pub applied: u64,
    pub elapsed: Duration,
    pub checkpoint: Position,
}

impl Report {
    pub fn events_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.applied as f64 / secs
        } else {
            0.0
        }
    }
}

impl Projections {
    /// All built-in projectors on the ledger's database: a PostgreSQL pool (its schema, as the
    /// ledger uses) or the SQLite file.
    pub fn new(db: impl Into<ReadDb>) -> Self {
        Self::with_projectors(db, projector::builtin())
    }

    pub fn with_projectors(db: impl Into<ReadDb>, projectors: Vec<Arc<dyn Projector>>) -> Self {
        let db = db.into();
        let store = Arc::new(db.ledger());
        let poll_interval = match db {
            ReadDb::Postgres(_) => DEFAULT_POLL_INTERVAL,
            ReadDb::Sqlite(_) => SQLITE_POLL_INTERVAL,
        };
        Self {
            db,
            store,
            projectors,
            batch_size: DEFAULT_BATCH_SIZE,
            poll_interval,
            patience: DEFAULT_PATIENCE,
        }
    }

    /// Only the named built-in projector, or all of them for `None`.
    pub fn select(db: impl Into<ReadDb>, name: Option<&str>) -> Result<Self, ProjectionError> {
        let all = projector::builtin();
        let chosen = match name {
            None => all,
            Some(name) => {
                let one: Vec<_> = all.into_iter().filter(|p| p.name() == name).collect();
                if one.is_empty() {
                    return Err(ProjectionError::UnknownProjector {
                        name: name.to_owned(),
                        known: projector::PROJECTOR_NAMES.join(", "),
                    });
                }
                one
            }
        };
        Ok(Self::with_projectors(db, chosen))
    }

    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// How long [`Projections::catch_up`] and rebuilds wait for the read horizon.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The database the read models live in.
    pub fn db(&self) -> &ReadDb {
        &self.db
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.projectors.iter().map(|p| p.name()).collect()
    }

    /// Applies the next batch of one projector; returns how many events it applied (0 when it
    /// is caught up with the ledger's horizon).
    pub async fn step(&self, projector: &dyn Projector) -> Result<usize, ProjectionError> {
        self.step_ahead(projector, None, false)
            .await
            .map(|(n, _)| n)
    }

    /// [`Projections::step`], starting from a batch read ahead (when it still starts at the
    /// checkpoint) and, with `read_ahead`, reading the next batch while this one is applied:
    /// the ledger read (mostly this process's CPU) overlaps the apply (mostly the database's).
    async fn step_ahead(
        &self,
        projector: &dyn Projector,
        mut ahead: Option<Ahead>,
        read_ahead: bool,
    ) -> Result<(usize, Option<Ahead>), ProjectionError> {
        let name = projector.name();
        let db = |e: sqlx::Error| ProjectionError::database(name, e);
        let (after, events, mut tx) = loop {
            // Read first, holding nothing: a lock held while another connection reads the
            // ledger would be a wait PostgreSQL cannot see (e.g. behind a DROP SCHEMA).
            let (after, events) = match ahead.take() {
                Some(a) if !a.events.is_empty() => (a.after, a.events),
                _ => {
                    let after = read_checkpoint(&self.db, name).await.map_err(db)?;
                    (after, self.read_batch(name, after).await?)
                }
            };
            if events.is_empty() {
                return Ok((0, None));
            }
            let mut tx = self.db.begin().await.map_err(db)?;
            // The row lock serializes runners of the same projector (two `serve`s, `check`
            // beside `serve`). One that finds the checkpoint moved lets the other's work stand
            // and reads again from there.
            if lock_checkpoint(&mut tx, name).await.map_err(db)? == after {
                break (after, events, tx);
            }
            tx.rollback().await.map_err(db)?;
        };
        let next_after = events.last().map_or(after, |e| e.position);
        // The read ahead runs on its own task: the commit below never waits for it (a
        // transaction waiting on another connection is a wait PostgreSQL cannot see).
        let next = read_ahead.then(|| {
            let (store, limit) = (self.store.clone(), self.batch_size);
            tokio::spawn(async move { read_batch(&store, limit, name, next_after).await })
        });
        let applied = projector.apply(&mut tx, &events).await;
        if let Err(e) = applied {
            // Nothing of the batch stays: the checkpoint has not moved.
            let _ = tx.rollback().await;
            let (index, reason) = match e {
                ApplyError::Event { index, reason } => (index.min(events.len() - 1), reason),
                ApplyError::Database(e) => return Err(db(e)),
                ApplyError::Encode(message) => {
                    return Err(ProjectionError::Database {
                        projector: name,
                        message,
                    });
                }
            };
            // Apply the whole transactions before the bad event, so the projector stops right
            // before it (and lag counts from it).
            let bad_tx = events[index].position.commit;
            let prefix = events
                .iter()
                .position(|e| e.position.commit == bad_tx)
                .unwrap_or(0);
            if prefix > 0 {
                let mut tx = self.db.begin().await.map_err(db)?;
                // Another runner may have moved the checkpoint meanwhile; then it owns these.
                let unchanged = lock_checkpoint(&mut tx, name).await.map_err(db)? == after;
                if unchanged && projector.apply(&mut tx, &events[..prefix]).await.is_ok() {
                    move_checkpoint(&mut tx, name, &events[..prefix])
                        .await
                        .map_err(db)?;
                    tx.commit().await.map_err(db)?;
                }
            }
            let error = ProjectionError::Stopped {
                projector: name,
                event: EventRef::of(&events[index]),
                reason,
            };
            record_error(&self.db, name, &error.to_string()).await;
            return Err(error);
        }
        move_checkpoint(&mut tx, name, &events).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        // A failed read ahead is simply read again.
        let next = match next {
            Some(task) => task.await.ok().and_then(Result::ok).map(|events| Ahead {
                after: next_after,
                events,
            }),
            None => None,
        };
        Ok((events.len(), next))
    }

    async fn read_batch(
        &self,
        name: &'static str,
        after: Position,
    ) -> Result<Vec<RecordedEvent>, ProjectionError> {
        read_batch(&self.store, self.batch_size, name, after).await
    }

    /// Applies batches until the projector has nothing left below the ledger's horizon (what
    /// a live runner does on each wake-up; see [`Projections::catch_up`] for "up to the end").
    pub async fn catch_up_available(
        &self,
        projector: &dyn Projector,
        total: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Report, ProjectionError> {
        self.drive(projector, total, progress, None).await
    }

    /// Applies batches until the projector has applied every event committed when the call
    /// began. The read horizon is the oldest transaction still running anywhere on the server,
    /// so this may wait for other transactions to end; after `patience` it gives up with
    /// [`ProjectionError::HorizonHeld`] (nothing is skipped either way).
    pub async fn catch_up_one(
        &self,
        projector: &dyn Projector,
        total: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Report, ProjectionError> {
        let end = self
            .store
            .last_committed_position()
            .await
            .map_err(|source| ProjectionError::Ledger {
                projector: projector.name(),
                source,
            })?;
        self.drive(projector, total, progress, end).await
    }

    async fn drive(
        &self,
        projector: &dyn Projector,
        total: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
        until: Option<Position>,
    ) -> Result<Report, ProjectionError> {
        let name = projector.name();
        let db = |e: sqlx::Error| ProjectionError::database(name, e);
        let started = Instant::now();
        let mut applied = 0u64;
        loop {
            // Idle wake-ups (polls, other schemas' appends) cost one read and no transaction id.
            if has_pending(&self.db, name).await.map_err(db)? {
                let mut ahead = None;
                loop {
                    let (n, next) = self.step_ahead(projector, ahead.take(), true).await?;
                    ahead = next;
                    if n == 0 {
                        break;
                    }
                    applied += n as u64;
                    progress(Progress {
                        projector: name,
                        applied,
                        total,
                    });
                }
            }
            let checkpoint = read_checkpoint(&self.db, name).await.map_err(db)?;
            match until {
                Some(end) if checkpoint < end => {
                    if started.elapsed() > self.patience {
                        let behind = events_after(&self.db, checkpoint).await.map_err(db)?;
                        return Err(ProjectionError::HorizonHeld {
                            projector: name,
                            behind,
                            waited: self.patience,
                        });
                    }
                    // Committed events wait behind an older transaction still running.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    return Ok(Report {
                        projector: name,
                        applied,
                        elapsed: started.elapsed(),
                        checkpoint,
                    });
                }
            }
        }
    }

    /// Brings every projector up to the ledger's end as of the call, one after the other.
    pub async fn catch_up(&self) -> Result<Vec<Report>, ProjectionError> {
        let mut reports = Vec::with_capacity(self.projectors.len());
        for p in &self.projectors {
            reports.push(self.catch_up_one(p.as_ref(), 0, &mut |_| {}).await?);
        }
        Ok(reports)
    }

    /// Empties each projector's tables and checkpoint in one transaction, then replays the
    /// ledger from position zero. Readers see the tables fill up again meanwhile.
    pub async fn rebuild(
        &self,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Vec<Report>, ProjectionError> {
        let mut reports = Vec::with_capacity(self.projectors.len());
        for p in &self.projectors {
            let name = p.name();
            let db = |e: sqlx::Error| ProjectionError::database(name, e);
            let total = ledger_size(&self.db).await.map_err(db)?;
            let mut tx = self.db.begin().await.map_err(db)?;
            lock_checkpoint(&mut tx, name).await.map_err(db)?;
            empty(&mut tx, name, p.tables()).await.map_err(db)?;
            tx.commit().await.map_err(db)?;
            reports.push(self.catch_up_one(p.as_ref(), total, progress).await?);
        }
        Ok(reports)
    }

    /// Keeps every projector current until `shutdown` resolves: a batch loop per wake-up,
    /// woken by the ledger's NOTIFY after each append and by a poll every `poll_interval`.
    ///
    /// A transient failure (the database connection dropped, the server restarting) is
    /// retried after 5 ms, doubling up to 2 s, with jitter so several runners do not retry in
    /// step; the first success resets it. Only a projector stopped at an event it cannot apply
    /// is parked (looked at again every 30 s, logged once); the others keep going.
    pub async fn run_live(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let schema: Option<String> = match &self.db {
            ReadDb::Postgres(pool) => sqlx::query_scalar("SELECT current_schema()::text")
                .fetch_one(pool)
                .await
                .ok(),
            ReadDb::Sqlite(_) => None,
        };
        let mut listener = self.listen().await;
        let mut waiting: HashMap<&'static str, Waiting> = HashMap::new();
        let mut retry_soon: Option<Duration> = None;
        loop {
            let mut lowest: Option<Position> = None;
            for p in &self.projectors {
                let name = p.name();
                if waiting
                    .get(name)
                    .is_some_and(|w| Instant::now() < w.retry_at)
                {
                    continue;
                }
                match self.catch_up_available(p.as_ref(), 0, &mut |_| {}).await {
                    Ok(report) => {
                        lowest =
                            Some(lowest.map_or(report.checkpoint, |l| l.min(report.checkpoint)));
                        if waiting.remove(name).is_some() {
                            tracing::info!(projector = name, "projector is applying events again");
                        }
                    }
                    Err(e) => {
                        let next = Waiting::after(waiting.get(name), &e);
                        if next.first_of_its_kind {
                            match next.cause {
                                Cause::Stopped => {
                                    tracing::error!(projector = name, code = e.code(), "{e}")
                                }
                                Cause::Transient(_) => tracing::warn!(
                                    projector = name,
                                    code = e.code(),
                                    "{e}; retrying with backoff"
                                ),
                            }
                        }
                        waiting.insert(name, next);
                    }
                }
            }
            // Committed events still above the read horizon (an older transaction is open):
            // look again soon, backing off up to the poll interval, rather than wait a poll.
            let held = match (lowest, self.store.last_committed_position().await) {
                (Some(checkpoint), Ok(Some(end))) => checkpoint < end,
                _ => false,
            };
            retry_soon = held.then(|| {
                retry_soon
                    .map_or(Duration::from_millis(10), |d| d * 2)
                    .min(self.poll_interval)
            });
            let mut wait = retry_soon.unwrap_or(self.poll_interval);
            // A projector retrying a transient failure is due before the poll.
            if let Some(due) = waiting
                .values()
                .filter(|w| matches!(w.cause, Cause::Transient(_)))
                .map(|w| w.retry_at.saturating_duration_since(Instant::now()))
                .min()
            {
                wait = wait.min(due);
            }
            let poll = tokio::time::sleep(wait);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = &mut poll => break,
                    note = recv(&mut listener) => match note {
                        Some(Ok(payload)) if schema.as_deref().is_none_or(|s| s == payload) => break,
                        Some(Ok(_)) => {}
                        // Appends may have gone unnoticed meanwhile: listen again, then look.
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "LISTEN connection failed; listening again");
                            listener = None;
                            break;
                        }
                        None => {}
                    },
                }
            }
            if listener.is_none() {
                listener = self.listen().await;
            }
        }
    }

    /// The LISTEN connection of a PostgreSQL ledger; `None` on SQLite (polling alone).
    async fn listen(&self) -> Option<PgListener> {
        let ReadDb::Postgres(pool) = &self.db else {
            return None;
        };
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for appends; polling only");
                return None;
            }
        };
        match listener.listen(NOTIFY_CHANNEL).await {
            Ok(()) => Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for appends; polling only");
                None
            }
        }
    }
}

/// Why a live runner is not applying a projector's events right now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cause {
    /// At an event it cannot apply: parked.
    Stopped,
    /// A failure that goes away by itself; the wait before the next try.
    Transient(Duration),
}

/// A projector a live runner tries again at `retry_at`.
#[derive(Debug)]
struct Waiting {
    cause: Cause,
    retry_at: Instant,
    message: String,
    /// Logged: the first failure, or a different one from the previous.
    first_of_its_kind: bool,
}

impl Waiting {
    fn after(previous: Option<&Waiting>, error: &ProjectionError) -> Self {
        let message = error.to_string();
        let first_of_its_kind = previous.is_none_or(|p| p.message != message);
        let cause = match error {
            ProjectionError::Stopped { .. } => Cause::Stopped,
            _ => Cause::Transient(match previous.map(|p| p.cause) {
                Some(Cause::Transient(last)) => (last * 2).min(TRANSIENT_RETRY_CAP),
                _ => TRANSIENT_RETRY_FIRST,
            }),
        };
        let delay = match cause {
            Cause::Stopped => STOPPED_RETRY,
            Cause::Transient(base) => jittered(base),
        };
        Self {
            cause,
            retry_at: Instant::now() + delay,
            message,
            first_of_its_kind,
        }
    }
}

/// `base` plus up to half of it again, so runners that failed together retry apart. The
/// randomness is the process's per-map hash seed mixed with the clock: plenty for spreading
/// retries, and no dependency.
fn jittered(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let spread = base.as_nanos() as u64 / 2;
    let extra = if spread == 0 {
        0
    } else {
        hasher.finish() % spread
    };
    base + Duration::from_nanos(extra)
}

/// The next notification's payload; pends forever without a listener (the poll timer wins).
async fn recv(listener: &mut Option<PgListener>) -> Option<Result<String, sqlx::Error>> {
    match listener {
        Some(l) => Some(l.recv().await.map(|n| n.payload().to_owned())),
        None => std::future::pending().await,
    }
}

/// Runs every built-in projector live on the ledger's database until the task is aborted or
/// the process ends. `runledger serve` and `runledger dev` call this next to the engine.
pub fn spawn_live(db: impl Into<ReadDb>) -> tokio::task::JoinHandle<()> {
    let projections = Projections::new(db);
    tokio::spawn(async move { projections.run_live(std::future::pending()).await })
}

/// Moves the checkpoint past `events` (in the transaction that applied them).
async fn move_checkpoint(
    tx: &mut ProjectionTx,
    name: &str,
    events: &[RecordedEvent],
) -> Result<(), sqlx::Error> {
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(());
    };
    match tx {
        ProjectionTx::Postgres(tx) => {
            sqlx::query(
                "UPDATE projection_checkpoints
                    SET tx_id = $2::text::xid8, global_position = $3, events_applied = events_applied + $4,
                        updated_at = now(), error = NULL
                  WHERE name = $1",
            )
            .bind(name)
            .bind(last.commit.to_string())
            .bind(last.global as i64)
            .bind(events.len() as i64)
            .execute(&mut **tx)
            .await?;
        }
        ProjectionTx::Sqlite(tx) => {
            sqlx::query(
                "UPDATE projection_checkpoints
                    SET tx_id = ?2, global_position = ?3, events_applied = events_applied + ?4,
                        updated_at = ?5, error = NULL
                  WHERE name = ?1",
            )
            .bind(name)
            .bind(last.commit as i64)
            .bind(last.global as i64)
            .bind(events.len() as i64)
            .bind(Timestamp::now().unix_micros())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Creates the checkpoint row when missing and locks it for this transaction; returns it. (On
/// SQLite the transaction already holds the file's write lock.)
async fn lock_checkpoint(tx: &mut ProjectionTx, name: &str) -> Result<Position, sqlx::Error> {
    match tx {
        ProjectionTx::Postgres(tx) => {
            sqlx::query(
                "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .execute(&mut **tx)
            .await?;
            let (commit, global): (String, i64) = sqlx::query_as(
                "SELECT tx_id::text, global_position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
            )
            .bind(name)
            .fetch_one(&mut **tx)
            .await?;
            Ok(Position {
                commit: parse_xid(&commit)?,
                global: global as u64,
            })
        }
        ProjectionTx::Sqlite(tx) => {
            sqlx::query(
                "INSERT INTO projection_checkpoints (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .execute(&mut **tx)
            .await?;
            let (commit, global): (i64, i64) = sqlx::query_as(
                "SELECT tx_id, global_position FROM projection_checkpoints WHERE name = ?1",
            )
            .bind(name)
            .fetch_one(&mut **tx)
            .await?;
            Ok(Position {
                commit: commit.max(0) as u64,
                global: global.max(0) as u64,
            })
        }
    }
}

/// Empties a projector's tables and resets its checkpoint (a rebuild's first transaction).
async fn empty(
    tx: &mut ProjectionTx,
    name: &str,
    tables: &[&'static str],
) -> Result<(), sqlx::Error> {
    match tx {
        ProjectionTx::Postgres(tx) => {
            // Table names are the projector's own static identifiers.
            let truncate = format!("TRUNCATE {}", tables.join(", "));
            sqlx::query(sqlx::AssertSqlSafe(truncate))
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "UPDATE projection_checkpoints
                    SET tx_id = '0', global_position = 0, events_applied = 0, updated_at = now(), error = NULL
                  WHERE name = $1",
            )
            .bind(name)
            .execute(&mut **tx)
            .await?;
        }
        ProjectionTx::Sqlite(tx) => {
            for table in tables {
                // Table names are the projector's own static identifiers.
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&mut **tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE projection_checkpoints
                    SET tx_id = 0, global_position = 0, events_applied = 0, updated_at = ?2, error = NULL
                  WHERE name = ?1",
            )
            .bind(name)
            .bind(Timestamp::now().unix_micros())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Whether events past the projector's checkpoint are readable (below the horizon on
/// PostgreSQL; on SQLite every committed event is).
async fn has_pending(db: &ReadDb, name: &str) -> Result<bool, sqlx::Error> {
    match db {
        ReadDb::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT EXISTS (
                     SELECT 1 FROM events e
                      WHERE (e.tx_id, e.global_position) >
                            (COALESCE((SELECT c.tx_id FROM projection_checkpoints c WHERE c.name = $1), '0'::xid8),
                             COALESCE((SELECT c.global_position FROM projection_checkpoints c WHERE c.name = $1), 0))
                        AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot()))",
            )
            .bind(name)
            .fetch_one(pool)
            .await
        }
        ReadDb::Sqlite(store) => {
            sqlx::query_scalar(
                "SELECT EXISTS (
                     SELECT 1 FROM events e
                      WHERE (e.tx_id, e.global_position) >
                            (COALESCE((SELECT c.tx_id FROM projection_checkpoints c WHERE c.name = ?1), 0),
                             COALESCE((SELECT c.global_position FROM projection_checkpoints c WHERE c.name = ?1), 0)))",
            )
            .bind(name)
            .fetch_one(store.readers())
            .await
        }
    }
}

async fn read_checkpoint(db: &ReadDb, name: &str) -> Result<Position, sqlx::Error> {
    match db {
        ReadDb::Postgres(pool) => {
            let row: Option<(String, i64)> = sqlx::query_as(
                "SELECT tx_id::text, global_position FROM projection_checkpoints WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?;
            match row {
                Some((commit, global)) => Ok(Position {
                    commit: parse_xid(&commit)?,
                    global: global as u64,
                }),
                None => Ok(Position::START),
            }
        }
        ReadDb::Sqlite(store) => {
            let row: Option<(i64, i64)> = sqlx::query_as(
                "SELECT tx_id, global_position FROM projection_checkpoints WHERE name = ?1",
            )
            .bind(name)
            .fetch_optional(store.readers())
            .await?;
            Ok(row.map_or(Position::START, |(commit, global)| Position {
                commit: commit.max(0) as u64,
                global: global.max(0) as u64,
            }))
        }
    }
}

pub(crate) fn parse_xid(text: &str) -> Result<u64, sqlx::Error> {
    text.parse::<u64>()
        .map_err(|_| sqlx::Error::Decode(format!("transaction id `{text}` is not a number").into()))
}

/// Best effort: the stop reason is shown by `projections status` and the API's lag; losing it
/// (the database is down) changes nothing else.
async fn record_error(db: &ReadDb, name: &str, message: &str) {
    match db {
        ReadDb::Postgres(pool) => {
            let _ = sqlx::query("UPDATE projection_checkpoints SET error = $2 WHERE name = $1")
                .bind(name)
                .bind(message)
                .execute(pool)
                .await;
        }
        ReadDb::Sqlite(store) => {
            let _ = sqlx::query("UPDATE projection_checkpoints SET error = ?2 WHERE name = ?1")
                .bind(name)
                .bind(message)
                .execute(store.writer())
                .await;
        }
    }
}

async fn events_after(db: &ReadDb, after: Position) -> Result<u64, sqlx::Error> {
    let n: i64 =
        match db {
            ReadDb::Postgres(pool) => sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE (tx_id, global_position) > ($1::text::xid8, $2)",
            )
            .bind(after.commit.to_string())
            .bind(after.global as i64)
            .fetch_one(pool)
            .await?,
            ReadDb::Sqlite(store) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM events WHERE (tx_id, global_position) > (?1, ?2)",
                )
                .bind(after.commit as i64)
                .bind(after.global as i64)
                .fetch_one(store.readers())
                .await?
            }
        };
    Ok(n as u64)
}

async fn ledger_size(db: &ReadDb) -> Result<u64, sqlx::Error> {
    let n: i64 = match db {
        ReadDb::Postgres(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(pool)
                .await?
        }
        ReadDb::Sqlite(store) => {
            sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(store.readers())
                .await?
        }
    };
    Ok(n as u64)
}

/// The events after `after`, ending at a ledger transaction boundary so a batch never holds
/// half an append (claims judge whole appends: a node run's end and its artifact arrive
/// together).
async fn read_batch(
    store: &LedgerStore,
    limit: usize,
    name: &'static str,
    after: Position,
) -> Result<Vec<RecordedEvent>, ProjectionError> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    let mut cursor = after;
    loop {
        let page =
            store
                .read_all(cursor, limit)
                .await
                .map_err(|source| ProjectionError::Ledger {
                    projector: name,
                    source,
                })?;
        let full = page.events.len() == limit;
        events.extend(page.events);
        if !full {
            return Ok(events);
        }
        let last_tx = events.last().map_or(0, |e| e.position.commit);
        let cut = events
            .iter()
            .position(|e| e.position.commit == last_tx)
            .unwrap_or(0);
        if cut > 0 {
            events.truncate(cut);
            return Ok(events);
        }
        // One transaction fills everything read so far: read on to its end.
        cursor = page.checkpoint;
    }
}
