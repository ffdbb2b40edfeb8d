//! `runledger serve`: the engine as a long-lived service. On start it resumes every unfinished
//! run in the ledger; then it keeps looking for runs started elsewhere (`run` without `--wait`)
//! or reopened by an operator, until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::engine::ExecArgs;
use crate::{Failure, GlobalArgs};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of flowcharts that `flowchart` (sub-flow) nodes name.
    #[arg(long, value_name = "DIR")]
    flowcharts: Option<PathBuf>,
    /// How often to look for runs this engine does not drive yet.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    scan_ms: u64,
    #[command(flatten)]
    exec: ExecArgs,
}

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), Failure> {
    let engine = super::engine::build(global, &args.exec, args.flowcharts.clone()).await?;
    let resumed = engine.resume_unfinished().await.map_err(|e| Failure::new(format!("cannot resume runs: {e}")))?;
    eprintln!("runledger serve: driving {resumed} unfinished run(s); scanning every {} ms", args.scan_ms);
    let mut scan = tokio::time::interval(Duration::from_millis(args.scan_ms.max(50)));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                eprintln!("runledger serve: stopping; unfinished runs resume on the next start");
                return Ok(());
            }
            _ = scan.tick() => {
                if let Err(e) = engine.resume_unfinished().await {
                    tracing::warn!(error = %e, "scan for unfinished runs failed");
                }
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
