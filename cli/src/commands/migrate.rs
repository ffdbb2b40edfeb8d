use crate::{Failure, GlobalArgs};

pub async fn run(global: &GlobalArgs) -> Result<(), Failure> {
    let location = global.location()?;
    let store = runledger_ledger::LedgerStore::open(&location)
        .await
        .map_err(|e| {
            Failure::coded(
                format!("cannot open the ledger at {}", location.describe()),
                e,
            )
        })?;
    let applied = store
        .migrate()
        .await
        .map_err(|e| Failure::coded("migrating", e))?;
    match applied {
        0 => outln!("ledger schema is up to date"),
        n => outln!("applied {n} migration(s)"),
    }
    Ok(())
}
