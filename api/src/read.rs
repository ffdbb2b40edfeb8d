//! Reads from the projections (crate `runledger-projections`, docs/projections.md): run lists
//! and details, node runs, artifacts, claims. The bodies are the projections' query results
//! as they serialize them.
//!
//! Projections trail the ledger by a moment. A run the ledger has but `run_detail` does not yet
//! is waited for (briefly); `?min_version=N` on a run detail waits until the projection has
//! applied the run's stream up to version N (a control's `events[].stream_version`, the
//! `head_version` of the run's ledger page), so a client reads its own writes; a version beyond
//! the run's head in the ledger is `409 version_not_reached` at once.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runledger_contracts::flowchart::NodeType;
use runledger_contracts::ids::{ArtifactId, RunId, StreamId};
use runledger_contracts::time::Timestamp;
use runledger_ledger::EventStore;
use runledger_projections::QueryError;
use runledger_projections::query::{self, ArtifactFilter, RunFilter};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::extract::{ApiQuery, NoQuery, invalid_query, node_run_id, run_id};
use crate::state::ApiState;

/// How long a read waits for the projection to catch up with the ledger.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
const CATCH_UP_POLL: Duration = Duration::from_millis(25);

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match &e {
            QueryError::InvalidCursor { .. } => invalid_query("cursor", e.to_string()),
            QueryError::InvalidLimit { .. } => invalid_query("limit", e.to_string()),
            QueryError::InvalidFilter { field, .. } => invalid_query(field, e.to_string()),
            QueryError::Database(_) => {
                tracing::error!(error = %e, "projection query failed");
                ApiError::unavailable(e.code(), "the database is unavailable")
            }
            QueryError::Registry(_) | QueryError::Corrupt { .. } => {
                ApiError::internal(e.code(), &e)
            }
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::internal("internal_error", e))
}

fn timestamp(field: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse(t)
            .map_err(|_| invalid_query(field, format!("{field}: `{t}` is not an RFC 3339 time")))
    })
    .transpose()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunListQuery {
    /// `running`, `paused`, `canceling`, `completed`, `failed` or `canceled`.
    #[param(pattern = r"^(running|paused|canceling|completed|failed|canceled)$")]
    pub status: Option<String>,
    /// Flowchart name.
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,128}$")]
    pub flowchart: Option<String>,
    /// Runs started at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub started_after: Option<String>,
    /// Runs started before this time (RFC 3339).
    #[param(format = DateTime)]
    pub started_before: Option<String>,
    /// Case-insensitive search: runs whose id starts with it, or whose flowchart name or actor
    /// contains it (1 to 200 characters).
    #[param(min_length = 1, max_length = 200)]
    pub q: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Runs, newest first, with filters and cursor pagination (`run_detail` projection).
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunListQuery),
    responses((status = 200, description = "`{items: [run summary], next_cursor}` (see docs/api.md)", body = Object),
        (status = 400, description = "`invalid_query`, `invalid_filter`, `invalid_cursor`, `invalid_limit`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn list_runs(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<RunListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = RunFilter {
        status: q.status,
        flowchart: q.flowchart,
        started_after: timestamp("started_after", q.started_after.as_deref())?,
        started_before: timestamp("started_before", q.started_before.as_deref())?,
        search: match q.q {
            Some(text) if text.is_empty() || text.chars().count() > 200 => {
                return Err(invalid_query("q", "q: 1 to 200 characters"));
            }
            other => other,
        },
        cursor: q.cursor,
        limit: q.limit,
    };
    to_json(&query::list_runs(state.db(), &filter).await?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunDetailQuery {
    /// Wait (up to 5 s) until the projection has applied the run's stream up to this version;
    /// beyond the run's head in the ledger, `409 version_not_reached` at once.
    pub min_version: Option<u64>,
}

/// The run's version in the projection, once it has applied `min_version` (or the run at
/// all), while the ledger says there is something to wait for. A `min_version` beyond the
/// run's head in the ledger can never be reached by waiting: `409 version_not_reached` at once.
async fn projected_version(
    state: &ApiState,
    run: RunId,
    min_version: Option<u64>,
) -> Result<u64, ApiError> {
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    let mut checked_ledger = false;
    loop {
        let version = query::run_version(state.db(), run).await?;
        if let Some(v) = version
            && min_version.is_none_or(|min| v >= min)
        {
            return Ok(v);
        }
        if !checked_ledger {
            let head = state.store().stream_head(&StreamId::for_run(run)).await?;
            let Some(head) = head else {
                return Err(ApiError::not_found(
                    "run_not_found",
                    format!("run {run} does not exist"),
                ));
            };
            if let Some(min) = min_version.filter(|min| *min > head.version) {
                return Err(ApiError::conflict(
                    "version_not_reached",
                    format!(
                        "run {run} is at version {} in the ledger, before min_version {min}",
                        head.version
                    ),
                )
                .with_details(serde_json::json!({ "head_version": head.version })));
            }
            checked_ledger = true;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::unavailable(
                "projection_lagging",
                format!(
                    "the run_detail projection has not caught up with run {run} yet; retry shortly"
                ),
            ));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// Whether `If-None-Match` names `etag` (RFC 9110 section 13.1.2: weak comparison, so `W/"x"`
/// matches `"x"`; `*` matches any current representation; several values, in one header or
/// many, each count).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn etag(run: RunId, version: u64) -> String {
    format!("\"run-{run}-v{version}\"")
}

/// One run: status, flowchart, inputs, timings, counts, warnings, node runs, timeline.
///
/// The answer for a given run version never changes: it carries `ETag` (the run and the
/// projection's version of it), answers `If-None-Match` with 304, and is kept encoded in memory.
#[utoipa::path(get, path = "/v1/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)"), RunDetailQuery,
        ("If-None-Match" = Option<String>, Header, description = "an ETag of an earlier answer")),
    responses((status = 200, description = "the run detail (see docs/api.md)", body = Object),
        (status = 304, description = "unchanged since the ETag given (`If-None-Match`: weak comparison, lists, `*`)"),
        (status = 409, description = "`version_not_reached`: `min_version` is beyond the run's head in the ledger (`details.head_version`)", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 404, body = crate::openapi::ErrorEnvelopeDoc), (status = 503, description = "`projection_lagging`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn run_detail(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(run): Path<String>,
    ApiQuery(q): ApiQuery<RunDetailQuery>,
) -> Result<Response, ApiError> {
    let run = run_id(&run)?;
    let version = projected_version(&state, run, q.min_version).await?;
    if none_match(&headers, &etag(run, version)) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, header_value(&etag(run, version)));
        return Ok(response);
    }
    let (version, body) = match state.inner.details.get(run, version) {
        Some(body) => (version, body),
        None => {
            let detail = query::run_detail(state.db(), run).await?.ok_or_else(|| {
                ApiError::not_found("run_not_found", format!("run {run} does not exist"))
            })?;
            let version = detail.run.last_version;
            let body = Bytes::from(
                serde_json::to_vec(&detail).map_err(|e| ApiError::internal("internal_error", e))?,
            );
            state.inner.details.put(run, version, body.clone());
            (version, body)
        }
    };
    let mut response = Response::new(Body::from(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ETAG, header_value(&etag(run, version)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// One node run with its timeline, tool calls and artifacts.
#[utoipa::path(get, path = "/v1/runs/{run_id}/node-runs/{node_run_id}", tag = "runs",
    params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)"), ("node_run_id" = String, Path, format = "uuid", description = "node run id (UUID)")),
    responses((status = 200, description = "the node run detail (see docs/api.md)", body = Object), (status = 404, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn node_run_detail(
    State(state): State<ApiState>,
    Path((run, node_run)): Path<(String, String)>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let run = run_id(&run)?;
    let node_run = node_run_id(&node_run)?;
    match query::node_run_detail(state.db(), run, node_run).await? {
        Some(detail) => to_json(&detail),
        None => Err(ApiError::not_found(
            "node_run_not_found",
            format!("run {run} has no node run {node_run} (yet)"),
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArtifactListQuery {
    #[param(format = "uuid")]
    pub run_id: Option<String>,
    #[param(format = "uuid")]
    pub node_run_id: Option<String>,
    pub node_id: Option<String>,
    /// `start`, `end`, `task`, `decision`, `memory`, `plan`, `milestone`, `rag`, `flowchart`.
    #[param(pattern = r"^(start|end|task|decision|memory|plan|milestone|rag|flowchart)$")]
    pub node_type: Option<String>,
    /// E.g. `task_output`, `routing`, `failure`.
    pub artifact_type: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Artifacts, newest first, with filters and cursor pagination (`artifact_history` projection).
#[utoipa::path(get, path = "/v1/artifacts", tag = "artifacts", params(ArtifactListQuery),
    responses((status = 200, description = "`{items: [artifact summary], next_cursor}` (see docs/api.md)", body = Object),
        (status = 400, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn list_artifacts(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ArtifactListQuery>,
) -> Result<Json<Value>, ApiError> {
    let node_type = match q.node_type {
        Some(t) => Some(
            serde_json::from_value::<NodeType>(Value::String(t.clone())).map_err(|_| {
                invalid_query(
                    "node_type",
                    format!(
                        "node_type: `{}` is not a node type",
                        t.chars().take(40).collect::<String>()
                    ),
                )
            })?,
        ),
        None => None,
    };
    let filter = ArtifactFilter {
        run_id: q.run_id.as_deref().map(run_id).transpose()?,
        node_run_id: q.node_run_id.as_deref().map(node_run_id).transpose()?,
        node_id: q.node_id,
        node_type,
        artifact_type: q.artifact_type,
        cursor: q.cursor,
        limit: q.limit,
    };
    to_json(&query::list_artifacts(state.db(), &filter).await?)
}

/// One artifact with its payload, contract version, request and correlation ids, idempotency
/// key and content hash.
#[utoipa::path(get, path = "/v1/artifacts/{artifact_id}", tag = "artifacts", params(("artifact_id" = String, Path, format = "uuid", description = "artifact id (UUID)")),
    responses((status = 200, description = "the artifact (see docs/api.md)", body = Object), (status = 404, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn artifact_detail(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let id: ArtifactId = id.parse().map_err(|e: runledger_contracts::ids::IdError| {
        ApiError::bad_request("invalid_id", e.to_string())
    })?;
    match query::artifact(state.db(), id).await? {
        Some(a) => to_json(&a),
        None => Err(ApiError::not_found(
            "artifact_not_found",
            format!("no artifact {id}"),
        )),
    }
}

/// Every registered claim over the whole ledger: status, counts, evidence.
#[utoipa::path(get, path = "/v1/claims", tag = "claims",
    responses((status = 200, description = "`{items: [claim]}` (see docs/api.md)", body = Object)))]
pub async fn claims(
    State(state): State<ApiState>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let results = query::claims(state.db(), None).await?;
    Ok(Json(
        serde_json::json!({ "items": serde_json::to_value(&results).map_err(|e| ApiError::internal("internal_error", e))? }),
    ))
}

/// Every registered claim over one run.
#[utoipa::path(get, path = "/v1/runs/{run_id}/claims", tag = "claims", params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)")),
    responses((status = 200, description = "`{items: [claim]}` (see docs/api.md)", body = Object), (status = 404, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn run_claims(
    State(state): State<ApiState>,
    Path(run): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<Value>, ApiError> {
    let run = run_id(&run)?;
    if state
        .store()
        .stream_head(&StreamId::for_run(run))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(
            "run_not_found",
            format!("run {run} does not exist"),
        ));
    }
    let results = query::claims(state.db(), Some(run)).await?;
    Ok(Json(
        serde_json::json!({ "items": serde_json::to_value(&results).map_err(|e| ApiError::internal("internal_error", e))? }),
    ))
}
