//! Index runs and queries against a real PostgreSQL ledger and real files.

use std::path::{Path, PathBuf};

use runledger_contracts::ids::RequestId;
use runledger_contracts::rag::{CollectionSpec, IndexMode, SourceKind, SourceSpec};
use runledger_ledger::testing::TestLedger;
use runledger_ledger::{EventStore, PgEventStore};

use crate::indexer::{IndexRequest, collection_dir};
use crate::registry::ChangeRequest;
use crate::search::SearchIndex;
use crate::{QueryRequest, Rag};

mod dense;
mod git;
mod tools;

pub(crate) struct Dir(pub(crate) PathBuf);

impl Dir {
    pub(crate) fn new() -> Dir {
        let path = std::env::temp_dir().join(format!("rl-rag-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
    pub(crate) fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn source(name: &str, dir: &Dir, include: &[&str]) -> SourceSpec {
    SourceSpec {
        name: name.into(),
        kind: SourceKind::Directory,
        path: dir.path().to_str().unwrap().into(),
        repo: None,
        git_ref: None,
        include: include.iter().map(|s| s.to_string()).collect(),
        exclude: vec!["ignored/**".into()],
    }
}

pub(crate) fn change(id: &str) -> ChangeRequest {
    ChangeRequest {
        request_id: RequestId::new(id).unwrap(),
        actor: "tester".into(),
    }
}

pub(crate) fn index(collection: &str, mode: IndexMode) -> IndexRequest {
    IndexRequest {
        collection: collection.into(),
        mode,
        actor: "tester".into(),
        node_run_id: None,
        request_id: None,
    }
}

pub(crate) fn query(collection: &str, text: &str) -> QueryRequest {
    QueryRequest {
        collection: collection.into(),
        query: text.into(),
        top_k: 5,
        sources: vec![],
        path_glob: None,
    }
}

pub(crate) const GUIDE: &str = "# Guide\n\nIntro text.\n\n## Ownership\n\nEach value in Rust has a variable that is its owner, called the zebrafish rule.\n\n## Borrowing\n\nReferences borrow values without taking ownership.\n";

pub(crate) async fn setup(docs: &Dir, data: &Dir) -> (TestLedger, Rag<PgEventStore>) {
    let ledger = TestLedger::new().await.unwrap();
    let rag = Rag::new(ledger.second_store().await.unwrap(), data.path());
    docs.write("guide.md", GUIDE);
    docs.write("notes.txt", "plain notes about the quokka\n");
    docs.write(
        "page.html",
        "<html><head><style>p{}</style></head><body><h1>Traits</h1><p>A trait defines shared behavior like the narwhal.</p></body></html>",
    );
    docs.write("src/lib.rs", "fn one() {}\n\nfn two() {}\n");
    docs.write("ignored/secret.md", "# hidden capybara\n");
    let spec = CollectionSpec {
        name: "docs".into(),
        sources: vec![source("main", docs, &[])],
        description: None,
        embedding_model: None,
    };
    rag.collections().create(spec, &change("c1")).await.unwrap();
    (ledger, rag)
}

#[tokio::test]
async fn full_then_delta_counts_added_changed_deleted_files() {
    let (docs, data) = (Dir::new(), Dir::new());
    let (ledger, rag) = setup(&docs, &data).await;

    let full = rag.index(&index("docs", IndexMode::Full)).await.unwrap();
    let f = full.completed.files;
    assert_eq!(
        (f.scanned, f.read, f.added, f.changed, f.deleted),
        (4, 4, 4, 0, 0)
    );
    assert!(full.completed.chunks_total >= 5, "{:?}", full.completed);
    // The answer is in one known chunk: guide.md's Ownership section, lines 5-7.
    let hits = rag.query(&query("docs", "zebrafish owner")).await.unwrap();
    assert_eq!(hits.index_version, full.index_version);
    let top = &hits.hits[0];
    assert_eq!(
        (top.path.as_str(), top.start_line, top.end_line),
        ("guide.md", 5, 8)
    );
    assert!(top.text.contains("zebrafish"));
    assert_eq!(
        top.chunk_digest,
        blake3::hash(top.text.as_bytes()).to_hex().to_string()
    );
    assert_eq!(
        top.file_digest,
        blake3::hash(GUIDE.as_bytes()).to_hex().to_string()
    );
    // HTML text is searchable, its markup is not; excluded files are not indexed.
    let html = rag.query(&query("docs", "narwhal")).await.unwrap();
    assert_eq!(html.hits[0].path, "page.html");
    assert!(!html.hits[0].text.contains("<p>"));
    assert!(
        rag.query(&query("docs", "capybara"))
            .await
            .unwrap()
            .hits
            .is_empty()
    );

    // A delta over unchanged sources reads nothing and leaves the search index alone.
    let meta = collection_dir(data.path(), "docs")
        .join(crate::search::INDEX_DIR)
        .join("meta.json");
    let before = std::fs::read(&meta).unwrap();
    let same = rag.index(&index("docs", IndexMode::Delta)).await.unwrap();
    let f = same.completed.files;
    assert_eq!(
        (
            f.scanned,
            f.read,
            f.unchanged,
            f.added + f.changed + f.deleted
        ),
        (4, 0, 4, 0)
    );
    assert_eq!(
        (same.completed.chunks_added, same.completed.chunks_deleted),
        (0, 0)
    );
    assert_eq!(same.completed.manifest, full.completed.manifest);
    assert_eq!(
        std::fs::read(&meta).unwrap(),
        before,
        "the index was written"
    );

    // Add one file, change one, delete one.
    docs.write("new.md", "# New\n\nThe axolotl chapter.\n");
    docs.write("notes.txt", "plain notes about the wombat now\n");
    std::fs::remove_file(docs.path().join("page.html")).unwrap();
    let delta = rag.index(&index("docs", IndexMode::Delta)).await.unwrap();
    let f = delta.completed.files;
    assert_eq!(
        (
            f.scanned,
            f.read,
            f.added,
            f.changed,
            f.deleted,
            f.unchanged
        ),
        (4, 2, 1, 1, 1, 2)
    );
    assert!(delta.index_version > same.index_version);
    assert!(
        rag.query(&query("docs", "narwhal"))
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    assert!(
        rag.query(&query("docs", "quokka"))
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    assert_eq!(
        rag.query(&query("docs", "wombat")).await.unwrap().hits[0].path,
        "notes.txt"
    );
    let axolotl = rag.query(&query("docs", "axolotl")).await.unwrap();
    assert_eq!(axolotl.hits[0].path, "new.md");
    assert_eq!(axolotl.index_version, delta.index_version);

    // The ledger holds the runs: created + 3 x (started, completed).
    let state = rag.status("docs").await.unwrap();
    assert_eq!((state.version, state.index_runs), (7, 3));
    assert!(state.running.is_none());
    drop(rag);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn filters_by_source_and_path_glob() {
    let (docs, other, data) = (Dir::new(), Dir::new(), Dir::new());
    let ledger = TestLedger::new().await.unwrap();
    let rag = Rag::new(ledger.second_store().await.unwrap(), data.path());
    docs.write("a/one.md", "# One\n\nshared term pelican\n");
    docs.write("b/two.md", "# Two\n\nshared term pelican pelican\n");
    other.write("three.md", "# Three\n\nshared term pelican\n");
    let spec = CollectionSpec {
        name: "multi".into(),
        sources: vec![
            source("docs", &docs, &["**/*.md"]),
            source("other", &other, &[]),
        ],
        description: None,
        embedding_model: None,
    };
    rag.collections().create(spec, &change("m1")).await.unwrap();
    rag.index(&index("multi", IndexMode::Full)).await.unwrap();
    let all = rag.query(&query("multi", "pelican")).await.unwrap();
    assert_eq!(all.hits.len(), 3);
    let mut only_other = query("multi", "pelican");
    only_other.sources = vec!["other".into()];
    let hits = rag.query(&only_other).await.unwrap().hits;
    assert_eq!(
        hits.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        ["three.md"]
    );
    let mut glob = query("multi", "pelican");
    glob.path_glob = Some("docs/a/**".into());
    let hits = rag.query(&glob).await.unwrap().hits;
    assert_eq!(
        hits.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        ["a/one.md"]
    );
    glob.path_glob = Some("nothing/**".into());
    assert!(rag.query(&glob).await.unwrap().hits.is_empty());
    glob.path_glob = Some("[bad".into());
    assert_eq!(rag.query(&glob).await.unwrap_err().code(), "invalid_value");
    let mut unknown = query("multi", "pelican");
    unknown.sources = vec!["nope".into()];
    assert_eq!(
        rag.query(&unknown).await.unwrap_err().code(),
        "unknown_source"
    );
    drop(rag);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn never_indexed_unknown_and_bad_specs_are_typed_errors_that_write_nothing() {
    let (docs, data) = (Dir::new(), Dir::new());
    let (ledger, rag) = setup(&docs, &data).await;
    let err = rag.query(&query("docs", "anything")).await.unwrap_err();
    assert_eq!(err.code(), "collection_not_indexed");
    let err = rag.query(&query("ghost", "anything")).await.unwrap_err();
    assert_eq!(err.code(), "collection_not_found");
    let err = rag
        .index(&index("ghost", IndexMode::Full))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "collection_not_found");
    let mut bad = CollectionSpec {
        name: "bad".into(),
        sources: vec![source("main", &docs, &["[unclosed"])],
        description: None,
        embedding_model: None,
    };
    let err = rag
        .collections()
        .create(bad.clone(), &change("b1"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.field().as_deref()),
        ("invalid_value", Some("sources[0].include[0]"))
    );
    bad.sources[0].include.clear();
    bad.sources[0].path = "not/absolute".into();
    let err = rag
        .collections()
        .create(bad, &change("b2"))
        .await
        .unwrap_err();
    assert_eq!(err.field().as_deref(), Some("sources[0].path"));
    let stream = CollectionSpec::stream_id("bad").unwrap();
    assert!(ledger.store.stream_head(&stream).await.unwrap().is_none());
    // A second create of the same name is refused; the same request again is a no-op.
    let again = rag.collections().load("docs").await.unwrap().spec.unwrap();
    let err = rag
        .collections()
        .create(again.clone(), &change("c2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "collection_exists");
    let repeat = rag
        .collections()
        .create(again, &change("c1"))
        .await
        .unwrap();
    assert!(repeat.deduplicated);
    drop(rag);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn an_interrupted_or_lost_index_is_rebuilt_and_a_busy_one_writes_nothing() {
    let (docs, data) = (Dir::new(), Dir::new());
    let (ledger, rag) = setup(&docs, &data).await;
    let first = rag.index(&index("docs", IndexMode::Full)).await.unwrap();

    // Another writer holds the index: the run is refused before anything is recorded.
    let held = SearchIndex::open(&collection_dir(data.path(), "docs")).unwrap();
    let lock = held.writer("docs").unwrap();
    let version = rag.status("docs").await.unwrap().version;
    let err = rag
        .index(&index("docs", IndexMode::Delta))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "index_busy");
    assert!(err.retryable());
    assert_eq!(rag.status("docs").await.unwrap().version, version);
    // A crash after the search index committed a run the ledger never completed: the disk
    // names a manifest the ledger does not.
    lock.commit("0000").unwrap();
    drop(held);

    // A fresh process (no cache) queries: the index is rebuilt from the ledger's manifest.
    let fresh = Rag::new(ledger.second_store().await.unwrap(), data.path());
    let hits = fresh.query(&query("docs", "zebrafish")).await.unwrap();
    assert_eq!(hits.index_version, first.index_version);
    assert_eq!(hits.hits[0].path, "guide.md");

    // The same after the data directory is lost altogether.
    std::fs::remove_dir_all(collection_dir(data.path(), "docs")).unwrap();
    let fresh = Rag::new(ledger.second_store().await.unwrap(), data.path());
    assert_eq!(
        fresh.query(&query("docs", "zebrafish")).await.unwrap().hits[0].path,
        "guide.md"
    );

    // A run that started and never ended shows as running; the next run completes cleanly.
    let state = fresh.status("docs").await.unwrap();
    rag.collections()
        .append(
            "docs",
            runledger_ledger::ExpectedVersion::Exact(state.version),
            &change("interrupted"),
            runledger_contracts::events::DomainEvent::from(
                runledger_contracts::events::RagIndexStarted {
                    collection: "docs".into(),
                    index_run_id: "interrupted".into(),
                    mode: IndexMode::Delta,
                    base_version: Some(first.index_version),
                    actor: "tester".into(),
                    node_run_id: None,
                },
            ),
            None,
        )
        .await
        .unwrap();
    assert!(fresh.status("docs").await.unwrap().running.is_some());
    let next = fresh.index(&index("docs", IndexMode::Delta)).await.unwrap();
    assert_eq!(next.completed.files.unchanged, 4);
    assert!(fresh.status("docs").await.unwrap().running.is_none());
    drop((rag, fresh));
    ledger.drop_schema().await.unwrap();
}
