//! Where the read models live: the ledger's own database, PostgreSQL or the SQLite file. The
//! projectors' in-memory logic is one; only loading and writing rows has a statement per backend
//! (PostgreSQL: typed columns filled by `json_populate_recordset`; SQLite: the row as JSON
//! beside its key columns, `ledger/migrations-sqlite/0003_projections.sql`).

use runledger_ledger::{LedgerStore, PgEventStore, SqliteEventStore};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Sqlite, Transaction};

/// The database of the read models (and of the ledger they follow).
pub enum ReadDb {
    Postgres(PgPool),
    Sqlite(SqliteEventStore),
}

impl Clone for ReadDb {
    /// Another handle sharing the connections.
    fn clone(&self) -> Self {
        match self {
            ReadDb::Postgres(pool) => ReadDb::Postgres(pool.clone()),
            ReadDb::Sqlite(store) => ReadDb::Sqlite(store.share()),
        }
    }
}

/// A borrowed [`ReadDb`], what the query functions match on.
#[derive(Clone, Copy)]
pub enum DbRef<'a> {
    Postgres(&'a PgPool),
    Sqlite(&'a SqliteEventStore),
}

/// Anything the query API can read the projections from: a [`ReadDb`], a PostgreSQL pool, a
/// SQLite store, a [`LedgerStore`].
pub trait ReadSource: Sync {
    fn db(&self) -> DbRef<'_>;
}

impl ReadSource for ReadDb {
    fn db(&self) -> DbRef<'_> {
        match self {
            ReadDb::Postgres(pool) => DbRef::Postgres(pool),
            ReadDb::Sqlite(store) => DbRef::Sqlite(store),
        }
    }
}

impl ReadSource for PgPool {
    fn db(&self) -> DbRef<'_> {
        DbRef::Postgres(self)
    }
}

impl ReadSource for SqliteEventStore {
    fn db(&self) -> DbRef<'_> {
        DbRef::Sqlite(self)
    }
}

impl ReadSource for LedgerStore {
    fn db(&self) -> DbRef<'_> {
        match self {
            LedgerStore::Postgres(s) => DbRef::Postgres(s.pool()),
            LedgerStore::Sqlite(s) => DbRef::Sqlite(s),
        }
    }
}

impl From<PgPool> for ReadDb {
    fn from(pool: PgPool) -> Self {
        ReadDb::Postgres(pool)
    }
}

impl From<SqliteEventStore> for ReadDb {
    fn from(store: SqliteEventStore) -> Self {
        ReadDb::Sqlite(store)
    }
}

impl From<&LedgerStore> for ReadDb {
    fn from(store: &LedgerStore) -> Self {
        match store {
            LedgerStore::Postgres(s) => ReadDb::Postgres(s.pool().clone()),
            LedgerStore::Sqlite(s) => ReadDb::Sqlite(s.share()),
        }
    }
}

impl ReadDb {
    /// The ledger of this database, for the runner's reads.
    pub fn ledger(&self) -> LedgerStore {
        match self {
            ReadDb::Postgres(pool) => LedgerStore::Postgres(PgEventStore::from_pool(pool.clone())),
            ReadDb::Sqlite(store) => LedgerStore::Sqlite(store.share()),
        }
    }

    /// The PostgreSQL pool, when that is the backend.
    pub fn postgres(&self) -> Option<&PgPool> {
        match self {
            ReadDb::Postgres(pool) => Some(pool),
            ReadDb::Sqlite(_) => None,
        }
    }

    /// Opens the transaction a batch is applied in. On SQLite it takes the file's write lock
    /// first (`BEGIN IMMEDIATE`), so reading rows and then writing them can never fail on a
    /// lock upgrade; this process's appends and projectors share the one writer connection.
    pub async fn begin(&self) -> Result<ProjectionTx, sqlx::Error> {
        Ok(match self {
            ReadDb::Postgres(pool) => ProjectionTx::Postgres(pool.begin().await?),
            ReadDb::Sqlite(store) => {
                ProjectionTx::Sqlite(store.writer().begin_with("BEGIN IMMEDIATE").await?)
            }
        })
    }
}

/// The transaction a projector applies a batch in (with the checkpoint's move).
pub enum ProjectionTx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl ProjectionTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            ProjectionTx::Postgres(tx) => tx.commit().await,
            ProjectionTx::Sqlite(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            ProjectionTx::Postgres(tx) => tx.rollback().await,
            ProjectionTx::Sqlite(tx) => tx.rollback().await,
        }
    }
}
