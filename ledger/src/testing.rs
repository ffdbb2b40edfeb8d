//! Test support: every test gets a ledger in a schema of its own, so no test sees another's
//! data. Enabled by the `testing` feature.

use crate::{DatabaseConfig, PgEventStore, StoreError};

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

impl TestLedger {
    pub async fn new() -> Result<Self, StoreError> {
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let config = DatabaseConfig::new(test_database_url()).with_schema(schema);
        let store = PgEventStore::connect(&config).await?;
        store.migrate().await?;
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
            return Err(StoreError::InvalidRequest(format!("`{schema}` is not this test's schema")));
        }
        let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.store.pool())
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(())
    }

    pub async fn drop_schema(self) -> Result<(), StoreError> {
        let sql = format!("DROP SCHEMA \"{}\" CASCADE", self.schema());
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.store.pool())
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        self.store.pool().close().await;
        Ok(())
    }
}
