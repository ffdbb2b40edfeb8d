use crate::{Failure, GlobalArgs};

pub async fn run(global: &GlobalArgs) -> Result<(), Failure> {
    let store = super::connect(global).await?;
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
