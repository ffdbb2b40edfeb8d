pub mod check;
pub mod engine;
pub mod executor;
pub mod export;
pub mod migrate;
pub mod models;
pub mod projections;
pub mod run;
pub mod runs;
pub mod serve;
pub mod status;
pub mod tools;
pub mod validate;
pub mod verify;

use runledger_ledger::{PgEventStore, postgres::redact};

use crate::{Failure, GlobalArgs};

/// Connects to the ledger, naming the (password-redacted) URL when that fails.
pub async fn connect(global: &GlobalArgs) -> Result<PgEventStore, Failure> {
    PgEventStore::connect(&global.database())
        .await
        .map_err(|e| {
            let code = match e {
                runledger_ledger::StoreError::Database(_) => "database_unavailable",
                ref other => other.code(),
            };
            Failure::caused(format!("cannot open the ledger at {}", redact(&global.database_url)), e).with_code(code)
        })
}
