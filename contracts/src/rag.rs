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

/// Where a source's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A directory on the executor's file system, walked recursively.
    Directory,
}

/// One source of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Names the source in hits and in `sources:` filters; unique in the collection.
    pub name: String,
    pub kind: SourceKind,
    /// Absolute path of the directory.
    pub path: String,
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
        if let Some(d) = &self.description
            && d.len() > 2000
        {
            return Err(invalid("description", "must be at most 2000 bytes"));
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
            if !source.path.starts_with('/') || source.path.contains('\0') {
                return Err(invalid(
                    format!("{at}.path"),
                    format!("`{}` must be an absolute path", source.path),
                ));
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
                include: vec!["**/*.md".into()],
                exclude: vec![],
            }],
            description: None,
        }
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
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<CollectionSpec>(serde_json::json!({
            "name": "docs", "sources": [], "surprise": 1
        }))
        .unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
    }
}
