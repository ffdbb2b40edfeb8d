use std::path::PathBuf;

use clap::Args;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::export::{ExportScope, export};
use runledger_ledger::export_file::read_export_decoded;
use runledger_orchestrator::replay::{ReplayOutcome, replay_decoded};
use serde_json::json;

use crate::{Failure, GlobalArgs};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "run"])))]
pub struct ReplayArgs {
    /// An export (`runledger export`), or `-` for standard input; needs no database. Every run
    /// stream in it is replayed; other streams are skipped.
    file: Option<PathBuf>,
    /// Replay a run from the ledger instead.
    #[arg(long, value_name = "ID")]
    run: Option<RunId>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &GlobalArgs, args: ReplayArgs) -> Result<(), Failure> {
    let json = args.json;
    match replay(global, args).await {
        // Under --json a failure to replay at all is the same kind of object on stdout.
        Err(failure) if json && !failure.is_silent() => {
            outln!(
                "{}",
                json!({ "diverged": null, "error": { "code": failure.code(), "message": failure.chain().join(": ") } })
            );
            Err(Failure::silent())
        }
        other => other,
    }
}

async fn replay(global: &GlobalArgs, args: ReplayArgs) -> Result<(), Failure> {
    let bytes = match (&args.file, args.run) {
        (Some(path), _) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)?;
            bytes
        }
        (Some(path), _) => std::fs::read(path).map_err(|e| {
            Failure::caused(format!("cannot read {}", path.display()), e)
                .with_code("file_unreadable")
        })?,
        (None, Some(run)) => {
            let store = super::open_existing(global).await?;
            let mut bytes = Vec::new();
            export(
                &store,
                &ExportScope::Stream(StreamId::for_run(run)),
                &mut bytes,
                |_, _| {},
            )
            .await
            .map_err(Failure::from_coded)?;
            bytes
        }
        (None, None) => return Err(Failure::new("name an export FILE or --run ID")),
    };
    let file =
        read_export_decoded(&bytes).map_err(|e| Failure::from(e).with_code("invalid_export"))?;
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut diverged = false;
    // The export keeps each stream's events together: one slice per stream.
    let mut decoded = file.decoded.into_iter();
    for stream in file.events.chunk_by(|a, b| a.stream_id == b.stream_id) {
        let payloads: Vec<_> = decoded.by_ref().take(stream.len()).collect();
        let id = stream[0].stream_id.as_str();
        if !id.starts_with("run-") {
            skipped.push(id.to_owned());
            continue;
        }
        let outcome = replay_decoded(stream, payloads)
            .map_err(|e| Failure::caused(id.to_owned(), e).with_code("replay_failed"))?;
        diverged |= matches!(outcome, ReplayOutcome::Diverged(_));
        runs.push(outcome);
        if diverged {
            break;
        }
    }
    if args.json {
        outln!(
            "{}",
            json!({ "diverged": diverged, "runs": runs, "skipped_streams": skipped })
        );
    } else {
        for outcome in &runs {
            print_outcome(outcome);
        }
        if !skipped.is_empty() {
            outln!("skipped {} stream(s) that are not runs", skipped.len());
        }
    }
    if diverged {
        Err(Failure::silent())
    } else {
        Ok(())
    }
}

fn print_outcome(outcome: &ReplayOutcome) {
    match outcome {
        ReplayOutcome::Matched(s) => outln!(
            "ok: run {} replays with 0 divergence: {} event(s) compared, {} input event(s) fed, {} step(s); {}",
            s.run_id,
            s.events_compared,
            s.inputs_fed,
            s.steps,
            s.status
        ),
        ReplayOutcome::Diverged(d) => {
            outln!(
                "run {} diverges at stream version {} (request {}), first at {}",
                d.run_id,
                d.stream_version,
                d.request_id,
                d.path
            );
            outln!("  recorded: {}", d.recorded);
            outln!("  replayed: {}", d.replayed);
            outln!("  ({} event(s) matched before it)", d.events_compared);
        }
    }
}
