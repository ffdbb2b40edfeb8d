//! Browser sessions for the Studio console (`/v1/session`).
//!
//! A browser cannot put a bearer token on an `EventSource` or a download link, and script
//! that can read a token can leak it. So the console sends the token once to
//! `POST /v1/session` and gets back an `HttpOnly; SameSite=Strict` cookie that script never
//! sees. The cookie does not hold the token: it holds a keyed blake3 digest derived from it, so
//! a copied cookie does not reveal the token and changing the token ends every session.
//!
//! Cross-site request forgery: `SameSite=Strict` keeps other sites' requests from carrying the
//! cookie, and a mutating request authenticated by the cookie alone must also carry the header
//! [`CSRF_HEADER`], which a cross-origin page can only send after a CORS preflight this server
//! never grants (and which a `<form>` cannot send at all).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, NoQuery};
use crate::state::ApiState;

/// The session cookie's name.
pub const COOKIE: &str = "runledger_session";

/// The header a cookie-authenticated mutating request must carry (any value).
pub const CSRF_HEADER: &str = "x-runledger-csrf";

/// The cookie value for `token`: a digest keyed by the token's own hash, never the token.
pub fn cookie_value(token: &str) -> String {
    let key = blake3::hash(token.as_bytes());
    blake3::keyed_hash(key.as_bytes(), b"runledger studio session v1")
        .to_hex()
        .to_string()
}

/// Whether the request's cookies hold a session for `token` (compared as blake3 digests, in
/// time independent of where a guess differs).
pub fn cookie_matches(headers: &HeaderMap, token: &str) -> bool {
    let expected = blake3::hash(cookie_value(token).as_bytes());
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .any(|(_, value)| blake3::hash(value.as_bytes()) == expected)
}

/// What the console needs to know before it shows anything.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionState {
    /// The server has `RUNLEDGER_API_TOKEN` set.
    pub token_required: bool,
    /// Reads are open without the token (`RUNLEDGER_API_OPEN_READS=1`).
    pub reads_open: bool,
    /// This request carries a valid session cookie or bearer token (always true without a
    /// token).
    pub authenticated: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The server's API token.
    pub token: String,
}

fn session_state(state: &ApiState, headers: &HeaderMap) -> SessionState {
    let config = state.config();
    let authenticated = match config.token.as_deref() {
        None => true,
        Some(token) => {
            cookie_matches(headers, token) || crate::context::bearer_matches(headers, token)
        }
    };
    SessionState {
        token_required: config.token.is_some(),
        reads_open: config.open_reads,
        authenticated,
    }
}

/// Whether the console must ask for the token, and whether this browser already has a session.
#[utoipa::path(get, path = "/v1/session", tag = "session",
    responses((status = 200, body = SessionState)))]
pub async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Json<SessionState> {
    Json(session_state(&state, &headers))
}

/// Trades the API token for an `HttpOnly; SameSite=Strict` session cookie (`runledger_session`).
/// Without a token configured there is nothing to trade: `200` and no cookie.
#[utoipa::path(post, path = "/v1/session", tag = "session", request_body = Login,
    responses((status = 200, description = "the session; `Set-Cookie` when a token is configured", body = SessionState),
        (status = 401, description = "`unauthorized`: not the server's token", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn create(
    State(state): State<ApiState>,
    ApiJson(login): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let Some(token) = state.config().token.as_deref() else {
        return Ok(Json(session_state(&state, &HeaderMap::new())).into_response());
    };
    if blake3::hash(login.token.as_bytes()) != blake3::hash(token.as_bytes()) {
        return Err(crate::context::unauthorized());
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        cookie_value(token)
    );
    let mut response = Json(SessionState {
        token_required: true,
        reads_open: state.config().open_reads,
        authenticated: true,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Ends the browser's session: clears the cookie.
#[utoipa::path(delete, path = "/v1/session", tag = "session",
    responses((status = 204, description = "the cookie is cleared")))]
pub async fn delete(ApiQuery(NoQuery {}): ApiQuery<NoQuery>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "runledger_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}
