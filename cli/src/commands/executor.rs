//! `runledger executor --class frontier|vllm`: an executor worker. Pulls node work of its
//! class from NATS JetStream, runs it (models of the registry over HTTP, or `scripted`),
//! publishes each result, and acks. SIGINT/SIGTERM drain it: it stops pulling and finishes
//! what it holds. It follows the model registry in the ledger: a model registered or
//! re-pointed while it runs is used from its next call on (docs/providers.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use runledger_contracts::agent_tool::ToolDomain;
use runledger_executor_gateway::worker::{WorkerConfig, run_worker};
use runledger_ledger::PgEventStore;
use runledger_orchestrator::agent::ToolRegistry;

use super::tool_args::ToolArgs;
use crate::{Failure, GlobalArgs};

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// Which work to take: `frontier` (hosted providers) or `vllm` (local OpenAI-compatible servers).
    #[arg(long, value_enum, value_name = "CLASS")]
    class: ExecutorClass,
    /// Node runs to run at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: usize,
    /// Name recorded as `NodeStarted.executor`; default: RUNLEDGER_EXECUTOR_ID, else host and pid.
    #[arg(long, value_name = "ID", env = "RUNLEDGER_EXECUTOR_ID")]
    executor_id: Option<String>,
    /// Exit after this many seconds without work (for Kubernetes Jobs); default: run until stopped.
    #[arg(long, value_name = "SECONDS")]
    exit_when_idle: Option<u64>,
    /// Scripted-model fixture (YAML or JSON: node id -> list of responses), as for `run`.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// How long JetStream waits for an ack or heartbeat before it redelivers (used when the
    /// consumer is first created; heartbeats go out every third of it).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    ack_wait_s: u64,
    #[command(flatten)]
    tools: ToolArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorClass {
    Frontier,
    Vllm,
}

impl ExecutorClass {
    fn as_str(self) -> &'static str {
        match self {
            ExecutorClass::Frontier => "frontier",
            ExecutorClass::Vllm => "vllm",
        }
    }
}

pub async fn run(global: &GlobalArgs, args: ExecutorArgs) -> Result<(), Failure> {
    if args.concurrency == 0 {
        return Err(Failure::usage("--concurrency: must be at least 1"));
    }
    let topology = super::engine::topology(global, args.ack_wait_s)?;
    let store = super::connect(global, "`runledger executor`").await?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::coded("cannot migrate the ledger", e))?;
    let rag = super::engine::rag_service(
        PgEventStore::from_pool(store.pool().clone()),
        &global.rag_data_dir,
    );
    let providers = Arc::new(
        super::engine::live_models(
            PgEventStore::from_pool(store.pool().clone()),
            args.script.as_deref(),
        )
        .await?
        .providers()
        .with_rag(rag.clone())
        .with_tools(tool_registry(rag, &args.tools).await?),
    );
    let js = super::engine::jetstream(global).await?;
    topology
        .ensure_streams(&js)
        .await
        .map_err(|e| Failure::coded("cannot create the JetStream streams", e))?;
    let executor_id = args.executor_id.clone().unwrap_or_else(default_executor_id);
    let config = WorkerConfig {
        executor_class: args.class.as_str().to_owned(),
        concurrency: args.concurrency,
        executor_id: executor_id.clone(),
        exit_when_idle: args.exit_when_idle.map(Duration::from_secs),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        super::serve::shutdown_signal().await;
        errln!("runledger executor: draining (finishing node runs in hand)");
        let _ = stop.send(true);
    });
    errln!(
        "runledger executor {executor_id}: class {}, {} at once, stream {}",
        args.class.as_str(),
        args.concurrency,
        topology.dispatch_stream()
    );
    let stats = run_worker(js, topology, config, providers, stopped)
        .await
        .map_err(|e| Failure::coded("executor", e))?;
    errln!(
        "runledger executor {executor_id}: stopped after {} node run(s) ({} expired, {} rejected, {} deferred, {} stopped by their run's end)",
        stats.ran,
        stats.expired,
        stats.rejected,
        stats.deferred,
        stats.stopped
    );
    Ok(())
}

fn default_executor_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "executor".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// The tool domains agent nodes run on this executor may call: the ones that act outside the
/// ledger (workspace, git, command, MCP) and RAG, which this executor serves for `rag` nodes
/// too. Ledger-backed domains (memory, workflow, ...) run only in the engine's process, so a
/// node that uses them must run there (docs/agents.md, "Where tools run"). One line per domain.
pub async fn tool_registry(
    rag: Arc<runledger_rag::Rag<PgEventStore>>,
    tools: &ToolArgs,
) -> Result<ToolRegistry, Failure> {
    let mut domains: Vec<Arc<dyn ToolDomain>> = super::engine::outside_domains(tools).await?;
    domains.push(runledger_rag::tools::RagTools::shared(rag));
    ToolRegistry::new(domains).map_err(|e| Failure::coded("cannot build the tool registry", e))
}
