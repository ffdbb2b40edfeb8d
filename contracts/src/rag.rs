//! RAG collections: the types the ledger records about them (`RagCollection*`, `RagIndex*`).
//!
//! A collection names one or more sources (today: directories with include/exclude globs). Its
//! spec lives in the ledger, one stream per collection (`rag-<name>`), next to the index runs of
//! that collection, so the stream version orders everything that happened to it and the version
//! of the last `RagIndexCompleted` is the *index version* that query hits cite.
//!
//! Glob syntax is checked by the `rag` crate (which owns `globset`); this module checks only
//! what needs no library: names, absolute paths, duplicates, sizes.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{IdError, StreamId};

/// Prefix of the ledger streams that hold one collection each (`rag-<name>`).
pub const RAG_STREAM_PREFIX: &str = "rag-";
/// Longest collection or source name, in bytes.
pub const MAX_NAME_LEN: usize = 100;
/// Most sources one collection may name.
pub const MAX_SOURCES: usize = 64;
/// Most globs per list (include or exclude) of a source.
pub const MAX_GLOBS: usize = 256;
/// Longest glob a source may list, in bytes (the same bound as a query's `path_glob`).
pub const MAX_GLOB_LEN: usize = 1000;

/// Where a source's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A directory on the executor's file system, walked recursively.
    Directory,
    /// A git repository (local path or URL) at a ref: indexed from a checkout of that ref.
    Git,
}

/// One source of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Names the source in hits and in `sources:` filters; unique in the collection.
    pub name: String,
    pub kind: SourceKind,
    /// `directory`: absolute path of the directory. Not used by `git`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// `git`: the repository, an absolute local path or a URL (`https://`, `ssh://`,
    /// `git://`, `file://`, `user@host:path`) without a password in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// `git`: the branch, tag or commit to index; `HEAD` (the remote's default) when absent.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Globs over paths relative to `path` (`**/*.md`); none means every file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs over relative paths whose files are left out, even when included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// A collection, as recorded on `RagCollectionCreated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    /// What `rag` nodes write in `collection:`. Same rule as model names.
    pub name: String,
    pub sources: Vec<SourceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A model of the model registry (`openai_compatible`, served at `/v1/embeddings`): chunks
    /// and queries are embedded with it and dense hits are fused with BM25 by reciprocal rank.
    /// Absent: BM25 alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
}

/// Full: every file of the sources. Delta: only files new, changed (by digest) or deleted since
/// the last completed index run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexMode {
    Full,
    #[default]
    Delta,
}

impl IndexMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexMode::Full => "full",
            IndexMode::Delta => "delta",
        }
    }

    pub fn parse(text: &str) -> Option<IndexMode> {
        match text {
            "full" => Some(IndexMode::Full),
            "delta" => Some(IndexMode::Delta),
            _ => None,
        }
    }
}

impl fmt::Display for IndexMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A collection spec that cannot be recorded, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CollectionSpecError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CollectionSpecError {
    CollectionSpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks a collection (or source) name: 1 to 100 of `A-Z a-z 0-9 - _ .`, starting with a
/// letter or digit, so it is a valid stream id suffix and a directory name.
pub fn check_name(field: &str, name: &str) -> Result<(), CollectionSpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "`{name}` must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 - _ . starting with a letter or digit"
            ),
        ))
    }
}

/// A git repository a source may name: an absolute path or a URL, never an option (`-...`),
/// never with a password (it would reach the ledger and exports).
pub fn check_repo(field: &str, repo: &str) -> Result<(), CollectionSpecError> {
    if repo.is_empty() || repo.len() > 2000 || repo.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "must be 1 to 2000 characters without control characters",
        ));
    }
    if let Some((scheme, rest)) = repo.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git" | "file") {
            return Err(invalid(
                field,
                format!("`{scheme}://` is not a git transport (https, http, ssh, git, file)"),
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'))
        {
            return Err(invalid(
                field,
                "must not carry a password; use a credential helper or an SSH key",
            ));
        }
        return Ok(());
    }
    if repo.starts_with('/') {
        return Ok(());
    }
    // scp-like `user@host:path`
    match repo.split_once(':') {
        Some((host, _)) if !host.is_empty() && !host.starts_with('-') && !host.contains('/') => {
            Ok(())
        }
        _ => Err(invalid(
            field,
            format!("`{repo}` must be an absolute path or a URL"),
        )),
    }
}

/// A ref a git source may name: a branch, tag or commit, not an option, no spaces.
pub fn check_ref(field: &str, git_ref: &str) -> Result<(), CollectionSpecError> {
    let ok = !git_ref.is_empty()
        && git_ref.len() <= 250
        && !git_ref.starts_with('-')
        && !git_ref.contains("..")
        && git_ref.chars().all(|c| {
            c.is_ascii_graphic() && !matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{git_ref}` is not a branch, tag or commit name"),
        ))
    }
}

impl CollectionSpec {
    /// The ledger stream of the collection named `name`.
    pub fn stream_id(name: &str) -> Result<StreamId, IdError> {
        StreamId::new(format!("{RAG_STREAM_PREFIX}{name}"))
    }

    /// Every rule that needs no file system and no glob library.
    pub fn validate(&self) -> Result<(), CollectionSpecError> {
        check_name("name", &self.name)?;
        if self.sources.is_empty() {
            return Err(invalid("sources", "must name at least one source"));
        }
        if self.sources.len() > MAX_SOURCES {
            return Err(invalid(
                "sources",
                format!(
                    "at most {MAX_SOURCES} sources, found {}",
                    self.sources.len()
                ),
            ));
        }
        if let Some(model) = &self.embedding_model {
            check_name("embedding_model", model)?;
        }
        if let Some(d) = &self.description
            && (d.len() > 2000 || d.contains('\0'))
        {
            return Err(invalid(
                "description",
                "must be at most 2000 bytes, without U+0000",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}]");
            check_name(&format!("{at}.name"), &source.name)?;
            if !seen.insert(source.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("`{}` names two sources", source.name),
                ));
            }
            match source.kind {
                SourceKind::Directory => {
                    if !source.path.starts_with('/') || source.path.contains('\0') {
                        return Err(invalid(
                            format!("{at}.path"),
                            format!("`{}` must be an absolute path", source.path),
                        ));
                    }
                    for (key, given) in [("repo", &source.repo), ("ref", &source.git_ref)] {
                        if given.is_some() {
                            return Err(invalid(format!("{at}.{key}"), "only for `kind: git`"));
                        }
                    }
                }
                SourceKind::Git => {
                    if !source.path.is_empty() {
                        return Err(invalid(
                            format!("{at}.path"),
                            "not used by `kind: git` (name the repository in `repo`)",
                        ));
                    }
                    let Some(repo) = &source.repo else {
                        return Err(invalid(format!("{at}.repo"), "required for `kind: git`"));
                    };
                    check_repo(&format!("{at}.repo"), repo)?;
                    if let Some(r) = &source.git_ref {
                        check_ref(&format!("{at}.ref"), r)?;
                    }
                }
            }
            for (list, globs) in [("include", &source.include), ("exclude", &source.exclude)] {
                if globs.len() > MAX_GLOBS {
                    return Err(invalid(
                        format!("{at}.{list}"),
                        format!("at most {MAX_GLOBS} globs"),
                    ));
                }
                if let Some(j) = globs.iter().position(|g| g.trim().is_empty()) {
                    return Err(invalid(format!("{at}.{list}[{j}]"), "must not be empty"));
                }
                if let Some(j) = globs
                    .iter()
                    .position(|g| g.len() > MAX_GLOB_LEN || g.chars().any(char::is_control))
                {
                    return Err(invalid(
                        format!("{at}.{list}[{j}]"),
                        format!("must be at most {MAX_GLOB_LEN} bytes without control characters"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CollectionSpec {
        CollectionSpec {
            name: "docs".into(),
            sources: vec![SourceSpec {
                name: "book".into(),
                kind: SourceKind::Directory,
                path: "/srv/book".into(),
                repo: None,
                git_ref: None,
                include: vec!["**/*.md".into()],
                exclude: vec![],
            }],
            description: None,
            embedding_model: None,
        }
    }

    /// Before, these reached the ledger, which refused them as `invalid_event` with no field.
    #[test]
    fn u0000_and_overlong_globs_are_refused_with_their_field() {
        let mut s = spec();
        s.description = Some("a\0b".into());
        assert_eq!(s.validate().unwrap_err().field, "description");
        let mut s = spec();
        s.sources[0].include = vec!["*.md".into(), "a\0".into()];
        assert_eq!(s.validate().unwrap_err().field, "sources[0].include[1]");
        let mut s = spec();
        s.sources[0].exclude = vec!["a".repeat(MAX_GLOB_LEN + 1)];
        assert_eq!(s.validate().unwrap_err().field, "sources[0].exclude[0]");
    }

    #[test]
    fn a_good_spec_passes_and_each_bad_field_is_named() {
        spec().validate().unwrap();
        let mut s = spec();
        s.name = "../x".into();
        assert_eq!(s.validate().unwrap_err().field, "name");
        let mut s = spec();
        s.sources.clear();
        assert_eq!(s.validate().unwrap_err().field, "sources");
        let mut s = spec();
        s.sources[0].path = "relative/dir".into();
        assert_eq!(s.validate().unwrap_err().field, "sources[0].path");
        let mut s = spec();
        s.sources.push(s.sources[0].clone());
        assert_eq!(s.validate().unwrap_err().field, "sources[1].name");
        let mut s = spec();
        s.sources[0].exclude = vec![" ".into()];
        assert_eq!(s.validate().unwrap_err().field, "sources[0].exclude[0]");
    }

    #[test]
    fn git_sources_need_a_safe_repo_and_ref() {
        let git = |repo: &str, git_ref: Option<&str>| {
            let mut s = spec();
            s.sources[0].kind = SourceKind::Git;
            s.sources[0].path.clear();
            s.sources[0].repo = Some(repo.into());
            s.sources[0].git_ref = git_ref.map(Into::into);
            s.validate().map_err(|e| e.field)
        };
        assert_eq!(git("/srv/repo", Some("main")), Ok(()));
        assert_eq!(git("https://example.org/a/b.git", Some("v1.2")), Ok(()));
        assert_eq!(git("git@example.org:a/b.git", None), Ok(()));
        assert_eq!(
            git("https://user:token@example.org/a.git", None).unwrap_err(),
            "sources[0].repo"
        );
        assert_eq!(git("relative/repo", None).unwrap_err(), "sources[0].repo");
        assert_eq!(git("--upload-pack=x", None).unwrap_err(), "sources[0].repo");
        assert_eq!(
            git("/srv/repo", Some("--force")).unwrap_err(),
            "sources[0].ref"
        );
        assert_eq!(git("/srv/repo", Some("a b")).unwrap_err(), "sources[0].ref");
        let mut s = spec();
        s.sources[0].git_ref = Some("main".into());
        assert_eq!(s.validate().unwrap_err().field, "sources[0].ref");
        let json = serde_json::to_value(spec()).unwrap();
        assert!(
            json["sources"][0].get("repo").is_none(),
            "a directory source records no git keys"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<CollectionSpec>(serde_json::json!({
            "name": "docs", "sources": [], "surprise": 1
        }))
        .unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
    }
}
