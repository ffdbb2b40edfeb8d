pub mod check;
pub mod dev;
pub mod engine;
pub mod executor;
pub mod export;
pub mod import;
pub mod keys;
pub mod mcp;
pub mod migrate;
pub mod models;
pub mod projections;
pub mod rag;
pub mod replay;
pub mod run;
pub mod runs;
pub mod serve;
pub mod status;
pub mod tool_args;
pub mod tools;
pub mod validate;
pub mod verify;

use runledger_ledger::{LedgerLocation, LedgerStore, PgEventStore, StoreError};

use crate::{Failure, GlobalArgs};

/// Opens the ledger the flags name (the SQLite file `./.runledger/ledger.db` when none is
/// named) and applies pending migrations, so every command finds its tables.
pub async fn open(global: &GlobalArgs) -> Result<LedgerStore, Failure> {
    let location = global.location()?;
    let store = LedgerStore::open(&location)
        .await
        .map_err(|e| cannot_open(&location, e))?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::coded("cannot migrate the ledger", e))?;
    Ok(store)
}

/// Opens an existing ledger for reading: a SQLite file that is not there is an error naming
/// it (reading a ledger never creates one).
pub async fn open_existing(global: &GlobalArgs) -> Result<LedgerStore, Failure> {
    if let LedgerLocation::Sqlite(path) = global.location()?
        && !path.exists()
    {
        return Err(Failure::new(format!(
            "no ledger file at {}: run a flowchart first, or name the ledger with --database-url",
            path.display()
        ))
        .with_code("ledger_not_found"));
    }
    open(global).await
}

/// Connects to the PostgreSQL ledger, for what only PostgreSQL offers (`what` names it); on
/// a SQLite ledger, an error saying so.
pub async fn connect(global: &GlobalArgs, what: &str) -> Result<PgEventStore, Failure> {
    let location = global.location()?;
    let LedgerLocation::Postgres(config) = &location else {
        return Err(needs_postgres(&location, what));
    };
    PgEventStore::connect(config)
        .await
        .map_err(|e| cannot_open(&location, e))
}

/// The error for a feature asked for on a SQLite ledger that needs PostgreSQL.
pub fn needs_postgres(location: &LedgerLocation, what: &str) -> Failure {
    Failure::new(format!(
        "{what} needs a PostgreSQL ledger (--database-url postgres://...); this ledger is {}",
        location.describe()
    ))
    .with_code("needs_postgres")
}

/// Naming the ledger (password redacted) when it cannot be opened.
fn cannot_open(location: &LedgerLocation, e: StoreError) -> Failure {
    let code = match e {
        StoreError::Database(_) => "database_unavailable",
        ref other => other.code(),
    };
    Failure::caused(
        format!("cannot open the ledger at {}", location.describe()),
        e,
    )
    .with_code(code)
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
