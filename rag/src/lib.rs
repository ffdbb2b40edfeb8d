//! RAG for runledger: collections of sources, document extraction, chunking, event-sourced
//! index runs (full and delta, by content digest), and lexical BM25 retrieval through tantivy.
//!
//! - [`registry`]: collections in the ledger (`rag-<name>` streams), folded with their index runs.
//! - [`walk`], [`extract`], [`chunk`]: files of a source, their text, their chunks.
//! - [`git`]: checkouts of `git` sources (the crate's one use of a process).
//! - [`manifest`]: the digests of the files an index version was built from (a ledger blob).
//! - [`search`]: the tantivy index, a read model under the data directory.
//! - [`dense`]: chunk vectors from a registry embedding model, reciprocal rank fusion.
//! - [`indexer`]: full and delta index runs.
//! - [`service`]: [`Rag`], the entry point, and the `rag` node backend.
//! - [`tools`]: the `rag_*` tools of the agent loop ([`tools::RagTools`]).
//!
//! See docs/rag.md.

pub mod chunk;
pub mod dense;
pub mod error;
pub mod eval;
pub mod extract;
pub mod git;
pub mod indexer;
pub mod manifest;
pub mod registry;
pub mod search;
pub mod service;
pub mod tools;
pub mod walk;

#[cfg(test)]
mod tests;

pub use error::RagError;
pub use service::{QueryRequest, QueryResult, Rag};
pub use tools::RagTools;

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
