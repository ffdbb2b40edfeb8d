use crate::{Failure, GlobalArgs};

pub async fn run(global: &GlobalArgs) -> Result<(), Failure> {
    let store = super::connect(global).await?;
    let applied = store
        .migrate()
        .await
        .map_err(|e| Failure::new(format!("migrating: {e}")))?;
    match applied {
        0 => println!("ledger schema is up to date"),
        n => println!("applied {n} migration(s)"),
    }
    Ok(())
}
