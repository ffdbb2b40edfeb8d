//! `/v1/flowcharts`: validate, create a new immutable version, list, get a version.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runledger_contracts::flowchart::{
    Flowchart, SourceFormat, ValidationCode, ValidationError, load,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, NoQuery, page_limit};
use crate::registry::{RegistryError, StoredFlowchart};
use crate::state::ApiState;

/// A flowchart to check.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The flowchart: a JSON object, or its YAML or JSON text as a string.
    pub definition: Value,
}

/// A flowchart to store as a new version of its `name`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFlowchartBody {
    /// The flowchart: a JSON object, or its YAML or JSON text as a string.
    pub definition: Value,
    /// Who creates it (recorded on the event); default `api`.
    #[serde(default)]
    pub actor: Option<String>,
}

/// One problem with a flowchart, exactly as `runledger validate --json` prints it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidationProblem {
    /// Stable code, e.g. `unknown_key`, `condition_syntax`.
    pub code: String,
    /// The offending field, e.g. `nodes[1].colour`; `""` for the document.
    pub path: String,
    pub message: String,
}

/// `{"valid": bool, "errors": [...]}`, the shape of `runledger validate --json`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidationReport {
    pub valid: bool,
    pub errors: Vec<ValidationProblem>,
}

/// A stored flowchart version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowchartVersionView {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    /// blake3 of the canonical JSON of `definition`; runs of this version record the same.
    pub definition_hash: String,
    pub nodes: usize,
    pub connectors: usize,
    pub actor: String,
    pub created_at: String,
    pub request_id: String,
    pub correlation_id: String,
    /// The definition; left out of lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
    /// On create: whether a new version was written (false: it equals the latest version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

impl FlowchartVersionView {
    fn of(stored: &StoredFlowchart, with_definition: bool) -> Self {
        let doc = stored.flowchart.doc();
        Self {
            name: stored.name.clone(),
            version: stored.version,
            description: doc.description.clone(),
            definition_hash: stored.definition_hash.to_hex(),
            nodes: doc.nodes.len(),
            connectors: doc.connectors.len(),
            actor: stored.actor.clone(),
            created_at: stored.created_at.to_string(),
            request_id: stored.request_id.to_string(),
            correlation_id: stored.correlation_id.to_string(),
            definition: with_definition.then(|| stored.definition.clone()),
            created: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowchartPage {
    /// The latest version of each flowchart, by name.
    pub items: Vec<FlowchartVersionView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowchartVersionList {
    /// Every version, oldest first, without definitions.
    pub items: Vec<FlowchartVersionView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowchartListQuery {
    /// Names after this one (the previous page's `next_cursor`).
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Parses and validates a definition given as an object or as text.
pub fn load_definition(definition: &Value) -> Result<Flowchart, Vec<ValidationError>> {
    match definition {
        Value::String(text) => load(text, SourceFormat::Auto),
        Value::Object(_) => load(&definition.to_string(), SourceFormat::Json),
        _ => Err(vec![ValidationError::new(
            ValidationCode::InvalidValue,
            "",
            "`definition` must be a flowchart object or its YAML or JSON text",
        )]),
    }
}

/// [`load_definition`] on the blocking pool: parsing and validating a large document takes
/// CPU time (a 4 MiB flowchart takes a good fraction of a second), which must not stall the
/// async workers that serve every other request, `/healthz` included.
pub async fn load_definition_blocking(
    definition: Value,
) -> Result<Result<Flowchart, Vec<ValidationError>>, ApiError> {
    tokio::task::spawn_blocking(move || load_definition(&definition))
        .await
        .map_err(|e| ApiError::internal("validation_failed", e))
}

fn problems(errors: &[ValidationError]) -> Vec<ValidationProblem> {
    errors
        .iter()
        .map(|e| ValidationProblem {
            code: e.code.as_str().to_owned(),
            path: e.path.clone(),
            message: e.message.clone(),
        })
        .collect()
}

/// The envelope for a flowchart that does not validate: `422 invalid_flowchart` with the
/// problems in `details.errors`.
pub fn invalid_flowchart(errors: &[ValidationError]) -> ApiError {
    let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
    ApiError::unprocessable(
        "invalid_flowchart",
        format!(
            "the flowchart is not valid ({} problem(s)); first: {first}",
            errors.len()
        ),
    )
    .with_details(json!({ "errors": problems(errors) }))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Store(e) => e.into(),
            e @ (RegistryError::NoSuchFlowchart(_) | RegistryError::NoSuchVersion { .. }) => {
                ApiError::not_found(e.code(), e.to_string())
            }
            e @ RegistryError::InvalidName(_) => ApiError::unprocessable(e.code(), e.to_string()),
            e @ RegistryError::RequestReused(_) => ApiError::conflict(e.code(), e.to_string()),
            e @ RegistryError::Contended(_) => ApiError::unavailable(e.code(), e.to_string()),
            e @ RegistryError::Corrupt { .. } => ApiError::internal(e.code(), &e),
        }
    }
}

/// Check a flowchart without storing it.
///
/// Answers 200 whether or not it is valid; the report lists every problem with its stable code
/// and path, exactly as `runledger validate --json` does, keys in sorted order like the
/// `invalid_flowchart` error's details (docs/flowchart.md).
#[utoipa::path(post, path = "/v1/flowcharts/validate", tag = "flowcharts", request_body = ValidateBody,
    responses((status = 200, body = ValidationReport), (status = "4XX", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn validate(
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ValidateBody>,
) -> Result<Json<Value>, ApiError> {
    let report = match load_definition_blocking(body.definition).await? {
        Ok(_) => ValidationReport {
            valid: true,
            errors: Vec::new(),
        },
        Err(errors) => ValidationReport {
            valid: false,
            errors: problems(&errors),
        },
    };
    // Through a `Value`, whose objects are sorted: the order of the error details.
    Ok(Json(json!(report)))
}

/// Store a flowchart as a new immutable version of its name.
///
/// 201 with the new version; 200 with the latest version when the definition equals it (nothing
/// is written). An invalid flowchart is `422 invalid_flowchart` with every problem in
/// `error.details.errors`.
#[utoipa::path(post, path = "/v1/flowcharts", tag = "flowcharts", request_body = CreateFlowchartBody,
    responses((status = 201, body = FlowchartVersionView), (status = 200, body = FlowchartVersionView),
        (status = 422, body = crate::openapi::ErrorEnvelopeDoc), (status = "4XX", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn create(
    State(state): State<ApiState>,
    context: RequestContext,
    ApiJson(body): ApiJson<CreateFlowchartBody>,
) -> Result<Response, ApiError> {
    let flowchart = load_definition_blocking(body.definition)
        .await?
        .map_err(|errors| invalid_flowchart(&errors))?;
    let actor = crate::extract::actor(body.actor, &state.config().default_actor)?;
    let created = state
        .flowcharts()
        .create(
            flowchart,
            &actor,
            context.request_id.clone(),
            context.correlation_id.clone(),
        )
        .await?;
    let mut view = FlowchartVersionView::of(&created.stored, true);
    view.created = Some(created.created);
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

/// List stored flowcharts (their latest versions), by name.
#[utoipa::path(get, path = "/v1/flowcharts", tag = "flowcharts", params(FlowchartListQuery),
    responses((status = 200, body = FlowchartPage), (status = "4XX", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<FlowchartListQuery>,
) -> Result<Json<FlowchartPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    let found = state
        .flowcharts()
        .list(query.after.as_deref(), limit + 1)
        .await?;
    let more = found.len() > limit;
    let items: Vec<FlowchartVersionView> = found
        .iter()
        .take(limit)
        .map(|s| FlowchartVersionView::of(s, false))
        .collect();
    let next_cursor = if more {
        items.last().map(|v| v.name.clone())
    } else {
        None
    };
    Ok(Json(FlowchartPage { items, next_cursor }))
}

/// The latest version of a flowchart, with its definition.
#[utoipa::path(get, path = "/v1/flowcharts/{name}", tag = "flowcharts",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,128}$", description = "flowchart name")),
    responses((status = 200, body = FlowchartVersionView), (status = 404, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn latest(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<FlowchartVersionView>, ApiError> {
    let stored = state.flowcharts().get(&name, None).await?;
    Ok(Json(FlowchartVersionView::of(&stored, true)))
}

/// Every version of a flowchart, oldest first (without definitions).
#[utoipa::path(get, path = "/v1/flowcharts/{name}/versions", tag = "flowcharts",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,128}$", description = "flowchart name")),
    responses((status = 200, body = FlowchartVersionList), (status = 404, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn versions(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<FlowchartVersionList>, ApiError> {
    let all = state.flowcharts().versions(&name).await?;
    Ok(Json(FlowchartVersionList {
        items: all
            .iter()
            .map(|s| FlowchartVersionView::of(s, false))
            .collect(),
    }))
}

/// One version of a flowchart, with its definition.
#[utoipa::path(get, path = "/v1/flowcharts/{name}/versions/{version}", tag = "flowcharts",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,128}$", description = "flowchart name"), ("version" = u32, Path, description = "version, from 1")),
    responses((status = 200, body = FlowchartVersionView), (status = 404, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn version(
    State(state): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<FlowchartVersionView>, ApiError> {
    let version: u32 = version.parse().ok().filter(|v| *v >= 1).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_id",
            format!("`{version}` is not a flowchart version (1, 2, ...)"),
        )
    })?;
    let stored = state.flowcharts().get(&name, Some(version)).await?;
    Ok(Json(FlowchartVersionView::of(&stored, true)))
}
