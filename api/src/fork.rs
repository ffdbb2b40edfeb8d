//! `POST /v1/runs/{run_id}/fork`: a new run from a node of a finished run ([`Engine::fork`]),
//! linked both ways (`RunForked` on the fork, `RunForkedTo` on the source). The request's
//! `X-Request-ID` is its idempotency key, as for controls: the same request id and body return
//! the same fork (`deduplicated: true`), the same id with another body (or used on the source
//! for anything else) is `409 request_id_reused`.
//!
//! [`Engine::fork`]: runledger_orchestrator::Engine::fork

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use runledger_orchestrator::fork::ForkRequest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::context::{CORRELATION_ID, RequestContext};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, NoQuery, run_id};
use crate::state::ApiState;

/// Fork a finished run from one of its nodes.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkBody {
    /// The node to run again (with everything downstream of it); the source's results upstream
    /// of it are kept.
    pub from_node: String,
    /// An output for `from_node` instead of running it (as `skip`); not for `start`, `end` or
    /// `decision` nodes.
    #[serde(default)]
    pub output: Option<Value>,
    /// Default `api`.
    #[serde(default)]
    pub actor: Option<String>,
    /// Default `operator request`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The fork.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ForkResult {
    /// The new run.
    pub run_id: String,
    pub source_run_id: String,
    pub from_node: String,
    /// The source's stream version and head hash (hex) the fork was planned from.
    pub source_version: u64,
    pub source_head_hash: String,
    /// True when this request id had forked the source before: that fork is returned and
    /// nothing new was written.
    pub deduplicated: bool,
}

/// Fork a completed, failed or canceled run: a new run that keeps the source's results
/// upstream of `from_node` and runs `from_node` and what follows it again. The source is
/// unchanged but for a `RunForkedTo` link event.
#[utoipa::path(post, path = "/v1/runs/{run_id}/fork", tag = "control", request_body = ForkBody,
    params(("run_id" = String, Path, format = "uuid", description = "the source run's id (UUID)")),
    responses((status = 201, description = "forked", body = ForkResult),
        (status = 200, description = "this X-Request-ID forked the source before with the same body: that fork", body = ForkResult),
        (status = 404, description = "`run_not_found`, `unknown_node`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`source_not_finished`, `node_not_reached`, `node_not_skippable`, `request_id_reused` (this X-Request-ID wrote something else on the source)", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 422, description = "`invalid_input` (an output the ledger cannot store), `invalid_body`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn fork(
    State(state): State<ApiState>,
    context: RequestContext,
    Path(run): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ForkBody>,
) -> Result<Response, ApiError> {
    let source = run_id(&run)?;
    let control = crate::control::control_of(&state, body.actor, body.reason)?;
    let request = ForkRequest {
        source,
        from_node: body.from_node.clone(),
        output: body.output,
        control,
        request_id: context.request_id.clone(),
        correlation_id: Some(context.correlation_id.clone()),
    };
    let outcome = state.engine().fork(request).await?;
    let result = ForkResult {
        run_id: outcome.run_id.to_string(),
        source_run_id: source.to_string(),
        from_node: body.from_node,
        source_version: outcome.source.stream_version,
        source_head_hash: outcome.source.head_hash.to_hex(),
        deduplicated: outcome.deduplicated,
    };
    let status = if outcome.deduplicated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(result)).into_response();
    if let Ok(v) = HeaderValue::from_str(context.correlation_id.as_str()) {
        response.headers_mut().insert(CORRELATION_ID, v);
    }
    Ok(response)
}
