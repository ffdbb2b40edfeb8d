//! Operations endpoints: `/healthz` (the process answers), `/readyz` (the database and NATS
//! answer), `/metrics` (OpenMetrics text, from `metrics.rs`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{ApiQuery, NoQuery};
use crate::state::ApiState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// One dependency's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Probe {
    pub reachable: bool,
    /// Why not, when not reachable.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub database: Probe,
    pub nats: Probe,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 400, description = "`invalid_query`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn healthz(ApiQuery(NoQuery {}): ApiQuery<NoQuery>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database and NATS are reachable. 503 (`not_ready`, with both probes in `details`) when
/// either is not. On a SQLite ledger NATS is not used: its probe is reported but does not
/// decide readiness.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 400, description = "`invalid_query`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 503, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn readyz(
    State(state): State<ApiState>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<Readiness>, ApiError> {
    let (database, nats) =
        tokio::join!(database_probe(&state), nats_probe(&state.config().nats_url));
    // A SQLite ledger never dispatches over NATS: its probe is reported, not required.
    let needs_nats = state.db().postgres().is_some();
    let readiness = Readiness {
        ready: database.reachable && (nats.reachable || !needs_nats),
        database,
        nats,
    };
    if readiness.ready {
        Ok(Json(readiness))
    } else {
        Err(
            ApiError::unavailable("not_ready", "a dependency is not reachable")
                .with_details(json!({ "database": readiness.database, "nats": readiness.nats })),
        )
    }
}

async fn database_probe(state: &ApiState) -> Probe {
    let query = async {
        match state.db() {
            runledger_projections::ReadDb::Postgres(pool) => {
                sqlx::query_scalar::<_, i32>("SELECT 1")
                    .fetch_one(pool)
                    .await
            }
            runledger_projections::ReadDb::Sqlite(store) => {
                sqlx::query_scalar::<_, i32>("SELECT 1")
                    .fetch_one(store.readers())
                    .await
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, query).await {
        Ok(Ok(_)) => Probe {
            reachable: true,
            error: None,
        },
        Ok(Err(e)) => Probe {
            reachable: false,
            error: Some(format!("database error: {e}")),
        },
        Err(_) => Probe {
            reachable: false,
            error: Some("timed out".into()),
        },
    }
}

/// A TCP connect and the `INFO` line a NATS server sends first.
async fn nats_probe(url: &str) -> Probe {
    match runledger_executor_gateway::server_info(url, PROBE_TIMEOUT).await {
        Ok(_) => Probe {
            reachable: true,
            error: None,
        },
        Err(error) => Probe {
            reachable: false,
            error: Some(error.to_string()),
        },
    }
}

/// Metrics in the OpenMetrics text format (see `metrics.rs` and docs/api.md): HTTP requests,
/// ledger events, runs and node runs that ended, dispatch latency (all counted in process since
/// it started), the ledger's last global position and each projector's lag (cheap queries at
/// scrape time), and the executor gateway's counters of terminated and dead-lettered messages
/// and NATS connection losses (docs/gateway.md).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 503, description = "`database_error`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn metrics(
    State(state): State<ApiState>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let position = state.store().last_global_position().await?;
    let lag = runledger_projections::lag(state.db())
        .await
        .map_err(ApiError::from)?;
    state.metrics().set_ledger(position, &lag);
    let text = state
        .metrics()
        .encode()
        .map_err(|e| ApiError::internal("internal_error", e))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}
