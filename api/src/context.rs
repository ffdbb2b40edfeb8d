//! The outermost middleware: request and correlation ids, the bearer token, and error envelopes.
//!
//! - `X-Request-ID` and `X-Correlation-ID` are taken from the request (1 to 128 visible ASCII
//!   characters) or generated, handed to handlers as a [`RequestContext`], and returned on every
//!   response. Handlers write them on the events the request causes.
//! - With a token configured, every request needs it, as `Authorization: Bearer <token>` or the
//!   Studio's session cookie (`session.rs`), except the console's own files, `/healthz`,
//!   `/readyz`, `/openapi.json` and `/v1/session`; `open_reads` opens GET requests again. A
//!   mutating request authenticated by the cookie alone must carry `X-Runledger-Csrf`. The
//!   comparison takes the same time whatever the guess, and the token is never logged.
//! - Every error response leaves here as the error envelope, naming the request's ids.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use runledger_contracts::ids::{CorrelationId, RequestId};

use crate::error::{ApiError, PendingEnvelope, envelope_for_status};
use crate::state::ApiState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The ids of one request, as handlers see them.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: RequestId,
    pub correlation_id: CorrelationId,
    /// The client sent `X-Correlation-ID` (rather than it being generated).
    pub correlation_given: bool,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(|| ApiError::internal("internal_error", "request context missing"))
    }
}

fn header_token<T>(
    headers: &HeaderMap,
    name: &HeaderName,
    parse: impl Fn(String) -> Result<T, runledger_contracts::ids::IdError>,
) -> Result<Option<T>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| invalid_header(name))?;
    parse(text.to_owned())
        .map(Some)
        .map_err(|_| invalid_header(name))
}

fn invalid_header(name: &HeaderName) -> ApiError {
    ApiError::bad_request(
        "invalid_header",
        format!("header `{name}` must be 1 to 128 visible ASCII characters"),
    )
}

fn is_mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 section 11.1).
fn bearer_credentials(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches(' '))
}

/// A request whose path or query holds U+0000 (`%00`): nothing downstream can store or look
/// it up (PostgreSQL text refuses it), so it is refused here for every route.
fn nul_in_uri(request: &Request) -> Option<ApiError> {
    let has_nul = |text: &str| text.contains("%00");
    if has_nul(request.uri().path()) {
        return Some(ApiError::bad_request(
            "invalid_id",
            "the path holds U+0000 (`%00`), which no name or id may contain",
        ));
    }
    request.uri().query().filter(|q| has_nul(q)).map(|_| {
        ApiError::bad_request(
            "invalid_query",
            "a query parameter holds U+0000 (`%00`), which no parameter may contain",
        )
    })
}

/// Compares the presented bearer token with the configured one in time independent of where
/// they differ (blake3 digests compare in constant time).
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .unwrap_or("");
    blake3::hash(presented.as_bytes()) == blake3::hash(token.as_bytes())
}

pub fn unauthorized() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this request needs `Authorization: Bearer <token>` with the server's API token (or a Studio session)",
    )
}

/// Requests anyone may make even with a token set: probes, the API's description, the
/// console's files (they hold no data) and the session endpoint that trades the token for a
/// cookie.
fn is_public(method: &Method, path: &str) -> bool {
    if path == "/v1/session" {
        return true;
    }
    (*method == Method::GET || *method == Method::HEAD)
        && (matches!(path, "/healthz" | "/readyz" | "/openapi.json")
            || crate::studio::is_studio_path(path))
}

/// With a token configured: the request's credentials, or why it is refused.
fn authorize(config: &crate::state::ApiConfig, request: &Request) -> Option<ApiError> {
    let token = config.token.as_deref()?;
    let method = request.method();
    if is_public(method, request.uri().path()) {
        return None;
    }
    let mutating = is_mutating(method);
    if !mutating && config.open_reads {
        return None;
    }
    let headers = request.headers();
    if bearer_matches(headers, token) {
        return None;
    }
    if crate::session::cookie_matches(headers, token) {
        if mutating && !headers.contains_key(crate::session::CSRF_HEADER) {
            return Some(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "csrf_header_missing",
                "a request authenticated by the session cookie must carry the `X-Runledger-Csrf` header",
            ));
        }
        return None;
    }
    Some(unauthorized())
}

pub async fn middleware(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let request_id = header_token(headers, &REQUEST_ID, RequestId::new);
    let correlation_id = header_token(headers, &CORRELATION_ID, CorrelationId::new);
    let (request_id, correlation_id, early) = match (request_id, correlation_id) {
        (Ok(r), Ok(c)) => (r, c, None),
        (Err(e), _) | (_, Err(e)) => (None, None, Some(e)),
    };
    let context = RequestContext {
        correlation_given: correlation_id.is_some(),
        request_id: request_id.unwrap_or_else(RequestId::generate),
        correlation_id: correlation_id.unwrap_or_else(CorrelationId::generate),
    };
    let early = early
        .or_else(|| authorize(state.config(), &request))
        .or_else(|| nul_in_uri(&request));
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http_request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %context.request_id,
        correlation_id = %context.correlation_id,
    );
    let response = match early {
        Some(error) => axum::response::IntoResponse::into_response(error),
        None => {
            request.extensions_mut().insert(context.clone());
            tracing::Instrument::instrument(next.run(request), span.clone()).await
        }
    };
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
    let response = finish(response, &context);
    state.metrics().observe_request(
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Writes pending envelopes (and envelopes for bare error responses) and sets the id headers.
fn finish(mut response: Response, context: &RequestContext) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(&REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(context.request_id.as_str())
    {
        headers.insert(REQUEST_ID, v);
    }
    if !headers.contains_key(&CORRELATION_ID)
        && let Ok(v) = HeaderValue::from_str(context.correlation_id.as_str())
    {
        headers.insert(CORRELATION_ID, v);
    }
    let status = response.status();
    let pending = response.extensions_mut().remove::<PendingEnvelope>();
    let envelope = match pending {
        Some(PendingEnvelope(envelope)) => envelope,
        None if (status.is_client_error() || status.is_server_error())
            && !is_json(response.headers()) =>
        {
            envelope_for_status(status).envelope()
        }
        None => return response,
    };
    // The correlation id the response names (a handler may have set the run's own).
    let correlation = response
        .headers()
        .get(&CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| context.correlation_id.to_string(), str::to_owned);
    let envelope = envelope.with_ids(Some(context.request_id.to_string()), Some(correlation));
    let body = serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}
