//! Every failure the API returns is the error envelope of `contracts/src/error.rs` with a stable
//! code. Handlers return [`ApiError`]; the request-context middleware fills in the request and
//! correlation ids and writes the body, so an envelope always names the ids of its request.
//! Responses axum produces on its own (unknown route, wrong method, body too large) are turned
//! into envelopes there as well.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runledger_contracts::error::ErrorEnvelope;
use runledger_ledger::StoreError;
use runledger_orchestrator::{DecideError, EngineError};
use serde_json::Value;

/// A failed request: status, stable code, one line for people, and structured details.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A failure of ours (database, corrupt ledger): the message is logged in full and
    /// returned without internals.
    pub fn internal(code: &str, message: impl std::fmt::Display) -> Self {
        tracing::error!(code, error = %message, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            format!("internal error ({code}); see the server log"),
        )
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// The envelope without ids; the middleware adds them.
    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope::new(self.code.clone(), self.message.clone())
            .with_details(self.details.clone())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

/// Marks a response whose body the request-context middleware must write as an envelope.
#[derive(Debug, Clone)]
pub struct PendingEnvelope(pub ErrorEnvelope);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
            .extensions_mut()
            .insert(PendingEnvelope(self.envelope()));
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Database(_) | StoreError::Migration(_) => {
                tracing::error!(error = %e, "ledger unavailable");
                ApiError::unavailable("database_error", "the ledger database is unavailable")
            }
            StoreError::Conflict { .. } => ApiError::conflict(e.code(), e.to_string()),
            StoreError::RequestMismatch { .. } => ApiError::conflict(e.code(), e.to_string()),
            StoreError::InvalidEvent { .. }
            | StoreError::InvalidRequest(_)
            | StoreError::MissingBlob { .. } => ApiError::unprocessable(e.code(), e.to_string()),
            StoreError::Corrupt(_) => ApiError::internal(e.code(), &e),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => e.into(),
            EngineError::Decide(DecideError::NotApplicable { code, message }) => {
                let status = if code == "unknown_node" {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::CONFLICT
                };
                ApiError::new(status, code, message)
            }
            EngineError::Decide(e @ DecideError::InvalidInput { .. }) => {
                ApiError::unprocessable(e.code(), e.to_string())
            }
            EngineError::Decide(e @ DecideError::UnknownNodeRun(_)) => {
                ApiError::not_found(e.code(), e.to_string())
            }
            EngineError::Decide(e @ DecideError::State(_)) => ApiError::internal(e.code(), &e),
            e @ EngineError::RunNotFound(_) => ApiError::not_found(e.code(), e.to_string()),
            e @ EngineError::Corrupt { .. } => ApiError::internal(e.code(), &e),
            e @ (EngineError::Shutdown | EngineError::Contended(_)) => {
                ApiError::unavailable(e.code(), e.to_string())
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "query failed");
        ApiError::unavailable("database_error", "the database is unavailable")
    }
}

/// The code and message for a response axum or a layer produced without an envelope.
pub fn envelope_for_status(status: StatusCode) -> ApiError {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("route_not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as application/json",
        ),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
        s if s.is_client_error() => ("bad_request", "the request is not valid"),
        _ => ("internal_error", "internal error; see the server log"),
    };
    ApiError::new(status, code, message)
}
