//! `/v1/runs` straight on the ledger: start a run, read its stream page by page, export it.
//! (Lists and details come from the projections: see `read.rs`.)

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runledger_contracts::envelope::NewEvent;
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::Flowchart;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_contracts::storable;
use runledger_ledger::EventStore;
use runledger_ledger::export::{ExportError, ExportScope, export};
use runledger_orchestrator::{Cause, Settings, StartRun, SystemEnv, decide};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::context::{CORRELATION_ID, RequestContext};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, NoQuery, invalid_query, run_id};
use crate::flowcharts::{invalid_flowchart, load_definition_blocking};
use crate::idempotency::{self, Claim};
use crate::state::ApiState;

/// Start a run of a stored flowchart (`flowchart`, optional `version`) or of an inline
/// `definition`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRunBody {
    /// Name of a stored flowchart; its latest version unless `version` is given.
    #[serde(default)]
    pub flowchart: Option<String>,
    /// A stored version of `flowchart`.
    #[serde(default)]
    pub version: Option<u32>,
    /// An inline flowchart (object, or YAML/JSON text) instead of `flowchart`.
    #[serde(default)]
    pub definition: Option<Value>,
    /// The run's inputs (`inputs` in conditions and prompts); default `{}`.
    #[serde(default)]
    pub inputs: Option<Value>,
    /// Who starts the run (recorded on `RunStarted`); default `api`.
    #[serde(default)]
    pub actor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowchartRefView {
    pub name: String,
    /// The stored version; absent for inline definitions.
    pub version: Option<u32>,
    pub definition_hash: String,
}

/// A run that was started (or found again through its `Idempotency-Key`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StartedRun {
    pub run_id: String,
    /// Where the run is now: `running`, `paused`, `canceling`, `completed`, `failed`, `canceled`.
    pub status: String,
    pub flowchart: FlowchartRefView,
    /// The request and correlation ids written on `RunStarted`.
    pub request_id: String,
    pub correlation_id: String,
    /// True when this answer repeats an earlier start with the same `Idempotency-Key`.
    pub replayed: bool,
}

/// One event of the ledger, as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerEvent {
    pub event_id: String,
    pub stream_id: String,
    pub stream_version: u64,
    /// Place in the ledger's global order (insertion).
    pub global_position: u64,
    /// The writing transaction; with `global_position`, the commit-safe order.
    pub commit_position: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub request_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub recorded_at: String,
    pub payload: Value,
    pub blob_refs: Vec<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl LedgerEvent {
    pub fn of(e: &RecordedEvent) -> Self {
        Self {
            event_id: e.event_id.to_string(),
            stream_id: e.stream_id.to_string(),
            stream_version: e.stream_version,
            global_position: e.position.global,
            commit_position: e.position.commit,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            request_id: e.request_id.to_string(),
            correlation_id: e.correlation_id.to_string(),
            causation_id: e.causation_id.as_ref().map(|c| c.to_string()),
            recorded_at: e.recorded_at.to_string(),
            payload: e.payload.clone(),
            blob_refs: e.blob_refs.iter().map(|d| d.to_hex()).collect(),
            prev_hash: e.prev_hash.to_hex(),
            hash: e.hash.to_hex(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerPage {
    pub run_id: String,
    pub stream_id: String,
    /// The stream's last version when the page was read.
    pub head_version: u64,
    pub items: Vec<LedgerEvent>,
    /// Pass as `from_version` for the next page; absent when the page reached the head.
    pub next_from_version: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// First stream version to return (default 1).
    pub from_version: Option<u64>,
    /// Events per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The flowchart a start names, and its stored version.
async fn resolve(
    state: &ApiState,
    body: &StartRunBody,
) -> Result<(Arc<Flowchart>, Option<u32>), ApiError> {
    match (&body.flowchart, &body.definition) {
        (Some(name), None) => {
            let stored = state.flowcharts().get(name, body.version).await?;
            Ok((stored.flowchart, Some(stored.version)))
        }
        (None, Some(definition)) => {
            if body.version.is_some() {
                return Err(ApiError::unprocessable(
                    "invalid_body",
                    "`version` goes with `flowchart`, not with `definition`",
                ));
            }
            let flowchart = load_definition_blocking(definition.clone())
                .await?
                .map_err(|errors| invalid_flowchart(&errors))?;
            Ok((Arc::new(flowchart), None))
        }
        (Some(_), Some(_)) => Err(ApiError::unprocessable(
            "invalid_body",
            "give either `flowchart` or `definition`, not both",
        )),
        (None, None) => Err(ApiError::unprocessable(
            "invalid_body",
            "give `flowchart` (a stored name) or `definition`",
        )),
    }
}

/// Start a run.
///
/// Every event the start appends carries the request's `X-Request-ID` and `X-Correlation-ID`
/// (taken from the request or generated); later events of the run keep the correlation id.
/// With `Idempotency-Key`, repeating the same request returns the same run (200,
/// `replayed: true`) and writes nothing; the same key with another body is
/// `409 idempotency_key_reused`.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", request_body = StartRunBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes the start idempotent (1 to 255 visible ASCII)")),
    responses((status = 201, body = StartedRun), (status = 200, description = "an idempotent repeat", body = StartedRun),
        (status = 404, body = crate::openapi::ErrorEnvelopeDoc), (status = 409, body = crate::openapi::ErrorEnvelopeDoc),
        (status = 422, body = crate::openapi::ErrorEnvelopeDoc), (status = "4XX", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn start(
    State(state): State<ApiState>,
    context: RequestContext,
    headers: HeaderMap,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<StartRunBody>,
) -> Result<Response, ApiError> {
    let key = idempotency::key_from(&headers)?;
    let (flowchart, version) = resolve(&state, &body).await?;
    let inputs = body
        .inputs
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    storable::storable_bytes(&inputs)
        .map_err(|e| ApiError::unprocessable("invalid_inputs", format!("inputs: {e}")))?;
    let actor = crate::extract::actor(body.actor.clone(), &state.config().default_actor)?;
    let proposed = RunId::new_v7();
    let start = StartRun {
        run_id: proposed,
        flowchart,
        version,
        inputs,
        parent: None,
        actor,
    };
    // Everything the engine would refuse is refused before the key is recorded: a rejected
    // start must not burn its Idempotency-Key.
    check_start(&start, &context)?;

    let claim = match &key {
        Some(key) => {
            let body_value =
                serde_json::to_value(&body).map_err(|e| ApiError::internal("internal_error", e))?;
            let hash = idempotency::request_hash(&body_value)?;
            idempotency::claim(
                state.store(),
                key,
                hash,
                proposed,
                &context.request_id,
                &context.correlation_id,
            )
            .await?
        }
        None => Claim::Fresh(RunId::new_v7()),
    };
    let (run_id, replayed) = match claim {
        Claim::Fresh(run_id) => (run_id, false),
        Claim::Replay(run_id) => (run_id, true),
    };
    let stream = StreamId::for_run(run_id);
    let exists = replayed && state.store().stream_head(&stream).await?.is_some();
    if !exists {
        let start = StartRun { run_id, ..start };
        state
            .engine()
            .start(
                start,
                context.request_id.clone(),
                context.correlation_id.clone(),
            )
            .await?;
    }
    let summary = state.engine().ensure_driven(run_id).await?;
    let first = state.store().read_stream(&stream, 1, 1).await?;
    let started = first.first().ok_or_else(|| {
        ApiError::internal("ledger_corrupt", format!("{stream} has no first event"))
    })?;
    let flowchart_ref = match started.decode() {
        Ok(DomainEvent::RunStarted(e)) => e.flowchart,
        _ => {
            return Err(ApiError::internal(
                "ledger_corrupt",
                format!("{stream} does not begin with RunStarted"),
            ));
        }
    };
    let view = StartedRun {
        run_id: run_id.to_string(),
        status: summary.status.as_str().to_owned(),
        flowchart: FlowchartRefView {
            name: flowchart_ref.name,
            version: flowchart_ref.version,
            definition_hash: flowchart_ref.definition_hash.to_hex(),
        },
        request_id: started.request_id.to_string(),
        correlation_id: started.correlation_id.to_string(),
        replayed,
    };
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(view)).into_response();
    if let Ok(v) = HeaderValue::from_str(started.correlation_id.as_str()) {
        response.headers_mut().insert(CORRELATION_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/runs/{run_id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Decides the start without appending (the decider is pure): its refusals (inputs, the
/// flowchart) and events the ledger would refuse (U+0000 in a string, which PostgreSQL's
/// JSONB cannot hold) are `422` here, before anything is written.
fn check_start(start: &StartRun, context: &RequestContext) -> Result<(), ApiError> {
    let cause = Cause {
        request_id: context.request_id.clone(),
        correlation_id: context.correlation_id.clone(),
    };
    let (_, events) =
        decide::start_run(start.clone(), &mut SystemEnv, &cause, &Settings::default())
            .map_err(|e| ApiError::from(runledger_orchestrator::EngineError::Decide(e)))?;
    for event in &events {
        let new = NewEvent::from_domain(event).map_err(|e| {
            ApiError::unprocessable("invalid_body", format!("the start cannot be recorded: {e}"))
        })?;
        if has_nul(&new.payload) {
            return Err(ApiError::unprocessable(
                "invalid_inputs",
                "the start holds U+0000 in a string (inputs, actor or definition), which the ledger cannot store",
            ));
        }
    }
    Ok(())
}

/// Whether a string (or key) anywhere in `value` holds U+0000.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// A run's ledger (its stream), page by page, in stream order.
#[utoipa::path(get, path = "/v1/runs/{run_id}/events", tag = "runs", params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)"), LedgerQuery),
    responses((status = 200, body = LedgerPage), (status = 404, body = crate::openapi::ErrorEnvelopeDoc), (status = "4XX", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn ledger(
    State(state): State<ApiState>,
    Path(run): Path<String>,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Result<Json<LedgerPage>, ApiError> {
    let run = run_id(&run)?;
    let limit = match query.limit {
        None => 100,
        Some(n @ 1..=1000) => n as usize,
        Some(n) => {
            return Err(invalid_query(
                "limit",
                format!("limit must be 1 to 1000, not {n}"),
            ));
        }
    };
    let from = query.from_version.unwrap_or(1).max(1);
    let stream = StreamId::for_run(run);
    let head =
        state.store().stream_head(&stream).await?.ok_or_else(|| {
            ApiError::not_found("run_not_found", format!("run {run} does not exist"))
        })?;
    let events = state.store().read_stream(&stream, from, limit).await?;
    let next_from_version = events
        .last()
        .map(|e| e.stream_version + 1)
        .filter(|next| *next <= head.version);
    Ok(Json(LedgerPage {
        run_id: run.to_string(),
        stream_id: stream.to_string(),
        head_version: head.version,
        items: events.iter().map(LedgerEvent::of).collect(),
        next_from_version,
    }))
}

/// The canonical export of a run (JSON Lines: manifest, events, blobs), byte for byte what
/// `runledger export --run` writes; `runledger verify` checks it offline.
#[utoipa::path(get, path = "/v1/runs/{run_id}/export", tag = "runs", params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)")),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 404, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn export_run(
    State(state): State<ApiState>,
    Path(run): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let run = run_id(&run)?;
    let mut out: Vec<u8> = Vec::new();
    let scope = ExportScope::Stream(StreamId::for_run(run));
    match export(state.store(), &scope, &mut out, |_, _| {}).await {
        Ok(_) => {}
        Err(ExportError::NoSuchStream(_)) => {
            return Err(ApiError::not_found(
                "run_not_found",
                format!("run {run} does not exist"),
            ));
        }
        Err(ExportError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::internal("export_failed", e)),
    }
    let disposition = format!("attachment; filename=\"run-{run}.jsonl\"");
    let mut response = Response::new(Body::from(out));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
