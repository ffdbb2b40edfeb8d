//! [`EventStore`] on a SQLite file: the embedded default, no server to run.
//!
//! SQLite lets one connection write at a time, and that is what the guarantees rest on. Every
//! append opens its transaction with `BEGIN IMMEDIATE`, which takes the write lock before the
//! transaction reads anything; under that lock it checks the request id, reads the stream head,
//! compares the expected version, chains the hashes and inserts. No other writer (in this
//! process or another) can move the head in between, so the checks need no retry loop, and
//! `unique (stream_id, stream_version)` stays as the fence of last resort.
//!
//! Durability: the file is in WAL mode with `synchronous = FULL`, so a commit returns only
//! after the write-ahead log is fsynced: an event the store said was appended survives a power
//! loss, not only a process crash (`NORMAL` would lose the last commits on power loss in WAL
//! mode). Readers use their own connections and never block the writer.
//!
//! Commit order: each write transaction takes `tx_id` = last + 1 and its events take
//! increasing `global_position`s, both while holding the write lock. A transaction commits
//! before the next one can start, and a reader sees a snapshot of whole committed
//! transactions, so no event can ever commit behind one a reader has seen: [`read_all`] needs
//! no horizon, and a checkpoint never skips an event.
//!
//! [`read_all`]: EventStore::read_all

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::ids::{CausationId, RequestId, StreamId};
use runledger_contracts::time::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::prepare::{Prepared, blob_refs_json, chain, prepare, recorded_events};
use crate::{
    AppendOutcome, AppendRequest, Blob, EventStore, ExpectedVersion, GlobalPage, StoreError,
    StreamAppend, StreamHead,
};

mod batch;
mod import;
mod rows;
mod run_index;

use rows::{event_from_row, head_from_row};

/// The ledger file `runledger` uses when no database URL is given.
pub const DEFAULT_PATH: &str = ".runledger/ledger.db";

/// How long a statement waits for another process's write lock before it fails as transient.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections for concurrent reads (the one writer has its own).
const READERS: u32 = 4;

type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e)
}

/// The ledger in one SQLite file (plus its `-wal` and `-shm` files while open).
pub struct SqliteEventStore {
    /// One connection: appends in this process queue here instead of spinning on SQLite's lock.
    writer: SqlitePool,
    readers: SqlitePool,
    path: PathBuf,
    clock: Clock,
}

impl SqliteEventStore {
    /// Opens (creating when missing) the ledger file at `path`, and its directory.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot create the directory {}: {e}", dir.display()),
                )))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_lazy_with(options);
        Ok(Self {
            writer,
            readers,
            path,
            clock: Arc::new(Timestamp::now),
        })
    }

    /// Another handle on the same file, sharing the connections (e.g. for a model registry
    /// beside the engine).
    pub fn share(&self) -> Self {
        Self {
            writer: self.writer.clone(),
            readers: self.readers.clone(),
            path: self.path.clone(),
            clock: Arc::clone(&self.clock),
        }
    }

    /// Replaces the clock that stamps `recorded_at` (tests and replays).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pool that writes (one connection).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool that reads.
    pub fn readers(&self) -> &SqlitePool {
        &self.readers
    }

    /// Closes the connections (checkpointing the WAL into the file).
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Applies the migrations in `ledger/migrations-sqlite/` that have not run yet. Safe to run
    /// repeatedly, and from two processes at once (a lock file next to the ledger makes them
    /// take turns). Returns how many were applied now.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let lock_path = lock_file_path(&self.path, "migrate");
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| StoreError::Database(sqlx::Error::Io(std::io::Error::other(e))))?
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        let migrator = crate::migrations::sqlite();
        let before = self.applied_migrations().await?;
        let result = migrator.run(&self.writer).await;
        drop(lock);
        result.map_err(StoreError::Migration)?;
        let after = self.applied_migrations().await?;
        Ok(after.saturating_sub(before))
    }

    /// Migrations applied and still pending.
    pub async fn migration_status(&self) -> Result<(usize, usize), StoreError> {
        let known = crate::migrations::sqlite().iter().count();
        let applied = self.applied_migrations().await?;
        Ok((applied, known.saturating_sub(applied)))
    }

    async fn applied_migrations(&self) -> Result<usize, StoreError> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.writer)
        .await
        .map_err(db_err)?;
        if exists == 0 {
            return Ok(0);
        }
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(n as usize)
    }

    /// The last event in commit order; `None` on an empty ledger. SQLite has no transaction
    /// still running below it (see the module docs), so it is also the read horizon.
    pub async fn last_committed_position(&self) -> Result<Option<Position>, StoreError> {
        let row = sqlx::query(
            "SELECT tx_id, global_position FROM events
              ORDER BY tx_id DESC, global_position DESC LIMIT 1",
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(db_err)?;
        row.map(|row| rows::position_of(&row)).transpose()
    }

    /// Where a live tail starts: the last committed event, or the start of an empty ledger.
    pub async fn horizon_position(&self) -> Result<Position, StoreError> {
        Ok(self
            .last_committed_position()
            .await?
            .unwrap_or(Position::START))
    }

    /// The highest global position handed out so far (0 for an empty ledger).
    pub async fn last_global_position(&self) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(global_position) FROM events")
            .fetch_one(&self.readers)
            .await
            .map_err(db_err)?;
        Ok(last.unwrap_or(0).max(0) as u64)
    }

    /// A write transaction holding SQLite's write lock from its first statement on.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)
    }
}

/// `<ledger file>.<what>.lock`: files whose OS lock makes processes take turns.
pub fn lock_file_path(ledger: &Path, what: &str) -> PathBuf {
    let mut name = ledger.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}.lock"));
    ledger.with_file_name(name)
}

/// What one item of a write transaction came to.
enum Step {
    Written {
        recorded_at: Timestamp,
        first_version: u64,
        assigned: Vec<crate::prepare::Assigned>,
    },
    /// The request was appended before; nothing was written now.
    Repeated(Vec<RecordedEvent>),
}

/// One stream's append inside a write transaction (which holds the write lock): the request
/// id and the head in one probe, the expected version, the blob references, then the events
/// in one multi-row INSERT and the request row. Every statement is a round trip to the
/// connection's worker thread, so an append is six whatever its number of events: the
/// caller's BEGIN and transaction number, then probe, events and request row here, then the
/// caller's COMMIT.
async fn append_locked(
    conn: &mut SqliteConnection,
    clock: &Clock,
    tx_id: i64,
    stream: &StreamId,
    expected: ExpectedVersion,
    request: &AppendRequest,
    prepared: &Prepared,
) -> Result<Step, StoreError> {
    let probe = sqlx::query(PROBE)
        .bind(stream.as_str())
        .bind(request.request_id.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    let seen: Option<Vec<u8>> = probe.try_get("request_hash").map_err(db_err)?;
    if let Some(stored) = seen {
        if stored != prepared.fingerprint.as_bytes() {
            return Err(StoreError::RequestMismatch {
                stream_id: stream.clone(),
                request_id: request.request_id.clone(),
            });
        }
        let first: i64 = probe.try_get("first_version").map_err(db_err)?;
        let last: i64 = probe.try_get("last_version").map_err(db_err)?;
        let events = read_stream_on(
            &mut *conn,
            stream,
            first as u64,
            (last - first + 1).max(0) as usize,
        )
        .await?;
        return Ok(Step::Repeated(events));
    }
    let (version, head) = match probe.try_get::<Option<i64>, _>("version").map_err(db_err)? {
        Some(_) => {
            let head = head_from_row(stream.clone(), &probe)?;
            (head.version, head.hash)
        }
        None => (0, Digest::GENESIS),
    };
    let want = expected.as_version().unwrap_or(version);
    if version != want {
        return Err(StoreError::Conflict {
            stream_id: stream.clone(),
            expected: want,
            actual: version,
        });
    }
    check_blob_refs(&mut *conn, request, prepared).await?;

    let recorded_at = request.recorded_at.unwrap_or_else(|| clock());
    let mut assigned = chain(stream, version, head, request, prepared, recorded_at);
    let mut payloads = Vec::with_capacity(prepared.payloads.len());
    for (i, payload) in prepared.payloads.iter().enumerate() {
        // Canonical JSON is UTF-8 by construction.
        payloads.push(
            std::str::from_utf8(payload).map_err(|e| StoreError::InvalidEvent {
                index: i,
                reason: e.to_string(),
            })?,
        );
    }
    let mut offset = 0;
    while offset < request.events.len() {
        let n = (request.events.len() - offset).min(INSERT_CHUNK);
        let range = offset..offset + n;
        let inserted = insert_events(
            &mut *conn,
            tx_id,
            stream,
            version + offset as u64,
            recorded_at,
            request,
            &payloads[range.clone()],
            &assigned[range.clone()],
            offset,
        )
        .await;
        match inserted {
            Ok(positions) => {
                for (a, global) in assigned[range].iter_mut().zip(positions) {
                    a.position = Position {
                        commit: tx_id as u64,
                        global,
                    };
                }
            }
            // Cannot happen under the write lock; the index is the fence of last resort.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                let (actual, _) = head_on(&mut *conn, stream).await?;
                return Err(StoreError::Conflict {
                    stream_id: stream.clone(),
                    expected: version,
                    actual,
                });
            }
            Err(e) => return Err(db_err(e)),
        }
        offset += n;
    }
    sqlx::query(
        "INSERT INTO requests (stream_id, request_id, request_hash, first_version, last_version)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(stream.as_str())
    .bind(request.request_id.as_str())
    .bind(prepared.fingerprint.as_bytes().as_slice())
    .bind((version + 1) as i64)
    .bind((version + request.events.len() as u64) as i64)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    for (blob, hash) in request.blobs.iter().zip(&prepared.blob_hashes) {
        insert_blob(&mut *conn, hash, blob).await?;
    }
    Ok(Step::Written {
        recorded_at,
        first_version: version + 1,
        assigned,
    })
}

/// The request row of `(stream, request id)`, if any, and the stream's head, if any, in one
/// round trip (one row, NULLs for what is missing).
const PROBE: &str = "SELECT r.request_hash, r.first_version, r.last_version,
            h.stream_version AS version, h.hash AS head_hash
       FROM (SELECT 1) AS one
       LEFT JOIN requests r ON r.stream_id = ?1 AND r.request_id = ?2
       LEFT JOIN (SELECT stream_version, hash FROM events
                   WHERE stream_id = ?1 ORDER BY stream_version DESC LIMIT 1) h ON 1";

/// Events per INSERT statement: 14 parameters each, well under SQLite's limit of 32,766.
const INSERT_CHUNK: usize = 256;

/// Columns of one event row, in the order `insert_events` binds them.
const EVENT_COLUMNS: usize = 14;

/// Inserts events `first_index..` of the request (already chained) after stream version
/// `after` in one statement; returns their global positions in order. The statement's text
/// depends only on the number of rows, so the connection's statement cache keeps one
/// prepared statement per count.
#[allow(clippy::too_many_arguments)]
async fn insert_events(
    conn: &mut SqliteConnection,
    tx_id: i64,
    stream: &StreamId,
    after: u64,
    recorded_at: Timestamp,
    request: &AppendRequest,
    payloads: &[&str],
    assigned: &[crate::prepare::Assigned],
    first_index: usize,
) -> Result<Vec<u64>, sqlx::Error> {
    let mut sql = String::from(
        "INSERT INTO events (tx_id, event_id, stream_id, stream_version, event_type,
                             schema_version, request_id, correlation_id, causation_id,
                             recorded_at, payload, blob_refs, prev_hash, hash) VALUES ",
    );
    for i in 0..payloads.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..EVENT_COLUMNS {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql.push_str(" RETURNING stream_version, global_position");
    let causation = request.causation_id.as_ref().map(CausationId::as_str);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (i, (payload, a)) in payloads.iter().zip(assigned).enumerate() {
        let event = &request.events[first_index + i];
        query = query
            .bind(tx_id)
            .bind(a.event_id.0)
            .bind(stream.as_str())
            .bind((after + 1 + i as u64) as i64)
            .bind(event.event_type.as_str())
            .bind(i64::from(event.schema_version))
            .bind(request.request_id.as_str())
            .bind(request.correlation_id.as_str())
            .bind(causation)
            .bind(recorded_at.unix_micros())
            .bind(*payload)
            .bind(blob_refs_json(&event.blob_refs))
            .bind(a.prev_hash.as_bytes().as_slice())
            .bind(a.hash.as_bytes().as_slice());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    // RETURNING gives no order: put each position at its version.
    let mut positions = vec![0u64; payloads.len()];
    for row in rows {
        let version: i64 = row.try_get("stream_version")?;
        let global: i64 = row.try_get("global_position")?;
        let i = (version as u64).wrapping_sub(after + 1) as usize;
        if let Some(slot) = positions.get_mut(i) {
            *slot = global as u64;
        }
    }
    Ok(positions)
}

async fn insert_blob(
    conn: &mut SqliteConnection,
    hash: &Digest,
    blob: &Blob,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO blobs (hash, media_type, data) VALUES (?1, ?2, ?3) ON CONFLICT (hash) DO NOTHING")
        .bind(hash.as_bytes().as_slice())
        .bind(blob.media_type.as_str())
        .bind(blob.data.as_slice())
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Blob refs that are neither in the request nor already stored.
async fn check_blob_refs(
    conn: &mut SqliteConnection,
    request: &AppendRequest,
    prepared: &Prepared,
) -> Result<(), StoreError> {
    let sent: HashSet<&Digest> = prepared.blob_hashes.iter().collect();
    let mut checked = HashSet::new();
    for wanted in request.events.iter().flat_map(|e| e.blob_refs.iter()) {
        if sent.contains(wanted) || !checked.insert(wanted) {
            continue;
        }
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM blobs WHERE hash = ?1")
            .bind(wanted.as_bytes().as_slice())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
        if found.is_none() {
            return Err(StoreError::MissingBlob { hash: *wanted });
        }
    }
    Ok(())
}

/// The transaction number of the write transaction this connection holds: one more than the
/// last committed one (read under the write lock, so no other writer can take the same).
async fn next_tx_id(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    let last: Option<i64> = sqlx::query_scalar("SELECT max(tx_id) FROM events")
        .fetch_one(conn)
        .await
        .map_err(db_err)?;
    Ok(last.unwrap_or(0) + 1)
}

async fn head_on(
    conn: &mut SqliteConnection,
    stream: &StreamId,
) -> Result<(u64, Digest), StoreError> {
    let row = sqlx::query(HEAD)
        .bind(stream.as_str())
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    Ok(match row {
        Some(row) => {
            let head = head_from_row(stream.clone(), &row)?;
            (head.version, head.hash)
        }
        None => (0, Digest::GENESIS),
    })
}

async fn read_stream_on<'e>(
    executor: impl sqlx::Executor<'e, Database = Sqlite>,
    stream: &StreamId,
    from_version: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(READ_STREAM)
        .bind(stream.as_str())
        .bind(from_version.min(i64::MAX as u64) as i64)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(executor)
        .await
        .map_err(db_err)?;
    rows.iter().map(event_from_row).collect()
}

/// `SELECT <event columns> FROM events <rest>`, as a static string.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT global_position, tx_id, event_id, stream_id, stream_version, event_type,
                    schema_version, request_id, correlation_id, causation_id, recorded_at,
                    payload, blob_refs, prev_hash, hash
               FROM events ",
            $rest
        )
    };
}

const READ_STREAM: &str = select_events!(
    "WHERE stream_id = ?1 AND stream_version >= ?2 ORDER BY stream_version LIMIT ?3"
);

/// The events a request wrote, through the `requests` primary key.
const FIND_REQUEST: &str = select_events!(
    "WHERE stream_id = ?1
        AND stream_version BETWEEN
            (SELECT first_version FROM requests WHERE stream_id = ?1 AND request_id = ?2)
        AND (SELECT last_version FROM requests WHERE stream_id = ?1 AND request_id = ?2)
      ORDER BY stream_version"
);

/// Commit order; no horizon needed (module docs).
const READ_ALL: &str = select_events!(
    "WHERE (tx_id, global_position) > (?1, ?2) ORDER BY tx_id, global_position LIMIT ?3"
);

const HEAD: &str = "SELECT stream_version AS version, hash AS head_hash FROM events
     WHERE stream_id = ?1 ORDER BY stream_version DESC LIMIT 1";

impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let prepared = prepare(&request)?;
        let mut tx = self.begin_write().await?;
        let tx_id = next_tx_id(&mut tx).await?;
        let step = append_locked(
            &mut tx,
            &self.clock,
            tx_id,
            stream,
            expected,
            &request,
            &prepared,
        )
        .await;
        match step {
            Ok(Step::Written {
                recorded_at,
                first_version,
                assigned,
            }) => {
                tx.commit().await.map_err(db_err)?;
                Ok(AppendOutcome {
                    events: recorded_events(stream, request, recorded_at, first_version, assigned),
                    deduplicated: false,
                })
            }
            Ok(Step::Repeated(events)) => {
                tx.rollback().await.map_err(db_err)?;
                Ok(AppendOutcome {
                    events,
                    deduplicated: true,
                })
            }
            Err(e) => {
                // Dropping an open transaction rolls it back; say so explicitly.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// One write transaction for every item, in stream-id order like PostgreSQL (here the
    /// write lock already serializes whole calls, so the order only keeps results alike).
    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        if items.is_empty() {
            return Err(StoreError::InvalidRequest(
                "append_many needs at least one stream".into(),
            ));
        }
        let mut streams = HashSet::new();
        for item in &items {
            if !streams.insert(&item.stream) {
                return Err(StoreError::InvalidRequest(format!(
                    "stream `{}` appears twice in one append_many; give each stream one request",
                    item.stream
                )));
            }
        }
        let prepared = items
            .iter()
            .map(|item| prepare(&item.request))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| items[a].stream.as_str().cmp(items[b].stream.as_str()));
        let mut tx = self.begin_write().await?;
        let tx_id = match next_tx_id(&mut tx).await {
            Ok(id) => id,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        };
        let mut steps: Vec<Option<Step>> = (0..items.len()).map(|_| None).collect();
        for &i in &order {
            let item = &items[i];
            match append_locked(
                &mut tx,
                &self.clock,
                tx_id,
                &item.stream,
                item.expected,
                &item.request,
                &prepared[i],
            )
            .await
            {
                Ok(step) => steps[i] = Some(step),
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
        }
        tx.commit().await.map_err(db_err)?;
        let mut outcomes = Vec::with_capacity(items.len());
        for (item, step) in items.into_iter().zip(steps) {
            outcomes.push(match step {
                Some(Step::Written {
                    recorded_at,
                    first_version,
                    assigned,
                }) => AppendOutcome {
                    events: recorded_events(
                        &item.stream,
                        item.request,
                        recorded_at,
                        first_version,
                        assigned,
                    ),
                    deduplicated: false,
                },
                Some(Step::Repeated(events)) => AppendOutcome {
                    events,
                    deduplicated: true,
                },
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "append_many lost the outcome of `{}`",
                        item.stream
                    )));
                }
            });
        }
        Ok(outcomes)
    }

    /// Group commit: one write transaction (one fsync) for every item, each in a savepoint of
    /// its own (`sqlite/batch.rs`).
    async fn append_batch(
        &self,
        items: Vec<StreamAppend>,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        self.append_group(items).await
    }

    /// One probe of the `requests` primary key and a range read of the events it names.
    async fn find_request(
        &self,
        stream: &StreamId,
        request_id: &RequestId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(FIND_REQUEST)
            .bind(stream.as_str())
            .bind(request_id.as_str())
            .fetch_all(&self.readers)
            .await
            .map_err(db_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read_stream_on(&self.readers, stream, from_version, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<GlobalPage, StoreError> {
        let rows = sqlx::query(READ_ALL)
            .bind(after.commit.min(i64::MAX as u64) as i64)
            .bind(after.global.min(i64::MAX as u64) as i64)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(&self.readers)
            .await
            .map_err(db_err)?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoint = events.last().map_or(after, |e| e.position);
        Ok(GlobalPage { events, checkpoint })
    }

    async fn stream_head(&self, stream: &StreamId) -> Result<Option<StreamHead>, StoreError> {
        let row = sqlx::query(HEAD)
            .bind(stream.as_str())
            .fetch_optional(&self.readers)
            .await
            .map_err(db_err)?;
        row.map(|row| head_from_row(stream.clone(), &row))
            .transpose()
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<StreamHead>, StoreError> {
        // SQLite's BINARY collation compares UTF-8 bytes: the same order as PostgreSQL's "C",
        // so exports do not depend on the backend. A bare column next to max() takes its value
        // from the row holding the maximum (documented SQLite behaviour).
        let rows = sqlx::query(
            "SELECT stream_id, max(stream_version) AS version, hash AS head_hash
               FROM events
              WHERE substr(stream_id, 1, length(?1)) = ?1
              GROUP BY stream_id
              ORDER BY stream_id",
        )
        .bind(prefix)
        .fetch_all(&self.readers)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("stream_id").map_err(db_err)?;
                let id = StreamId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                head_from_row(id, row)
            })
            .collect()
    }

    async fn put_blob(&self, blob: Blob) -> Result<Digest, StoreError> {
        let hash = blob.hash();
        let mut conn = self.writer.acquire().await.map_err(db_err)?;
        insert_blob(&mut conn, &hash, &blob).await?;
        Ok(hash)
    }

    async fn get_blob(&self, hash: &Digest) -> Result<Option<Blob>, StoreError> {
        let row = sqlx::query("SELECT media_type, data FROM blobs WHERE hash = ?1")
            .bind(hash.as_bytes().as_slice())
            .fetch_optional(&self.readers)
            .await
            .map_err(db_err)?;
        row.map(|row| {
            Ok(Blob {
                media_type: row.try_get("media_type").map_err(db_err)?,
                data: row.try_get("data").map_err(db_err)?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests;
