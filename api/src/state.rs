//! What every handler shares: the engine (which owns the ledger, PostgreSQL or a SQLite file),
//! the flowchart registry, the database of the projection queries, and the server's settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runledger_ledger::LedgerStore;
use runledger_orchestrator::Engine;
use runledger_projections::ReadDb;

use crate::registry::LedgerFlowcharts;

/// Largest request body accepted, in bytes: room for a flowchart of ~28,000 nodes, the same
/// bound as the ledger's payload limit.
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;

/// How long a client may take to send a request's head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's body (4 MiB at ~140 KB/s).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Settings of the HTTP server.
#[derive(Clone)]
pub struct ApiConfig {
    /// When set, every mutating request (POST, PUT, PATCH, DELETE) needs
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// With a token set, GET requests need no token either (`RUNLEDGER_API_OPEN_READS=1`); by
    /// default they need it, since run details, exports and live events carry model outputs.
    pub open_reads: bool,
    /// NATS server probed by `/readyz`.
    pub nats_url: String,
    pub body_limit: usize,
    /// How often the live-event stream looks for new events.
    pub sse_poll: Duration,
    /// Recorded as the actor when a request names none.
    pub default_actor: String,
    /// Run the projectors (run_detail, artifact_history, claim_evidence) live beside the
    /// server, so the read endpoints follow the ledger.
    pub run_projections: bool,
    /// Bytes of encoded run details kept in memory (0: none).
    pub detail_cache_bytes: usize,
    /// A connection that has not sent a whole request head (request line and headers) this
    /// long after it opened, or after its previous response, is closed (slowloris).
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this time (`408 request_timeout`).
    pub body_read_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Where the RAG search indexes (a derived read model) live: `--rag-data-dir`.
    pub rag_data_dir: PathBuf,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ApiConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field(
                "nats_url",
                &runledger_executor_gateway::redact_nats_url(&self.nats_url),
            )
            .field("body_limit", &self.body_limit)
            .field("sse_poll", &self.sse_poll)
            .field("default_actor", &self.default_actor)
            .field("run_projections", &self.run_projections)
            .field("detail_cache_bytes", &self.detail_cache_bytes)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("rag_data_dir", &self.rag_data_dir)
            .finish()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token: None,
            open_reads: false,
            nats_url: "nats://127.0.0.1:4222".into(),
            body_limit: DEFAULT_BODY_LIMIT,
            sse_poll: Duration::from_millis(200),
            default_actor: "api".into(),
            run_projections: true,
            detail_cache_bytes: crate::cache::DEFAULT_BUDGET,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            rag_data_dir: PathBuf::from(".runledger/rag"),
        }
    }
}

impl ApiConfig {
    /// What `runledger serve` uses: the token from the environment, readiness probing
    /// `nats_url`, and no projectors of its own (serve runs them beside the engine).
    pub fn for_serve(nats_url: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            run_projections: false,
            ..Self::default()
        }
        .with_token_from_env()
    }

    /// Serves RAG collections with search indexes under `dir` (the binary's `--rag-data-dir`).
    pub fn with_rag_data_dir(mut self, dir: &std::path::Path) -> Self {
        self.rag_data_dir = dir.to_path_buf();
        self
    }

    /// Reads `RUNLEDGER_API_TOKEN` (an empty value counts as unset) and
    /// `RUNLEDGER_API_OPEN_READS` (`1` or `true` opens reads without the token).
    pub fn with_token_from_env(mut self) -> Self {
        self.token = std::env::var("RUNLEDGER_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        self.open_reads = std::env::var("RUNLEDGER_API_OPEN_READS")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true"));
        self
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub engine: Engine<LedgerStore>,
    pub flowcharts: Arc<LedgerFlowcharts<LedgerStore>>,
    /// Where the read models are: the ledger's own database.
    pub db: ReadDb,
    pub config: ApiConfig,
    /// Woken when the ledger's append trigger notifies (see `live.rs`).
    pub appended: Arc<tokio::sync::Notify>,
    pub listening: std::sync::atomic::AtomicBool,
    /// Encoded run details by run and version (see `cache.rs`).
    pub details: crate::cache::DetailCache,
    /// The process's metrics (see `metrics.rs`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The shared ledger follower of live events and metrics (see `hub.rs`).
    pub hub: crate::hub::LedgerHub,
    /// RAG collections, index runs and queries (see `rag.rs`).
    pub rag: runledger_rag::Rag<LedgerStore>,
}

impl ApiState {
    /// `flowcharts` should be the registry the engine resolves sub-flows with, so both see
    /// the same cache; [`LedgerFlowcharts::on_store`] on the engine's store otherwise.
    pub fn new(
        engine: Engine<LedgerStore>,
        flowcharts: Arc<LedgerFlowcharts<LedgerStore>>,
        config: ApiConfig,
    ) -> Self {
        let db = ReadDb::from(engine.store());
        let details = crate::cache::DetailCache::new(config.detail_cache_bytes);
        let rag = runledger_rag::Rag::new(engine.store().share(), config.rag_data_dir.clone());
        Self {
            inner: Arc::new(Inner {
                engine,
                flowcharts,
                db,
                config,
                appended: Arc::new(tokio::sync::Notify::new()),
                listening: std::sync::atomic::AtomicBool::new(false),
                details,
                metrics: Arc::new(crate::metrics::Metrics::new()),
                hub: crate::hub::LedgerHub::new(),
                rag,
            }),
        }
    }

    /// Starts the shared ledger follower (once) and, on PostgreSQL, the LISTEN connection that
    /// wakes it (on SQLite it polls every `sse_poll`).
    pub fn start_follower(&self) {
        crate::live::start_listener(self);
        self.inner.hub.start(
            self.store().share(),
            Arc::downgrade(&self.inner.appended),
            self.inner.metrics.clone(),
            self.config().sse_poll,
        );
    }

    /// The process's metrics; other components add theirs with [`crate::metrics::Metrics::register`].
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// An API over an engine whose sub-flows come from elsewhere: the registry gets its own
    /// handle on the engine's store.
    pub fn for_engine(engine: Engine<LedgerStore>, config: ApiConfig) -> Self {
        let flowcharts = Arc::new(LedgerFlowcharts::on_store(engine.store().share()));
        Self::new(engine, flowcharts, config)
    }

    pub fn engine(&self) -> &Engine<LedgerStore> {
        &self.inner.engine
    }

    pub fn store(&self) -> &LedgerStore {
        self.inner.engine.store()
    }

    pub fn flowcharts(&self) -> &LedgerFlowcharts<LedgerStore> {
        &self.inner.flowcharts
    }

    /// The database of the projection queries.
    pub fn db(&self) -> &ReadDb {
        &self.inner.db
    }

    pub fn rag(&self) -> &runledger_rag::Rag<LedgerStore> {
        &self.inner.rag
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }
}
