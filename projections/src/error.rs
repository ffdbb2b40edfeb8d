//! Errors of the projections: a projector that cannot go on, and a query that cannot be answered.
//! Each has a stable snake_case code for the API error envelope and the CLI.

use std::fmt;

use runledger_contracts::envelope::RecordedEvent;
use runledger_ledger::StoreError;
use serde::Serialize;

/// Where an event sits: enough to find it in the ledger (`stream#version`) and in the global
/// order (`global_position`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRef {
    pub stream_id: String,
    pub stream_version: u64,
    pub global_position: u64,
    pub event_type: String,
}

impl EventRef {
    pub fn of(event: &RecordedEvent) -> Self {
        Self {
            stream_id: event.stream_id.to_string(),
            stream_version: event.stream_version,
            global_position: event.position.global,
            event_type: event.event_type.clone(),
        }
    }
}

impl fmt::Display for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}#{} {} (global position {})",
            self.stream_id, self.stream_version, self.event_type, self.global_position
        )
    }
}

/// What [`crate::Projector::apply`] returns when a batch cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event at `index` of the batch cannot be applied: the projector stops there.
    #[error("event {index} of the batch: {reason}")]
    Event { index: usize, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Rows could not be encoded for the database (a bug, not bad data).
    #[error("cannot encode rows: {0}")]
    Encode(String),
}

impl ApplyError {
    pub(crate) fn event(index: usize, reason: impl Into<String>) -> Self {
        ApplyError::Event {
            index,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The projector met an event it cannot apply. It does not skip it: its checkpoint stays
    /// before the event until the cause is fixed (a newer runledger, a repaired ledger).
    #[error("projector `{projector}` stopped at {event}: {reason}")]
    Stopped {
        projector: &'static str,
        event: EventRef,
        reason: String,
    },
    #[error("unknown projector `{name}` (known: {known})")]
    UnknownProjector { name: String, known: String },
    #[error("projector `{projector}` cannot read the ledger: {source}")]
    Ledger {
        projector: &'static str,
        source: StoreError,
    },
    #[error("projector `{projector}`: database error: {message}")]
    Database {
        projector: &'static str,
        message: String,
    },
    /// Committed events could not be read within `waited`: an older transaction somewhere on
    /// the server is still open, and the commit-safe reader never reads past it.
    #[error(
        "projector `{projector}` is still {behind} event(s) behind after {}s: a long-running transaction on the server holds back the ledger's read horizon",
        waited.as_secs()
    )]
    HorizonHeld {
        projector: &'static str,
        behind: u64,
        waited: std::time::Duration,
    },
}

impl ProjectionError {
    pub fn code(&self) -> &'static str {
        match self {
            ProjectionError::Stopped { .. } => "projector_stopped",
            ProjectionError::UnknownProjector { .. } => "unknown_projector",
            ProjectionError::Ledger { .. } => "ledger_error",
            ProjectionError::Database { .. } => "database_error",
            ProjectionError::HorizonHeld { .. } => "horizon_held",
        }
    }

    pub(crate) fn database(projector: &'static str, e: impl fmt::Display) -> Self {
        ProjectionError::Database {
            projector,
            message: e.to_string(),
        }
    }
}

/// A read-model query that cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cursor `{cursor}` is not a cursor this list returned")]
    InvalidCursor { cursor: String },
    #[error("limit must be between 1 and {max}, not {limit}")]
    InvalidLimit { limit: u32, max: u32 },
    #[error("{field}: {message}")]
    InvalidFilter {
        field: &'static str,
        message: String,
    },
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("claim registry: {0}")]
    Registry(#[source] crate::claims::registry::RegistryError),
    /// A stored read-model row does not have the shape this code wrote (a bug or a schema from
    /// another version): rebuild the projection.
    #[error("projection row is malformed: {what}")]
    Corrupt {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl QueryError {
    /// A row that does not decode, keeping the decoder's error as the cause.
    pub(crate) fn corrupt(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        QueryError::Corrupt {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            QueryError::InvalidCursor { .. } => "invalid_cursor",
            QueryError::InvalidLimit { .. } => "invalid_limit",
            QueryError::InvalidFilter { .. } => "invalid_filter",
            QueryError::Database(_) => "database_error",
            QueryError::Registry(_) => "claim_registry",
            QueryError::Corrupt { .. } => "projection_corrupt",
        }
    }
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Database(e)
    }
}
