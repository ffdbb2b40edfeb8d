//! Checkouts of `git` sources: the one place the RAG crate runs a process (the `git` binary).
//!
//! Why a process and not a library: fetching from any transport a user's git can reach (SSH
//! keys, credential helpers, proxies) is exactly what their `git` already does; a library
//! would need its own transport and credential setup, and a C or large Rust dependency. RAG
//! is not on the provider path, so the no-spawn rule for providers does not apply (see
//! docs/rag.md); every argument is validated first (`check_repo`/`check_ref` refuse options
//! and passwords) and passed after `--` where git allows it, with prompts disabled.
//!
//! Layout under the collection's data directory: `git/<source>.git` (a bare repository that
//! fetches the ref) and `git/<source>/` (the work tree of the fetched commit, which the
//! indexer walks like a directory). The tree is updated with `read-tree -u --reset`, which
//! rewrites only files that differ and removes files the commit no longer has, so unchanged
//! files keep their modification time and a delta reads only what the commit changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use runledger_contracts::rag::SourceSpec;

use crate::error::RagError;

/// Where a git source's bare repository and work tree live under the collection directory.
pub fn paths(collection_dir: &Path, source: &str) -> (PathBuf, PathBuf) {
    let base = collection_dir.join("git");
    (base.join(format!("{source}.git")), base.join(source))
}

fn run(source: &SourceSpec, step: &'static str, args: &[&str]) -> Result<String, RagError> {
    let output = Command::new("git")
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RagError::Git {
            source_name: source.name.clone(),
            step,
            message: "cannot run `git`".into(),
            io: Some(e),
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Err(RagError::Git {
        source_name: source.name.clone(),
        step,
        message: format!("{} ({})", last.trim(), output.status),
        io: None,
    })
}

/// Fetches the source's ref and checks its commit out into the work tree; returns the
/// commit id and the work tree.
pub fn checkout(collection_dir: &Path, source: &SourceSpec) -> Result<(String, PathBuf), RagError> {
    let repo = source.repo.as_deref().unwrap_or_default();
    let git_ref = source.git_ref.as_deref().unwrap_or("HEAD");
    let (bare, tree) = paths(collection_dir, &source.name);
    let io = |path: &Path, e: std::io::Error| RagError::Source {
        source_name: source.name.clone(),
        path: path.to_owned(),
        source: e,
    };
    std::fs::create_dir_all(&tree).map_err(|e| io(&tree, e))?;
    let bare_s = path_str(source, &bare)?;
    let tree_s = path_str(source, &tree)?;
    if !bare.join("HEAD").is_file() {
        run(
            source,
            "init",
            &["init", "--quiet", "--bare", "--", bare_s.as_str()],
        )?;
    }
    run(
        source,
        "fetch",
        &[
            "--git-dir",
            bare_s.as_str(),
            "fetch",
            "--quiet",
            "--force",
            "--no-tags",
            "--depth=1",
            "--",
            repo,
            git_ref,
        ],
    )?;
    let commit = run(
        source,
        "rev-parse",
        &[
            "--git-dir",
            bare_s.as_str(),
            "rev-parse",
            "--verify",
            "FETCH_HEAD^{commit}",
        ],
    )?;
    check_out(source, bare_s.as_str(), tree_s.as_str(), &commit)?;
    Ok((commit, tree))
}

/// Puts `commit` (already fetched, or fetched now by id) into the work tree: how a query on
/// a fresh machine rebuilds the index of the commit the ledger recorded.
pub fn checkout_commit(
    collection_dir: &Path,
    source: &SourceSpec,
    commit: &str,
) -> Result<PathBuf, RagError> {
    let (bare, tree) = paths(collection_dir, &source.name);
    let bare_s = path_str(source, &bare)?;
    let tree_s = path_str(source, &tree)?;
    let object = format!("{commit}^{{commit}}");
    let have = bare.join("HEAD").is_file()
        && run(
            source,
            "cat-file",
            &[
                "--git-dir",
                bare_s.as_str(),
                "cat-file",
                "-e",
                object.as_str(),
            ],
        )
        .is_ok();
    if !have {
        std::fs::create_dir_all(&tree).map_err(|e| RagError::Source {
            source_name: source.name.clone(),
            path: tree.clone(),
            source: e,
        })?;
        if !bare.join("HEAD").is_file() {
            run(
                source,
                "init",
                &["init", "--quiet", "--bare", "--", bare_s.as_str()],
            )?;
        }
        let repo = source.repo.as_deref().unwrap_or_default();
        run(
            source,
            "fetch",
            &[
                "--git-dir",
                bare_s.as_str(),
                "fetch",
                "--quiet",
                "--no-tags",
                "--depth=1",
                "--",
                repo,
                commit,
            ],
        )?;
    }
    check_out(source, bare_s.as_str(), tree_s.as_str(), commit)?;
    Ok(tree)
}

fn check_out(source: &SourceSpec, bare: &str, tree: &str, commit: &str) -> Result<(), RagError> {
    run(
        source,
        "checkout",
        &[
            "--git-dir",
            bare,
            "--work-tree",
            tree,
            "read-tree",
            "-u",
            "--reset",
            commit,
        ],
    )
    .map(|_| ())
}

fn path_str(source: &SourceSpec, path: &Path) -> Result<String, RagError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| RagError::Source {
            source_name: source.name.clone(),
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        })
}
