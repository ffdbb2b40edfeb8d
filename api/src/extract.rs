//! Request extractors whose failures are error envelopes: JSON bodies (malformed, unknown
//! fields, too large, too slow, not an object), query strings, ids in paths, actors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::{StatusCode, header, request::Parts};
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::strict_json;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::ApiError;
use crate::state::ApiState;

/// A JSON body. An empty body reads as `{}` (so bodies whose fields all have defaults may be
/// left out); anything else must be `application/json`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let json_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        // A client that sends its body slowly (or never) holds a connection and a task: the
        // whole body must arrive within the body read timeout.
        let read = Bytes::from_request(request, state);
        let bytes = match tokio::time::timeout(state.config().body_read_timeout, read).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        state.config().body_read_timeout.as_secs_f64()
                    ),
                ));
            }
            Ok(read) => read.map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than the limit",
                    )
                } else {
                    ApiError::bad_request("unreadable_body", "the request body could not be read")
                }
            })?,
        };
        if bytes.is_empty() {
            return parse(b"{}").map(ApiJson);
        }
        if json_type != Some(true) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        // serde reads a struct from an array too (fields by position): every body is an object.
        if bytes.trim_ascii_start().first() == Some(&b'[') {
            return Err(ApiError::unprocessable(
                "invalid_body",
                "the body must be a JSON object, not an array",
            ));
        }
        parse(&bytes).map(ApiJson)
    }
}

/// Reads a body strictly: an array is refused wherever an object is meant, at any depth
/// (`{"spec": [...]}`), and a type error names the field's path.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    strict_json::from_slice(bytes).map_err(|err| {
        let e = &err.source;
        let mut at = json!({ "line": e.line(), "column": e.column() });
        if let Some(path) = &err.path {
            at["field"] = json!(path);
        }
        match e.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => {
                ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
                    .with_details(at)
            }
            serde_json::error::Category::Data if e.to_string().starts_with("unknown field") => {
                ApiError::bad_request(
                    "unknown_field",
                    format!("the body has a field this endpoint does not take: {err}"),
                )
                .with_details(at)
            }
            serde_json::error::Category::Data => ApiError::unprocessable(
                "invalid_body",
                format!("the body does not fit this endpoint: {err}"),
            )
            .with_details(at),
        }
    })
}

/// A query string; unknown or malformed parameters are `400 invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

pub fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse()
        .map_err(|e: runledger_contracts::ids::IdError| {
            ApiError::bad_request("invalid_id", e.to_string())
        })
}

pub fn node_run_id(text: &str) -> Result<NodeRunId, ApiError> {
    text.parse()
        .map_err(|e: runledger_contracts::ids::IdError| {
            ApiError::bad_request("invalid_id", e.to_string())
        })
}

/// A query-parameter problem: `400 invalid_query`, `details.parameter` naming it. Every
/// problem with a query string has this one code (an unknown or malformed parameter, a limit
/// out of range, a bad cursor or filter).
pub fn invalid_query(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", message).with_details(json!({ "parameter": parameter }))
}

/// Page sizes: default 50, at most 500.
pub fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=500) => Ok(n as usize),
        Some(n) => Err(invalid_query(
            "limit",
            format!("limit must be 1 to 500, not {n}"),
        )),
    }
}

/// Routes that take no query parameters refuse any (`400 invalid_query`), as the others refuse
/// unknown ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// Longest `actor` recorded on an event, in characters.
pub const MAX_ACTOR_CHARS: usize = 200;

/// The actor a request names, or the server's default: 1 to 200 characters, not blank, no
/// control characters (`422 invalid_body`, `details.field` = `actor`).
pub fn actor(given: Option<String>, default: &str) -> Result<String, ApiError> {
    let actor = given.unwrap_or_else(|| default.to_owned());
    let chars = actor.chars().count();
    if actor.trim().is_empty() || chars > MAX_ACTOR_CHARS || actor.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_body",
            format!(
                "`actor` must be 1 to {MAX_ACTOR_CHARS} characters, not blank, without control characters"
            ),
        )
        .with_details(json!({ "field": "actor" })));
    }
    Ok(actor)
}
