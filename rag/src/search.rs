//! The search index of one collection: a tantivy index under
//! `<data_dir>/<collection>/index-v2/`, one document per chunk.
//!
//! It is a read model: everything in it can be rebuilt from the ledger (the manifest of the
//! last completed index run) and the sources. Each commit carries the digest of the manifest
//! it reflects as its payload, so a reader knows whether the index on disk is the one the
//! ledger says is current, and a run interrupted between the commit and its
//! `RagIndexCompleted` is detected (the payload names a manifest the ledger never recorded).
//!
//! Fields: `key` (`<source>/<path>`, one term, for deletes and path filters), `source`,
//! `path`, `path_text` (the path tokenized, so `ownership.html` helps find ownership), `title`
//! (the section heading), `text` (English stop words dropped, then stemmed; positions for
//! phrase queries), line range and digests (stored only).
//!
//! A query returns distinct chunk texts: the same text in several files (std re-exporting
//! core's pages, one blanket-impl section on every type's page, a translation's untranslated
//! code) takes one place in the hits, the best-scoring file's.

use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, QueryParser, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TEXT, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::chunk::Chunk;
use crate::error::RagError;

/// Directory of the index inside the collection's data directory; a new schema gets a new
/// name, and the old one is simply rebuilt from the ledger.
pub const INDEX_DIR: &str = "index-v2";
/// Directories of earlier schemas, removed when an index is opened.
const OLD_INDEX_DIRS: &[&str] = &["index-v1"];
/// The analyzer of `title` and `text`.
const TOKENIZER: &str = "en_stem_stop";
/// Query hits looked at, at the most, to find `top_k` distinct chunk texts.
const MAX_SCAN: usize = 4096;

/// English function words dropped from text and queries: they carry no topic, and their
/// posting lists (every chunk) are what a natural-language query spends its time on. Words
/// that are Rust keywords or names (`as`, `if`, `in`, `for`, `not`, `where`, `use`, `self`)
/// are kept: questions about Rust ask for them.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "at", "be", "been", "but", "by", "can", "could", "did", "do", "does",
    "how", "i", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "should", "such",
    "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those",
    "to", "was", "we", "were", "what", "when", "which", "why", "with", "would", "you", "your",
];

/// Tokens: split on non-alphanumerics, overlong tokens dropped, lowercased, stop words
/// dropped, English stemming.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            STOP_WORDS.iter().map(|w| (*w).to_owned()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}
/// Indexing memory budget (split across writer threads).
const WRITER_BUDGET: usize = 128 << 20;

#[derive(Debug, Clone, Copy)]
struct Fields {
    key: Field,
    source: Field,
    path: Field,
    path_text: Field,
    title: Field,
    text: Field,
    start_line: Field,
    end_line: Field,
    chunk_digest: Field,
    file_digest: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let stemmed = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        key: b.add_text_field("key", STRING | STORED),
        source: b.add_text_field("source", STRING | STORED),
        path: b.add_text_field("path", STORED),
        path_text: b.add_text_field("path_text", TEXT),
        title: b.add_text_field("title", stemmed.clone()),
        text: b.add_text_field("text", stemmed),
        start_line: b.add_u64_field("start_line", NumericOptions::default().set_stored()),
        end_line: b.add_u64_field("end_line", NumericOptions::default().set_stored()),
        chunk_digest: b.add_text_field("chunk_digest", STORED),
        file_digest: b.add_text_field("file_digest", STORED),
    };
    (b.build(), fields)
}

/// One hit, as a query returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hit {
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

/// What narrows a query.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Only these sources (none: all).
    pub sources: Vec<String>,
    /// Only these file keys (`None`: all); from a path glob matched against the manifest.
    pub keys: Option<Vec<String>>,
}

pub struct SearchIndex {
    path: PathBuf,
    index: Index,
    fields: Fields,
}

impl SearchIndex {
    /// Opens (or creates) the index under `dir` (the collection's data directory).
    pub fn open(dir: &Path) -> Result<SearchIndex, RagError> {
        let path = dir.join(INDEX_DIR);
        // An index of an older schema is never read again; the ledger rebuilds this one.
        for old in OLD_INDEX_DIRS {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
        std::fs::create_dir_all(&path).map_err(|e| RagError::Index {
            path: path.clone(),
            source: e.into(),
        })?;
        let directory = MmapDirectory::open(&path).map_err(|e| RagError::Index {
            path: path.clone(),
            source: e.into(),
        })?;
        let (schema, fields) = schema();
        let index =
            Index::open_or_create(directory, schema).map_err(|e| RagError::index(&path, e))?;
        // Custom analyzers are not stored with the index: registered at every open.
        index.tokenizers().register(TOKENIZER, analyzer());
        Ok(SearchIndex {
            path,
            index,
            fields,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The payload of the last commit: the hex digest of the manifest it reflects.
    pub fn manifest_digest(&self) -> Result<Option<String>, RagError> {
        let metas = self
            .index
            .load_metas()
            .map_err(|e| RagError::index(&self.path, e))?;
        Ok(metas.payload)
    }

    /// Takes the index's writer lock; a second writer (another process indexing the same
    /// collection) gets [`RagError::Busy`].
    pub fn writer(&self, collection: &str) -> Result<Writer, RagError> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        match self
            .index
            .writer_with_num_threads::<TantivyDocument>(threads, WRITER_BUDGET)
        {
            Ok(inner) => Ok(Writer {
                inner,
                fields: self.fields,
                path: self.path.clone(),
            }),
            Err(tantivy::TantivyError::LockFailure(..)) => Err(RagError::Busy {
                name: collection.to_owned(),
                path: self.path.clone(),
            }),
            Err(e) => Err(RagError::index(&self.path, e)),
        }
    }

    pub fn reader(&self) -> Result<IndexReader, RagError> {
        self.index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| RagError::index(&self.path, e))
    }

    /// The `top_k` best chunks for `query` (BM25 over text, title and path), with filters.
    /// The query text is parsed leniently: any user text is a query, never a syntax error.
    pub fn search(
        &self,
        reader: &IndexReader,
        query: &str,
        top_k: usize,
        filters: &Filters,
    ) -> Result<Vec<Hit>, RagError> {
        let f = self.fields;
        if filters.keys.as_ref().is_some_and(|k| k.is_empty()) {
            return Ok(Vec::new());
        }
        let mut parser = QueryParser::for_index(&self.index, vec![f.text, f.title, f.path_text]);
        parser.set_field_boost(f.title, 2.0);
        parser.set_field_boost(f.path_text, 1.5);
        let (parsed, _ignored) = parser.parse_query_lenient(query);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, parsed)];
        // Filters must not change scores: boosted to zero.
        let mut filter = |field: Field, values: &[String]| {
            let terms = values.iter().map(|v| Term::from_field_text(field, v));
            clauses.push((
                Occur::Must,
                Box::new(BoostQuery::new(Box::new(TermSetQuery::new(terms)), 0.0)),
            ));
        };
        if !filters.sources.is_empty() {
            filter(f.source, &filters.sources);
        }
        if let Some(keys) = &filters.keys {
            filter(f.key, keys);
        }
        let query = BooleanQuery::new(clauses);
        let searcher = reader.searcher();
        let want = top_k.max(1);
        // Look a little deeper than `top_k`, deeper again when duplicates filled the window.
        let mut limit = want.saturating_mul(2).max(10);
        loop {
            let top = searcher
                .search(&query, &TopDocs::with_limit(limit))
                .map_err(|e| RagError::index(&self.path, e))?;
            let exhausted = top.len() < limit || limit >= MAX_SCAN;
            let mut hits: Vec<Hit> = Vec::with_capacity(want);
            let mut seen = std::collections::HashSet::new();
            for (score, address) in top {
                let doc: TantivyDocument = searcher
                    .doc(address)
                    .map_err(|e| RagError::index(&self.path, e))?;
                let hit = self.hit(&doc, score);
                if seen.insert(hit.chunk_digest.clone()) {
                    hits.push(hit);
                    if hits.len() == want {
                        return Ok(hits);
                    }
                }
            }
            if exhausted {
                return Ok(hits);
            }
            limit = limit.saturating_mul(4).min(MAX_SCAN);
        }
    }

    fn hit(&self, doc: &TantivyDocument, score: f32) -> Hit {
        let f = self.fields;
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let number = |field: Field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
        Hit {
            source: text(f.source),
            path: text(f.path),
            start_line: number(f.start_line),
            end_line: number(f.end_line),
            score,
            title: text(f.title),
            text: text(f.text),
            chunk_digest: text(f.chunk_digest),
            file_digest: text(f.file_digest),
        }
    }
}

/// The index's one writer.
pub struct Writer {
    inner: IndexWriter<TantivyDocument>,
    fields: Fields,
    path: PathBuf,
}

impl Writer {
    pub fn delete_all(&mut self) -> Result<(), RagError> {
        self.inner
            .delete_all_documents()
            .map(|_| ())
            .map_err(|e| RagError::index(&self.path, e))
    }

    /// Removes every chunk of the file `key`.
    pub fn delete_file(&mut self, key: &str) {
        self.inner
            .delete_term(Term::from_field_text(self.fields.key, key));
    }

    /// Adds the chunks of one file.
    pub fn add_file(
        &mut self,
        source: &str,
        path: &str,
        file_digest: &str,
        chunks: &[Chunk],
    ) -> Result<(), RagError> {
        let f = self.fields;
        let key = format!("{source}/{path}");
        let path_text = path.replace(['/', '-', '_', '.'], " ");
        for chunk in chunks {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.key, &key);
            doc.add_text(f.source, source);
            doc.add_text(f.path, path);
            doc.add_text(f.path_text, &path_text);
            doc.add_text(f.title, &chunk.title);
            doc.add_text(f.text, &chunk.text);
            doc.add_u64(f.start_line, chunk.start_line);
            doc.add_u64(f.end_line, chunk.end_line);
            doc.add_text(f.chunk_digest, &chunk.digest);
            doc.add_text(f.file_digest, file_digest);
            self.inner
                .add_document(doc)
                .map_err(|e| RagError::index(&self.path, e))?;
        }
        Ok(())
    }

    /// Commits with the manifest digest as payload, then waits for merges so the writer lock
    /// is released when this returns.
    pub fn commit(mut self, manifest_digest: &str) -> Result<(), RagError> {
        let mut prepared = self
            .inner
            .prepare_commit()
            .map_err(|e| RagError::index(&self.path, e))?;
        prepared.set_payload(manifest_digest);
        prepared
            .commit()
            .map_err(|e| RagError::index(&self.path, e))?;
        self.inner
            .wait_merging_threads()
            .map_err(|e| RagError::index(&self.path, e))
    }
}
