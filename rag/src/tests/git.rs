//! `git` sources: full and delta index runs over commits of a real repository, the commit id
//! recorded on `RagIndexCompleted`, and a fresh machine rebuilding the recorded commit.

use std::process::Command;

use runledger_contracts::rag::{CollectionSpec, IndexMode, SourceKind, SourceSpec};
use runledger_ledger::testing::TestLedger;

use super::{Dir, change, index, query};
use crate::Rag;

fn git(repo: &Dir, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo.path())
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn commit(repo: &Dir, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

#[tokio::test]
async fn a_git_source_is_indexed_at_its_ref_full_then_delta_by_commit() {
    let (repo, data) = (Dir::new(), Dir::new());
    git(&repo, &["init", "-q", "-b", "main"]);
    repo.write("guide.md", "# Guide\n\nThe zebrafish rule.\n");
    repo.write("notes.txt", "notes about the quokka\n");
    repo.write("old.md", "# Old\n\nThe dodo page.\n");
    let first = commit(&repo, "one");

    let ledger = TestLedger::new().await.unwrap();
    let rag = Rag::new(ledger.second_store().await.unwrap(), data.path());
    let spec = CollectionSpec {
        name: "repo".into(),
        sources: vec![SourceSpec {
            name: "code".into(),
            kind: SourceKind::Git,
            path: String::new(),
            repo: Some(repo.path().to_str().unwrap().into()),
            git_ref: Some("main".into()),
            include: vec![],
            exclude: vec![],
        }],
        description: None,
        embedding_model: None,
    };
    rag.collections().create(spec, &change("g1")).await.unwrap();
    let full = rag.index(&index("repo", IndexMode::Full)).await.unwrap();
    assert_eq!(full.completed.files.added, 3);
    assert_eq!(full.completed.commits.get("code"), Some(&first));
    let hits = rag.query(&query("repo", "zebrafish")).await.unwrap();
    assert_eq!(
        (hits.hits[0].source.as_str(), hits.hits[0].path.as_str()),
        ("code", "guide.md")
    );

    // Uncommitted work in the repository is not what `main` holds: nothing changes.
    repo.write("guide.md", "# Guide\n\nUncommitted axolotl.\n");
    let same = rag.index(&index("repo", IndexMode::Delta)).await.unwrap();
    let f = same.completed.files;
    assert_eq!(
        (f.read, f.unchanged, f.added + f.changed + f.deleted),
        (0, 3, 0)
    );
    assert_eq!(same.completed.manifest, full.completed.manifest);

    // A new commit: one file changed, one added, one deleted; only those are read.
    repo.write("guide.md", "# Guide\n\nThe axolotl rule.\n");
    repo.write("new.md", "# New\n\nThe pangolin chapter.\n");
    std::fs::remove_file(repo.0.join("old.md")).unwrap();
    let second = commit(&repo, "two");
    let delta = rag.index(&index("repo", IndexMode::Delta)).await.unwrap();
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
        (3, 2, 1, 1, 1, 1)
    );
    assert_eq!(delta.completed.commits.get("code"), Some(&second));
    assert_eq!(
        rag.query(&query("repo", "pangolin")).await.unwrap().hits[0].path,
        "new.md"
    );
    assert!(
        rag.query(&query("repo", "dodo"))
            .await
            .unwrap()
            .hits
            .is_empty()
    );

    // A fresh machine (empty data directory) rebuilds the index of the recorded commit,
    // even after the branch moved on.
    repo.write("new.md", "# New\n\nRewritten entirely.\n");
    commit(&repo, "three");
    let elsewhere = Dir::new();
    let fresh = Rag::new(ledger.second_store().await.unwrap(), elsewhere.path());
    let hits = fresh.query(&query("repo", "pangolin")).await.unwrap();
    assert_eq!(hits.hits[0].path, "new.md");
    assert_eq!(hits.index_version, delta.index_version);

    // A repository that does not exist fails the run with a typed error, recorded.
    let bad = CollectionSpec {
        name: "gone".into(),
        sources: vec![SourceSpec {
            name: "code".into(),
            kind: SourceKind::Git,
            path: String::new(),
            repo: Some("/nonexistent/repo".into()),
            git_ref: None,
            include: vec![],
            exclude: vec![],
        }],
        description: None,
        embedding_model: None,
    };
    rag.collections().create(bad, &change("g2")).await.unwrap();
    let err = rag
        .index(&index("gone", IndexMode::Full))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "git_failed");
    let state = rag.status("gone").await.unwrap();
    assert_eq!(
        state.last_failed.map(|f| f.error.code),
        Some("git_failed".to_owned())
    );
    drop((rag, fresh));
    ledger.drop_schema().await.unwrap();
}
