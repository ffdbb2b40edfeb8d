//! `memory_*`: key/value entries in scopes (`memory-<scope>` streams), the operations of
//! `memory` nodes.

use runledger_contracts::agent_tool::ToolSpec;
use serde_json::{Value, json};

use super::schema::{any, count, id, limit, object, spec, string};
use crate::tools::MAX_LIST_LIMIT;
use crate::tools::memory::MAX_KEY_LEN;

fn scope() -> Value {
    id("The scope (default `default`).")
}

fn key() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN, "description": "The entry's key." })
}

/// The `memory_*` tools.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        spec(
            "memory_get",
            "Read one memory entry: its value and revision.",
            object(json!({ "scope": scope(), "key": key() }), &["key"]),
            false,
        ),
        spec(
            "memory_list",
            "List the entries of a scope in key order, optionally only keys with a prefix.",
            object(
                json!({
                    "scope": scope(),
                    "prefix": string("Only keys that start with this."),
                    "limit": limit(MAX_LIST_LIMIT, "Most entries returned (default 100)."),
                }),
                &[],
            ),
            false,
        ),
        spec(
            "memory_create",
            "Create a memory entry; fails with already_exists when the key is taken.",
            object(
                json!({ "scope": scope(), "key": key(), "value": any("Any JSON, at most 1 MiB.") }),
                &["key", "value"],
            ),
            true,
        ),
        spec(
            "memory_update",
            "Replace an entry's value; with expected_revision, only if the entry is at that revision.",
            object(
                json!({
                    "scope": scope(),
                    "key": key(),
                    "value": any("Any JSON, at most 1 MiB."),
                    "expected_revision": count("Fail with conflict unless the entry is at this revision."),
                }),
                &["key", "value"],
            ),
            true,
        ),
        spec(
            "memory_delete",
            "Delete an entry; with expected_revision, only if the entry is at that revision.",
            object(
                json!({
                    "scope": scope(),
                    "key": key(),
                    "expected_revision": count("Fail with conflict unless the entry is at this revision."),
                }),
                &["key"],
            ),
            true,
        ),
        spec(
            "memory_search",
            "Find the entries of a scope whose key or value contains every whitespace-separated term.",
            object(
                json!({
                    "scope": scope(),
                    "query": string("Terms, all of which must occur (case-insensitive)."),
                    "limit": limit(MAX_LIST_LIMIT, "Most entries returned (default 100)."),
                }),
                &["query"],
            ),
            false,
        ),
    ]
}
