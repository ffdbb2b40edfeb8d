use std::path::PathBuf;

use clap::Args;
use runledger_ledger::import::import_export;

use crate::{Failure, GlobalArgs};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["files", "dir"])))]
pub struct ImportArgs {
    /// Export files (`runledger export`) to load, in order.
    files: Vec<PathBuf>,
    /// Also every `*.jsonl` file in DIR, in name order (a backfill; run it again to resume).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub async fn run(global: &GlobalArgs, args: ImportArgs) -> Result<(), Failure> {
    let mut files = args.files;
    if let Some(dir) = &args.dir {
        let unreadable =
            |e| Failure::caused(format!("--dir {}", dir.display()), e).with_code("file_unreadable");
        let entries = std::fs::read_dir(dir).map_err(unreadable)?;
        let mut found = Vec::new();
        for entry in entries {
            let path = entry.map_err(unreadable)?.path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                found.push(path);
            }
        }
        found.sort();
        files.extend(found);
    }
    let store = super::open(global).await?;
    let (mut written, mut unchanged) = (0u64, 0usize);
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| {
            Failure::caused(format!("cannot read {}", file.display()), e)
                .with_code("file_unreadable")
        })?;
        let summary = import_export(&store, &bytes).await.map_err(|e| {
            Failure::caused(file.display().to_string(), e).with_code("import_refused")
        })?;
        outln!(
            "{}: {} stream(s), {} event(s) written, {} stream(s) already there",
            file.display(),
            summary.streams,
            summary.written,
            summary.unchanged
        );
        written += summary.written;
        unchanged += summary.unchanged;
    }
    // The read models follow the imported events now, not at the next `serve` or `dev`.
    let projections =
        super::projections::select(runledger_projections::ReadDb::from(&store), None)?;
    projections
        .catch_up()
        .await
        .map_err(|e| Failure::coded("projections did not catch up", e))?;
    let caught_up = "; projections caught up";
    outln!(
        "imported {written} event(s) from {} file(s) ({unchanged} stream(s) already there){caught_up}",
        files.len()
    );
    Ok(())
}
