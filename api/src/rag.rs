//! `/v1/rag/collections`: RAG collections and their index runs (`runledger-rag`) over HTTP,
//! shaped like `/v1/models`: the collection's stream version is its `version`, creates and
//! deletes are idempotent by `X-Request-ID` and fenced by `expected_version`. An index run
//! (`POST .../index`) is idempotent by `X-Request-ID` too: repeating it answers the run it
//! recorded (`deduplicated: true`) without reading a file. Queries answer from the last
//! completed index, like `rag` nodes and the `rag_query` tool. See docs/rag.md.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use runledger_contracts::rag::{CollectionSpec, IndexMode};
use runledger_rag::RagError;
use runledger_rag::indexer::IndexRequest;
use runledger_rag::registry::{ChangeOutcome, ChangeRequest, CollectionState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, NoQuery};
use crate::state::ApiState;

/// The collection spec as the OpenAPI document describes it: the fields of
/// `runledger_contracts::rag::CollectionSpec`, with the bounds its validation enforces.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CollectionSpec)]
#[allow(dead_code)]
pub struct CollectionSpecDoc {
    /// What `rag` nodes write in `collection:`.
    #[schema(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        min_length = 1,
        max_length = 100
    )]
    pub name: String,
    #[schema(min_items = 1, max_items = 64)]
    pub sources: Vec<SourceSpecDoc>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// A registered `openai_compatible` model: chunks and queries are embedded with it and
    /// dense hits fused with BM25 by reciprocal rank.
    #[schema(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        min_length = 1,
        max_length = 100
    )]
    pub embedding_model: Option<String>,
}

/// One source of a collection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SourceSpec)]
#[allow(dead_code)]
pub struct SourceSpecDoc {
    /// Names the source in hits and `sources` filters; unique in the collection.
    #[schema(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        min_length = 1,
        max_length = 100
    )]
    pub name: String,
    pub kind: SourceKindDoc,
    /// `directory`: absolute path of the directory (required); not used by `git`.
    pub path: Option<String>,
    /// `git`: the repository, an absolute path or a URL without a password (required).
    #[schema(max_length = 2000)]
    pub repo: Option<String>,
    /// `git`: branch, tag or commit; the repository's `HEAD` when absent.
    #[serde(rename = "ref")]
    #[schema(max_length = 250)]
    pub git_ref: Option<String>,
    /// Globs over paths relative to the source (`**/*.md`); none means every file.
    #[schema(max_items = 256)]
    pub include: Option<Vec<String>>,
    /// Globs of files left out even when included.
    #[schema(max_items = 256)]
    pub exclude: Option<Vec<String>>,
}

/// Where a source's files come from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SourceKind)]
pub enum SourceKindDoc {
    Directory,
    Git,
}

/// Full: every file. Delta: only new, changed (by digest) and deleted files.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = IndexMode)]
pub enum IndexModeDoc {
    Full,
    Delta,
}

/// Files an index run looked at, by what happened to them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = IndexFileCounts)]
pub struct IndexFileCountsDoc {
    pub scanned: u64,
    pub read: u64,
    pub added: u64,
    pub changed: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

/// A completed index run.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = IndexRun)]
pub struct IndexRunDoc {
    pub collection: String,
    /// The collection stream's version of the `RagIndexCompleted`: the index version hits cite.
    pub index_version: u64,
    #[schema(format = "uuid")]
    pub index_run_id: String,
    #[schema(value_type = IndexModeDoc)]
    pub mode: String,
    pub files: IndexFileCountsDoc,
    pub chunks_added: u64,
    pub chunks_deleted: u64,
    pub chunks_total: u64,
    pub bytes_read: u64,
    /// blake3 (hex) of the manifest blob.
    pub manifest: String,
    pub duration_ms: u64,
    /// Whether this process rebuilt its search index from scratch.
    pub rebuilt: bool,
    /// Present and `true` when the request id had already run this index: nothing was done.
    pub deduplicated: Option<bool>,
}

/// The last completed index run, as the ledger records it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompletedIndexView {
    pub index_version: u64,
    pub completed_at: String,
    #[schema(format = "uuid")]
    pub index_run_id: String,
    #[schema(value_type = IndexModeDoc)]
    pub mode: IndexMode,
    #[schema(value_type = IndexFileCountsDoc)]
    pub files: Value,
    pub chunks_total: u64,
    pub manifest: String,
    pub duration_ms: u64,
}

/// An index run started and not ended: in progress, or interrupted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunningIndexView {
    #[schema(format = "uuid")]
    pub index_run_id: String,
    #[schema(value_type = IndexModeDoc)]
    pub mode: IndexMode,
    pub base_version: Option<u64>,
}

/// The last failed index run.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedIndexView {
    #[schema(format = "uuid")]
    pub index_run_id: String,
    /// `{code, message, retryable, details}`.
    #[schema(value_type = Object)]
    pub error: Value,
}

/// A collection's index runs, from the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct IndexStatusView {
    pub collection: String,
    /// The collection stream's version.
    pub version: u64,
    /// Whether an index run ever completed (queries need one).
    pub indexed: bool,
    pub index_runs: u64,
    pub last_completed: Option<CompletedIndexView>,
    pub running: Option<RunningIndexView>,
    pub last_failed: Option<FailedIndexView>,
}

impl IndexStatusView {
    fn of(name: &str, state: &CollectionState) -> Self {
        Self {
            collection: name.to_owned(),
            version: state.version,
            indexed: state.last_completed.is_some(),
            index_runs: state.index_runs,
            last_completed: state.last_completed.as_ref().map(|c| CompletedIndexView {
                index_version: c.version,
                completed_at: c.completed_at.to_string(),
                index_run_id: c.event.index_run_id.clone(),
                mode: c.event.mode,
                files: serde_json::to_value(c.event.files).unwrap_or(Value::Null),
                chunks_total: c.event.chunks_total,
                manifest: c.event.manifest.to_hex(),
                duration_ms: c.event.duration_ms,
            }),
            running: state.running.as_ref().map(|r| RunningIndexView {
                index_run_id: r.index_run_id.clone(),
                mode: r.mode,
                base_version: r.base_version,
            }),
            last_failed: state.last_failed.as_ref().map(|f| FailedIndexView {
                index_run_id: f.index_run_id.clone(),
                error: serde_json::to_value(&f.error).unwrap_or(Value::Null),
            }),
        }
    }
}

/// A collection as registered now, with its index status.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionView {
    pub name: String,
    /// The collection stream's version: pass it as `expected_version` to delete safely.
    pub version: u64,
    pub updated_at: Option<String>,
    #[schema(value_type = CollectionSpecDoc)]
    pub spec: Value,
    pub status: IndexStatusView,
}

impl CollectionView {
    fn of(state: &CollectionState) -> Result<Self, ApiError> {
        let spec = state.spec.as_ref().ok_or_else(|| {
            ApiError::internal("internal_error", "a listed collection has no spec")
        })?;
        Ok(Self {
            name: spec.name.clone(),
            version: state.version,
            updated_at: state.updated_at.map(|t| t.to_string()),
            spec: serde_json::to_value(spec)
                .map_err(|e| ApiError::internal("internal_error", e))?,
            status: IndexStatusView::of(&spec.name, state),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    /// Every live collection, by name.
    pub items: Vec<CollectionView>,
}

/// What a create or delete did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionChange {
    pub name: String,
    /// The collection stream's version after the change.
    pub version: u64,
    /// `RagCollectionCreated` or `RagCollectionDeleted`.
    pub event_type: String,
    /// This request id was applied before; nothing new was written.
    pub deduplicated: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollectionBody {
    #[schema(value_type = CollectionSpecDoc)]
    pub spec: CollectionSpec,
    /// Who registers it; default `api`.
    #[serde(default)]
    pub actor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteCollectionQuery {
    /// The version the caller read; refused (`version_conflict`) if the collection moved.
    pub expected_version: Option<u64>,
    /// Who deletes it; default `api`.
    pub actor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexBody {
    /// Default `delta`.
    #[serde(default)]
    #[schema(value_type = Option<IndexModeDoc>)]
    pub mode: IndexMode,
    #[serde(default)]
    pub actor: Option<String>,
}

/// Most hits one query may ask for.
pub const MAX_TOP_K: u32 = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// Any text: it is parsed leniently, never a syntax error.
    #[schema(min_length = 1, max_length = 4000)]
    pub query: String,
    /// Default 5.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: Option<u32>,
    /// Only hits from these sources.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub sources: Vec<String>,
    /// Only files whose `<source>/<path>` matches this glob.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1000)]
    pub path_glob: Option<String>,
}

/// One retrieved chunk.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RagHit)]
pub struct HitDoc {
    pub source: String,
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    pub score: f32,
    pub title: String,
    pub text: String,
    pub chunk_digest: String,
    pub file_digest: String,
}

/// Hits, and the index version they came from.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RagQueryResult)]
pub struct QueryResultDoc {
    /// Always `query`.
    pub operation: String,
    pub collection: String,
    pub query: String,
    pub index_version: u64,
    /// blake3 (hex) of the index run's manifest blob.
    pub manifest: String,
    pub hits: Vec<HitDoc>,
}

impl From<RagError> for ApiError {
    fn from(e: RagError) -> Self {
        let field = e.field();
        let code = e.code();
        let error = match e {
            RagError::Store(store) => return store.into(),
            e @ (RagError::Index { .. } | RagError::Corrupt { .. } | RagError::Manifest { .. }) => {
                return ApiError::internal(code, runledger_rag::error_chain(&e));
            }
            e @ (RagError::Invalid(_)
            | RagError::BadGlob { .. }
            | RagError::UnknownSource { .. }) => ApiError::unprocessable(code, e.to_string()),
            e @ RagError::NotFound { .. } => ApiError::not_found(code, e.to_string()),
            e @ (RagError::Exists { .. }
            | RagError::VersionConflict { .. }
            | RagError::RequestReused { .. }
            | RagError::NotIndexed { .. }
            | RagError::Busy { .. }
            | RagError::Source { .. }
            | RagError::Git { .. }
            | RagError::Embedding { .. }) => {
                ApiError::conflict(code, runledger_rag::error_chain(&e))
            }
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
    let body = CollectionChange {
        name: name.to_owned(),
        version: outcome.version,
        event_type: outcome.event_type,
        deduplicated: outcome.deduplicated,
    };
    crate::change::respond(body, outcome.deduplicated, status, context)
}

/// Every collection, by name, with its index status.
#[utoipa::path(get, path = "/v1/rag/collections", tag = "rag", responses((status = 200, body = CollectionList)))]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<CollectionList>, ApiError> {
    let states = state.rag().collections().list().await?;
    let items = states
        .iter()
        .map(CollectionView::of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(CollectionList { items }))
}

/// One collection, with its index status.
#[utoipa::path(get, path = "/v1/rag/collections/{name}", tag = "rag", params(("name" = String, Path, min_length = 1, max_length = 100, description = "collection name")),
    responses((status = 200, body = CollectionView), (status = 404, description = "`collection_not_found`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<CollectionView>, ApiError> {
    let collection = state.rag().status(&name).await?;
    Ok(Json(CollectionView::of(&collection)?))
}

/// Register a collection (201); a repeat of the same request id answers 200 with `deduplicated`.
#[utoipa::path(post, path = "/v1/rag/collections", tag = "rag", request_body = CreateCollectionBody,
    responses((status = 201, body = CollectionChange), (status = 200, body = CollectionChange),
        (status = 409, description = "`collection_exists`, `request_id_reused`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 422, description = "`invalid_value`: the spec is invalid (a name, a relative path, a bad glob); `details.field` names the field", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn create(
    State(state): State<ApiState>,
    context: RequestContext,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<CreateCollectionBody>,
) -> Result<Response, ApiError> {
    let name = body.spec.name.clone();
    let change = ChangeRequest {
        request_id: context.request_id.clone(),
        actor: crate::change::actor(&state, body.actor)?,
    };
    let outcome = state.rag().collections().create(body.spec, &change).await?;
    Ok(change_response(
        &name,
        outcome,
        &context,
        StatusCode::CREATED,
    ))
}

/// Delete a collection (its index runs stay in the ledger as history).
#[utoipa::path(delete, path = "/v1/rag/collections/{name}", tag = "rag", params(("name" = String, Path, min_length = 1, max_length = 100, description = "collection name"), DeleteCollectionQuery),
    responses((status = 200, body = CollectionChange), (status = 404, description = "`collection_not_found`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`version_conflict`, `request_id_reused`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn delete(
    State(state): State<ApiState>,
    context: RequestContext,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<DeleteCollectionQuery>,
) -> Result<Response, ApiError> {
    let change = ChangeRequest {
        request_id: context.request_id.clone(),
        actor: crate::change::actor(&state, query.actor)?,
    };
    let outcome = state
        .rag()
        .collections()
        .delete(&name, query.expected_version, &change)
        .await?;
    Ok(change_response(&name, outcome, &context, StatusCode::OK))
}

/// The collection's index runs from the ledger: the last completed, one in progress (or
/// interrupted), the last failed.
#[utoipa::path(get, path = "/v1/rag/collections/{name}/index", tag = "rag", params(("name" = String, Path, min_length = 1, max_length = 100, description = "collection name")),
    responses((status = 200, body = IndexStatusView), (status = 404, description = "`collection_not_found`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn status(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Json<IndexStatusView>, ApiError> {
    let collection = state.rag().status(&name).await?;
    Ok(Json(IndexStatusView::of(&name, &collection)))
}

/// Run an index of the collection and answer when it completed (201); a repeat of the same
/// request id answers the recorded run (200, `deduplicated`) without reading a file.
#[utoipa::path(post, path = "/v1/rag/collections/{name}/index", tag = "rag", request_body = IndexBody, params(("name" = String, Path, min_length = 1, max_length = 100, description = "collection name")),
    responses((status = 201, body = IndexRunDoc), (status = 200, body = IndexRunDoc),
        (status = 404, description = "`collection_not_found`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`index_busy` (another process is indexing it; retry), `version_conflict` (another index run started at the same version; retry), `request_id_reused` (the request id's run did not complete, asked for another `mode`, or the id wrote something else on the collection), `source_unreadable`, `git_failed`, the embedding model's failure (`model_not_found`, `provider_unavailable`, ...)", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn index(
    State(state): State<ApiState>,
    context: RequestContext,
    Path(name): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<IndexBody>,
) -> Result<Response, ApiError> {
    let request = IndexRequest {
        collection: name,
        mode: body.mode,
        actor: crate::change::actor(&state, body.actor)?,
        node_run_id: None,
        request_id: Some(context.request_id.clone()),
    };
    let outcome = state.rag().index(&request).await?;
    let body =
        serde_json::to_value(&outcome).map_err(|e| ApiError::internal("internal_error", e))?;
    Ok(crate::change::respond(
        body,
        outcome.deduplicated,
        StatusCode::CREATED,
        &context,
    ))
}

/// The `top_k` best chunks for the query from the last completed index (BM25; see docs/rag.md).
#[utoipa::path(post, path = "/v1/rag/collections/{name}/query", tag = "rag", request_body = QueryBody, params(("name" = String, Path, min_length = 1, max_length = 100, description = "collection name")),
    responses((status = 200, body = QueryResultDoc),
        (status = 404, description = "`collection_not_found`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 409, description = "`collection_not_indexed` (no index run ever completed), `index_busy`, the embedding model's failure (`model_not_found`, `provider_unavailable`, ...)", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 422, description = "`invalid_value` (a bad `path_glob`, `top_k` out of 1-100, an empty query), `unknown_source`; `details.field`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn query(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<QueryBody>,
) -> Result<Json<Value>, ApiError> {
    let invalid = |field: &str, message: String| {
        ApiError::unprocessable("invalid_value", message).with_details(json!({ "field": field }))
    };
    let top_k = body.top_k.unwrap_or(5);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(invalid("top_k", format!("top_k: must be 1 to {MAX_TOP_K}")));
    }
    if body.query.trim().is_empty() || body.query.len() > 4000 {
        return Err(invalid(
            "query",
            "query: must be 1 to 4000 bytes, not blank".into(),
        ));
    }
    if body
        .path_glob
        .as_ref()
        .is_some_and(|g| g.is_empty() || g.len() > 1000)
    {
        return Err(invalid(
            "path_glob",
            "path_glob: must be 1 to 1000 bytes".into(),
        ));
    }
    if body.sources.len() > runledger_contracts::rag::MAX_SOURCES {
        return Err(invalid("sources", "sources: at most 64".into()));
    }
    let result = state
        .rag()
        .query(&runledger_rag::QueryRequest {
            collection: name,
            query: body.query,
            top_k,
            sources: body.sources,
            path_glob: body.path_glob,
        })
        .await?;
    serde_json::to_value(result)
        .map(Json)
        .map_err(|e| ApiError::internal("internal_error", e))
}
