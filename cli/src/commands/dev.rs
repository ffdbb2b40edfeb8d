//! `runledger dev`: one process that drives every run of the ledger, for a laptop. On a SQLite
//! file (the default) it is the file's one engine (it holds `<file>.engine.lock`): it drives
//! again, at once, the runs a killed process left unfinished, and then every run that
//! `runledger run` records without `--wait` or a control from another process reopens (it
//! looks in the run index every `--scan-ms`). Ctrl-C (or SIGTERM) lets the work it handed out
//! report, then stops; what is unfinished is taken again by the next `dev` (or `run --wait`)
//! on the file. With `--listen ADDR` it also serves the HTTP API, live events (SSE) and the
//! Studio console at `/` on the file, with the projections kept live beside it, and prints the
//! URL. On PostgreSQL it is `runledger serve` with in-process executors.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use runledger_ledger::{LedgerLocation, LedgerStore};

use super::engine::{Dispatch, ExecArgs, SqliteRole};
use crate::{Failure, GlobalArgs};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory of flowcharts that `flowchart` (sub-flow) nodes name.
    #[arg(long, value_name = "DIR")]
    flowcharts: Option<PathBuf>,
    /// How often to look for runs to drive that another process recorded (`runledger run`
    /// without `--wait`) or reopened (a control on an ended run).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    scan_ms: u64,
    /// On Ctrl-C or SIGTERM, how long to wait for work handed to executors to report before
    /// stopping anyway (the next start runs that work again).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    drain_timeout_s: u64,
    /// Address of the HTTP API (docs/api.md), its live events and the Studio console at `/`
    /// (docs/studio.md), e.g. 127.0.0.1:8420. No TLS: keep it on loopback.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    exec: ExecArgs,
}

pub async fn run(global: &GlobalArgs, args: DevArgs) -> Result<(), Failure> {
    let location = global.location()?;
    let path = match &location {
        LedgerLocation::Postgres(_) => {
            let dispatch = args.exec.dispatch.unwrap_or(Dispatch::Inprocess);
            let serve = super::serve::ServeArgs::for_dev(
                args.flowcharts,
                args.listen,
                args.drain_timeout_s,
                ExecArgs {
                    dispatch: Some(dispatch),
                    ..args.exec
                },
            );
            return super::serve::run(global, serve).await;
        }
        LedgerLocation::Sqlite(path) => path.clone(),
    };
    // Refused before the file is opened, so a refused command creates no ledger.
    if args.exec.dispatch == Some(Dispatch::Nats) {
        return Err(super::needs_postgres(&location, "`--dispatch nats`"));
    }
    if args.exec.kube_settings.is_some() {
        return Err(super::needs_postgres(
            &location,
            "--kube-settings (executors as Kubernetes Jobs)",
        ));
    }
    // Bound before the file is opened: an address in use writes nothing.
    let listener = match args.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::caused(format!("--listen: cannot listen on {addr}"), e)
                .with_code("listen_failed")
        })?),
        None => None,
    };
    let LedgerStore::Sqlite(store) = super::open(global).await? else {
        return Err(Failure::new(
            "the ledger URL named SQLite but opened another backend",
        ));
    };
    let built = super::engine::build_sqlite(
        store,
        &args.exec,
        args.flowcharts,
        &global.rag_data_dir,
        SqliteRole::Drives,
    )
    .await?;
    let engine = built.engine.clone();
    let mut refused = HashSet::new();
    let resumed = super::engine::take_unfinished(&engine, &mut refused).await?;
    errln!(
        "runledger dev: ledger file {}; resumed {resumed} unfinished run(s); drives the runs `runledger run FLOW` records here (Ctrl-C stops)",
        path.display()
    );
    let api = match listener {
        Some(listener) => Some(spawn_api(listener, &engine, global)?),
        None => {
            errln!(
                "runledger dev: no HTTP API (add --listen 127.0.0.1:8420 for it and the Studio console); follow runs with `runledger runs show RUN`"
            );
            None
        }
    };
    let scan = Duration::from_millis(args.scan_ms.max(50));
    let stop = super::serve::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(scan) => {
                match super::engine::take_unfinished(&engine, &mut refused).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(runs = n, "took runs recorded by another process"),
                    Err(e) => tracing::warn!(error = %e.chain().join(": "), "cannot read the run index; trying again"),
                }
            }
        }
    }
    // No new starts over HTTP while the engine drains (the projections stop with the API).
    if let Some(api) = &api {
        api.abort();
    }
    let driven = engine.driven();
    errln!("runledger dev: stopping ({driven} run(s) driven here)");
    built.drain(Duration::from_secs(args.drain_timeout_s)).await;
    built.shutdown().await?;
    engine.store().close().await;
    errln!("runledger dev: stopped; unfinished runs resume when dev starts again");
    Ok(())
}

/// Serves the HTTP API, its live events and the Studio console on the SQLite file, with the
/// projections running live beside it; prints the URL to open.
fn spawn_api(
    listener: tokio::net::TcpListener,
    engine: &runledger_orchestrator::Engine<LedgerStore>,
    global: &GlobalArgs,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, Failure> {
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::caused("--listen", e).with_code("listen_failed"))?;
    let config = runledger_api::ApiConfig {
        run_projections: true,
        ..runledger_api::ApiConfig::for_serve(&global.nats_url)
    }
    .with_rag_data_dir(&global.rag_data_dir);
    let state = runledger_api::ApiState::for_engine(engine.clone(), config);
    if state.config().token.is_none() && !bound.ip().is_loopback() {
        tracing::warn!(%bound, "the HTTP API listens beyond loopback without RUNLEDGER_API_TOKEN: anyone who reaches it can start and control runs");
    }
    errln!("runledger dev: API and Studio console on http://{bound}/");
    Ok(tokio::spawn(runledger_api::serve(listener, state)))
}
