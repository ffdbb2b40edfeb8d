pub mod engine;
pub mod export;
pub mod migrate;
pub mod run;
pub mod runs;
pub mod serve;
pub mod status;
pub mod validate;
pub mod verify;

use runledger_ledger::{PgEventStore, postgres::redact};

use crate::{Failure, GlobalArgs};

/// Connects to the ledger, naming the (password-redacted) URL when that fails.
pub async fn connect(global: &GlobalArgs) -> Result<PgEventStore, Failure> {
    PgEventStore::connect(&global.database())
        .await
        .map_err(|e| Failure::new(format!("cannot open the ledger at {}: {e}", redact(&global.database_url))))
}
