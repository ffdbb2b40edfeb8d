//! Operations endpoints: `/healthz` (the process answers), `/readyz` (the database and NATS
//! answer), `/metrics` (Prometheus text format, written by hand: it is small).

use std::fmt::Write as _;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::ApiState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bounds (seconds) of the dispatch-latency histogram buckets.
pub const DISPATCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The database and NATS are reachable. 503 (`not_ready`, with both probes in `details`) when
/// either is not.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn readyz(State(state): State<ApiState>) -> Result<Json<Readiness>, ApiError> {
    let (database, nats) =
        tokio::join!(database_probe(&state), nats_probe(&state.config().nats_url));
    let readiness = Readiness {
        ready: database.reachable && nats.reachable,
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
    let query = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(state.pool());
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
        Ok(_) => Probe { reachable: true, error: None },
        Err(error) => Probe { reachable: false, error: Some(error) },
    }
}

/// Metrics in the Prometheus text format (0.0.4).
///
/// - `runledger_runs{status}`, `runledger_node_runs{status}`: from the `run_detail` projection;
/// - `runledger_ledger_events_total`: events appended to the ledger;
/// - `runledger_projector_lag_events{projector}`, `runledger_projector_lag_seconds{projector}`;
/// - `runledger_dispatch_latency_seconds`: histogram of `NodeDispatched.recorded_at −
///   NodeScheduled.recorded_at` per node run (from `run_detail`);
/// - `runledger_gateway_messages_terminated_total{consumer,reason}`,
///   `runledger_gateway_max_deliveries_total{consumer}`, `runledger_nats_disconnects_total`,
///   `runledger_nats_reconnects_total`: the gateway's in-process counters (docs/gateway.md).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String), (status = 503, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let text = render_metrics(&state).await?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it (backslash, quote and newline escaped).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) async fn render_metrics(state: &ApiState) -> Result<String, ApiError> {
    let pool = state.pool();
    let mut out = String::new();

    let runs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM run_detail_runs GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await?;
    family(
        &mut out,
        "runledger_runs",
        "gauge",
        "Runs by status (run_detail projection).",
    );
    for (status, n) in &runs {
        let _ = writeln!(out, "runledger_runs{{status=\"{}\"}} {n}", label(status));
    }

    let node_runs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM run_detail_node_runs GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await?;
    family(
        &mut out,
        "runledger_node_runs",
        "gauge",
        "Node runs by status (run_detail projection).",
    );
    for (status, n) in &node_runs {
        let _ = writeln!(
            out,
            "runledger_node_runs{{status=\"{}\"}} {n}",
            label(status)
        );
    }

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    family(
        &mut out,
        "runledger_ledger_events_total",
        "counter",
        "Events appended to the ledger.",
    );
    let _ = writeln!(out, "runledger_ledger_events_total {events}");

    let lag = runledger_projections::lag(pool)
        .await
        .map_err(|e| ApiError::internal("projection_error", e))?;
    family(
        &mut out,
        "runledger_projector_lag_events",
        "gauge",
        "Ledger events a projector has not applied yet.",
    );
    for l in &lag {
        let _ = writeln!(
            out,
            "runledger_projector_lag_events{{projector=\"{}\"}} {}",
            label(&l.name),
            l.events_behind
        );
    }
    family(
        &mut out,
        "runledger_projector_lag_seconds",
        "gauge",
        "Age of the oldest event a projector has not applied yet.",
    );
    for l in &lag {
        let _ = writeln!(
            out,
            "runledger_projector_lag_seconds{{projector=\"{}\"}} {}",
            label(&l.name),
            l.seconds_behind
        );
    }
    family(
        &mut out,
        "runledger_projector_stopped",
        "gauge",
        "1 when a projector is stopped at an event it cannot apply.",
    );
    for l in &lag {
        let _ = writeln!(
            out,
            "runledger_projector_stopped{{projector=\"{}\"}} {}",
            label(&l.name),
            u8::from(l.error.is_some())
        );
    }

    // One pass over the node runs that were dispatched: cumulative bucket counts, sum, count.
    let bounds: Vec<f64> = DISPATCH_BUCKETS.to_vec();
    let (buckets, sum, count): (Vec<i64>, f64, i64) = sqlx::query_as(
        "WITH d AS (
             SELECT EXTRACT(EPOCH FROM (dispatched_at - scheduled_at))::float8 AS s
               FROM run_detail_node_runs WHERE dispatched_at IS NOT NULL)
         SELECT ARRAY(SELECT (SELECT count(*) FROM d WHERE d.s <= b) FROM unnest($1::float8[]) WITH ORDINALITY AS u(b, i) ORDER BY i),
                COALESCE((SELECT sum(s) FROM d), 0)::float8,
                (SELECT count(*) FROM d)",
    )
    .bind(&bounds)
    .fetch_one(pool)
    .await?;
    family(
        &mut out,
        "runledger_dispatch_latency_seconds",
        "histogram",
        "Time from NodeScheduled to NodeDispatched per node run (run_detail projection).",
    );
    for (bound, n) in bounds.iter().zip(&buckets) {
        let _ = writeln!(
            out,
            "runledger_dispatch_latency_seconds_bucket{{le=\"{bound}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "runledger_dispatch_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "runledger_dispatch_latency_seconds_sum {sum}");
    let _ = writeln!(out, "runledger_dispatch_latency_seconds_count {count}");
    gateway_counters(&mut out);
    Ok(out)
}

/// The executor gateway's in-process counters (terminated and dead-lettered messages, NATS
/// connection losses) of this process.
fn gateway_counters(out: &mut String) {
    let mut named = "";
    for sample in runledger_executor_gateway::metrics::GatewayMetrics::global().samples() {
        if sample.name != named {
            family(out, sample.name, "counter", sample.help);
            named = sample.name;
        }
        let labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        if labels.is_empty() {
            let _ = writeln!(out, "{} {}", sample.name, sample.value);
        } else {
            let _ = writeln!(out, "{}{{{}}} {}", sample.name, labels.join(","), sample.value);
        }
    }
}
