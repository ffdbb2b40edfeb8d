//! `/v1/models`: the model registry (`executor-gateway/src/models.rs`, one ledger stream per
//! model) over HTTP. The request's `X-Request-ID` is the change's idempotency key: repeating it
//! returns what it wrote the first time (`deduplicated: true`). The registry records the request
//! id as the correlation id of its events, so the response's `X-Correlation-ID` names it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use runledger_contracts::model::ModelSpec;
use runledger_executor_gateway::models::{
    ChangeOutcome, ChangeRequest, ModelRegistry, RegisteredModel, RegistryError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, NoQuery};
use crate::state::ApiState;

/// The model spec as the OpenAPI document describes it: the fields of
/// `runledger_contracts::model::ModelSpec` (a test keeps the two equal), with the bounds
/// `ModelSpec::validate` enforces. The API reads bodies into `ModelSpec` itself.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ModelSpec)]
#[allow(dead_code)]
pub struct ModelSpecDoc {
    /// What `task` nodes write in `model:`; `scripted` is reserved for the built-in model.
    #[schema(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        min_length = 1,
        max_length = 100
    )]
    pub name: String,
    pub provider: ProviderDoc,
    /// The model's id at the provider, without spaces.
    #[schema(min_length = 1, max_length = 200)]
    pub model_id: String,
    /// Where the provider's API is (http or https; no user info, query or fragment); required
    /// for `executor_class: vllm`.
    pub base_url: Option<String>,
    /// Name of the environment variable that holds the API key; never the key itself.
    pub api_key_env: Option<String>,
    pub executor_class: Option<ExecutorClassDoc>,
    /// Per-request timeout in seconds (default 120).
    #[schema(minimum = 1, maximum = 3600)]
    pub timeout_s: Option<u64>,
    pub description: Option<String>,
    /// Provider-specific settings: `temperature`, `max_tokens`, `reasoning_effort`,
    /// `thinking_budget_tokens`, `vertex: {project, location}` (which a provider accepts:
    /// docs/providers.md).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

/// The wire protocol a model is called with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ProviderKind)]
pub enum ProviderDoc {
    OpenaiCompatible,
    Anthropic,
    Gemini,
    Scripted,
}

/// Which executors run a model's node runs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ExecutorClass)]
pub enum ExecutorClassDoc {
    Frontier,
    Vllm,
}

/// A model as registered now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelView {
    pub name: String,
    /// The model stream's version: pass it as `expected_version` to change the model safely.
    pub version: u64,
    pub updated_at: String,
    /// The spec (provider, model id, base URL, the *name* of the API-key variable, executor
    /// class, timeout, settings); never a secret.
    #[schema(value_type = ModelSpecDoc)]
    pub spec: Value,
}

impl ModelView {
    fn of(model: &RegisteredModel) -> Result<Self, ApiError> {
        Ok(Self {
            name: model.spec.name.clone(),
            version: model.version,
            updated_at: model.updated_at.to_string(),
            spec: serde_json::to_value(&model.spec)
                .map_err(|e| ApiError::internal("internal_error", e))?,
        })
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Every live model, by name.
    pub items: Vec<ModelView>,
}

/// What a create, update or delete did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelChange {
    pub name: String,
    /// The model stream's version after the change.
    pub version: u64,
    /// `ModelCreated`, `ModelUpdated` or `ModelDeleted`.
    pub event_type: String,
    /// This request id was applied before; nothing new was written.
    pub deduplicated: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelBody {
    /// The model spec (see docs/providers.md).
    #[schema(value_type = ModelSpecDoc)]
    pub spec: ModelSpec,
    /// Who registers it; default `api`.
    #[serde(default)]
    pub actor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModelBody {
    /// The whole new spec; its name and provider cannot change.
    #[schema(value_type = ModelSpecDoc)]
    pub spec: ModelSpec,
    /// The version the caller read; the change is refused (`version_conflict`) if the model
    /// moved since. Absent: the current version.
    #[serde(default)]
    pub expected_version: Option<u64>,
    #[serde(default)]
    pub actor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteModelQuery {
    /// As for updates.
    pub expected_version: Option<u64>,
    /// Who deletes it; default `api`.
    pub actor: Option<String>,
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let field = e.field().map(str::to_owned);
        let error = match e {
            RegistryError::Store(store) => return store.into(),
            e @ (RegistryError::Corrupt { .. } | RegistryError::Provider(_)) => {
                return ApiError::internal(e.code(), &e);
            }
            e @ RegistryError::Invalid(_) => ApiError::unprocessable(e.code(), e.to_string()),
            e @ RegistryError::NotFound { .. } => ApiError::not_found(e.code(), e.to_string()),
            e @ (RegistryError::Exists { .. }
            | RegistryError::VersionConflict { .. }
            | RegistryError::ProviderChanged { .. }
            | RegistryError::RequestReused { .. }) => ApiError::conflict(e.code(), e.to_string()),
        };
        crate::change::with_field(error, field)
    }
}

fn change_response(
    name: &str,
    outcome: ChangeOutcome,
    context: &RequestContext,
    status: StatusCode,
) -> Response {
    let body = ModelChange {
        name: name.to_owned(),
        version: outcome.version,
        event_type: outcome.event_type,
        deduplicated: outcome.deduplicated,
    };
    crate::change::respond(body, outcome.deduplicated, status, context)
}

/// Every registered model, by name.
#[utoipa::path(get, path = "/v1/models", tag = "models", responses((status = 200, body = ModelList)))]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<ModelList>, ApiError> {
    let models = ModelRegistry::new(state.store()).list().await?;
    let items = models
        .iter()
        .map(ModelView::of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ModelList { items }))
}

/// One model.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models", params(("name" = String, Path, min_length = 1, max_length = 100, description = "model name")),
    responses((status = 200, body = ModelView), (status = 404, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<ModelView>, ApiError> {
    match ModelRegistry::new(state.store()).get(&name).await? {
        Some(model) => Ok(Json(ModelView::of(&model)?)),
        None => Err(ApiError::not_found(
            "model_not_found",
            format!("model `{name}` does not exist"),
        )),
    }
}

/// Register a model (201); a repeat of the same request id answers 200 with `deduplicated`.
#[utoipa::path(post, path = "/v1/models", tag = "models", request_body = CreateModelBody,
    responses((status = 201, body = ModelChange), (status = 200, body = ModelChange),
        (status = 409, description = "`model_exists`, `request_id_reused`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 422, description = "the spec is invalid; `details.field` names the field", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn create(
    State(state): State<ApiState>,
    context: RequestContext,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<CreateModelBody>,
) -> Result<Response, ApiError> {
    let name = body.spec.name.clone();
    let change = ChangeRequest::new(
        context.request_id.clone(),
        crate::change::actor(&state, body.actor)?,
    );
    let outcome = ModelRegistry::new(state.store())
        .create(body.spec, change)
        .await?;
    Ok(change_response(
        &name,
        outcome,
        &context,
        StatusCode::CREATED,
    ))
}

/// Replace a model's spec (name and provider stay).
#[utoipa::path(put, path = "/v1/models/{name}", tag = "models", request_body = UpdateModelBody, params(("name" = String, Path, min_length = 1, max_length = 100, description = "model name")),
    responses((status = 200, body = ModelChange), (status = 404, body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`version_conflict`, `provider_immutable`, `request_id_reused`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 422, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn update(
    State(state): State<ApiState>,
    context: RequestContext,
    Path(name): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<UpdateModelBody>,
) -> Result<Response, ApiError> {
    let change = ChangeRequest::new(
        context.request_id.clone(),
        crate::change::actor(&state, body.actor)?,
    );
    let outcome = ModelRegistry::new(state.store())
        .update(&name, body.spec, body.expected_version, change)
        .await?;
    Ok(change_response(&name, outcome, &context, StatusCode::OK))
}

/// Delete a model.
#[utoipa::path(delete, path = "/v1/models/{name}", tag = "models", params(("name" = String, Path, min_length = 1, max_length = 100, description = "model name"), DeleteModelQuery),
    responses((status = 200, body = ModelChange), (status = 404, body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn delete(
    State(state): State<ApiState>,
    context: RequestContext,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<DeleteModelQuery>,
) -> Result<Response, ApiError> {
    let change = ChangeRequest::new(
        context.request_id.clone(),
        crate::change::actor(&state, query.actor)?,
    );
    let outcome = ModelRegistry::new(state.store())
        .delete(&name, query.expected_version, change)
        .await?;
    Ok(change_response(&name, outcome, &context, StatusCode::OK))
}
