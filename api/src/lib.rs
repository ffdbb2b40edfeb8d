//! The HTTP API of runledger, served by `runledger serve` (default `127.0.0.1:8420`), under `/v1`:
//! flowcharts (a registry in the ledger), runs (start, idempotent with `Idempotency-Key`; list,
//! detail, node runs, the run's ledger, its export), operator controls, artifacts, claims,
//! live events over SSE, and `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
//!
//! Every error is the error envelope (`contracts/src/error.rs`) with a stable code; requests
//! that fail validation write nothing. `X-Request-ID` and `X-Correlation-ID` are taken or
//! generated, returned, and written on the events a request causes. With
//! `RUNLEDGER_API_TOKEN` set, requests need it as a bearer token (or a Studio session cookie).
//! The Studio web console (`studio.rs`) is served at `/`. See docs/api.md and docs/studio.md.

pub mod cache;
pub mod change;
pub mod connection;
pub mod context;
pub mod control;
pub mod control_match;
pub mod error;
pub mod extract;
pub mod flowcharts;
pub mod fork;
pub mod hub;
pub mod idempotency;
pub mod live;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod ops;
pub mod rag;
pub mod read;
pub mod registry;
pub mod request_head;
pub mod runs;
pub mod server;
pub mod session;
pub mod state;
pub mod studio;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use error::ApiError;
pub use registry::LedgerFlowcharts;
pub use state::{ApiConfig, ApiState};

/// Every route of the API, with its middleware.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route(
            "/flowcharts",
            get(flowcharts::list).post(flowcharts::create),
        )
        .route("/flowcharts/validate", post(flowcharts::validate))
        .route("/flowcharts/{name}", get(flowcharts::latest))
        .route("/flowcharts/{name}/versions", get(flowcharts::versions))
        .route(
            "/flowcharts/{name}/versions/{version}",
            get(flowcharts::version),
        )
        .route("/runs", get(read::list_runs).post(runs::start))
        .route("/runs/{run_id}", get(read::run_detail))
        .route("/runs/{run_id}/events", get(runs::ledger))
        .route("/runs/{run_id}/export", get(runs::export_run))
        .route(
            "/runs/{run_id}/node-runs/{node_run_id}",
            get(read::node_run_detail),
        )
        .route("/runs/{run_id}/claims", get(read::run_claims))
        .route("/runs/{run_id}/pause", post(control::pause))
        .route("/runs/{run_id}/resume", post(control::resume))
        .route("/runs/{run_id}/cancel", post(control::cancel))
        .route("/runs/{run_id}/fork", post(fork::fork))
        .route(
            "/runs/{run_id}/nodes/{node_id}/retry",
            post(control::retry_node),
        )
        .route(
            "/runs/{run_id}/nodes/{node_id}/skip",
            post(control::skip_node),
        )
        .route(
            "/runs/{run_id}/nodes/{node_id}/rewind",
            post(control::rewind_node),
        )
        .route("/artifacts", get(read::list_artifacts))
        .route("/artifacts/{artifact_id}", get(read::artifact_detail))
        .route("/claims", get(read::claims))
        .route("/events", get(live::events))
        .route(
            "/session",
            get(session::get)
                .post(session::create)
                .delete(session::delete),
        )
        .route("/models", get(models::list).post(models::create))
        .route(
            "/models/{name}",
            get(models::get).put(models::update).delete(models::delete),
        )
        .route("/rag/collections", get(rag::list).post(rag::create))
        .route("/rag/collections/{name}", get(rag::get).delete(rag::delete))
        .route(
            "/rag/collections/{name}/index",
            get(rag::status).post(rag::index),
        )
        .route("/rag/collections/{name}/query", post(rag::query));
    let body_limit = state.config().body_limit;
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(studio::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::middleware,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route; see /openapi.json")
}

/// Serves the API on `listener` until the task is dropped or the listener fails. With
/// `ApiConfig::run_projections`, the projectors run live beside it (several servers on one
/// database share the work safely).
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    // Stops the projectors however this future ends (also when its task is aborted).
    let _projections = state
        .config()
        .run_projections
        .then(|| AbortOnDrop(runledger_projections::spawn_live(state.db().clone())));
    state.start_follower();
    let config = state.config().clone();
    server::run(listener, router(state), &config).await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where `runledger serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8420),
);

/// The API's address could not be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct ListenError {
    pub addr: std::net::SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Starts the API for `runledger serve`: binds `listen` (a bind failure is an error) or the
/// default address (when it is taken, e.g. by another `serve` on this host, the engine runs
/// without the API and a warning says so), and serves in a task of its own. Prints the
/// address it serves on.
pub async fn spawn_for_serve(
    listen: Option<std::net::SocketAddr>,
    engine: runledger_orchestrator::Engine<runledger_ledger::LedgerStore>,
    nats_url: &str,
    rag_data_dir: &std::path::Path,
) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>, ListenError> {
    let addr = listen.unwrap_or(DEFAULT_LISTEN);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) if listen.is_none() => {
            tracing::warn!(%addr, error = %e, "the HTTP API is not served: the default address is taken (use --listen)");
            return Ok(None);
        }
        Err(source) => return Err(ListenError { addr, source }),
    };
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { addr, source })?;
    let state = ApiState::for_engine(
        engine,
        ApiConfig::for_serve(nats_url).with_rag_data_dir(rag_data_dir),
    );
    if state.config().token.is_none() && !bound.ip().is_loopback() {
        tracing::warn!(%bound, "the HTTP API listens beyond loopback without RUNLEDGER_API_TOKEN: anyone who reaches it can start and control runs");
    }
    eprintln!("runledger serve: API on http://{bound}");
    Ok(Some(tokio::spawn(serve(listener, state))))
}

#[cfg(test)]
mod tests;
