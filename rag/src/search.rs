//! The search index of one collection: a tantivy index under
//! `<data_dir>/<collection>/index-v3/`, one document per chunk.
//!
//! It is a read model: everything in it can be rebuilt from the ledger (the manifest of the
//! last completed index run) and the sources. Each commit carries the digest of the manifest
//! it reflects as its payload, so a reader knows whether the index on disk is the one the
//! ledger says is current, and a run interrupted between the commit and its
//! `RagIndexCompleted` is detected (the payload names a manifest the ledger never recorded).
//!
//! Fields: `key` (`<source>/<path>`, one term, for deletes and path filters), `source`,
//! `path`, `name_text` (the file name's words, so `what-is-ownership.html` helps find
//! ownership; not the directories', which name a collection, not a topic: `reference/`
//! would match every question about references), `title` (the section heading), `context`
//! (the headings above the section), `text`; the last four with English stop words dropped,
//! then stemmed (`text` with positions for phrase queries); line range and digests (stored
//! only).
//!
//! A query returns distinct chunk texts: the same text in several files (std re-exporting
//! core's pages, one blanket-impl section on every type's page, a translation's untranslated
//! code) takes one place in the hits, the best-scoring file's. And at most
//! [`MAX_HITS_PER_FILE`] chunks of one file: a long page whose every section repeats the
//! query's words would otherwise fill the hits, and the caller learns of one page only.

use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, QueryParser, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TextFieldIndexing,
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
pub const INDEX_DIR: &str = "index-v3";
/// Directories of earlier schemas, removed when an index is opened.
const OLD_INDEX_DIRS: &[&str] = &["index-v1", "index-v2"];
/// The analyzer of `title` and `text`.
const TOKENIZER: &str = "en_stem_stop";
/// Query hits looked at, at the most, to find `top_k` distinct chunk texts.
const MAX_SCAN: usize = 4096;
/// Most chunks of one file in a query's hits (its best-scoring ones).
pub const MAX_HITS_PER_FILE: usize = 2;
/// BM25 weight of a match in the section's heading, against 1 in the text or file name.
const TITLE_BOOST: f32 = 2.0;
/// BM25 weight of a match in the headings above the section.
const CONTEXT_BOOST: f32 = 1.5;

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
    name_text: Field,
    title: Field,
    context: Field,
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
    // File name words and heading context: stemmed like the text, frequencies only.
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        key: b.add_text_field("key", STRING | STORED),
        source: b.add_text_field("source", STRING | STORED),
        path: b.add_text_field("path", STORED),
        name_text: b.add_text_field("name_text", words.clone()),
        title: b.add_text_field("title", stemmed.clone()),
        context: b.add_text_field("context", words),
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

    /// The `top_k` best chunks for `query` (BM25 over text, title, context and file name),
    /// with filters, each text once and at most [`MAX_HITS_PER_FILE`] chunks per file.
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
        let mut parser =
            QueryParser::for_index(&self.index, vec![f.text, f.title, f.context, f.name_text]);
        parser.set_field_boost(f.title, TITLE_BOOST);
        parser.set_field_boost(f.context, CONTEXT_BOOST);
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
        // The first pass looks deep enough that duplicate texts and the per-file cap rarely
        // need a second one: a pass runs the whole query again, while a deeper window costs
        // little (documents are loaded only until `top_k` are admitted). A deeper pass skips
        // what the one before already judged.
        let mut limit = want.saturating_mul(8).clamp(40, MAX_SCAN);
        let mut judged = 0;
        let mut hits: Vec<Hit> = Vec::with_capacity(want);
        let mut diverse = Diverse::default();
        loop {
            let top = searcher
                .search(&query, &TopDocs::with_limit(limit))
                .map_err(|e| RagError::index(&self.path, e))?;
            let exhausted = top.len() < limit || limit >= MAX_SCAN;
            for (score, address) in top.into_iter().skip(judged) {
                let doc: TantivyDocument = searcher
                    .doc(address)
                    .map_err(|e| RagError::index(&self.path, e))?;
                let hit = self.hit(&doc, score);
                if diverse.admit(&hit) {
                    hits.push(hit);
                    if hits.len() == want {
                        return Ok(hits);
                    }
                }
            }
            if exhausted {
                return Ok(hits);
            }
            judged = limit;
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

/// What keeps a ranking's hits diverse: each chunk text once, at most
/// [`MAX_HITS_PER_FILE`] chunks of one file. Fed hits best first, it admits the best of each.
#[derive(Debug, Default)]
pub struct Diverse {
    texts: std::collections::HashSet<String>,
    per_file: std::collections::HashMap<(String, String), usize>,
}

impl Diverse {
    /// Whether `hit` joins the hits (and counts it if so).
    pub fn admit(&mut self, hit: &Hit) -> bool {
        let file = (hit.source.clone(), hit.path.clone());
        if self
            .per_file
            .get(&file)
            .is_some_and(|n| *n >= MAX_HITS_PER_FILE)
            || self.texts.contains(&hit.chunk_digest)
        {
            return false;
        }
        self.texts.insert(hit.chunk_digest.clone());
        *self.per_file.entry(file).or_default() += 1;
        true
    }
}

/// The words of a path's file name (split at `- _ .`), its extension left out (every HTML
/// page would share it).
fn name_words(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.replace(['-', '_', '.'], " ")
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
        let name_text = name_words(path);
        for chunk in chunks {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.key, &key);
            doc.add_text(f.source, source);
            doc.add_text(f.path, path);
            doc.add_text(f.name_text, &name_text);
            doc.add_text(f.title, &chunk.title);
            doc.add_text(f.context, &chunk.context);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::chunk;
    use crate::extract::DocKind;

    /// An index of Markdown `files` (path, text) in a fresh directory, and that directory.
    fn index_of(files: &[(&str, &str)]) -> (SearchIndex, IndexReader, crate::tests::Dir) {
        let dir = crate::tests::Dir::new();
        let index = SearchIndex::open(dir.path()).unwrap();
        let mut writer = index.writer("t").unwrap();
        for (path, text) in files {
            writer
                .add_file("docs", path, "digest", &chunk(DocKind::Markdown, text))
                .unwrap();
        }
        writer.commit("manifest").unwrap();
        let reader = index.reader().unwrap();
        reader.reload().unwrap();
        (index, reader, dir)
    }

    fn paths(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.path.as_str()).collect()
    }

    #[test]
    fn one_file_cannot_fill_the_hits() {
        // Every section of the long page says "walrus" more often than the other pages.
        let long: String = (0..8)
            .map(|i| format!("# Part {i}\n\nwalrus walrus walrus number {i}\n\n"))
            .collect();
        let (index, reader, _dir) = index_of(&[
            ("long.md", &long),
            (
                "one.md",
                "# One\n\nA walrus swims, and many other animals do too.\n",
            ),
            (
                "two.md",
                "# Two\n\nThe walrus rests on ice floes near the coast.\n",
            ),
        ]);
        let hits = index
            .search(&reader, "walrus", 5, &Filters::default())
            .unwrap();
        let from_long = hits.iter().filter(|h| h.path == "long.md").count();
        assert_eq!(from_long, MAX_HITS_PER_FILE, "{:?}", paths(&hits));
        assert!(paths(&hits).contains(&"one.md") && paths(&hits).contains(&"two.md"));
        // The long page's chunks that are kept are its best: the first hit is one of them.
        assert_eq!(hits[0].path, "long.md");
        assert_eq!(hits.len(), MAX_HITS_PER_FILE + 2);
    }

    #[test]
    fn hits_past_the_first_window_are_found_once() {
        // 100 better chunks of one file fill the first pass's window (40) and the next.
        let long: String = (0..100)
            .map(|i| format!("# Part {i}\n\nwalrus walrus walrus number {i}\n\n"))
            .collect();
        let (index, reader, _dir) = index_of(&[
            ("long.md", &long),
            (
                "other.md",
                "# Other\n\nA walrus swims, and many other animals do too.\n",
            ),
        ]);
        let hits = index
            .search(&reader, "walrus", 5, &Filters::default())
            .unwrap();
        assert_eq!(paths(&hits), ["long.md", "long.md", "other.md"], "{hits:?}");
        assert_ne!(hits[0].chunk_digest, hits[1].chunk_digest);
    }

    #[test]
    fn the_headings_above_a_section_rank_it() {
        // Two "Examples" sections; only a.md's is under "Closures", and it is the longer one,
        // which BM25 alone would rank second.
        let (index, reader, _dir) = index_of(&[
            (
                "a.md",
                "# Closures\n\nAnonymous functions.\n\n## Examples\n\nlet add = |x| x + 1; // adds one to x\n",
            ),
            (
                "b.md",
                "# Iterators\n\nLazy sequences.\n\n## Examples\n\nlet add = |x| x + 1;\n",
            ),
        ]);
        let hits = index
            .search(&reader, "closure examples", 5, &Filters::default())
            .unwrap();
        let examples: Vec<&str> = hits
            .iter()
            .filter(|h| h.title == "Examples")
            .map(|h| h.path.as_str())
            .collect();
        assert_eq!(examples, ["a.md", "b.md"], "{hits:?}");
        // Without the chapter's word, the shorter section is first again.
        let hits = index
            .search(&reader, "examples", 5, &Filters::default())
            .unwrap();
        assert_eq!(paths(&hits), ["b.md", "a.md"], "{hits:?}");
    }

    #[test]
    fn the_file_name_is_searched_but_not_the_directories() {
        assert_eq!(
            name_words("book/ch04-01-what-is-ownership.html"),
            "ch04 01 what is ownership"
        );
        assert_eq!(name_words("std/vec/struct.Vec.html"), "struct Vec");
        assert_eq!(name_words("a.b/README"), "README");
        let (index, reader, _dir) = index_of(&[
            ("reference/types.md", "# Types\n\nEvery value has a type.\n"),
            ("guide/borrowing.md", "# Lending\n\nValues lent out.\n"),
        ]);
        let hits = index
            .search(&reader, "borrowing", 5, &Filters::default())
            .unwrap();
        assert_eq!(paths(&hits), ["guide/borrowing.md"]);
        let hits = index
            .search(&reader, "reference", 5, &Filters::default())
            .unwrap();
        assert!(hits.is_empty(), "{hits:?}");
    }
}
