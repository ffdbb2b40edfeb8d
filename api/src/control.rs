//! Operator controls: pause, resume, cancel a run; retry, skip, rewind a node. Each goes
//! through the engine's driver of the run (`Engine::control`), with the actor and reason from
//! the body and the request's `X-Request-ID` as its idempotency key: the same request id
//! applies once (`deduplicated: true` the second time); the same id with another control (or
//! the id of another request of the run, e.g. its start) is `409 request_id_reused`. A control
//! that does not apply is `409` with the decider's stable code (`run_not_running`,
//! `node_not_failed`, ...) and writes nothing.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use runledger_contracts::events::Control;
use runledger_contracts::ids::RunId;
use runledger_orchestrator::ControlAction;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::context::{CORRELATION_ID, RequestContext};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, NoQuery, run_id};
use crate::runs::LedgerEvent;
use crate::state::ApiState;

const DEFAULT_REASON: &str = "operator request";

/// Who acts and why (both recorded on the control event). The body may be left out.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    /// Default `api`.
    #[serde(default)]
    pub actor: Option<String>,
    /// Default `operator request`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cancel: graceful by default; `force: true` cancels running node runs now.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub force: bool,
}

/// Skip: end the node's running or failed node run with `output`; downstream continues with it.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkipBody {
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The output downstream nodes see.
    pub output: Value,
}

/// What a control did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ControlResult {
    pub run_id: String,
    /// `pause`, `resume`, `cancel`, `cancel --force`, `retry`, `skip`, `rewind`.
    pub action: String,
    /// True when this request id had been applied before: nothing new was written.
    pub deduplicated: bool,
    /// The events the control appended (or appended the first time).
    pub events: Vec<LedgerEvent>,
}

pub(crate) fn control_of(
    state: &ApiState,
    actor: Option<String>,
    reason: Option<String>,
) -> Result<Control, ApiError> {
    let actor = crate::extract::actor(actor, &state.config().default_actor)?;
    let reason = reason.unwrap_or_else(|| DEFAULT_REASON.to_owned());
    if reason.chars().count() > 2000 || reason.contains('\0') {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "`reason` must be at most 2,000 characters, without U+0000",
        )
        .with_details(serde_json::json!({ "field": "reason" })));
    }
    Ok(Control { actor, reason })
}

async fn apply(
    state: &ApiState,
    context: &RequestContext,
    run: RunId,
    action: ControlAction,
    control: Control,
) -> Result<Response, ApiError> {
    let name = action.name().to_owned();
    let asked = (action.clone(), control.clone());
    let outcome = state
        .engine()
        .control(run, action, control, context.request_id.clone())
        .await?;
    if outcome.deduplicated
        && !crate::control_match::same_control(&asked.0, &asked.1, &outcome.events)
    {
        return Err(ApiError::conflict(
            "request_id_reused",
            format!(
                "request id `{}` was already used on run {run} for something else; send this control with a new X-Request-ID",
                context.request_id
            ),
        ));
    }
    let correlation = outcome.events.first().map(|e| e.correlation_id.clone());
    let result = ControlResult {
        run_id: run.to_string(),
        action: name,
        deduplicated: outcome.deduplicated,
        events: outcome.events.iter().map(LedgerEvent::of).collect(),
    };
    let mut response = Json(result).into_response();
    // Control events carry the run's correlation id; say so.
    if let Some(v) = correlation.and_then(|c| HeaderValue::from_str(c.as_str()).ok()) {
        response.headers_mut().insert(CORRELATION_ID, v);
    }
    Ok(response)
}

/// Pause a running run: nothing new is scheduled; running node runs finish.
#[utoipa::path(post, path = "/v1/runs/{run_id}/pause", tag = "control", request_body(content = ControlBody, description = "optional"),
    params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)")),
    responses((status = 200, body = ControlResult), (status = 404, body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`run_not_running`, `request_id_reused` (this X-Request-ID wrote something else on the run)", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn pause(
    State(state): State<ApiState>,
    context: RequestContext,
    Path(run): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ControlBody>,
) -> Result<Response, ApiError> {
    let run = run_id(&run)?;
    let control = control_of(&state, body.actor, body.reason)?;
    apply(&state, &context, run, ControlAction::Pause, control).await
}

/// Resume a paused run.
#[utoipa::path(post, path = "/v1/runs/{run_id}/resume", tag = "control", request_body(content = ControlBody, description = "optional"),
    params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)")),
    responses((status = 200, body = ControlResult), (status = 404, body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`run_not_paused`, `request_id_reused` (this X-Request-ID wrote something else on the run)", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn resume(
    State(state): State<ApiState>,
    context: RequestContext,
    Path(run): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ControlBody>,
) -> Result<Response, ApiError> {
    let run = run_id(&run)?;
    let control = control_of(&state, body.actor, body.reason)?;
    apply(&state, &context, run, ControlAction::Resume, control).await
}

/// Cancel a run: running node runs finish, then the run is canceled; with `force`, they are
/// canceled now.
#[utoipa::path(post, path = "/v1/runs/{run_id}/cancel", tag = "control", request_body(content = CancelBody, description = "optional"),
    params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)")),
    responses((status = 200, body = ControlResult), (status = 404, body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`run_not_cancelable`, `request_id_reused` (this X-Request-ID wrote something else on the run)", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn cancel(
    State(state): State<ApiState>,
    context: RequestContext,
    Path(run): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Response, ApiError> {
    let run = run_id(&run)?;
    let control = control_of(&state, body.actor, body.reason)?;
    apply(
        &state,
        &context,
        run,
        ControlAction::Cancel { force: body.force },
        control,
    )
    .await
}

/// Re-run a failed or timed-out node with its recorded inputs (reopens a failed run).
#[utoipa::path(post, path = "/v1/runs/{run_id}/nodes/{node_id}/retry", tag = "control", request_body(content = ControlBody, description = "optional"),
    params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)"), ("node_id" = String, Path, description = "node id in the run's flowchart")),
    responses((status = 200, body = ControlResult), (status = 404, description = "`run_not_found`, `unknown_node`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`node_busy`, `node_not_failed`, `run_not_controllable`, `request_id_reused` (this X-Request-ID wrote something else on the run)", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn retry_node(
    State(state): State<ApiState>,
    context: RequestContext,
    Path((run, node)): Path<(String, String)>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ControlBody>,
) -> Result<Response, ApiError> {
    let run = run_id(&run)?;
    let control = control_of(&state, body.actor, body.reason)?;
    apply(
        &state,
        &context,
        run,
        ControlAction::RetryNode { node },
        control,
    )
    .await
}

/// End the node's running or failed node run with the given output; downstream continues.
#[utoipa::path(post, path = "/v1/runs/{run_id}/nodes/{node_id}/skip", tag = "control", request_body = SkipBody,
    params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)"), ("node_id" = String, Path, description = "node id in the run's flowchart")),
    responses((status = 200, body = ControlResult), (status = 404, description = "`run_not_found`, `unknown_node`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`node_not_skippable`, `run_not_controllable`, `request_id_reused` (this X-Request-ID wrote something else on the run)", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 422, description = "`invalid_input`, `invalid_body`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn skip_node(
    State(state): State<ApiState>,
    context: RequestContext,
    Path((run, node)): Path<(String, String)>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<SkipBody>,
) -> Result<Response, ApiError> {
    let run = run_id(&run)?;
    let control = control_of(&state, body.actor, body.reason)?;
    apply(
        &state,
        &context,
        run,
        ControlAction::SkipNode {
            node,
            output: body.output,
        },
        control,
    )
    .await
}

/// Re-run the node and everything downstream of it; upstream results are kept.
#[utoipa::path(post, path = "/v1/runs/{run_id}/nodes/{node_id}/rewind", tag = "control", request_body(content = ControlBody, description = "optional"),
    params(("run_id" = String, Path, format = "uuid", description = "run id (UUID)"), ("node_id" = String, Path, description = "node id in the run's flowchart")),
    responses((status = 200, body = ControlResult), (status = 404, description = "`run_not_found`, `unknown_node`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`node_never_ran`, `run_not_controllable`, `request_id_reused` (this X-Request-ID wrote something else on the run)", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn rewind_node(
    State(state): State<ApiState>,
    context: RequestContext,
    Path((run, node)): Path<(String, String)>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ControlBody>,
) -> Result<Response, ApiError> {
    let run = run_id(&run)?;
    let control = control_of(&state, body.actor, body.reason)?;
    apply(
        &state,
        &context,
        run,
        ControlAction::RewindNode { node },
        control,
    )
    .await
}
