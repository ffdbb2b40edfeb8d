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
    /// Address of the HTTP API (docs/api.md) [default: 127.0.0.1:8420; when that is taken,
    /// serve runs without the API and says so]. It has no TLS: keep it on loopback, or put a TLS
    /// proxy in front and set RUNLEDGER_API_TOKEN (then POST/PUT/PATCH/DELETE need
    /// `Authorization: Bearer <token>`).
    #[arg(long, value_name = "ADDR", env = "RUNLEDGER_API_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    exec: ExecArgs,
}

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), Failure> {
    // Production default: with a NATS URL in the environment, work goes to executors.
    let dispatch = args.exec.dispatch.unwrap_or(if std::env::var_os("RUNLEDGER_NATS_URL").is_some() {
        super::engine::Dispatch::Nats
    } else {
        super::engine::Dispatch::Inprocess
    });
    let mut built = super::engine::build(global, &args.exec, args.flowcharts.clone(), dispatch).await?;
    built.spawn_outbox().await?;
    let engine = built.engine.clone();
    // The read models follow the ledger beside the engine (LISTEN/NOTIFY, polling as backstop).
    let projections = runledger_projections::spawn_live(engine.store().pool().clone());
    // The HTTP API beside the engine (its projections are the ones spawned above).
    let api = runledger_api::spawn_for_serve(args.listen, engine.clone(), &global.nats_url).await.map_err(Failure::new)?;
    let resumed = engine.resume_unfinished().await.map_err(|e| Failure::coded("cannot resume runs", e))?;
    errln!("runledger serve: driving {resumed} unfinished run(s); scanning every {} ms", args.scan_ms);
    let mut scan = tokio::time::interval(Duration::from_millis(args.scan_ms.max(50)));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                errln!("runledger serve: stopping; unfinished runs resume on the next start");
                built.shutdown().await;
                projections.abort();
                if let Some(api) = &api {
                    api.abort();
                }
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

pub(crate) async fn shutdown_signal() {
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
