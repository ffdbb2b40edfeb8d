//! The SQL migrations of each backend, embedded at build time by `build.rs`.
//!
//! Built as `sqlx::migrate!` would build them (same versions, descriptions, checksums and
//! `-- no-transaction` handling), without its proc-macro: see `build.rs` for why.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// `(version, description, sql, no_tx)`, ordered by version.
type Embedded = &'static [(i64, &'static str, &'static str, bool)];

const POSTGRES: Embedded = include!(concat!(env!("OUT_DIR"), "/postgres_migrations.rs"));
const SQLITE: Embedded = include!(concat!(env!("OUT_DIR"), "/sqlite_migrations.rs"));

/// `migrations/`, shared by the ledger and the projections.
pub(crate) fn postgres() -> Migrator {
    migrator(POSTGRES)
}

/// `ledger/migrations-sqlite/`.
pub(crate) fn sqlite() -> Migrator {
    migrator(SQLITE)
}

fn migrator(embedded: Embedded) -> Migrator {
    let migrations = embedded
        .iter()
        .map(|&(version, description, sql, no_tx)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                SqlStr::from_static(sql),
                no_tx,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}
