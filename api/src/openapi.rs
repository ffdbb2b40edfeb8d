//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and served at
//! `/openapi.json`. The committed copy, `docs/openapi.json`, must equal it: a test regenerates it
//! and fails on drift (`RUNLEDGER_BLESS=1 cargo test -p runledger-api openapi` rewrites it).

use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The error envelope every failure returns (`contracts/src/error.rs`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ErrorEnvelope)]
pub struct ErrorEnvelopeDoc {
    /// Always `false`.
    pub ok: bool,
    pub error: ErrorBodyDoc,
    pub correlation_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ErrorBody)]
pub struct ErrorBodyDoc {
    /// Stable, snake_case; clients branch on it.
    pub code: String,
    /// One line for people.
    pub message: String,
    /// Structured context (for an invalid flowchart: `{"errors": [...]}`).
    pub details: Value,
    pub request_id: Option<String>,
}

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Needed by POST, PUT, PATCH and DELETE when the server has RUNLEDGER_API_TOKEN set."))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "runledger API",
        description = "Flowcharts, runs, operator controls, artifacts, claims and live events of runledger. \
                       Every error is the error envelope. See docs/api.md.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerToken),
    security((), ("bearer" = [])),
    paths(
        crate::flowcharts::validate,
        crate::flowcharts::create,
        crate::flowcharts::list,
        crate::flowcharts::latest,
        crate::flowcharts::versions,
        crate::flowcharts::version,
        crate::runs::start,
        crate::runs::ledger,
        crate::runs::export_run,
        crate::read::list_runs,
        crate::read::run_detail,
        crate::read::node_run_detail,
        crate::read::list_artifacts,
        crate::read::artifact_detail,
        crate::read::claims,
        crate::read::run_claims,
        crate::control::pause,
        crate::control::resume,
        crate::control::cancel,
        crate::control::retry_node,
        crate::control::skip_node,
        crate::control::rewind_node,
        crate::live::events,
        crate::models::list,
        crate::models::get,
        crate::models::create,
        crate::models::update,
        crate::models::delete,
        crate::ops::healthz,
        crate::ops::readyz,
        crate::ops::metrics,
        openapi_json,
    ),
    tags(
        (name = "flowcharts", description = "The flowchart registry: immutable versions in the ledger."),
        (name = "runs", description = "Start runs; read them, their ledger and their export."),
        (name = "control", description = "Operator controls, each an event with actor and reason."),
        (name = "artifacts", description = "The one artifact of every node run (artifact_history projection)."),
        (name = "claims", description = "Claims evaluated over the ledger (claim_evidence projection)."),
        (name = "events", description = "Live ledger events over Server-Sent Events."),
        (name = "models", description = "The model registry: which provider and model id each `model:` name means."),
        (name = "operations", description = "Health, readiness, metrics, this document."),
    )
)]
pub struct ApiDoc;

/// The document as served: pretty JSON with a final newline, exactly the committed file.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Json<Value> {
    Json(serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null))
}
