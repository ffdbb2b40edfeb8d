//! The `workspace_*` tools as the model sees them.

use runledger_contracts::agent_tool::ToolSpec;
use serde_json::json;

use crate::args::{boolean, integer, object, spec, string};
use crate::config::Limits;

const PATH: &str = "Path relative to the workspace root; no `..`, not absolute, not into .git.";

pub fn specs(limits: &Limits) -> Vec<ToolSpec> {
    vec![
        spec(
            "workspace_list",
            "List the entries of a workspace directory (kind, size), sorted by path; `.git` is left out.",
            object(
                json!({
                    "path": { "type": "string", "description": "Directory (default: the workspace root)." },
                    "recursive": boolean("Walk subdirectories too (default false)."),
                    "max_entries": integer("Most entries returned.", 1, limits.max_list_entries as u64),
                }),
                &[],
            ),
            false,
        ),
        spec(
            "workspace_read",
            "Read a UTF-8 text file, a page at a time: `truncated` and `next_offset` say whether more follows.",
            object(
                json!({
                    "path": string(PATH),
                    "offset": integer("Byte offset to start at (default 0).", 0, u64::MAX >> 12),
                    "max_bytes": integer("Most bytes returned.", 1, limits.max_read_bytes),
                }),
                &["path"],
            ),
            false,
        ),
        spec(
            "workspace_write",
            "Write text to a file (replacing it, or appended), creating missing parent directories.",
            object(
                json!({
                    "path": string(PATH),
                    "content": { "type": "string", "maxLength": limits.max_write_bytes, "description": "The text to write." },
                    "append": boolean("Append instead of replacing (default false)."),
                    "create_dirs": boolean("Create missing parent directories (default true)."),
                }),
                &["path", "content"],
            ),
            true,
        ),
        spec(
            "workspace_mkdir",
            "Create a directory (with its parents by default).",
            object(
                json!({ "path": string(PATH), "parents": boolean("Create missing parents (default true).") }),
                &["path"],
            ),
            true,
        ),
        spec(
            "workspace_delete",
            "Delete a file, a symlink (not its target) or a directory (non-empty only with `recursive`).",
            object(
                json!({ "path": string(PATH), "recursive": boolean("Delete a non-empty directory (default false).") }),
                &["path"],
            ),
            true,
        ),
        spec(
            "workspace_move",
            "Move or rename a file or directory inside the workspace.",
            object(
                json!({
                    "from": string(PATH),
                    "to": string(PATH),
                    "overwrite": boolean("Replace an existing destination (default false)."),
                }),
                &["from", "to"],
            ),
            true,
        ),
        spec(
            "workspace_copy",
            "Copy a file, or a directory recursively (symlinks inside are skipped and listed).",
            object(
                json!({
                    "from": string(PATH),
                    "to": string(PATH),
                    "overwrite": boolean("Replace an existing destination (default false)."),
                }),
                &["from", "to"],
            ),
            true,
        ),
        spec(
            "workspace_search",
            "Find lines matching a string (or a regular expression) in the workspace's text files.",
            object(
                json!({
                    "pattern": string("Text to find (a Rust regular expression with `regex`)."),
                    "path": { "type": "string", "description": "Directory or file to search (default: the root)." },
                    "regex": boolean("Treat `pattern` as a regular expression (default false)."),
                    "case_insensitive": boolean("Ignore case (default false)."),
                    "glob": { "type": "string", "description": "Only paths matching this glob, e.g. `src/**/*.rs`." },
                    "max_matches": integer("Most matches returned.", 1, limits.max_search_matches as u64),
                }),
                &["pattern"],
            ),
            false,
        ),
        spec(
            "workspace_apply_patch",
            "Apply a unified diff (as `diff -u` or `git diff` write it; several files, creations and deletions). \
             All or nothing: when a hunk does not apply, no file changes.",
            object(
                json!({
                    "patch": string("The unified diff."),
                    "strip": integer("Leading path components to drop (default: 1 for a/ b/ prefixes, else 0).", 0, 16),
                }),
                &["patch"],
            ),
            true,
        ),
        spec(
            "workspace_chmod",
            "Set a file's or directory's permission bits (octal, at most 777).",
            object(
                json!({
                    "path": string(PATH),
                    "mode": { "type": "string", "pattern": "^(0o|0)?[0-7]{3}$", "description": "Octal bits, e.g. \"755\" or \"0644\"." },
                }),
                &["path", "mode"],
            ),
            true,
        ),
    ]
}
