//! Errors of the RAG crate, each with a stable snake_case code (the CLI's `error.code`, a
//! failed `rag` node's `error.code`) and whether retrying can help.

use std::path::PathBuf;

use runledger_contracts::rag::CollectionSpecError;
use runledger_ledger::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error(transparent)]
    Invalid(#[from] CollectionSpecError),
    #[error("{field}: `{glob}` is not a glob")]
    BadGlob {
        field: String,
        glob: String,
        #[source]
        source: globset::Error,
    },
    #[error("name: collection `{name}` already exists (version {version})")]
    Exists { name: String, version: u64 },
    #[error("collection: `{name}` does not exist")]
    NotFound { name: String },
    #[error("collection `{name}` has never been indexed (run `runledger rag index {name}`)")]
    NotIndexed { name: String },
    #[error("sources: collection `{collection}` has no source `{source_name}`")]
    UnknownSource {
        collection: String,
        source_name: String,
    },
    #[error("expected_version: collection `{name}` is at version {actual}, not {expected}")]
    VersionConflict {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "request_id: `{request_id}` was already used for another change of collection `{name}`"
    )]
    RequestReused { name: String, request_id: String },
    #[error("another process is writing the search index of collection `{name}` at {path}")]
    Busy { name: String, path: PathBuf },
    #[error("source `{source_name}`: cannot read {path}")]
    Source {
        source_name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source `{source_name}`: git {step}: {message}")]
    Git {
        source_name: String,
        step: &'static str,
        message: String,
        #[source]
        io: Option<std::io::Error>,
    },
    #[error("collection `{collection}`: embedding model `{model}`: {message}")]
    Embedding {
        collection: String,
        model: String,
        code: &'static str,
        retryable: bool,
        message: String,
    },
    #[error("search index at {path}")]
    Index {
        path: PathBuf,
        #[source]
        source: tantivy::TantivyError,
    },
    #[error("the stream of collection `{name}` holds events the registry cannot read: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("the manifest blob {digest} of collection `{name}` is missing or unreadable")]
    Manifest { name: String, digest: String },
    #[error("ledger")]
    Store(#[from] StoreError),
}

impl RagError {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            RagError::Invalid(_) | RagError::BadGlob { .. } => "invalid_value",
            RagError::Exists { .. } => "collection_exists",
            RagError::NotFound { .. } => "collection_not_found",
            RagError::NotIndexed { .. } => "collection_not_indexed",
            RagError::UnknownSource { .. } => "unknown_source",
            RagError::VersionConflict { .. } => "version_conflict",
            RagError::RequestReused { .. } => "request_id_reused",
            RagError::Busy { .. } => "index_busy",
            RagError::Source { .. } => "source_unreadable",
            RagError::Git { .. } => "git_failed",
            RagError::Embedding { code, .. } => code,
            RagError::Index { .. } => "index_error",
            RagError::Corrupt { .. } => "ledger_corrupt",
            RagError::Manifest { .. } => "manifest_missing",
            RagError::Store(e) => e.code(),
        }
    }

    /// Whether the same request may succeed later: another writer finishing, a database
    /// coming back. Bad input and missing things are permanent.
    pub fn retryable(&self) -> bool {
        match self {
            RagError::Busy { .. } | RagError::VersionConflict { .. } => true,
            RagError::Embedding { retryable, .. } => *retryable,
            RagError::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<String> {
        match self {
            RagError::Invalid(e) => Some(e.field.clone()),
            RagError::BadGlob { field, .. } => Some(field.clone()),
            RagError::Exists { .. } | RagError::NotFound { .. } => Some("name".into()),
            RagError::UnknownSource { .. } => Some("sources".into()),
            RagError::Embedding { .. } => Some("embedding_model".into()),
            RagError::VersionConflict { .. } => Some("expected_version".into()),
            RagError::RequestReused { .. } => Some("request_id".into()),
            _ => None,
        }
    }

    pub(crate) fn index(path: &std::path::Path, source: tantivy::TantivyError) -> RagError {
        RagError::Index {
            path: path.to_owned(),
            source,
        }
    }
}
