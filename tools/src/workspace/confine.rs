//! Confinement of tool paths to the run's checkout. A path is relative, has no `..`, and
//! resolves (symlinks followed) inside the checkout; anything else is refused with
//! `path_escape` before the file system is touched. `.git` is reachable only through the git
//! tools (`git_dir_protected`): writing hooks or config there would run code or change remotes
//! behind the node's allowlist, and its config may hold a credentialed remote URL.
//!
//! The checks run on the path as it is when the call starts; a command of the same run that
//! swaps a directory for a symlink at that moment is not defended against (commands run with
//! the run's own rights in the workspace anyway).

use std::path::{Component, Path, PathBuf};

use runledger_contracts::agent_tool::ToolCallError;

use crate::args::refused;

/// A path inside the workspace, checked.
#[derive(Debug, Clone)]
pub struct Confined {
    /// Relative to the checkout, `/`-separated, `""` for the checkout itself.
    pub relative: String,
    /// Absolute.
    pub absolute: PathBuf,
}

/// Checks `path` (as the model wrote it) against the checkout `root` (canonical).
pub fn confine(root: &Path, path: &str) -> Result<Confined, ToolCallError> {
    if path.contains('\0') {
        return Err(refused("path_escape", "the path contains NUL"));
    }
    let given = Path::new(path);
    let mut parts: Vec<String> = Vec::new();
    for component in given.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(p) => parts.push(p.to_owned()),
                None => return Err(refused("path_escape", "the path is not UTF-8")),
            },
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(refused(
                    "path_escape",
                    format!("`{path}`: `..` is not allowed in workspace paths"),
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(
                    "path_escape",
                    format!("`{path}`: workspace paths are relative to the workspace"),
                ));
            }
        }
    }
    if parts.first().is_some_and(|p| p == ".git") {
        return Err(refused(
            "git_dir_protected",
            format!("`{path}`: the .git directory is reachable only through the git tools"),
        ));
    }
    let absolute = parts.iter().fold(root.to_owned(), |acc, p| acc.join(p));
    // Every existing ancestor (and the path itself, when it exists) must resolve inside.
    let mut probe = root.to_owned();
    for (i, part) in parts.iter().enumerate() {
        probe.push(part);
        match probe.symlink_metadata() {
            Ok(meta) => {
                if meta.file_type().is_symlink() {
                    match probe.canonicalize() {
                        Ok(target) if target.starts_with(root) => {
                            if target
                                .strip_prefix(root)
                                .ok()
                                .and_then(|t| t.components().next())
                                .is_some_and(|c| c.as_os_str() == ".git")
                            {
                                return Err(refused(
                                    "git_dir_protected",
                                    format!("`{path}` leads into .git"),
                                ));
                            }
                        }
                        Ok(_) => {
                            return Err(refused(
                                "path_escape",
                                format!("`{path}`: a symlink leads outside the workspace"),
                            ));
                        }
                        Err(_) => {
                            return Err(refused(
                                "path_escape",
                                format!(
                                    "`{path}`: `{}` is a symlink whose target cannot be resolved",
                                    parts[..=i].join("/")
                                ),
                            ));
                        }
                    }
                }
            }
            Err(_) => break,
        }
    }
    Ok(Confined {
        relative: parts.join("/"),
        absolute,
    })
}

/// `absolute` (a path found while walking the checkout) relative to `root`, `/`-separated.
pub fn relative_to(root: &Path, absolute: &Path) -> String {
    absolute
        .strip_prefix(root)
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}
