//! The run ledger: an append-only, hash-chained event store.
//!
//! [`EventStore`] is the boundary the rest of runledger programs against; it speaks only
//! `runledger-contracts` types. [`PgEventStore`] implements it on PostgreSQL and
//! [`SqliteEventStore`] on a SQLite file (the embedded default); [`LedgerStore`] is either,
//! chosen from a URL at run time. [`export`] writes
//! the canonical JSON Lines export of a store and [`verify`] checks such a file with no database.

pub mod backend;
#[cfg(test)]
mod conformance;
pub mod export;
pub mod export_file;
pub mod import;
pub mod leases;
mod migrations;
pub mod postgres;
mod prepare;
pub mod sign;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

use std::future::Future;

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{NewEvent, Position, RecordedEvent};
use runledger_contracts::ids::{CausationId, CorrelationId, RequestId, StreamId};

pub use backend::{LedgerLocation, LedgerStore};
pub use postgres::{DatabaseConfig, PgEventStore};
pub use sqlite::SqliteEventStore;

/// What the appender believes the stream's version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this version.
    Exact(u64),
    /// Append after whatever is there (the store still serializes appends).
    Any,
}

impl ExpectedVersion {
    fn as_version(self) -> Option<u64> {
        match self {
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
            ExpectedVersion::Any => None,
        }
    }
}

/// A blob to store with an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn hash(&self) -> Digest {
        Digest::of(&self.data)
    }
}

/// One append: the events of one request, written atomically or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub request_id: RequestId,
    pub correlation_id: CorrelationId,
    pub causation_id: Option<CausationId>,
    pub events: Vec<NewEvent>,
    pub blobs: Vec<Blob>,
    /// The time to record the events at. The engine sets it to the clock reading it decided
    /// the events with, so a replay can feed the decider the same time; `None` stamps the
    /// store's clock. Not part of the fingerprint: a retry at a later time is the same request.
    pub recorded_at: Option<runledger_contracts::time::Timestamp>,
}

impl AppendRequest {
    pub fn new(
        request_id: RequestId,
        correlation_id: CorrelationId,
        events: Vec<NewEvent>,
    ) -> Self {
        Self {
            request_id,
            correlation_id,
            causation_id: None,
            events,
            blobs: Vec::new(),
            recorded_at: None,
        }
    }

    /// Identifies what was asked, so a reused request id with other content is caught.
    /// Covers everything but the expected version (a retry may carry a fresher one).
    /// `payloads` are the events' canonical payload bytes and `blob_hashes` the blobs'
    /// digests, both in request order.
    pub fn fingerprint(&self, payloads: &[Vec<u8>], blob_hashes: &[Digest]) -> Digest {
        fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        let mut h = blake3::Hasher::new();
        field(&mut h, b"runledger.request.v1");
        field(&mut h, self.correlation_id.as_str().as_bytes());
        field(
            &mut h,
            self.causation_id
                .as_ref()
                .map_or(&b""[..], |c| c.as_str().as_bytes()),
        );
        h.update(&(self.events.len() as u64).to_le_bytes());
        for (event, payload) in self.events.iter().zip(payloads) {
            field(&mut h, event.event_type.as_bytes());
            h.update(&event.schema_version.to_le_bytes());
            field(&mut h, payload);
            h.update(&(event.blob_refs.len() as u64).to_le_bytes());
            for r in &event.blob_refs {
                h.update(r.as_bytes());
            }
        }
        h.update(&(self.blobs.len() as u64).to_le_bytes());
        for (blob, hash) in self.blobs.iter().zip(blob_hashes) {
            h.update(hash.as_bytes());
            field(&mut h, blob.media_type.as_bytes());
        }
        Digest::from_bytes(*h.finalize().as_bytes())
    }
}

/// One stream's part of an [`EventStore::append_many`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub request: AppendRequest,
}

impl StreamAppend {
    pub fn new(stream: StreamId, expected: ExpectedVersion, request: AppendRequest) -> Self {
        Self {
            stream,
            expected,
            request,
        }
    }
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendOutcome {
    /// The events the request wrote, now or the first time it was seen.
    pub events: Vec<RecordedEvent>,
    /// True when the request had been appended before and nothing was written now.
    pub deduplicated: bool,
}

impl AppendOutcome {
    /// The stream version after the request's events.
    pub fn last_version(&self) -> u64 {
        self.events.last().map_or(0, |e| e.stream_version)
    }
}

/// A stream's current end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub stream_id: StreamId,
    pub version: u64,
    pub hash: Digest,
}

/// A page of events in commit-safe global order, and where to continue.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalPage {
    pub events: Vec<RecordedEvent>,
    /// The position of the last event returned, or the one passed in when there was none.
    pub checkpoint: Position,
}

/// Largest payload kept inline in an event; bigger content belongs in a blob.
pub use runledger_contracts::storable::MAX_PAYLOAD_BYTES;
/// Most events one request may append.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream `{stream_id}` is at version {actual}, not the expected {expected}")]
    Conflict {
        stream_id: StreamId,
        expected: u64,
        actual: u64,
    },
    #[error(
        "request `{request_id}` was already used on stream `{stream_id}` with different content"
    )]
    RequestMismatch {
        stream_id: StreamId,
        request_id: RequestId,
    },
    #[error("event {index} of the request is invalid: {reason}")]
    InvalidEvent { index: usize, reason: String },
    #[error("the request is invalid: {0}")]
    InvalidRequest(String),
    #[error("blob {hash} is referenced but neither stored nor sent with the request")]
    MissingBlob { hash: Digest },
    #[error("the stored ledger is inconsistent: {0}")]
    Corrupt(String),
    /// The database failed or refused a statement; [`StoreError::is_transient`] tells whether
    /// trying again can help.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// An append whose outcome never arrived because the task writing it was dropped (a group
    /// commit cancelled mid-way): transient, since whether it committed is unknown and a
    /// retry with the same request id settles it.
    pub fn interrupted() -> Self {
        StoreError::Database(sqlx::Error::WorkerCrashed)
    }

    /// A stable code for the API error envelope and CLI messages.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Conflict { .. } => "conflict",
            StoreError::RequestMismatch { .. } => "request_id_reused",
            StoreError::InvalidEvent { .. } => "invalid_event",
            StoreError::InvalidRequest(_) => "invalid_request",
            StoreError::MissingBlob { .. } => "missing_blob",
            StoreError::Corrupt(_) => "ledger_corrupt",
            StoreError::Database(_) | StoreError::Migration(_) => "database_error",
        }
    }

    /// True when the same request may succeed if tried again later: the connection was lost or
    /// could not be had, or the database gave up on the statement for a reason of its own
    /// (serialization failure, deadlock, shutdown, lack of resources). Everything else is
    /// permanent: the request itself is refused (invalid content, a reused request id, a
    /// missing blob), the stored ledger is inconsistent, or the database rejects the statement
    /// (constraint or data errors), and repeating it would fail the same way.
    /// [`StoreError::Conflict`] is neither: it asks the caller to re-read and decide again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => sqlx_error_is_transient(e),
            StoreError::Migration(sqlx::migrate::MigrateError::Execute(e)) => {
                sqlx_error_is_transient(e)
            }
            _ => false,
        }
    }

    /// True when the same request will be refused again however often it is tried: the
    /// request itself (unstorable content, a reused request id, a missing blob), the stored
    /// ledger, or the database's verdict on the statement. Neither transient errors nor
    /// [`StoreError::Conflict`] (re-read and decide again) are permanent. A caller that gets
    /// one fails what it was recording, with a typed error, and never retries it.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, StoreError::Conflict { .. }) && !self.is_transient()
    }
}

fn sqlx_error_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db)
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
        {
            db.code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(sqlite_code_is_transient)
        }
        sqlx::Error::Database(db) => db.code().is_some_and(|code| sqlstate_is_transient(&code)),
        _ => false,
    }
}

/// SQLite result codes a retry can outlive: the database was busy or locked by another
/// connection (`SQLITE_BUSY` 5, `SQLITE_LOCKED` 6, with their extended codes), which outlasted
/// the busy timeout.
fn sqlite_code_is_transient(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6)
}

/// SQLSTATE classes and codes a retry can outlive: connection exceptions (08), serialization
/// failure and deadlock (40001, 40P01), insufficient resources (53), lock not available (55P03),
/// canceled statements and server shutdown or startup (57014, 57P01-57P03).
fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
        )
}

/// The event store. Implementations keep every guarantee documented here; the conformance
/// suite in `conformance.rs` states them as code and runs against both backends.
pub trait EventStore: Send + Sync {
    /// Appends the request's events at the end of `stream` in one transaction.
    ///
    /// - `expected` must match the stream's version, else [`StoreError::Conflict`] with the
    ///   actual version; nothing is written.
    /// - A request id already used on this stream returns the events it wrote then, writes
    ///   nothing, and sets `deduplicated`; with different content it is
    ///   [`StoreError::RequestMismatch`].
    /// - Each event's hash chains to the previous event of the stream.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send;

    /// Appends to several streams in one transaction: every item is written, or none is.
    ///
    /// Each item keeps the rules of [`EventStore::append`] on its own stream:
    /// - its expected version: a mismatch on any stream is [`StoreError::Conflict`] naming
    ///   that stream, and nothing is written on any stream;
    /// - its idempotency: an item whose request id was already used on its stream with the
    ///   same content writes nothing and comes back `deduplicated` with the events it wrote
    ///   then, while the other items are written; with other content the whole call is
    ///   [`StoreError::RequestMismatch`];
    /// - its hash chain.
    ///
    /// At most one item per stream; outcomes come back in item order.
    fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>, StoreError>> + Send;

    /// Appends several independent requests in one go, each with its own outcome (group
    /// commit): unlike [`EventStore::append_many`], the items are not all-or-nothing. Each keeps
    /// the rules of [`EventStore::append`] on its own stream (expected version, idempotency,
    /// hash chain), and a conflict, a reused request id or a refused request fails only its own
    /// item while the others are written. Several items may name one stream; they apply in
    /// item order. Outcomes come back in item order.
    ///
    /// The default appends the items one after the other; a store that can share one
    /// transaction among them (PostgreSQL) overrides it.
    fn append_batch(
        &self,
        items: Vec<StreamAppend>,
    ) -> impl Future<Output = Vec<Result<AppendOutcome, StoreError>>> + Send {
        async move {
            let mut outcomes = Vec::with_capacity(items.len());
            for item in items {
                outcomes.push(self.append(&item.stream, item.expected, item.request).await);
            }
            outcomes
        }
    }

    /// The events that `request_id` appended to `stream`, in order; empty when it appended
    /// none there. Lets a caller tell whether a request was applied before without reading the
    /// whole stream: stores with an index of requests answer from it. The default reads the
    /// stream page by page and keeps the request's events.
    fn find_request(
        &self,
        stream: &StreamId,
        request_id: &RequestId,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        async move {
            const PAGE: usize = 5_000;
            let mut found = Vec::new();
            let mut from = 1;
            loop {
                let page = self.read_stream(stream, from, PAGE).await?;
                let done = page.len() < PAGE;
                from = page.last().map_or(from, |e| e.stream_version + 1);
                found.extend(page.into_iter().filter(|e| e.request_id == *request_id));
                if done {
                    return Ok(found);
                }
            }
        }
    }

    /// Events of one stream with `from_version <= version`, in order, at most `limit`.
    fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Events of all streams after `after`, in commit-safe order, at most `limit`.
    ///
    /// Only events whose transactions are older than every running transaction are returned,
    /// so a reader that checkpoints the returned position never skips an event that commits
    /// later with an earlier position.
    fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> impl Future<Output = Result<GlobalPage, StoreError>> + Send;

    /// The current end of a stream, if it exists.
    fn stream_head(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<StreamHead>, StoreError>> + Send;

    /// Heads of all streams whose id starts with `prefix`, ordered by stream id.
    fn list_streams(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<StreamHead>, StoreError>> + Send;

    /// Stores a blob (idempotent) and returns its digest.
    fn put_blob(&self, blob: Blob) -> impl Future<Output = Result<Digest, StoreError>> + Send;

    fn get_blob(
        &self,
        hash: &Digest,
    ) -> impl Future<Output = Result<Option<Blob>, StoreError>> + Send;
}
