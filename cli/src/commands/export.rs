use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::export::{ExportScope, export_signed};
use runledger_ledger::sign;
use tokio::io::AsyncWriteExt;

use crate::{Failure, GlobalArgs};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["run", "stream", "all"])))]
pub struct ExportArgs {
    /// Export one run (its stream `run-<ID>`).
    #[arg(long, value_name = "ID")]
    run: Option<RunId>,
    /// Export one stream by id.
    #[arg(long, value_name = "STREAM")]
    stream: Option<String>,
    /// Export every stream in the ledger.
    #[arg(long)]
    all: bool,
    /// Write to FILE (atomically: a temporary file renamed when complete) instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Sign the manifest with this secret key (from `keys generate`): adds a last line that
    /// `verify --key FILE.pub` checks.
    #[arg(long, value_name = "KEYFILE")]
    sign: Option<PathBuf>,
}

pub async fn run(global: &GlobalArgs, args: ExportArgs) -> Result<(), Failure> {
    let scope = match (args.run, args.stream, args.all) {
        (Some(run), _, _) => ExportScope::Stream(StreamId::for_run(run)),
        (_, Some(stream), _) => ExportScope::Stream(
            StreamId::new(stream).map_err(|e| Failure::usage(format!("--stream: {e}")))?,
        ),
        _ => ExportScope::All,
    };
    // The key is read before anything is written, so a bad key file leaves no output.
    let key = args
        .sign
        .as_deref()
        .map(sign::read_signing_key)
        .transpose()
        .map_err(Failure::from)?;
    let store = super::open_existing(global).await?;
    let show_progress = std::io::stderr().is_terminal();
    let progress = |done: u64, total: u64| {
        if show_progress {
            errout!("\rexporting: {done}/{total} events");
        }
    };
    let summary = match &args.output {
        None => {
            let mut out = tokio::io::stdout();
            let summary = export_signed(&store, &scope, &mut out, progress, key.as_ref())
                .await
                .map_err(Failure::from_coded)?;
            out.flush()
                .await
                .map_err(|e| Failure::caused("writing the export", e).with_code("io_error"))?;
            summary
        }
        Some(path) => {
            let tmp = path.with_extension("jsonl.tmp");
            let file = tokio::fs::File::create(&tmp).await.map_err(|e| {
                Failure::caused(format!("cannot create {}", tmp.display()), e).with_code("io_error")
            })?;
            let mut out = tokio::io::BufWriter::new(file);
            let result = export_signed(&store, &scope, &mut out, progress, key.as_ref()).await;
            let summary = match result {
                Ok(summary) => summary,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(Failure::from_coded(e));
                }
            };
            let written = match out.flush().await {
                Ok(()) => out.into_inner().sync_all().await,
                Err(e) => Err(e),
            };
            written.map_err(|e| {
                Failure::caused(format!("writing {}", tmp.display()), e).with_code("io_error")
            })?;
            tokio::fs::rename(&tmp, path).await.map_err(|e| {
                Failure::caused(
                    format!("cannot move {} to {}", tmp.display(), path.display()),
                    e,
                )
                .with_code("io_error")
            })?;
            summary
        }
    };
    if show_progress {
        errln!();
    }
    let target = args
        .output
        .as_ref()
        .map_or("stdout".to_owned(), |p| p.display().to_string());
    errln!(
        "exported {} event(s) in {} stream(s) and {} blob(s) to {target}",
        summary.events,
        summary.streams,
        summary.blobs
    );
    Ok(())
}
