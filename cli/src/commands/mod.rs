pub mod check;
pub mod engine;
pub mod executor;
pub mod export;
pub mod import;
pub mod keys;
pub mod migrate;
pub mod models;
pub mod projections;
pub mod rag;
pub mod replay;
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
            Failure::caused(
                format!("cannot open the ledger at {}", redact(&global.database_url)),
                e,
            )
            .with_code(code)
        })
}

/// An error and its sources on one line (`Display` of the outer error alone drops the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
