//! workspace_search: lines of text files matching a literal string or a regular expression.

use std::fs;
use std::path::Path;

use runledger_contracts::agent_tool::ToolCallError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::confine::{confine, relative_to};
use crate::args::{invalid, parse};
use crate::config::Limits;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    pattern: String,
    #[serde(default = "dot")]
    path: String,
    #[serde(default)]
    regex: bool,
    #[serde(default)]
    case_insensitive: bool,
    /// Only files whose path (relative to the workspace) matches this glob, e.g. `**/*.rs`.
    glob: Option<String>,
    max_matches: Option<usize>,
}

fn dot() -> String {
    ".".to_owned()
}

/// Longest line text returned per match.
const MAX_LINE_CHARS: usize = 400;

pub fn search(root: &Path, arguments: Value, limits: &Limits) -> Result<Value, ToolCallError> {
    let args: SearchArgs = parse(arguments)?;
    let base = confine(root, &args.path)?;
    let source = if args.regex {
        args.pattern.clone()
    } else {
        regex::escape(&args.pattern)
    };
    let matcher = regex::RegexBuilder::new(&source)
        .case_insensitive(args.case_insensitive)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| invalid("pattern", e))?;
    let glob = match &args.glob {
        Some(g) => Some(
            globset::Glob::new(g)
                .map_err(|e| invalid("glob", e))?
                .compile_matcher(),
        ),
        None => None,
    };
    let cap = args
        .max_matches
        .unwrap_or(limits.max_search_matches)
        .clamp(1, limits.max_search_matches);
    let mut matches = Vec::new();
    let mut files_scanned = 0u64;
    let mut skipped_large = 0u64;
    let mut truncated = false;
    let walker = walkdir::WalkDir::new(&base.absolute)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.file_type().is_dir() && e.file_name() == ".git"));
    'files: for entry in walker.flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = relative_to(root, entry.path());
        if glob.as_ref().is_some_and(|g| !g.is_match(&rel)) {
            continue;
        }
        if entry.metadata().map(|m| m.len()).unwrap_or(0) > limits.max_read_bytes {
            skipped_large += 1;
            continue;
        }
        let Ok(bytes) = fs::read(entry.path()) else {
            continue;
        };
        if bytes.iter().take(8192).any(|b| *b == 0) {
            continue;
        }
        files_scanned += 1;
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            if matcher.is_match(line) {
                if matches.len() >= cap {
                    truncated = true;
                    break 'files;
                }
                let shown: String = line.chars().take(MAX_LINE_CHARS).collect();
                matches.push(json!({ "path": rel, "line": n + 1, "text": shown }));
            }
        }
    }
    Ok(json!({
        "matches": matches,
        "truncated": truncated,
        "files_scanned": files_scanned,
        "files_skipped_too_large": skipped_large,
    }))
}
