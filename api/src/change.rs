//! How the registries' writes answer over HTTP (models, RAG collections and index runs): 201
//! (or the handler's status) for a change this request made, 200 for a repeat of a request id
//! already applied (`deduplicated`), the request id echoed as `X-Correlation-ID` (the
//! registries record it as their events' correlation id), and the actor taken from the body or
//! the server's default.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::context::{CORRELATION_ID, RequestContext};
use crate::error::ApiError;
use crate::state::ApiState;

/// `body` with `status`, or 200 when the request id had already been applied.
pub fn respond<B: Serialize>(
    body: B,
    deduplicated: bool,
    status: StatusCode,
    context: &RequestContext,
) -> Response {
    let status = if deduplicated { StatusCode::OK } else { status };
    correlated((status, Json(body)).into_response(), context)
}

/// The response with the request id as its `X-Correlation-ID`.
pub fn correlated(mut response: Response, context: &RequestContext) -> Response {
    if let Ok(v) = HeaderValue::from_str(context.request_id.as_str()) {
        response.headers_mut().insert(CORRELATION_ID, v);
    }
    response
}

/// Who makes the change: the body's `actor`, checked, or the server's default.
pub fn actor(state: &ApiState, given: Option<String>) -> Result<String, ApiError> {
    crate::extract::actor(given, &state.config().default_actor)
}

/// A registry's refusal with the field it names (`details.field`), when it names one.
pub fn with_field(error: ApiError, field: Option<String>) -> ApiError {
    match field {
        Some(field) => error.with_details(serde_json::json!({ "field": field })),
        None => error,
    }
}
