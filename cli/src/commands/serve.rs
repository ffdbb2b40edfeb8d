//! `runledger serve`: the engine as a long-lived service, one of any number of instances on a
//! ledger. It drives the runs whose leases it holds: runs started through it, and runs of the
//! run index that nobody drives (started by `run` without `--wait`, reopened by an operator, or
//! left by an instance that died or drained), up to `--max-active-runs`. On SIGINT or SIGTERM it
//! drains: takes nothing new, lets the work it handed out report, and hands its leases back.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::engine::ExecArgs;
use crate::{Failure, GlobalArgs};

/// How often the projectors look at the ledger when no notification woke them.
const PROJECTION_BACKSTOP_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of flowcharts that `flowchart` (sub-flow) nodes name.
    #[arg(long, value_name = "DIR")]
    flowcharts: Option<PathBuf>,
    /// How often to look in the run index for runs that nobody drives (new runs also wake it
    /// at once through NOTIFY; this bounds how soon an expired lease is taken over).
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    scan_ms: u64,
    /// Most runs this instance drives at once; the others are left to other instances.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        env = "RUNLEDGER_MAX_ACTIVE_RUNS"
    )]
    max_active_runs: usize,
    /// On SIGTERM, how long to wait for work handed to in-process executors to report before
    /// handing the runs back anyway (their next owner dispatches that work again).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    drain_timeout_s: u64,
    /// Address of the HTTP API (docs/api.md) and the Studio console at `/` (docs/studio.md)
    /// [default: 127.0.0.1:8420; when that is taken, serve runs without the API and says so].
    /// It has no TLS: keep it on loopback, or put a TLS proxy in front and set
    /// RUNLEDGER_API_TOKEN (then API requests need `Authorization: Bearer <token>` or a Studio
    /// session).
    #[arg(long, value_name = "ADDR", env = "RUNLEDGER_API_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    exec: ExecArgs,
}

impl ServeArgs {
    /// `runledger dev` on PostgreSQL: serve with its defaults, the given API address and
    /// executors.
    pub fn for_dev(
        flowcharts: Option<PathBuf>,
        listen: Option<std::net::SocketAddr>,
        drain_timeout_s: u64,
        exec: ExecArgs,
    ) -> Self {
        Self {
            flowcharts,
            scan_ms: 2000,
            max_active_runs: 1000,
            drain_timeout_s,
            listen,
            exec,
        }
    }
}

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> Result<(), Failure> {
    // Production default: with a NATS URL in the environment, work goes to executors.
    let dispatch =
        args.exec
            .dispatch
            .unwrap_or(if std::env::var_os("RUNLEDGER_NATS_URL").is_some() {
                super::engine::Dispatch::Nats
            } else {
                super::engine::Dispatch::Inprocess
            });
    if args.max_active_runs == 0 {
        return Err(Failure::new("--max-active-runs: must be at least 1"));
    }
    let role = super::engine::Role::Serve {
        max_active_runs: args.max_active_runs,
        look_interval: Duration::from_millis(args.scan_ms.max(50)),
    };
    let mut built =
        super::engine::build(global, &args.exec, args.flowcharts.clone(), dispatch, role).await?;
    let engine = built.engine.clone();
    // The read models follow the ledger beside the engine (LISTEN/NOTIFY, polling as backstop).
    // NOTIFY wakes them after appends; the poll is only a backstop, kept rare so that an idle
    // serve costs next to nothing.
    let projectors = runledger_projections::Projections::new(engine.store())
        .with_poll_interval(PROJECTION_BACKSTOP_POLL);
    let projections =
        tokio::spawn(async move { projectors.run_live(std::future::pending()).await });
    // The HTTP API beside the engine (its projections are the ones spawned above).
    let api = runledger_api::spawn_for_serve(
        args.listen,
        engine.clone(),
        &global.nats_url,
        &global.rag_data_dir,
    )
    .await
    .map_err(|e| Failure::from(e).with_code("listen_failed"))?;
    built.spawn_keeper().await?;
    if let Some(leases) = &built.leases {
        let config = leases.config();
        errln!(
            "runledger serve: instance {}; drives up to {} run(s) under leases of {} ms",
            config.instance_id,
            args.max_active_runs,
            config.ttl.as_millis()
        );
    }
    shutdown_signal().await;
    let driven = engine.driven();
    errln!("runledger serve: draining ({driven} run(s) driven here)");
    built.drain(Duration::from_secs(args.drain_timeout_s)).await;
    built.shutdown().await?;
    projections.abort();
    if let Some(api) = &api {
        api.abort();
    }
    errln!("runledger serve: stopped; {driven} unfinished run(s) handed back to other instances");
    Ok(())
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
