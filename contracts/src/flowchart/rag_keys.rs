//! Save-time checks of a `rag` node's keys that depend on its `operation`: a query needs a
//! `query` template and takes no `mode`; an index takes `mode` and none of the query's keys.
//! A `path_glob` is compiled here, so a bad glob fails the save, not the run.

use super::error::{ValidationCode as C, join_key};
use super::model::{RagConfig, RagOperation};

/// Every problem of `rag` (at path `at`) of node `id`, as (code, path, message).
pub(super) fn check(id: &str, at: &str, rag: &RagConfig) -> Vec<(C, String, String)> {
    let mut out = Vec::new();
    let mut refuse = |key: &str| {
        out.push((
            C::KeyNotAllowed,
            join_key(at, key),
            format!(
                "node `{id}`: `{key}` is not allowed with `operation: {}`",
                rag.operation.as_str()
            ),
        ));
    };
    match rag.operation {
        RagOperation::Query => {
            if rag.mode.is_some() {
                refuse("mode");
            }
        }
        RagOperation::Index => {
            if rag.query.is_some() {
                refuse("query");
            }
            if !rag.sources.is_empty() {
                refuse("sources");
            }
            if rag.path_glob.is_some() {
                refuse("path_glob");
            }
        }
    }
    if rag.operation == RagOperation::Query {
        match rag.query.as_deref() {
            None => out.push((
                C::MissingKey,
                join_key(at, "query"),
                format!("node `{id}`: `operation: query` requires `query`"),
            )),
            Some(q) if q.trim().is_empty() => out.push((
                C::InvalidValue,
                join_key(at, "query"),
                format!("node `{id}`: `query` must not be empty"),
            )),
            Some(_) => {}
        }
    }
    for (i, source) in rag.sources.iter().enumerate() {
        if crate::rag::check_name("source", source).is_err() {
            out.push((
                C::InvalidValue,
                format!("{}[{i}]", join_key(at, "sources")),
                format!("node `{id}`: `{source}` is not a source name"),
            ));
        }
    }
    if let Some(glob) = &rag.path_glob
        && let Err(e) = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
    {
        out.push((
            C::InvalidValue,
            join_key(at, "path_glob"),
            format!("node `{id}`: `path_glob` is not a glob: {e}"),
        ));
    }
    out
}
