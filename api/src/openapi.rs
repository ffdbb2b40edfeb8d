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
                    .description(Some("Needed by every request but /healthz, /readyz, /openapi.json and /v1/session when the server has RUNLEDGER_API_TOKEN set (GET requests not, with RUNLEDGER_API_OPEN_READS=1); the Studio console uses a session cookie instead."))
                    .build(),
            ),
        );
    }
}

/// The statuses every route may answer besides its own, with their codes, added to each
/// operation that does not document them itself: so the document names every status the
/// server can send (schemathesis checks that in CI, `ops/schemathesis.sh`).
struct CommonResponses;

fn envelope(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build(),
        )
        .into()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (false, item.get.as_mut()),
                (true, item.post.as_mut()),
                (true, item.put.as_mut()),
                (true, item.delete.as_mut()),
            ];
            for (mutating, operation) in operations {
                let Some(operation) = operation else { continue };
                let has_body = operation.request_body.is_some();
                let mut common: Vec<(&str, String)> = vec![(
                    "400",
                    "a malformed request: `invalid_header` (X-Request-ID, X-Correlation-ID, Idempotency-Key, Last-Event-ID), `invalid_query` (an unknown, malformed or out-of-range query parameter, U+0000), `invalid_id` (a path id that is not a UUID, U+0000 in the path)".to_owned()
                        + if has_body { ", `malformed_json`, `unknown_field`, `unreadable_body`" } else { "" },
                )];
                let public = matches!(
                    path.as_str(),
                    "/healthz" | "/readyz" | "/openapi.json" | "/v1/session"
                );
                if mutating && !public {
                    common.push(("401", "`unauthorized`: the server has RUNLEDGER_API_TOKEN set and the request has neither `Authorization: Bearer <token>` nor a Studio session cookie".into()));
                    common.push(("403", "`csrf_header_missing`: authenticated by the Studio session cookie alone, without the `X-Runledger-Csrf` header".into()));
                } else if !public {
                    common.push(("401", "`unauthorized`: the server has RUNLEDGER_API_TOKEN set (reads not opened by RUNLEDGER_API_OPEN_READS) and the request has neither `Authorization: Bearer <token>` nor a Studio session cookie".into()));
                }
                if has_body {
                    common.push((
                        "408",
                        "`request_timeout`: the body did not arrive within 30 s".into(),
                    ));
                    common.push(("413", "`payload_too_large`: the body is over 4 MiB".into()));
                    common.push((
                        "415",
                        "`unsupported_media_type`: the body is not `application/json`".into(),
                    ));
                }
                let names_something = path.contains("{name}");
                if has_body || mutating || names_something {
                    common.push(("422", "`invalid_body` (the body is not an object, a field has the wrong type or is missing, a value is out of bounds, e.g. `actor`; `details.field`), `invalid_flowchart_name` (a flowchart name outside `A-Z a-z 0-9 _ - .`, 1 to 128), a model spec code with `details.field` (an invalid model name or spec), `invalid_value` with `details.field` (an invalid collection name)".into()));
                }
                let static_route = matches!(
                    path.as_str(),
                    "/healthz" | "/openapi.json" | "/v1/flowcharts/validate" | "/v1/session"
                );
                if !static_route {
                    common.push((
                        "503",
                        "`database_error`: the database is unavailable".into(),
                    ));
                }
                common.push(("500", "`internal_error` or a corrupt ledger or projection (`ledger_corrupt`, `run_corrupt`, `projection_corrupt`); details only in the server log".into()));
                let responses = &mut operation.responses.responses;
                for (status, description) in common {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| envelope(&description));
                }
                responses.remove("4XX");
            }
        }
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
    modifiers(&BearerToken, &CommonResponses),
    components(schemas(crate::live::LiveEvent)),
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
        crate::fork::fork,
        crate::live::events,
        crate::models::list,
        crate::models::get,
        crate::models::create,
        crate::models::update,
        crate::models::delete,
        crate::rag::list,
        crate::rag::get,
        crate::rag::create,
        crate::rag::delete,
        crate::rag::status,
        crate::rag::index,
        crate::rag::query,
        crate::session::get,
        crate::session::create,
        crate::session::delete,
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
        (name = "rag", description = "RAG collections, their index runs (full or delta) and queries."),
        (name = "session", description = "Browser sessions of the Studio console: the token traded once for an HttpOnly cookie."),
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
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document", body = Object),
    (status = 400, description = "`invalid_query`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn openapi_json(
    crate::extract::ApiQuery(crate::extract::NoQuery {}): crate::extract::ApiQuery<
        crate::extract::NoQuery,
    >,
) -> Json<Value> {
    Json(serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null))
}
