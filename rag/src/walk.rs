//! Listing a source's files: a recursive walk of its directory, filtered by the include and
//! exclude globs over paths relative to the directory (`/`-separated). Symbolic links are not
//! followed (a link could lead out of the source, or into a cycle); hidden entries (`.git`)
//! are left out unless an include glob names them explicitly.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use runledger_contracts::rag::SourceSpec;

use crate::error::RagError;

/// A source's compiled globs.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
    hidden: bool,
}

/// A glob whose `*` and `?` stop at `/` (only `**` crosses directories), as in `.gitignore`.
pub fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

fn build(field: &str, globs: &[String]) -> Result<GlobSet, RagError> {
    let mut builder = GlobSetBuilder::new();
    for (i, g) in globs.iter().enumerate() {
        let glob = glob(g).map_err(|source| RagError::BadGlob {
            field: format!("{field}[{i}]"),
            glob: g.clone(),
            source,
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|source| RagError::BadGlob {
        field: field.to_owned(),
        glob: globs.join(","),
        source,
    })
}

impl Filter {
    /// Compiles the globs of source number `index` (for error paths).
    pub fn new(index: usize, source: &SourceSpec) -> Result<Filter, RagError> {
        let at = format!("sources[{index}]");
        let include = if source.include.is_empty() {
            None
        } else {
            Some(build(&format!("{at}.include"), &source.include)?)
        };
        Ok(Filter {
            include,
            exclude: build(&format!("{at}.exclude"), &source.exclude)?,
            hidden: source
                .include
                .iter()
                .any(|g| g.contains("/.") || g.starts_with('.')),
        })
    }

    pub fn matches(&self, relative: &str) -> bool {
        if !self.hidden && relative.split('/').any(|part| part.starts_with('.')) {
            return false;
        }
        self.include.as_ref().is_none_or(|i| i.is_match(relative))
            && !self.exclude.is_match(relative)
    }
}

/// The files of `root` the filter keeps, as (relative path, absolute path), sorted by
/// relative path so every run visits them in the same order.
pub fn list(
    source_name: &str,
    root: &Path,
    filter: &Filter,
) -> Result<Vec<(String, PathBuf)>, RagError> {
    let io = |path: &Path, source: std::io::Error| RagError::Source {
        source_name: source_name.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let kind = entry.file_type().map_err(|e| io(&entry.path(), e))?;
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let Ok(relative) = path.strip_prefix(root) else {
                    continue;
                };
                // Non-UTF-8 names cannot be globbed or recorded faithfully: left out.
                let Some(relative) = relative.to_str() else {
                    continue;
                };
                let relative = relative.replace(std::path::MAIN_SEPARATOR, "/");
                if filter.matches(&relative) {
                    out.push((relative, path));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use runledger_contracts::rag::SourceKind;

    use super::*;

    fn source(include: &[&str], exclude: &[&str]) -> SourceSpec {
        SourceSpec {
            name: "s".into(),
            kind: SourceKind::Directory,
            path: "/x".into(),
            repo: None,
            git_ref: None,
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn include_exclude_and_hidden() {
        let f = Filter::new(0, &source(&["**/*.md", "*.txt"], &["drafts/**"])).unwrap();
        assert!(f.matches("a.md"));
        assert!(f.matches("deep/er/b.md"));
        assert!(f.matches("c.txt"));
        assert!(!f.matches("deep/c.txt"), "`*` does not cross `/`");
        assert!(!f.matches("c.rs"));
        assert!(!f.matches("drafts/d.md"));
        assert!(!f.matches(".git/x.md"));
        let all = Filter::new(0, &source(&[], &[])).unwrap();
        assert!(all.matches("any/thing.bin"));
        assert!(!all.matches("x/.hidden/y"));
    }

    #[test]
    fn a_bad_glob_names_its_field() {
        let err = Filter::new(2, &source(&["ok/**", "[unclosed"], &[])).unwrap_err();
        assert_eq!(err.field().as_deref(), Some("sources[2].include[1]"));
        assert_eq!(err.code(), "invalid_value");
    }
}
