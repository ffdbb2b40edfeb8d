//! Building the run engine the way `run` and `serve` use it: the ledger (migrated), the
//! in-process executor pool or the NATS gateway (dispatch and result intake), the models, and
//! sub-flows from a directory. On PostgreSQL the engine takes runs under leases; on a SQLite
//! file it is the only engine (an OS lock on `<file>.engine.lock` refuses a second one) and
//! owns every run (`Solo`), with the in-process executors only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runledger_contracts::agent_tool::ToolDomain;
use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_executor_gateway::dispatcher::NatsDispatcher;
use runledger_executor_gateway::intake::{IntakeSink, run_intake};
use runledger_executor_gateway::jobs::{fail_started_node_runs, launch_on_dispatch};
use runledger_executor_gateway::kube::{
    self, FailureReporter, JobLauncher, JobWatcher, KubeSettings,
};
use runledger_executor_gateway::live_models::{DEFAULT_MAX_AGE, LiveModels};
use runledger_executor_gateway::topology::Topology;
use runledger_ledger::leases::LeaseStore;
use runledger_ledger::sqlite::lock_file_path;
use runledger_ledger::{EventStore, LedgerStore, PgEventStore, SqliteEventStore};
use runledger_orchestrator::agent::ToolRegistry;
use runledger_orchestrator::agent_tools::{
    LateEngine, LedgerToolDeps, RunWaker, WakeOwner, ledger_domains,
};
use runledger_orchestrator::decide::{RemoteDispatch, Settings};
use runledger_orchestrator::engine::{Engine, EngineConfig, FlowchartSource, ResolveError};
use runledger_orchestrator::executor::{InProcessPool, NodeExecutor};
use runledger_orchestrator::lease::{LeaseConfig, Leases, Ownership, Solo};
use runledger_orchestrator::provider::{Script, ScriptedProvider};

use super::tool_args::ToolArgs;
use crate::{Failure, GlobalArgs};

/// Options shared by the commands that execute node runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Scripted-model fixture (YAML or JSON: node id -> list of responses); overrides the
    /// flowchart's `scripted` lists for the nodes it names.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// How many node runs the in-process executor runs at once.
    #[arg(long, value_name = "N", default_value_t = InProcessPool::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// How often an idle run checks the ledger for controls written by other processes.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub poll_ms: u64,
    /// Where `task` and `rag` node runs execute: in this process, or on `runledger executor`
    /// workers over NATS JetStream. Default: `inprocess` for `run`; for `serve`, `nats` when
    /// RUNLEDGER_NATS_URL is set.
    #[arg(long, value_enum, value_name = "WHERE")]
    pub dispatch: Option<Dispatch>,
    /// With `--dispatch nats`: how long published work may wait for an executor to take it
    /// before the node run times out (phase `dispatch`) and its retry policy applies.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub dispatch_timeout_s: u64,
    /// With `--dispatch nats`: how long JetStream waits for an ack or heartbeat before it
    /// redelivers a message (used when the consumers are first created).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub ack_wait_s: u64,
    /// With `--dispatch nats`: run executors as Kubernetes Jobs, launched on a run's first
    /// dispatch of each class (settings file: docs/kubernetes.md). A failed or evicted Job fails
    /// the node runs it had started with `infra_error`.
    #[arg(long, value_name = "FILE", env = "RUNLEDGER_KUBE_SETTINGS")]
    pub kube_settings: Option<PathBuf>,
    /// How long a run's lease lasts without renewal (renewed every third of it): how soon
    /// another instance takes over the runs of one that died. 500 to 600000.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 10_000,
        env = "RUNLEDGER_LEASE_TTL_MS"
    )]
    pub lease_ttl_ms: u64,
    /// Names this engine instance in run leases and `RunTakenOver` events
    /// [default: <host>-<pid>-<random>].
    #[arg(long, value_name = "ID", env = "RUNLEDGER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    #[command(flatten)]
    pub tools: ToolArgs,
}

impl ExecArgs {
    /// The lease settings of these flags, checked.
    fn lease_config(&self, role: &Role) -> Result<LeaseConfig, Failure> {
        if !(500..=600_000).contains(&self.lease_ttl_ms) {
            return Err(Failure::new(format!(
                "--lease-ttl-ms: {} is not between 500 and 600000",
                self.lease_ttl_ms
            )));
        }
        let instance_id = match &self.instance_id {
            Some(id) => {
                let ok =
                    !id.is_empty() && id.len() <= 200 && id.chars().all(|c| c.is_ascii_graphic());
                if !ok {
                    return Err(Failure::new(
                        "--instance-id: 1 to 200 printable ASCII characters without spaces",
                    ));
                }
                id.clone()
            }
            None => LeaseConfig::default_instance_id(),
        };
        let (takes_runs, max_active_runs, look_interval) = match role {
            Role::Serve {
                max_active_runs,
                look_interval,
            } => (true, *max_active_runs, *look_interval),
            Role::Cli => (false, usize::MAX, Duration::from_secs(2)),
        };
        Ok(LeaseConfig {
            instance_id,
            ttl: Duration::from_millis(self.lease_ttl_ms),
            max_active_runs,
            look_interval,
            takes_runs,
        })
    }
}

/// What the engine instance is for.
pub enum Role {
    /// `serve`: takes runs nobody drives from the run index, up to `max_active_runs`.
    Serve {
        max_active_runs: usize,
        look_interval: Duration,
    },
    /// `run`: drives only the run it starts (under its lease) and takes nothing else.
    Cli,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dispatch {
    Inprocess,
    Nats,
}

/// The engine and, with NATS dispatch, the gateway tasks feeding it.
pub struct Built<S: EventStore + 'static = LedgerStore> {
    pub engine: Engine<S>,
    /// The run leases (PostgreSQL); `None` on SQLite, where one engine owns every run.
    pub leases: Option<Arc<Leases>>,
    keeper: Option<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
    gateway: Option<Gateway>,
    /// SQLite: the OS lock that keeps other engines off the file while this one lives.
    _engine_lock: Option<std::fs::File>,
}

struct Gateway {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<S: EventStore + 'static> Built<S> {
    /// Registers the instance and keeps its leases (and, for `serve`, takes runs nobody
    /// drives) until [`Built::shutdown`]. Nothing to keep without leases.
    pub async fn spawn_keeper(&mut self) -> Result<(), Failure> {
        let Some(leases) = &self.leases else {
            return Ok(());
        };
        leases
            .renew()
            .await
            .map_err(|e| Failure::coded("cannot register the engine instance", e))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(runledger_orchestrator::lease::keep(
            Arc::clone(leases),
            self.engine.clone(),
            stopped,
        ));
        self.keeper = Some((stop, task));
        Ok(())
    }

    /// Stops taking runs, lets every driver finish the work it handed out (up to `patience`),
    /// and hands back the leases. Returns how many runs were handed back.
    pub async fn drain(&self, patience: Duration) -> usize {
        if let Some(leases) = &self.leases {
            leases.start_draining();
            if let Err(e) = leases.renew().await {
                tracing::warn!(error = %e, "cannot announce the drain; other instances take the runs when the leases run out");
            }
        }
        let stopped = self.engine.drain(patience).await;
        if stopped > 0 {
            tracing::warn!(
                runs = stopped,
                "drain ran out of time; in-flight work of these runs is dispatched again by their next owner"
            );
        }
        self.leases.as_ref().map_or(0, |l| l.held())
    }

    /// Stops the lease keeper and the gateway tasks, and hands back every lease; unacked
    /// reports are redelivered to the next engine.
    pub async fn shutdown(self) -> Result<usize, Failure> {
        if let Some((stop, task)) = self.keeper {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let released = match &self.leases {
            Some(leases) => leases
                .deregister()
                .await
                .map_err(|e| Failure::coded("cannot hand back the run leases", e)),
            None => Ok(0),
        };
        if let Some(gateway) = self.gateway {
            let _ = gateway.stop.send(true);
            for task in gateway.tasks {
                let _ = task.await;
            }
        }
        released
    }
}

/// The JetStream topology of `--nats-namespace`, with `--ack-wait-s`.
pub fn topology(global: &GlobalArgs, ack_wait_s: u64) -> Result<Topology, Failure> {
    let mut topology = Topology::in_namespace(&global.nats_namespace)
        .map_err(|e| Failure::coded("--nats-namespace", e))?;
    topology.ack_wait = Duration::from_secs(ack_wait_s.max(1));
    Ok(topology)
}

/// Connects to NATS JetStream, naming the URL when that fails.
pub async fn jetstream(global: &GlobalArgs) -> Result<async_nats::jetstream::Context, Failure> {
    runledger_executor_gateway::connect(&global.nats_url)
        .await
        .map_err(|e| {
            Failure::coded(
                format!(
                    "--nats-url {}",
                    runledger_executor_gateway::redact_nats_url(&global.nats_url)
                ),
                e,
            )
        })
}

/// Connects, applies pending migrations, and builds the engine; with `dispatch` = `nats` it
/// also creates the JetStream streams and consumers and starts result intake.
pub async fn build(
    global: &GlobalArgs,
    exec: &ExecArgs,
    flowcharts: Option<PathBuf>,
    dispatch: Dispatch,
    role: Role,
) -> Result<Built, Failure> {
    let lease_config = exec.lease_config(&role)?;
    let what = match role {
        Role::Serve { .. } => "`runledger serve`",
        Role::Cli => "`--dispatch nats`",
    };
    let store = super::connect(global, what).await?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::coded("cannot migrate the ledger", e))?;
    let leases = Leases::new(LeaseStore::new(store.pool().clone()), lease_config);
    let ownership: Arc<dyn Ownership> = leases.clone();
    let shared = || PgEventStore::from_pool(store.pool().clone());
    let models = live_models(shared(), exec.script.as_deref()).await?;
    let rag = rag_service(shared(), &global.rag_data_dir);
    let waker: Arc<dyn RunWaker> = Arc::new(WakeOwner(ownership.clone()));
    let providers = models
        .providers()
        .with_rag(rag.clone())
        .with_tools(tool_registry(shared(), waker, rag, &exec.tools).await?);
    let local: Arc<dyn NodeExecutor> = Arc::new(InProcessPool::new(providers, exec.concurrency));
    let registry = runledger_api::registry::LedgerFlowcharts::new(store.pool().clone());
    let source: Arc<dyn FlowchartSource> = Arc::new(SubflowSource {
        dir: DirSource { dir: flowcharts },
        registry,
    });
    let mut config = engine_config(exec);
    if dispatch == Dispatch::Inprocess {
        let store = LedgerStore::Postgres(store);
        let engine = Engine::with_ownership(store, local, source, config, ownership);
        return Ok(Built {
            engine,
            leases: Some(leases),
            keeper: None,
            gateway: None,
            _engine_lock: None,
        });
    }
    let topology = topology(global, exec.ack_wait_s)?;
    let js = jetstream(global).await?;
    topology
        .ensure_all(&js)
        .await
        .map_err(|e| Failure::coded("cannot create the JetStream streams", e))?;
    let dispatch_timeout = Duration::from_secs(exec.dispatch_timeout_s.max(1));
    let class_of = models.class_of();
    let mut dispatcher = NatsDispatcher::new(
        js.clone(),
        topology.clone(),
        class_of.clone(),
        dispatch_timeout,
        local,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut failures = None;
    if let Some(path) = &exec.kube_settings {
        let settings = KubeSettings::load(path)
            .map_err(|e| Failure::coded(format!("--kube-settings {}", path.display()), e))?;
        let client = kube::connect(&settings)
            .await
            .map_err(|e| Failure::coded("--kube-settings", e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let reporter = FailureReporter::new(tx);
        let launcher = JobLauncher::new(client.clone(), &settings, reporter.clone());
        dispatcher = dispatcher.with_on_dispatch(launch_on_dispatch(Arc::new(launcher)));
        let mut watch_stop = stop.subscribe();
        let watcher = JobWatcher::new(client, &settings, reporter);
        tasks.push(tokio::spawn(watcher.run(async move {
            let _ = watch_stop.changed().await;
        })));
        failures = Some(rx);
    }
    config.settings = Settings {
        executor: "nats".to_owned(),
        remote: Some(RemoteDispatch {
            dispatch_timeout_ms: exec.dispatch_timeout_s.max(1).saturating_mul(1000),
        }),
    };
    let store = LedgerStore::Postgres(store);
    let engine = Engine::with_ownership(store, Arc::new(dispatcher), source, config, ownership);
    if let Some(mut failures) = failures {
        let engine = engine.clone();
        let mut failures_stop = stop.subscribe();
        tasks.push(tokio::spawn(async move {
            loop {
                let failure = tokio::select! {
                    f = failures.recv() => match f { Some(f) => f, None => return },
                    _ = failures_stop.changed() => return,
                };
                let runs = fail_started_node_runs(&engine, &failure);
                tracing::warn!(job = %failure.job_name, reason = %failure.reason, runs_told = runs, "executor job failed");
            }
        }));
    }
    let sink = IntakeSink::for_engine(
        &engine,
        runledger_executor_gateway::metrics::GatewayMetrics::global(),
    );
    let intake = tokio::spawn({
        let js = js.clone();
        async move {
            if let Err(e) = run_intake(js, topology, sink, stopped).await {
                tracing::error!(error = %e, "result intake stopped");
            }
        }
    });
    tasks.push(intake);
    Ok(Built {
        engine,
        leases: Some(leases),
        keeper: None,
        gateway: Some(Gateway { stop, tasks }),
        _engine_lock: None,
    })
}

fn engine_config(exec: &ExecArgs) -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_millis(exec.poll_ms.max(10)),
        ..EngineConfig::default()
    }
}

/// What an engine on a SQLite file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteRole {
    /// Drives runs: takes the file's engine lock (refused while another engine holds it).
    Drives,
    /// Only records run starts (`runledger run` without `--wait`) for the engine that holds
    /// the lock (`runledger dev`), or the next one, to drive: plain appends, no lock.
    RecordsOnly,
}

/// The engine on a SQLite ledger (migrated): in-process executors, every run its own, and the
/// only engine on the file. A second one (another `run --wait`, a `dev`) is refused while
/// this one lives, so no run is ever driven by two processes; the OS drops the lock when the
/// process ends, even on SIGKILL. Reading the ledger and recording controls need no lock.
pub async fn build_sqlite(
    store: SqliteEventStore,
    exec: &ExecArgs,
    flowcharts: Option<PathBuf>,
    rag_data_dir: &std::path::Path,
    role: SqliteRole,
) -> Result<Built, Failure> {
    let location = runledger_ledger::LedgerLocation::Sqlite(store.path().to_path_buf());
    if exec.kube_settings.is_some() {
        return Err(super::needs_postgres(
            &location,
            "--kube-settings (executors as Kubernetes Jobs)",
        ));
    }
    if exec.dispatch == Some(Dispatch::Nats) {
        return Err(super::needs_postgres(&location, "`--dispatch nats`"));
    }
    let lock = match role {
        SqliteRole::Drives => Some(engine_lock(store.path())?),
        SqliteRole::RecordsOnly => None,
    };
    let models = live_models(store.share(), exec.script.as_deref()).await?;
    let rag = rag_service(store.share(), rag_data_dir);
    // The engine holds the executors that hold the tools: it is bound to the waker once built.
    let late_engine = Arc::new(LateEngine::new());
    let providers = models
        .providers()
        .with_rag(rag.clone())
        .with_tools(tool_registry(store.share(), late_engine.clone(), rag, &exec.tools).await?);
    let local: Arc<dyn NodeExecutor> = Arc::new(InProcessPool::new(providers, exec.concurrency));
    let registry = runledger_api::registry::LedgerFlowcharts::on_store(store.share());
    let source: Arc<dyn FlowchartSource> = Arc::new(SubflowSource {
        dir: DirSource { dir: flowcharts },
        registry,
    });
    let store = LedgerStore::Sqlite(store);
    let engine = Engine::with_ownership(store, local, source, engine_config(exec), Arc::new(Solo));
    late_engine.bind(engine.clone());
    Ok(Built {
        engine,
        leases: None,
        keeper: None,
        gateway: None,
        _engine_lock: lock,
    })
}

/// Drives the unfinished runs of the SQLite file (its run index) that this engine does not
/// drive yet: runs a killed process left behind, and runs `runledger run` recorded without
/// driving them. The engine holds the file's engine lock, so no other process drives them.
/// A run that cannot be loaded is named once (in `refused`) and left in the index. Returns
/// how many runs it took.
pub async fn take_unfinished(
    engine: &Engine<LedgerStore>,
    refused: &mut std::collections::HashSet<runledger_contracts::ids::RunId>,
) -> Result<usize, Failure> {
    // On PostgreSQL the leases' keeper takes runs; only a SQLite file has this index.
    let Some(store) = engine.store().as_sqlite() else {
        return Ok(0);
    };
    let runs = store
        .unfinished_runs()
        .await
        .map_err(|e| Failure::coded("cannot read the run index", e))?;
    let mut taken = 0;
    for run_id in runs {
        if engine.is_driven(run_id) || refused.contains(&run_id) {
            continue;
        }
        match engine.ensure_driven(run_id).await {
            Ok(_) if engine.is_driven(run_id) => taken += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%run_id, error = %e, "cannot drive an unfinished run; it is left in the run index");
                refused.insert(run_id);
            }
        }
    }
    Ok(taken)
}

/// Whether an engine holds the SQLite file's engine lock now (`runledger run` without `--wait`
/// says when nothing will drive the run it records).
pub fn engine_running(ledger: &Path) -> bool {
    let path = lock_file_path(ledger, "engine");
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Takes `<ledger>.engine.lock`, or says which file another engine holds.
fn engine_lock(ledger: &Path) -> Result<std::fs::File, Failure> {
    let path = lock_file_path(ledger, "engine");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            Failure::caused(format!("cannot open {}", path.display()), e).with_code("io_error")
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Failure::new(format!(
            "another runledger process drives runs on {} (it holds {}); a SQLite ledger has one engine at a time: wait for it to end, or use a PostgreSQL ledger for several",
            ledger.display(),
            path.display()
        ))
        .with_code("ledger_in_use")),
        Err(std::fs::TryLockError::Error(e)) => Err(Failure::caused(
            format!("cannot lock {}", path.display()),
            e,
        )
        .with_code("io_error")),
    }
}

/// The model registry, followed while the process runs (a model registered or re-pointed
/// later is used from its next call on: docs/providers.md), plus `scripted` with the
/// `--script` fixture.
pub async fn live_models<S: EventStore + 'static>(
    ledger: S,
    script: Option<&Path>,
) -> Result<Arc<LiveModels<S>>, Failure> {
    let script = match script {
        Some(path) => read_script(path)?,
        None => Script::new(),
    };
    LiveModels::load(
        ledger,
        ScriptedProvider::with_fixture(script),
        DEFAULT_MAX_AGE,
    )
    .await
    .map_err(|e| Failure::coded("cannot load the model registry", e))
}

fn read_script(path: &Path) -> Result<Script, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::caused(format!("cannot read {}", path.display()), e).with_code("file_unreadable")
    })?;
    ScriptedProvider::parse_fixture(&text)
        .map_err(|e| Failure::caused(path.display().to_string(), e).with_code("invalid_script"))
}

/// Sub-flows come from the flowchart directory when it has the file, else from the flowchart
/// registry in the ledger (`POST /v1/flowcharts`), which also serves pinned versions.
struct SubflowSource<S = PgEventStore> {
    dir: DirSource,
    registry: runledger_api::registry::LedgerFlowcharts<S>,
}

impl<S: EventStore + 'static> FlowchartSource for SubflowSource<S> {
    fn resolve(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(Arc<Flowchart>, Option<u32>), ResolveError> {
        if version.is_some() || self.dir.dir.is_none() {
            return self.registry.resolve(name, version);
        }
        self.dir.resolve(name, version).or_else(|from_dir| {
            self.registry
                .resolve(name, version)
                .map_err(|from_registry| ResolveError::Neither {
                    from_dir: Box::new(from_dir),
                    from_registry: Box::new(from_registry),
                })
        })
    }
}

/// Sub-flow `flowchart: NAME` nodes load `NAME.yaml`, `NAME.yml` or `NAME.json` from a directory.
pub struct DirSource {
    pub dir: Option<PathBuf>,
}

impl FlowchartSource for DirSource {
    fn resolve(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(Arc<Flowchart>, Option<u32>), ResolveError> {
        let Some(dir) = &self.dir else {
            return Err(ResolveError::NotConfigured {
                name: name.to_owned(),
                what: "no flowchart directory is configured (--flowcharts)",
            });
        };
        if version.is_some() {
            return Err(ResolveError::NotConfigured {
                name: name.to_owned(),
                what: "pinned versions need the flowchart registry; files have none",
            });
        }
        for ext in ["yaml", "yml", "json"] {
            let path = dir.join(format!("{name}.{ext}"));
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ResolveError::Unreadable { path, source }),
            };
            let flowchart = load(&text, SourceFormat::from_file_name(&path.to_string_lossy()))
                .map_err(|errors| {
                    let first = errors
                        .first()
                        .map(|e| format!("{}: {}", e.path, e.message))
                        .unwrap_or_default();
                    ResolveError::Invalid {
                        path: path.clone(),
                        problem: format!("not a valid flowchart ({first})"),
                    }
                })?;
            if flowchart.name() != name {
                return Err(ResolveError::Invalid {
                    problem: format!("its name is `{}`, not `{name}`", flowchart.name()),
                    path,
                });
            }
            return Ok((Arc::new(flowchart), None));
        }
        Err(ResolveError::NotFound {
            name: name.to_owned(),
            what: format!("no {name}.yaml, .yml or .json in {}", dir.display()),
        })
    }
}

/// The tool domains agent nodes run by this engine's in-process pool may call: every domain
/// the engine's process can serve, the ledger-backed ones (memory, plan, workflow, ...) on
/// `store`, RAG on `rag`, and the workspace, git, command and MCP domains of `runledger-tools`.
/// One line per domain; a tool no domain here serves is answered `tool_unavailable`
/// (docs/agents.md, "Where tools run").
pub async fn tool_registry<S: EventStore + 'static>(
    store: S,
    waker: Arc<dyn RunWaker>,
    rag: Arc<runledger_rag::Rag<S>>,
    tools: &ToolArgs,
) -> Result<ToolRegistry, Failure> {
    let mut domains: Vec<Arc<dyn ToolDomain>> = ledger_domains(LedgerToolDeps {
        store: Arc::new(store),
        waker,
    });
    domains.push(runledger_rag::tools::RagTools::shared(rag));
    domains.extend(outside_domains(tools).await?);
    ToolRegistry::new(domains).map_err(|e| Failure::coded("cannot build the tool registry", e))
}

/// The domains that act outside the ledger (workspace, git, command, the MCP servers of
/// `--mcp-registry`), workspaces under `--workspace-root`; engines and executors serve them.
pub async fn outside_domains(tools: &ToolArgs) -> Result<Vec<Arc<dyn ToolDomain>>, Failure> {
    runledger_tools::domains(&tools.config())
        .await
        .map_err(|e| {
            let code = e.code();
            Failure::caused("cannot build the workspace, git, command and MCP tools", e)
                .with_code(code)
        })
}

/// The RAG service of this process: `rag` nodes and the `rag_*` tools share it (collections
/// from the ledger, search indexes under `--rag-data-dir`).
pub fn rag_service<S: EventStore + 'static>(
    store: S,
    data_dir: &std::path::Path,
) -> Arc<runledger_rag::Rag<S>> {
    Arc::new(runledger_rag::Rag::new(store, data_dir.to_path_buf()))
}
