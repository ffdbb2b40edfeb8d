//! One of the two stores, chosen at run time from a URL: what the `runledger` binary opens.
//!
//! The engine and every command are generic over [`EventStore`]; this enum lets one binary pick
//! the backend per invocation. It delegates each call, so both arms keep their own guarantees.

use std::path::{Path, PathBuf};

use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::ids::{RequestId, StreamId};

use crate::import::{StreamImport, StreamImporter};
use crate::{
    AppendOutcome, AppendRequest, Blob, DatabaseConfig, EventStore, ExpectedVersion, GlobalPage,
    PgEventStore, SqliteEventStore, StoreError, StreamAppend, StreamHead,
};

/// Where a ledger is, parsed from a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// `postgres://` or `postgresql://`.
    Postgres(DatabaseConfig),
    /// `sqlite://PATH` or `sqlite:PATH` (relative to the working directory), or no URL at all
    /// ([`crate::sqlite::DEFAULT_PATH`]).
    Sqlite(PathBuf),
}

impl LedgerLocation {
    /// Parses a database URL; `None` means the embedded default file.
    pub fn parse(url: Option<&str>) -> Result<Self, StoreError> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Self::Sqlite(PathBuf::from(crate::sqlite::DEFAULT_PATH)));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(DatabaseConfig::new(url)));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::InvalidRequest(
                    "database URL `sqlite://` names no file; use sqlite://PATH".into(),
                ));
            }
            if path == ":memory:" {
                return Err(StoreError::InvalidRequest(
                    "database URL `sqlite::memory:`: an in-memory ledger would vanish when the command ends; name a file".into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(StoreError::InvalidRequest(format!(
            "database URL `{}` must start with postgres://, postgresql:// or sqlite://",
            crate::postgres::redact(url)
        )))
    }

    /// How to name it in messages (passwords redacted).
    pub fn describe(&self) -> String {
        match self {
            Self::Postgres(config) => crate::postgres::redact(&config.url),
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }
}

/// The ledger of one `runledger` invocation.
pub enum LedgerStore {
    Postgres(PgEventStore),
    Sqlite(SqliteEventStore),
}

impl LedgerStore {
    /// Connects to PostgreSQL or opens (creating when missing) the SQLite file.
    pub async fn open(location: &LedgerLocation) -> Result<Self, StoreError> {
        Ok(match location {
            LedgerLocation::Postgres(config) => {
                Self::Postgres(PgEventStore::connect(config).await?)
            }
            LedgerLocation::Sqlite(path) => Self::Sqlite(SqliteEventStore::open(path).await?),
        })
    }

    /// Applies pending migrations of the backend; returns how many ran now.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        match self {
            Self::Postgres(s) => s.migrate().await,
            Self::Sqlite(s) => s.migrate().await,
        }
    }

    /// Migrations applied and still pending.
    pub async fn migration_status(&self) -> Result<(usize, usize), StoreError> {
        match self {
            Self::Postgres(s) => s.migration_status().await,
            Self::Sqlite(s) => s.migration_status().await,
        }
    }

    /// Another handle on the same ledger, sharing its connections.
    pub fn share(&self) -> Self {
        match self {
            Self::Postgres(s) => Self::Postgres(PgEventStore::from_pool(s.pool().clone())),
            Self::Sqlite(s) => Self::Sqlite(s.share()),
        }
    }

    pub fn as_postgres(&self) -> Option<&PgEventStore> {
        match self {
            Self::Postgres(s) => Some(s),
            Self::Sqlite(_) => None,
        }
    }

    /// The SQLite file, when that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Postgres(_) => None,
            Self::Sqlite(s) => Some(s.path()),
        }
    }

    /// The last committed event in commit-safe order (see the backends' methods).
    pub async fn last_committed_position(&self) -> Result<Option<Position>, StoreError> {
        match self {
            Self::Postgres(s) => s.last_committed_position().await,
            Self::Sqlite(s) => s.last_committed_position().await,
        }
    }

    /// Where a live tail starts.
    pub async fn horizon_position(&self) -> Result<Position, StoreError> {
        match self {
            Self::Postgres(s) => s.horizon_position().await,
            Self::Sqlite(s) => s.horizon_position().await,
        }
    }

    /// The highest global position written (0 for an empty ledger).
    pub async fn last_global_position(&self) -> Result<u64, StoreError> {
        match self {
            Self::Postgres(s) => s.last_global_position().await,
            Self::Sqlite(s) => s.last_global_position().await,
        }
    }

    /// The SQLite store, when that is the backend.
    pub fn as_sqlite(&self) -> Option<&SqliteEventStore> {
        match self {
            Self::Postgres(_) => None,
            Self::Sqlite(s) => Some(s),
        }
    }

    /// Closes the store's connections (waits for those in use).
    pub async fn close(&self) {
        match self {
            Self::Postgres(s) => s.pool().close().await,
            Self::Sqlite(s) => s.close().await,
        }
    }
}

/// `match self { Postgres(s) => s.$call, Sqlite(s) => s.$call }`.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            LedgerStore::Postgres($s) => $call,
            LedgerStore::Sqlite($s) => $call,
        }
    };
}

impl EventStore for LedgerStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        delegate!(self, s => s.append(stream, expected, request).await)
    }

    async fn append_many(
        &self,
        items: Vec<StreamAppend>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        delegate!(self, s => s.append_many(items).await)
    }

    async fn append_batch(
        &self,
        items: Vec<StreamAppend>,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        delegate!(self, s => s.append_batch(items).await)
    }

    async fn find_request(
        &self,
        stream: &StreamId,
        request_id: &RequestId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.find_request(stream, request_id).await)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.read_stream(stream, from_version, limit).await)
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<GlobalPage, StoreError> {
        delegate!(self, s => s.read_all(after, limit).await)
    }

    async fn stream_head(&self, stream: &StreamId) -> Result<Option<StreamHead>, StoreError> {
        delegate!(self, s => s.stream_head(stream).await)
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<StreamHead>, StoreError> {
        delegate!(self, s => s.list_streams(prefix).await)
    }

    async fn put_blob(&self, blob: Blob) -> Result<Digest, StoreError> {
        delegate!(self, s => s.put_blob(blob).await)
    }

    async fn get_blob(&self, hash: &Digest) -> Result<Option<Blob>, StoreError> {
        delegate!(self, s => s.get_blob(hash).await)
    }
}

impl StreamImporter for LedgerStore {
    async fn import_stream(
        &self,
        events: &[RecordedEvent],
        blobs: &[Blob],
    ) -> Result<StreamImport, StoreError> {
        delegate!(self, s => StreamImporter::import_stream(s, events, blobs).await)
    }

    async fn import_marker(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(u64, Digest, bool)>, StoreError> {
        delegate!(self, s => StreamImporter::import_marker(s, stream).await)
    }
}
