//! Read models built from the run ledger, each kept by a checkpointed projector.
//!
//! - [`Projector`] and [`Projections`]: the framework. A projector applies a batch of events
//!   and moves its checkpoint in the same transaction, reading in the ledger's commit-safe
//!   order; it is woken by LISTEN/NOTIFY after appends and polls as a backstop (on SQLite it
//!   polls); an event it cannot apply stops it with an error naming the event (it never skips
//!   one).
//! - [`db`]: the two backends, PostgreSQL and the SQLite file ([`ReadDb`]); the query API reads
//!   from either ([`ReadSource`]).
//! - [`run_detail`], [`artifact_history`], [`claims`]: the three read models.
//! - [`query`]: the public query API (what the HTTP API and the CLI read).
//! - [`lag`]: how far each projector is behind.
//!
//! All tables live in the ledger's database (`migrations/0002_projections.sql`; on SQLite
//! `ledger/migrations-sqlite/0003_projections.sql`). See docs/projections.md.

pub mod artifact_history;
pub mod claims;
mod cursor;
pub mod db;
pub mod error;
pub mod lag;
pub mod projector;
pub mod query;
pub mod run_detail;
pub mod runner;

pub use db::{ProjectionTx, ReadDb, ReadSource};
pub use error::{ApplyError, EventRef, ProjectionError, QueryError};
pub use lag::{ProjectorLag, lag};
pub use projector::{ApplyFuture, PROJECTOR_NAMES, Projector, builtin};
pub use runner::{Progress, Projections, Report, spawn_live};

#[cfg(test)]
mod tests;
