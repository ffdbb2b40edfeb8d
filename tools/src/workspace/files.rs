//! list, read, write, mkdir, delete, move, copy and chmod of workspace paths.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use runledger_contracts::agent_tool::ToolCallError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::confine::{confine, relative_to};
use crate::args::{failed, invalid, io_failed, parse, refused};
use crate::config::Limits;

fn dot() -> String {
    ".".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default = "dot")]
    path: String,
    #[serde(default)]
    recursive: bool,
    max_entries: Option<usize>,
}

/// Entries of a directory (recursively with `recursive`), `.git` left out, sorted by path.
pub fn list(root: &Path, arguments: Value, limits: &Limits) -> Result<Value, ToolCallError> {
    let args: ListArgs = parse(arguments)?;
    let dir = confine(root, &args.path)?;
    let cap = args
        .max_entries
        .unwrap_or(limits.max_list_entries)
        .min(limits.max_list_entries);
    let meta = fs::metadata(&dir.absolute).map_err(|e| io_failed(&args.path, e))?;
    if !meta.is_dir() {
        return Err(failed(
            "not_a_directory",
            format!("`{}` is not a directory", args.path),
        ));
    }
    let mut walker = walkdir::WalkDir::new(&dir.absolute)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    if !args.recursive {
        walker = walker.max_depth(1);
    }
    let mut entries = Vec::new();
    let mut truncated = false;
    let it = walker.into_iter().filter_entry(|e| {
        !(e.depth() >= 1 && e.file_name() == ".git" && e.path().parent() == Some(root))
    });
    for entry in it {
        let entry = match entry {
            Ok(e) => e,
            Err(_) => continue,
        };
        if entries.len() >= cap {
            truncated = true;
            break;
        }
        let ft = entry.file_type();
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else {
            "file"
        };
        let size = if ft.is_file() {
            entry.metadata().map(|m| m.len()).unwrap_or(0)
        } else {
            0
        };
        entries.push(json!({
            "path": relative_to(root, entry.path()),
            "kind": kind,
            "size": size,
        }));
    }
    Ok(json!({ "path": dir.relative, "entries": entries, "truncated": truncated }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    #[serde(default)]
    offset: u64,
    max_bytes: Option<u64>,
}

/// A page of a text file: at most `max_read_bytes` from `offset`, cut at a character boundary.
pub fn read(root: &Path, arguments: Value, limits: &Limits) -> Result<Value, ToolCallError> {
    let args: ReadArgs = parse(arguments)?;
    let file = confine(root, &args.path)?;
    let cap = args
        .max_bytes
        .unwrap_or(limits.max_read_bytes)
        .clamp(1, limits.max_read_bytes);
    let mut f = fs::File::open(&file.absolute).map_err(|e| io_failed(&args.path, e))?;
    let meta = f.metadata().map_err(|e| io_failed(&args.path, e))?;
    if meta.is_dir() {
        return Err(failed(
            "is_a_directory",
            format!("`{}` is a directory", args.path),
        ));
    }
    let size = meta.len();
    if args.offset > size {
        return Err(invalid(
            "offset",
            format!("beyond the end of the file ({size} bytes)"),
        ));
    }
    f.seek(SeekFrom::Start(args.offset))
        .map_err(|e| io_failed(&args.path, e))?;
    let mut buf = Vec::new();
    f.take(cap)
        .read_to_end(&mut buf)
        .map_err(|e| io_failed(&args.path, e))?;
    let text = match std::str::from_utf8(&buf) {
        Ok(t) => t.to_owned(),
        // A character cut by the page's end: stop before it.
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            buf.truncate(e.valid_up_to());
            String::from_utf8_lossy(&buf).into_owned()
        }
        Err(_) => {
            return Err(failed(
                "not_text",
                format!(
                    "`{}` is not UTF-8 text (at byte {})",
                    args.path, args.offset
                ),
            ));
        }
    };
    let end = args.offset + buf.len() as u64;
    Ok(json!({
        "path": file.relative,
        "content": text,
        "size": size,
        "offset": args.offset,
        "truncated": end < size,
        "next_offset": if end < size { json!(end) } else { Value::Null },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
    #[serde(default)]
    append: bool,
    #[serde(default = "yes")]
    create_dirs: bool,
}

fn yes() -> bool {
    true
}

/// Writes (or appends) text, creating missing parent directories unless told not to.
pub fn write(root: &Path, arguments: Value, limits: &Limits) -> Result<Value, ToolCallError> {
    let args: WriteArgs = parse(arguments)?;
    let file = confine(root, &args.path)?;
    if file.relative.is_empty() {
        return Err(invalid("path", "names the workspace itself"));
    }
    if args.content.len() as u64 > limits.max_write_bytes {
        return Err(invalid(
            "content",
            format!(
                "{} bytes is more than the limit of {}",
                args.content.len(),
                limits.max_write_bytes
            ),
        ));
    }
    if args.create_dirs
        && let Some(parent) = file.absolute.parent()
    {
        fs::create_dir_all(parent).map_err(|e| io_failed(&args.path, e))?;
        // The directories just created must not have let the path out (a symlinked ancestor).
        confine(root, &args.path)?;
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.append)
        .truncate(!args.append)
        .open(&file.absolute)
        .map_err(|e| io_failed(&args.path, e))?;
    f.write_all(args.content.as_bytes())
        .map_err(|e| io_failed(&args.path, e))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(json!({ "path": file.relative, "bytes_written": args.content.len(), "size": size }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MkdirArgs {
    path: String,
    #[serde(default = "yes")]
    parents: bool,
}

pub fn mkdir(root: &Path, arguments: Value) -> Result<Value, ToolCallError> {
    let args: MkdirArgs = parse(arguments)?;
    let dir = confine(root, &args.path)?;
    let existed = dir.absolute.is_dir();
    let made = if args.parents {
        fs::create_dir_all(&dir.absolute)
    } else {
        fs::create_dir(&dir.absolute)
    };
    made.map_err(|e| io_failed(&args.path, e))?;
    Ok(json!({ "path": dir.relative, "created": !existed }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteArgs {
    path: String,
    #[serde(default)]
    recursive: bool,
}

/// Removes a file, a symlink (not its target), or a directory (non-empty only with `recursive`).
pub fn delete(root: &Path, arguments: Value) -> Result<Value, ToolCallError> {
    let args: DeleteArgs = parse(arguments)?;
    let target = confine(root, &args.path)?;
    if target.relative.is_empty() {
        return Err(refused(
            "path_escape",
            "the workspace itself cannot be deleted",
        ));
    }
    let meta = fs::symlink_metadata(&target.absolute).map_err(|e| io_failed(&args.path, e))?;
    let removed = if meta.is_dir() {
        if args.recursive {
            fs::remove_dir_all(&target.absolute)
        } else {
            fs::remove_dir(&target.absolute)
        }
    } else {
        fs::remove_file(&target.absolute)
    };
    removed.map_err(|e| io_failed(&args.path, e))?;
    Ok(
        json!({ "path": target.relative, "deleted": true, "kind": if meta.is_dir() { "dir" } else { "file" } }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromTo {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

/// Renames a file or directory inside the workspace.
pub fn move_path(root: &Path, arguments: Value) -> Result<Value, ToolCallError> {
    let args: FromTo = parse(arguments)?;
    let from = confine(root, &args.from)?;
    let to = confine(root, &args.to)?;
    if from.relative.is_empty() || to.relative.is_empty() {
        return Err(refused(
            "path_escape",
            "the workspace itself cannot be moved",
        ));
    }
    fs::symlink_metadata(&from.absolute).map_err(|e| io_failed(&args.from, e))?;
    if !args.overwrite && fs::symlink_metadata(&to.absolute).is_ok() {
        return Err(failed(
            "already_exists",
            format!("`{}` exists (set overwrite)", args.to),
        ));
    }
    if let Some(parent) = to.absolute.parent() {
        fs::create_dir_all(parent).map_err(|e| io_failed(&args.to, e))?;
    }
    fs::rename(&from.absolute, &to.absolute).map_err(|e| io_failed(&args.from, e))?;
    Ok(json!({ "from": from.relative, "to": to.relative }))
}

/// Copies a file, or a directory recursively. Symlinks inside a copied directory are not
/// copied (a relative link may point elsewhere from its new place); they are listed.
pub fn copy(root: &Path, arguments: Value, limits: &Limits) -> Result<Value, ToolCallError> {
    let args: FromTo = parse(arguments)?;
    let from = confine(root, &args.from)?;
    let to = confine(root, &args.to)?;
    if to.relative.is_empty() {
        return Err(invalid("to", "names the workspace itself"));
    }
    let meta = fs::metadata(&from.absolute).map_err(|e| io_failed(&args.from, e))?;
    if !args.overwrite && fs::symlink_metadata(&to.absolute).is_ok() {
        return Err(failed(
            "already_exists",
            format!("`{}` exists (set overwrite)", args.to),
        ));
    }
    if meta.is_dir() && to.absolute.starts_with(&from.absolute) {
        return Err(invalid("to", "a directory cannot be copied into itself"));
    }
    if let Some(parent) = to.absolute.parent() {
        fs::create_dir_all(parent).map_err(|e| io_failed(&args.to, e))?;
    }
    if !meta.is_dir() {
        let bytes = fs::copy(&from.absolute, &to.absolute).map_err(|e| io_failed(&args.from, e))?;
        return Ok(
            json!({ "from": from.relative, "to": to.relative, "files": 1, "bytes": bytes, "skipped_symlinks": [] }),
        );
    }
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut skipped = Vec::new();
    for entry in walkdir::WalkDir::new(&from.absolute).follow_links(false) {
        let entry = entry.map_err(|e| {
            crate::args::failed_with("io_error", format!("walking `{}`", args.from), e)
        })?;
        let rel = entry
            .path()
            .strip_prefix(&from.absolute)
            .map_err(|e| crate::args::failed_with("io_error", "walking the copy", e))?;
        let dest = to.absolute.join(rel);
        let ft = entry.file_type();
        if ft.is_symlink() {
            skipped.push(relative_to(root, entry.path()));
        } else if ft.is_dir() {
            fs::create_dir_all(&dest).map_err(|e| io_failed(&args.to, e))?;
        } else {
            bytes += fs::copy(entry.path(), &dest).map_err(|e| io_failed(&args.to, e))?;
            files += 1;
            if files as usize > limits.max_list_entries * 10 {
                return Err(failed(
                    "too_many_files",
                    "the directory is too large to copy",
                ));
            }
        }
    }
    Ok(
        json!({ "from": from.relative, "to": to.relative, "files": files, "bytes": bytes, "skipped_symlinks": skipped }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChmodArgs {
    path: String,
    /// Octal permission bits, e.g. "755" or "0644".
    mode: String,
}

/// Sets permission bits (rwx for user, group, others; no setuid, setgid or sticky bits).
pub fn chmod(root: &Path, arguments: Value) -> Result<Value, ToolCallError> {
    let args: ChmodArgs = parse(arguments)?;
    let target = confine(root, &args.path)?;
    let mode = u32::from_str_radix(args.mode.trim_start_matches("0o"), 8)
        .map_err(|_| invalid("mode", "must be octal digits such as 755 or 0644"))?;
    if mode > 0o777 {
        return Err(invalid("mode", "only the permission bits 0-777 may be set"));
    }
    let meta = fs::symlink_metadata(&target.absolute).map_err(|e| io_failed(&args.path, e))?;
    if meta.file_type().is_symlink() {
        return Err(invalid("path", "is a symlink; change its target instead"));
    }
    fs::set_permissions(&target.absolute, fs::Permissions::from_mode(mode))
        .map_err(|e| io_failed(&args.path, e))?;
    Ok(json!({ "path": target.relative, "mode": format!("{mode:04o}") }))
}
