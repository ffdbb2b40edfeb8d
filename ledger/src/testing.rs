//! Test support: every test gets a ledger in a schema of its own, so no test sees another's
//! data. Enabled by the `testing` feature.

use crate::{DatabaseConfig, LedgerStore, PgEventStore, SqliteEventStore, StoreError};

/// Where tests put their schemas: `RUNLEDGER_TEST_DATABASE_URL`, else the local default.
pub fn test_database_url() -> String {
    std::env::var("RUNLEDGER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/runledger_test".to_owned())
}

/// A migrated ledger in a fresh schema. Call [`TestLedger::drop_schema`] at the end of a test
/// that passed; a failed test leaves its schema behind for inspection.
pub struct TestLedger {
    pub store: PgEventStore,
    pub config: DatabaseConfig,
}

/// Test schemas older than this are left over from failed runs and are dropped.
const STALE_AFTER_MS: u64 = 60 * 60 * 1000;

impl TestLedger {
    pub async fn new() -> Result<Self, StoreError> {
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let config = DatabaseConfig::new(test_database_url()).with_schema(schema);
        let store = PgEventStore::connect(&config).await?;
        store.migrate().await?;
        static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
            drop_stale_schemas(&store).await?;
        }
        Ok(Self { store, config })
    }

    pub fn schema(&self) -> &str {
        self.config.schema.as_deref().unwrap_or("public")
    }

    /// Another store on the same schema, as a second process would have (own pool, own cache).
    pub async fn second_store(&self) -> Result<PgEventStore, StoreError> {
        PgEventStore::connect(&self.config).await
    }

    /// Drops another schema a test created next to this one (e.g. through the CLI).
    pub async fn drop_other_schema(&self, schema: &str) -> Result<(), StoreError> {
        if !schema.starts_with(self.schema()) {
            return Err(StoreError::InvalidRequest(format!(
                "`{schema}` is not this test's schema"
            )));
        }
        drop_schema_named(&self.store, schema).await
    }

    pub async fn drop_schema(self) -> Result<(), StoreError> {
        drop_schema_named(&self.store, self.schema()).await?;
        self.store.pool().close().await;
        Ok(())
    }
}

/// Drops `t_<uuidv7>` schemas created more than an hour ago (the UUIDv7 holds its creation time),
/// so failed runs do not pile up in the test database.
async fn drop_stale_schemas(store: &PgEventStore) -> Result<(), StoreError> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'")
            .fetch_all(store.pool())
            .await
            .map_err(StoreError::Database)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for name in names {
        let created_ms = name
            .strip_prefix("t_")
            .and_then(|hex| uuid::Uuid::try_parse(hex.split('_').next().unwrap_or(hex)).ok())
            .and_then(|id| id.get_timestamp())
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                secs * 1000 + u64::from(nanos) / 1_000_000
            });
        if created_ms.is_some_and(|c| now_ms.saturating_sub(c) > STALE_AFTER_MS) {
            // Best effort: another test process may be dropping it too.
            let _ = drop_schema_named(store, &name).await;
        }
    }
    Ok(())
}

async fn drop_schema_named(store: &PgEventStore, schema: &str) -> Result<(), StoreError> {
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    // A test's engine may still be appending while its schema is dropped: the DROP can then
    // lose a deadlock to it, which is worth a few more tries.
    let mut attempt = 0;
    loop {
        let result = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(store.pool())
            .await
            .map_err(StoreError::Database);
        match result {
            Err(e) if e.is_transient() && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            other => return other.map(|_| ()),
        }
    }
}

/// A migrated SQLite ledger in a fresh temporary directory. Call [`TestSqliteLedger::remove`]
/// at the end of a test that passed; a failed test leaves its file behind for inspection.
pub struct TestSqliteLedger {
    pub store: SqliteEventStore,
    dir: std::path::PathBuf,
}

impl TestSqliteLedger {
    pub async fn new() -> Result<Self, StoreError> {
        let dir =
            std::env::temp_dir().join(format!("runledger-test-{}", uuid::Uuid::now_v7().simple()));
        let store = SqliteEventStore::open(dir.join("ledger.db")).await?;
        store.migrate().await?;
        Ok(Self { store, dir })
    }

    /// The ledger file.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.join("ledger.db")
    }

    /// The directory the file is in (tests may put other files there).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Another store on the same file, as a second process would have (own connections).
    pub async fn second_store(&self) -> Result<SqliteEventStore, StoreError> {
        SqliteEventStore::open(self.path()).await
    }

    /// Closes the store and deletes the directory.
    pub async fn remove(self) -> Result<(), StoreError> {
        self.store.close().await;
        std::fs::remove_dir_all(&self.dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(())
    }
}

/// The backends a test of the engine or the API runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A fresh migrated ledger on either backend, held as the binary holds it (a [`LedgerStore`]):
/// a [`TestLedger`] schema or a [`TestSqliteLedger`] file. Tests of the engine's rules and of
/// the HTTP API take a [`Backend`] and build one of these, so the same test runs on both.
/// Call [`TestBackend::finish`] at the end of a test that passed.
pub struct TestBackend {
    pub store: LedgerStore,
    fixture: Fixture,
}

enum Fixture {
    Postgres(TestLedger),
    Sqlite(TestSqliteLedger),
}

impl TestBackend {
    pub async fn new(backend: Backend) -> Result<Self, StoreError> {
        Ok(match backend {
            Backend::Postgres => {
                let ledger = TestLedger::new().await?;
                let store =
                    LedgerStore::Postgres(PgEventStore::from_pool(ledger.store.pool().clone()));
                Self {
                    store,
                    fixture: Fixture::Postgres(ledger),
                }
            }
            Backend::Sqlite => {
                let ledger = TestSqliteLedger::new().await?;
                let store = LedgerStore::Sqlite(ledger.store.share());
                Self {
                    store,
                    fixture: Fixture::Sqlite(ledger),
                }
            }
        })
    }

    pub fn backend(&self) -> Backend {
        match self.fixture {
            Fixture::Postgres(_) => Backend::Postgres,
            Fixture::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Another store on the same ledger, as a second process would have (own connections).
    pub async fn second_store(&self) -> Result<LedgerStore, StoreError> {
        Ok(match &self.fixture {
            Fixture::Postgres(ledger) => LedgerStore::Postgres(ledger.second_store().await?),
            Fixture::Sqlite(ledger) => LedgerStore::Sqlite(ledger.second_store().await?),
        })
    }

    /// The PostgreSQL schema, for tests that reach past the trait.
    pub fn postgres(&self) -> Option<&TestLedger> {
        match &self.fixture {
            Fixture::Postgres(ledger) => Some(ledger),
            Fixture::Sqlite(_) => None,
        }
    }

    /// Events stored (all streams), counted with SQL.
    pub async fn count_events(&self) -> Result<i64, StoreError> {
        match &self.fixture {
            Fixture::Postgres(ledger) => sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(ledger.store.pool())
                .await
                .map_err(StoreError::Database),
            Fixture::Sqlite(ledger) => sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(ledger.store.readers())
                .await
                .map_err(StoreError::Database),
        }
    }

    /// Removes the ledger (drops the schema or deletes the file).
    pub async fn finish(self) -> Result<(), StoreError> {
        match self.fixture {
            Fixture::Postgres(ledger) => ledger.drop_schema().await,
            Fixture::Sqlite(ledger) => ledger.remove().await,
        }
    }
}

/// What the conformance suite needs of a backend: a fresh migrated ledger, a second handle on
/// it as another process would have, and a few raw operations the trait does not offer.
/// Failures panic: these are test fixtures.
#[allow(async_fn_in_trait)]
pub trait Harness: Sized {
    type Store: crate::EventStore + crate::import::StreamImporter + 'static;
    async fn new() -> Self;
    fn store(&self) -> &Self::Store;
    async fn second_store(&self) -> Self::Store;
    /// Events stored, counted with SQL.
    async fn count_events(&self) -> i64;
    /// Runs a raw statement against the ledger's tables.
    async fn execute(&self, sql: &'static str) -> Result<(), sqlx::Error>;
    /// Migrates again, from this handle.
    async fn migrate(&self) -> Result<usize, StoreError>;
    /// Migrates again, from a second handle.
    async fn migrate_second(&self) -> Result<usize, StoreError>;
    /// Removes the ledger (schema or file).
    async fn finish(self);
}

/// [`Harness`] on PostgreSQL: a [`TestLedger`] schema.
pub struct PgHarness(TestLedger);

impl Harness for PgHarness {
    type Store = PgEventStore;

    async fn new() -> Self {
        Self(TestLedger::new().await.expect("test schema"))
    }

    fn store(&self) -> &PgEventStore {
        &self.0.store
    }

    async fn second_store(&self) -> PgEventStore {
        self.0.second_store().await.expect("second store")
    }

    async fn count_events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(self.0.store.pool())
            .await
            .expect("count events")
    }

    async fn execute(&self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql)
            .execute(self.0.store.pool())
            .await
            .map(|_| ())
    }

    async fn migrate(&self) -> Result<usize, StoreError> {
        self.0.store.migrate().await
    }

    async fn migrate_second(&self) -> Result<usize, StoreError> {
        self.second_store().await.migrate().await
    }

    async fn finish(self) {
        self.0.drop_schema().await.expect("drop the test schema");
    }
}

/// [`Harness`] on SQLite: a [`TestSqliteLedger`] file.
pub struct SqliteHarness(TestSqliteLedger);

impl Harness for SqliteHarness {
    type Store = SqliteEventStore;

    async fn new() -> Self {
        Self(TestSqliteLedger::new().await.expect("test ledger file"))
    }

    fn store(&self) -> &SqliteEventStore {
        &self.0.store
    }

    async fn second_store(&self) -> SqliteEventStore {
        self.0.second_store().await.expect("second store")
    }

    async fn count_events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(self.0.store.readers())
            .await
            .expect("count events")
    }

    async fn execute(&self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql)
            .execute(self.0.store.writer())
            .await
            .map(|_| ())
    }

    async fn migrate(&self) -> Result<usize, StoreError> {
        self.0.store.migrate().await
    }

    async fn migrate_second(&self) -> Result<usize, StoreError> {
        let other = self.second_store().await;
        let applied = other.migrate().await;
        other.close().await;
        applied
    }

    async fn finish(self) {
        self.0.remove().await.expect("remove the test ledger");
    }
}
