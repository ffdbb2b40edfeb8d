//! workspace_apply_patch: a unified diff (plain or `git diff` style, one or more files, file
//! creation and deletion) parsed and applied with `diffy`. All or nothing: every file's result
//! is computed before anything is written, so a hunk that does not apply changes no file.

use std::fs;
use std::path::Path;

use diffy::patch_set::{FileOperation, ParseOptions, PatchKind, PatchSet};
use runledger_contracts::agent_tool::ToolCallError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::confine::{Confined, confine};
use crate::args::{failed, failed_with, invalid, io_failed, parse};
use crate::config::Limits;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchArgs {
    patch: String,
    /// Leading path components to drop from the patch's file names; by default 1 when they all
    /// start with `a/` and `b/` (as `git diff` writes them), else 0.
    strip: Option<usize>,
}

/// One file's change, computed.
enum Change {
    Write {
        path: Confined,
        content: String,
        created: bool,
    },
    Delete {
        path: Confined,
    },
}

pub fn apply(root: &Path, arguments: Value, limits: &Limits) -> Result<Value, ToolCallError> {
    let args: PatchArgs = parse(arguments)?;
    if args.patch.len() as u64 > limits.max_write_bytes {
        return Err(invalid("patch", "is larger than the write limit"));
    }
    let options = if args.patch.contains("\ndiff --git ") || args.patch.starts_with("diff --git ") {
        ParseOptions::gitdiff()
    } else {
        ParseOptions::unidiff()
    };
    let mut files = Vec::new();
    for file in PatchSet::parse(&args.patch, options) {
        files.push(file.map_err(|e| invalid("patch", e))?);
    }
    if files.is_empty() {
        return Err(invalid("patch", "holds no file changes"));
    }
    let strip = match args.strip {
        Some(n) => n,
        None => default_strip(files.iter().map(|f| f.operation())),
    };
    let mut changes = Vec::new();
    let mut summary = Vec::new();
    for file in &files {
        let op = file.operation().strip_prefix(strip);
        let PatchKind::Text(patch) = file.patch() else {
            return Err(failed(
                "binary_patch_unsupported",
                "binary patches are not applied",
            ));
        };
        let hunks = patch.hunks().len();
        match op {
            FileOperation::Create(p) => {
                let path = confine(root, &p)?;
                if path.absolute.exists() {
                    return Err(failed(
                        "patch_does_not_apply",
                        format!("`{p}` already exists"),
                    ));
                }
                let content = diffy::apply("", patch).map_err(|e| not_applied(&p, e))?;
                summary
                    .push(json!({ "path": path.relative, "operation": "create", "hunks": hunks }));
                changes.push(Change::Write {
                    path,
                    content,
                    created: true,
                });
            }
            FileOperation::Delete(p) => {
                let path = confine(root, &p)?;
                let base = read_text(&path, &p, limits)?;
                diffy::apply(&base, patch).map_err(|e| not_applied(&p, e))?;
                summary
                    .push(json!({ "path": path.relative, "operation": "delete", "hunks": hunks }));
                changes.push(Change::Delete { path });
            }
            FileOperation::Modify { original, modified } => {
                let from = confine(root, &original)?;
                let to = confine(root, &modified)?;
                let base = read_text(&from, &original, limits)?;
                let content = diffy::apply(&base, patch).map_err(|e| not_applied(&original, e))?;
                let renamed = from.relative != to.relative;
                summary.push(json!({
                    "path": to.relative,
                    "operation": if renamed { "rename" } else { "modify" },
                    "hunks": hunks,
                }));
                if renamed {
                    changes.push(Change::Delete { path: from });
                }
                changes.push(Change::Write {
                    path: to,
                    content,
                    created: renamed,
                });
            }
            FileOperation::Rename { from, to } | FileOperation::Copy { from, to } => {
                let is_rename = file.operation().is_rename();
                let src = confine(root, &from)?;
                let dest = confine(root, &to)?;
                let base = read_text(&src, &from, limits)?;
                let content = diffy::apply(&base, patch).map_err(|e| not_applied(&from, e))?;
                summary.push(json!({
                    "path": dest.relative,
                    "operation": if is_rename { "rename" } else { "copy" },
                    "hunks": hunks,
                }));
                if is_rename {
                    changes.push(Change::Delete { path: src });
                }
                changes.push(Change::Write {
                    path: dest,
                    content,
                    created: true,
                });
            }
        }
    }
    for change in changes {
        match change {
            Change::Write {
                path,
                content,
                created,
            } => {
                if created && let Some(parent) = path.absolute.parent() {
                    fs::create_dir_all(parent).map_err(|e| io_failed(&path.relative, e))?;
                }
                fs::write(&path.absolute, content).map_err(|e| io_failed(&path.relative, e))?;
            }
            Change::Delete { path } => {
                fs::remove_file(&path.absolute).map_err(|e| io_failed(&path.relative, e))?;
            }
        }
    }
    Ok(json!({ "files": summary }))
}

/// 1 when every named path starts with `a/` or `b/` (git's prefixes), else 0.
fn default_strip<'a>(ops: impl Iterator<Item = &'a FileOperation<'a, str>>) -> usize {
    let mut all_prefixed = true;
    let mut any = false;
    for op in ops {
        let names: Vec<&str> = match op {
            FileOperation::Create(p) | FileOperation::Delete(p) => vec![p],
            FileOperation::Modify { original, modified } => vec![original, modified],
            FileOperation::Rename { from, to } | FileOperation::Copy { from, to } => vec![from, to],
        };
        for name in names {
            any = true;
            all_prefixed &= name.starts_with("a/") || name.starts_with("b/");
        }
    }
    usize::from(any && all_prefixed)
}

fn read_text(path: &Confined, name: &str, limits: &Limits) -> Result<String, ToolCallError> {
    let meta = fs::metadata(&path.absolute).map_err(|e| io_failed(name, e))?;
    if meta.len() > limits.max_write_bytes {
        return Err(failed(
            "file_too_large",
            format!("`{name}` is larger than the write limit"),
        ));
    }
    let bytes = fs::read(&path.absolute).map_err(|e| io_failed(name, e))?;
    String::from_utf8(bytes)
        .map_err(|e| failed_with("not_text", format!("`{name}` is not UTF-8 text"), e))
}

fn not_applied(name: &str, e: diffy::ApplyError) -> ToolCallError {
    failed_with("patch_does_not_apply", format!("`{name}`: {e}"), e)
}
