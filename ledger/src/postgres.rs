//! [`EventStore`] on PostgreSQL.
//!
//! An append is one SQL statement (one round trip, one implicit transaction): a data-modifying
//! CTE checks that the expected head event is there with the hash the chain continues from, and
//! inserts the events and the request row; `unique (stream_id, stream_version)` turns a
//! concurrent writer into a conflict. Hashes are computed here, from the head this process last
//! saw; a stale head simply fails the check and is re-read. So the common path costs a bare
//! INSERT plus one index probe and the request row.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::ids::{CausationId, CorrelationId, EventId, RequestId, StreamId};
use runledger_contracts::time::Timestamp;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Row};
use time::OffsetDateTime;

pub(crate) use crate::prepare::blob_refs_json;
use crate::prepare::{Assigned, Prepared, chain, prepare, recorded_events};
use crate::{
    AppendOutcome, AppendRequest, Blob, EventStore, ExpectedVersion, GlobalPage, StoreError,
    StreamAppend, StreamHead,
};

/// Where the ledger lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// A `postgres://` URL. The database is created when missing.
    pub url: String,
    /// A schema to keep the ledger's tables in (created when missing); `None` uses `public`.
    pub schema: Option<String>,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub const DEFAULT_URL: &'static str = "postgres://postgres@127.0.0.1:5432/runledger";

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 8,
        }
    }

    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

/// Heads cached per stream before the cache is emptied; bounds memory in long-lived servers.
const HEAD_CACHE_LIMIT: usize = 100_000;

type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub struct PgEventStore {
    pool: PgPool,
    /// Last head this process wrote or read per stream: lets an append compute hashes without
    /// reading the head first. Never trusted: the append's WHERE clause checks it.
    heads: Mutex<HashMap<StreamId, (u64, Digest)>>,
    clock: Clock,
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e)
}

fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidRequest(format!(
            "schema `{schema}` must be 1 to 63 characters of a-z 0-9 _, not starting with a digit"
        )))
    }
}

impl PgEventStore {
    /// Connects, creating the database and schema when they are missing.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&config.url).map_err(|e| {
            StoreError::InvalidRequest(format!("database URL `{}`: {e}", redact(&config.url)))
        })?;
        ensure_database(&config.url).await?;
        let options = match &config.schema {
            Some(schema) => {
                check_schema_name(schema)?;
                let mut conn = options.connect().await.map_err(db_err)?;
                // The name was checked above: lowercase letters, digits and underscores only.
                let created = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
                )))
                .execute(&mut conn)
                .await;
                match created {
                    Ok(_) => {}
                    // Two processes creating the schema at once: the loser hits the catalog's
                    // unique index (or duplicate_schema); the schema exists either way.
                    Err(sqlx::Error::Database(e))
                        if matches!(e.code().as_deref(), Some("42P06") | Some("23505")) => {}
                    Err(e) => return Err(db_err(e)),
                }
                options.options([("search_path", schema.as_str())])
            }
            None => options,
        };
        // No ping before each checkout: it doubles the round trips (and the server's transaction
        // count) of every statement; a broken connection fails its statement instead, which
        // every caller already treats as a database error, and the pool replaces it.
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            heads: Mutex::new(HashMap::new()),
            clock: Arc::new(Timestamp::now),
        }
    }

    /// Replaces the clock that stamps `recorded_at` (tests and replays).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/` that have not run yet. Safe to run concurrently
    /// and repeatedly. Returns how many were applied now.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let migrator = crate::migrations::postgres();
        let before = applied_migrations(&self.pool).await?;
        migrator
            .run(&self.pool)
            .await
            .map_err(StoreError::Migration)?;
        let after = applied_migrations(&self.pool).await?;
        Ok(after.saturating_sub(before))
    }

    /// Migrations applied and still pending.
    pub async fn migration_status(&self) -> Result<(usize, usize), StoreError> {
        let known = crate::migrations::postgres().iter().count();
        let applied = applied_migrations(&self.pool).await?;
        Ok((applied, known.saturating_sub(applied)))
    }

    fn cached_head(&self, stream: &StreamId) -> Option<(u64, Digest)> {
        self.heads
            .lock()
            .ok()
            .and_then(|heads| heads.get(stream).copied())
    }

    fn remember_head(&self, stream: &StreamId, version: u64, hash: Digest) {
        if let Ok(mut heads) = self.heads.lock() {
            if heads.len() >= HEAD_CACHE_LIMIT && !heads.contains_key(stream) {
                heads.clear();
            }
            heads.insert(stream.clone(), (version, hash));
        }
    }

    fn forget_head(&self, stream: &StreamId) {
        if let Ok(mut heads) = self.heads.lock() {
            heads.remove(stream);
        }
    }

    async fn read_head(&self, stream: &StreamId) -> Result<(u64, Digest), StoreError> {
        let head = self.stream_head(stream).await?;
        let head = head.map_or((0, Digest::GENESIS), |h| (h.version, h.hash));
        if head.0 > 0 {
            self.remember_head(stream, head.0, head.1);
        }
        Ok(head)
    }

    /// Blob refs that are neither in the request nor already stored.
    async fn check_blob_refs(
        &self,
        request: &AppendRequest,
        prepared: &Prepared,
    ) -> Result<(), StoreError> {
        let sent: HashSet<&Digest> = prepared.blob_hashes.iter().collect();
        let wanted: Vec<Vec<u8>> = request
            .events
            .iter()
            .flat_map(|e| e.blob_refs.iter())
            .filter(|d| !sent.contains(d))
            .map(|d| d.as_bytes().to_vec())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let found: Vec<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM blobs WHERE hash = ANY($1)")
            .bind(&wanted)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let found: HashSet<Vec<u8>> = found.into_iter().collect();
        match wanted.into_iter().find(|w| !found.contains(w)) {
            Some(missing) => Err(StoreError::MissingBlob {
                hash: Digest::from_slice(&missing).unwrap_or(Digest::GENESIS),
            }),
            None => Ok(()),
        }
    }

    /// The append was not applied: tell a repeated request, a reused request id and a
    /// concurrency conflict apart.
    async fn resolve_rejected(
        &self,
        stream: &StreamId,
        request: &AppendRequest,
        fingerprint: &Digest,
        expected: u64,
    ) -> Result<AppendOutcome, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, first_version, last_version FROM requests
              WHERE stream_id = $1 AND request_id = $2",
        )
        .bind(stream.as_str())
        .bind(request.request_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        if let Some(row) = row {
            let stored: Vec<u8> = row.get("request_hash");
            if stored != fingerprint.as_bytes() {
                return Err(StoreError::RequestMismatch {
                    stream_id: stream.clone(),
                    request_id: request.request_id.clone(),
                });
            }
            let first: i64 = row.get("first_version");
            let last: i64 = row.get("last_version");
            let events = self
                .read_stream(stream, first as u64, (last - first + 1) as usize)
                .await?;
            return Ok(AppendOutcome {
                events,
                deduplicated: true,
            });
        }
        self.forget_head(stream);
        let (actual, _) = self.read_head(stream).await?;
        Err(StoreError::Conflict {
            stream_id: stream.clone(),
            expected,
            actual,
        })
    }

    /// One attempt at the append statement from the given head, on `executor` (the pool, or
    /// the transaction of an `append_many`). On success returns what the store assigned to
    /// each event; the caller builds the recorded events and, once the write is committed,
    /// remembers the new head.
    async fn try_append<'e>(
        &self,
        executor: impl sqlx::Executor<'e, Database = sqlx::Postgres>,
        stream: &StreamId,
        expected: u64,
        prev: Digest,
        request: &AppendRequest,
        prepared: &Prepared,
    ) -> Result<Attempt, StoreError> {
        let recorded_at = request.recorded_at.unwrap_or_else(|| (self.clock)());
        let n = request.events.len();
        let mut event_ids = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut schema_versions = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut refs = Vec::with_capacity(n);
        let mut prev_hashes = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut assigned = chain(stream, expected, prev, request, prepared, recorded_at);
        for (i, ((event, payload), a)) in request
            .events
            .iter()
            .zip(&prepared.payloads)
            .zip(&assigned)
            .enumerate()
        {
            event_ids.push(a.event_id.0);
            versions.push((expected + 1 + i as u64) as i64);
            types.push(event.event_type.as_str());
            schema_versions.push(event.schema_version as i32);
            // Canonical JSON is UTF-8 by construction.
            payloads.push(
                std::str::from_utf8(payload).map_err(|e| StoreError::InvalidEvent {
                    index: i,
                    reason: e.to_string(),
                })?,
            );
            refs.push(blob_refs_json(&event.blob_refs));
            prev_hashes.push(a.prev_hash.as_bytes().to_vec());
            hashes.push(a.hash.as_bytes().to_vec());
        }
        let last = expected + n as u64;
        let blob_hashes: Vec<&[u8]> = prepared
            .blob_hashes
            .iter()
            .map(|d| d.as_bytes().as_slice())
            .collect();
        let blob_types: Vec<&str> = request
            .blobs
            .iter()
            .map(|b| b.media_type.as_str())
            .collect();
        let blob_data: Vec<&[u8]> = request.blobs.iter().map(|b| b.data.as_slice()).collect();

        let sql = if expected == 0 {
            APPEND_NEW_STREAM
        } else {
            APPEND_EXISTING_STREAM
        };
        let result = sqlx::query(sql)
            .bind(stream.as_str())
            .bind(expected as i64)
            .bind(last as i64)
            .bind(prev.as_bytes().as_slice())
            .bind(request.request_id.as_str())
            .bind(prepared.fingerprint.as_bytes().as_slice())
            .bind(request.correlation_id.as_str())
            .bind(request.causation_id.as_ref().map(CausationId::as_str))
            .bind(recorded_at.as_datetime())
            .bind(&event_ids)
            .bind(&versions)
            .bind(&types)
            .bind(&schema_versions)
            .bind(&payloads)
            .bind(&blob_hashes)
            .bind(&blob_types)
            .bind(&blob_data)
            .bind(&refs)
            .bind(&prev_hashes)
            .bind(&hashes)
            .fetch_all(executor)
            .await;
        let rows = match result {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Ok(Attempt::Rejected);
            }
            Err(e) => return Err(db_err(e)),
        };
        if rows.len() != n {
            if !rows.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "append to `{stream}` wrote {} of {n} events",
                    rows.len()
                )));
            }
            return Ok(Attempt::Rejected);
        }
        for row in rows {
            let version: i64 = row.try_get("stream_version").map_err(db_err)?;
            let index = (version as u64)
                .checked_sub(expected + 1)
                .map(|i| i as usize);
            match index.and_then(|i| assigned.get_mut(i)) {
                Some(a) => a.position = position_of(&row)?,
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "append to `{stream}` returned version {version}"
                    )));
                }
            }
        }
        Ok(Attempt::Written {
            recorded_at,
            first_version: expected + 1,
            assigned,
        })
    }
}

/// Rounds of an `append_many` before it gives up. A round either commits, or sets aside one
/// item that turned out to be a repeated request, or (with `ExpectedVersion::Any`) re-reads a
/// stream that moved.
const APPEND_MANY_ROUNDS: usize = 16;

impl PgEventStore {
    /// The head an append to `stream` with `expected` chains from: the cached head when it is
    /// the expected one, else the stored head (a new stream needs no read).
    async fn head_for(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(u64, Digest), StoreError> {
        match expected.as_version() {
            Some(v) => match self.cached_head(stream) {
                Some(head) if head.0 == v => Ok(head),
                _ if v == 0 => Ok((0, Digest::GENESIS)),
                _ => self.read_head(stream).await,
            },
            None => self.read_head(stream).await,
        }
    }

    /// [`EventStore::append_many`]. The items are written inside one transaction with the
    /// single-append statement, in stream-id order, so two calls that touch the same streams
    /// take their locks in the same order and cannot deadlock. A rejected item rolls the whole
    /// transaction back; the rejection is then told apart as in `append`: a repeated request
    /// is set aside as deduplicated and the others are tried again, a reused request id with
    /// other content is `RequestMismatch`, anything else a `Conflict` naming the stream.
    async fn append_items(
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
        let mut prepared = Vec::with_capacity(items.len());
        for item in &items {
            let p = prepare(&item.request)?;
            self.check_blob_refs(&item.request, &p).await?;
            prepared.push(p);
        }
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| items[a].stream.as_str().cmp(items[b].stream.as_str()));
        let mut outcomes: Vec<Option<AppendOutcome>> = vec![None; items.len()];
        for _ in 0..APPEND_MANY_ROUNDS {
            let mut heads = Vec::with_capacity(items.len());
            for &i in &order {
                if outcomes[i].is_some() {
                    continue;
                }
                let item = &items[i];
                let head = self.head_for(&item.stream, item.expected).await?;
                let want = item.expected.as_version().unwrap_or(head.0);
                if head.0 != want {
                    // Either this exact request was written before (set it aside) or the
                    // stream is elsewhere (the error ends the call; nothing was written).
                    let outcome = self
                        .resolve_rejected(
                            &item.stream,
                            &item.request,
                            &prepared[i].fingerprint,
                            want,
                        )
                        .await?;
                    outcomes[i] = Some(outcome);
                    continue;
                }
                heads.push((i, head));
            }
            if heads.is_empty() {
                return Ok(outcomes.into_iter().flatten().collect());
            }
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            let mut written = HashMap::with_capacity(heads.len());
            let mut rejected = None;
            for &(i, (version, hash)) in &heads {
                let item = &items[i];
                match self
                    .try_append(
                        &mut *tx,
                        &item.stream,
                        version,
                        hash,
                        &item.request,
                        &prepared[i],
                    )
                    .await
                {
                    Ok(Attempt::Written {
                        recorded_at,
                        first_version,
                        assigned,
                    }) => {
                        written.insert(i, (recorded_at, first_version, assigned));
                    }
                    Ok(Attempt::Rejected) => {
                        rejected = Some((i, version));
                        break;
                    }
                    Err(e) => {
                        // Dropping an open transaction rolls it back; say so explicitly.
                        let _ = tx.rollback().await;
                        return Err(e);
                    }
                }
            }
            let Some((i, expected)) = rejected else {
                tx.commit().await.map_err(db_err)?;
                for (i, item) in items.into_iter().enumerate() {
                    if let Some((recorded_at, first_version, assigned)) = written.remove(&i) {
                        if let Some(last) = assigned.last() {
                            self.remember_head(
                                &item.stream,
                                first_version - 1 + assigned.len() as u64,
                                last.hash,
                            );
                        }
                        let events = recorded_events(
                            &item.stream,
                            item.request,
                            recorded_at,
                            first_version,
                            assigned,
                        );
                        outcomes[i] = Some(AppendOutcome {
                            events,
                            deduplicated: false,
                        });
                    }
                }
                return Ok(outcomes.into_iter().flatten().collect());
            };
            tx.rollback().await.map_err(db_err)?;
            let item = &items[i];
            match self
                .resolve_rejected(
                    &item.stream,
                    &item.request,
                    &prepared[i].fingerprint,
                    expected,
                )
                .await
            {
                Ok(outcome) => outcomes[i] = Some(outcome),
                Err(StoreError::Conflict { .. }) if item.expected == ExpectedVersion::Any => {}
                Err(e) => return Err(e),
            }
        }
        // Only streams appended with `Any` that kept moving get here.
        let pending = order
            .iter()
            .copied()
            .find(|&i| outcomes[i].is_none())
            .unwrap_or(0);
        let stream = &items[pending].stream;
        let (actual, _) = self.read_head(stream).await?;
        Err(StoreError::Conflict {
            stream_id: stream.clone(),
            expected: actual,
            actual,
        })
    }
}

enum Attempt {
    Written {
        recorded_at: Timestamp,
        first_version: u64,
        assigned: Vec<Assigned>,
    },
    /// Nothing was written: a conflict, or the request was seen before.
    Rejected,
}

/// The statement tail shared by both append forms: runs only when `head` holds a row.
///
/// There is no separate head-row update: `unique (stream_id, stream_version)` is the fence.
/// Two writers from the same head both try to insert version `expected + 1`; the second waits
/// for the first and fails with a unique violation, which becomes a `Conflict`. `head` makes
/// sure the expected version exists with the hash the chain was computed from, so no gap can
/// be written.
macro_rules! append_sql {
    ($head:literal) => {
        concat!(
            "WITH head AS (", $head, "),
            request AS (
                INSERT INTO requests (stream_id, request_id, request_hash, first_version, last_version)
                SELECT $1, $5, $6, $2 + 1, $3 FROM head
            ),
            blob AS (
                INSERT INTO blobs (hash, media_type, data)
                SELECT b.hash, b.media_type, b.data
                  FROM unnest($15::bytea[], $16::text[], $17::bytea[]) AS b(hash, media_type, data)
                 WHERE EXISTS (SELECT 1 FROM head)
                ON CONFLICT (hash) DO NOTHING
            )
            INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                                request_id, correlation_id, causation_id, recorded_at, payload,
                                blob_refs, prev_hash, hash)
            SELECT e.event_id, $1, e.stream_version, e.event_type, e.schema_version,
                   $5, $7, $8, $9, e.payload::jsonb, e.blob_refs::jsonb, e.prev_hash, e.hash
              FROM unnest($10::uuid[], $11::bigint[], $12::text[], $13::int[], $14::text[],
                          $18::text[], $19::bytea[], $20::bytea[])
                   AS e(event_id, stream_version, event_type, schema_version, payload,
                        blob_refs, prev_hash, hash)
             WHERE EXISTS (SELECT 1 FROM head)
            RETURNING global_position, tx_id::text AS tx_id, stream_version"
        )
    };
}

/// A new stream: the unique constraint on version 1 is the whole check.
const APPEND_NEW_STREAM: &str = append_sql!(
    "SELECT 1 WHERE $2::bigint = 0 AND $4::bytea = '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea"
);

/// An existing stream: the expected head event must be there, with the hash chained from.
const APPEND_EXISTING_STREAM: &str =
    append_sql!("SELECT 1 FROM events WHERE stream_id = $1 AND stream_version = $2 AND hash = $4");

/// `SELECT <event columns> <rest>`, as a static string.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT global_position, tx_id::text AS tx_id, event_id, stream_id, stream_version,
                    event_type, schema_version, request_id, correlation_id, causation_id,
                    recorded_at, payload::text AS payload, blob_refs::text AS blob_refs,
                    prev_hash, hash ",
            $rest
        )
    };
}

const READ_STREAM: &str = select_events!(
    "FROM events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3"
);

// The versions a request wrote, from its idempotency row (the `requests` primary key).
const FIND_REQUEST: &str = select_events!(
    "FROM events
      WHERE stream_id = $1
        AND stream_version BETWEEN
            (SELECT first_version FROM requests WHERE stream_id = $1 AND request_id = $2)
        AND (SELECT last_version FROM requests WHERE stream_id = $1 AND request_id = $2)
      ORDER BY stream_version"
);

// Below the horizon every transaction has finished, so nothing can still appear before the
// returned checkpoint.
// ORDER BY names the table's columns: a bare `tx_id` would mean the `tx_id::text` output
// column, sorting ids as text ("10000" before "9999") and missing the index.
const READ_ALL: &str = select_events!(
    "FROM events
      WHERE (tx_id, global_position) > ($1::text::xid8, $2)
        AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
      ORDER BY events.tx_id, events.global_position
      LIMIT $3"
);

fn position_of(row: &PgRow) -> Result<Position, StoreError> {
    let tx: String = row.try_get("tx_id").map_err(db_err)?;
    let global: i64 = row.try_get("global_position").map_err(db_err)?;
    let commit = tx
        .parse::<u64>()
        .map_err(|_| StoreError::Corrupt(format!("transaction id `{tx}` is not a number")))?;
    Ok(Position {
        commit,
        global: global as u64,
    })
}

fn event_from_row(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let stream_id: String = row.try_get("stream_id").map_err(db_err)?;
    let version: i64 = row.try_get("stream_version").map_err(db_err)?;
    let at = || format!("event {stream_id}#{version}");
    let payload: String = row.try_get("payload").map_err(db_err)?;
    let refs: String = row.try_get("blob_refs").map_err(db_err)?;
    let prev: Vec<u8> = row.try_get("prev_hash").map_err(db_err)?;
    let hash: Vec<u8> = row.try_get("hash").map_err(db_err)?;
    let recorded_at: OffsetDateTime = row.try_get("recorded_at").map_err(db_err)?;
    let schema_version: i32 = row.try_get("schema_version").map_err(db_err)?;
    let causation: Option<String> = row.try_get("causation_id").map_err(db_err)?;
    Ok(RecordedEvent {
        event_id: EventId(row.try_get("event_id").map_err(db_err)?),
        stream_id: StreamId::new(stream_id.clone()).map_err(|e| corrupt(&at(), &e))?,
        stream_version: version as u64,
        position: position_of(row)?,
        event_type: row.try_get("event_type").map_err(db_err)?,
        schema_version: schema_version as u32,
        request_id: RequestId::new(row.try_get::<String, _>("request_id").map_err(db_err)?)
            .map_err(|e| corrupt(&at(), &e))?,
        correlation_id: CorrelationId::new(
            row.try_get::<String, _>("correlation_id").map_err(db_err)?,
        )
        .map_err(|e| corrupt(&at(), &e))?,
        causation_id: causation
            .map(CausationId::new)
            .transpose()
            .map_err(|e| corrupt(&at(), &e))?,
        recorded_at: Timestamp::from_datetime(recorded_at),
        payload: serde_json::from_str(&payload).map_err(|e| corrupt(&at(), &e))?,
        blob_refs: serde_json::from_str(&refs).map_err(|e| corrupt(&at(), &e))?,
        prev_hash: Digest::from_slice(&prev)
            .ok_or_else(|| corrupt(&at(), &"prev_hash is not 32 bytes"))?,
        hash: Digest::from_slice(&hash).ok_or_else(|| corrupt(&at(), &"hash is not 32 bytes"))?,
    })
}

impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let prepared = prepare(&request)?;
        self.check_blob_refs(&request, &prepared).await?;
        // `Any` retries on a concurrent append, re-reading the head each round.
        let rounds = if expected == ExpectedVersion::Any {
            16
        } else {
            1
        };
        for _ in 0..rounds {
            let head = self.head_for(stream, expected).await?;
            let want = expected.as_version().unwrap_or(head.0);
            if head.0 != want {
                return self
                    .resolve_rejected(stream, &request, &prepared.fingerprint, want)
                    .await;
            }
            match self
                .try_append(&self.pool, stream, head.0, head.1, &request, &prepared)
                .await?
            {
                Attempt::Written {
                    recorded_at,
                    first_version,
                    assigned,
                } => {
                    if let Some(last) = assigned.last() {
                        self.remember_head(stream, head.0 + assigned.len() as u64, last.hash);
                    }
                    let events =
                        recorded_events(stream, request, recorded_at, first_version, assigned);
                    return Ok(AppendOutcome {
                        events,
                        deduplicated: false,
                    });
                }
                Attempt::Rejected => {
                    match self
                        .resolve_rejected(stream, &request, &prepared.fingerprint, head.0)
                        .await
                    {
                        Err(StoreError::Conflict { .. }) if expected == ExpectedVersion::Any => {
                            continue;
                        }
                        other => return other,
                    }
                }
            }
        }
        let (actual, _) = self.read_head(stream).await?;
        Err(StoreError::Conflict {
            stream_id: stream.clone(),
            expected: actual,
            actual,
        })
    }

    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_items(items).await
    }

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
            .fetch_all(&self.pool)
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
        let rows = sqlx::query(READ_STREAM)
            .bind(stream.as_str())
            .bind(from_version.min(i64::MAX as u64) as i64)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<GlobalPage, StoreError> {
        let rows = sqlx::query(READ_ALL)
            .bind(after.commit.to_string())
            .bind(after.global.min(i64::MAX as u64) as i64)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(&self.pool)
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
        let row = sqlx::query(
            "SELECT stream_version AS version, hash AS head_hash FROM events
              WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(stream.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|row| head_from_row(stream.clone(), &row))
            .transpose()
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<StreamHead>, StoreError> {
        // Byte order ("C" collation), so exports do not depend on the database's locale.
        let rows = sqlx::query(
            "SELECT DISTINCT ON (stream_id COLLATE \"C\")
                    stream_id, stream_version AS version, hash AS head_hash
               FROM events
              WHERE starts_with(stream_id, $1)
              ORDER BY stream_id COLLATE \"C\", stream_version DESC",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
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
        sqlx::query(
            "INSERT INTO blobs (hash, media_type, data) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash.as_bytes().as_slice())
        .bind(&blob.media_type)
        .bind(&blob.data)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(hash)
    }

    async fn get_blob(&self, hash: &Digest) -> Result<Option<Blob>, StoreError> {
        let row = sqlx::query("SELECT media_type, data FROM blobs WHERE hash = $1")
            .bind(hash.as_bytes().as_slice())
            .fetch_optional(&self.pool)
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

fn head_from_row(stream_id: StreamId, row: &PgRow) -> Result<StreamHead, StoreError> {
    let version: i64 = row.try_get("version").map_err(db_err)?;
    let hash: Vec<u8> = row.try_get("head_hash").map_err(db_err)?;
    let hash = Digest::from_slice(&hash).ok_or_else(|| {
        StoreError::Corrupt(format!("head hash of `{stream_id}` is not 32 bytes"))
    })?;
    Ok(StreamHead {
        stream_id,
        version: version as u64,
        hash,
    })
}

async fn applied_migrations(pool: &PgPool) -> Result<usize, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    if !exists {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    Ok(n as usize)
}

/// Creates the database named in `url` when it does not exist.
async fn ensure_database(url: &str) -> Result<(), StoreError> {
    let exists = sqlx::Postgres::database_exists(url).await.map_err(db_err)?;
    if exists {
        return Ok(());
    }
    match sqlx::Postgres::create_database(url).await {
        Ok(()) => Ok(()),
        // Another process created it first (duplicate_database, or the catalog's unique index
        // when both raced past the existence check).
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(())
        }
        Err(e) => Err(db_err(e)),
    }
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[path = "postgres/batch.rs"]
mod batch;
mod ends;

#[path = "postgres/import.rs"]
mod import;
pub use import::StreamImport;

#[cfg(test)]
#[path = "postgres/audit_tests.rs"]
mod audit_tests;
#[cfg(test)]
#[path = "postgres/batch_tests.rs"]
mod batch_tests;
#[cfg(test)]
mod tests;
