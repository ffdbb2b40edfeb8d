//! The memory tool: key/value entries grouped in scopes, one stream per scope
//! (`memory-<scope>`). Operations: `get`, `list`, `create`, `update`, `delete`, `search`.

use std::collections::BTreeMap;

use runledger_contracts::events::{
    DomainEvent, MemoryEntryCreated, MemoryEntryDeleted, MemoryEntryUpdated,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Decided, StateError, Target, Tool, ToolCause, ToolError, ToolKind, check_id, list_limit,
    parse_args,
};

/// The scope of calls that name none.
pub const DEFAULT_SCOPE: &str = "default";
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Largest value, as canonical JSON.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// One entry of a scope.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEntry {
    pub value: Value,
    /// 1 on creation, +1 per update.
    pub revision: u64,
}

/// A scope's entries, by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryScope {
    pub entries: BTreeMap<String, MemoryEntry>,
}

impl MemoryScope {
    /// The entry as callers see it.
    pub fn entry_json(scope: &str, key: &str, entry: &MemoryEntry) -> Value {
        json!({ "scope": scope, "key": key, "value": entry.value, "revision": entry.revision })
    }
}

fn default_scope() -> String {
    DEFAULT_SCOPE.to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyArgs {
    #[serde(default = "default_scope")]
    pub scope: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Only keys that start with this.
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    #[serde(default = "default_scope")]
    pub scope: String,
    pub key: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    #[serde(default = "default_scope")]
    pub scope: String,
    pub key: String,
    pub value: Value,
    /// Fail with `tool_revision_mismatch` unless the entry is at this revision.
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    #[serde(default = "default_scope")]
    pub scope: String,
    pub key: String,
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Whitespace-separated terms; an entry matches when every term occurs in its key or value.
    pub query: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MemoryOp {
    Get(KeyArgs),
    List(ListArgs),
    Create(CreateArgs),
    Update(UpdateArgs),
    Delete(DeleteArgs),
    Search(SearchArgs),
}

impl MemoryOp {
    fn scope(&self) -> &str {
        match self {
            MemoryOp::Get(a) => &a.scope,
            MemoryOp::List(a) => &a.scope,
            MemoryOp::Create(a) => &a.scope,
            MemoryOp::Update(a) => &a.scope,
            MemoryOp::Delete(a) => &a.scope,
            MemoryOp::Search(a) => &a.scope,
        }
    }
}

/// The memory tool.
pub struct Memory;

impl Tool for Memory {
    const KIND: ToolKind = ToolKind::Memory;
    type Op = MemoryOp;
    type State = MemoryScope;

    fn parse(operation: &str, args: Value) -> Result<MemoryOp, ToolError> {
        let op = match operation {
            "get" => MemoryOp::Get(parse_args(args)?),
            "list" => MemoryOp::List(parse_args(args)?),
            "create" => MemoryOp::Create(parse_args(args)?),
            "update" => MemoryOp::Update(parse_args(args)?),
            "delete" => MemoryOp::Delete(parse_args(args)?),
            "search" => MemoryOp::Search(parse_args(args)?),
            other => {
                return Err(ToolError::InvalidInput {
                    field: "operation".into(),
                    message: format!(
                        "memory has no operation `{other}` (get, list, create, update, delete, search)"
                    ),
                });
            }
        };
        check_id("scope", op.scope())?;
        match &op {
            MemoryOp::Get(KeyArgs { key, .. })
            | MemoryOp::Create(CreateArgs { key, .. })
            | MemoryOp::Update(UpdateArgs { key, .. })
            | MemoryOp::Delete(DeleteArgs { key, .. }) => check_key(key)?,
            MemoryOp::List(a) => {
                list_limit(a.limit)?;
            }
            MemoryOp::Search(a) => {
                list_limit(a.limit)?;
                if terms(&a.query).is_empty() {
                    return Err(ToolError::InvalidInput {
                        field: "args.query".into(),
                        message: "must hold at least one term".into(),
                    });
                }
            }
        }
        if let MemoryOp::Create(CreateArgs { value, .. })
        | MemoryOp::Update(UpdateArgs { value, .. }) = &op
        {
            check_value(value)?;
        }
        Ok(op)
    }

    fn target(op: &MemoryOp) -> Result<Target, ToolError> {
        ToolKind::Memory.stream(op.scope()).map(Target::Stream)
    }

    fn evolve(state: &mut MemoryScope, event: &DomainEvent) -> Result<(), StateError> {
        match event {
            DomainEvent::MemoryEntryCreated(e) => {
                if state.entries.contains_key(&e.key) {
                    return Err(StateError::Exists {
                        event: event.event_type(),
                        what: format!("entry `{}`", e.key),
                    });
                }
                state.entries.insert(
                    e.key.clone(),
                    MemoryEntry {
                        value: e.value.clone(),
                        revision: e.revision,
                    },
                );
            }
            DomainEvent::MemoryEntryUpdated(e) => {
                let entry = state
                    .entries
                    .get_mut(&e.key)
                    .ok_or_else(|| StateError::Missing {
                        event: event.event_type(),
                        what: format!("entry `{}`", e.key),
                    })?;
                entry.value = e.value.clone();
                entry.revision = e.revision;
            }
            DomainEvent::MemoryEntryDeleted(e) => {
                state
                    .entries
                    .remove(&e.key)
                    .ok_or_else(|| StateError::Missing {
                        event: event.event_type(),
                        what: format!("entry `{}`", e.key),
                    })?;
            }
            other => {
                return Err(StateError::Foreign {
                    event: other.event_type(),
                    tool: "memory",
                });
            }
        }
        Ok(())
    }

    fn output_after(state: &MemoryScope, event: &DomainEvent) -> Value {
        match event {
            DomainEvent::MemoryEntryCreated(MemoryEntryCreated { scope, key, .. })
            | DomainEvent::MemoryEntryUpdated(MemoryEntryUpdated { scope, key, .. }) => {
                match state.entries.get(key) {
                    Some(entry) => MemoryScope::entry_json(scope, key, entry),
                    None => Value::Null,
                }
            }
            DomainEvent::MemoryEntryDeleted(e) => {
                json!({ "scope": e.scope, "key": e.key, "revision": e.revision, "deleted": true })
            }
            _ => Value::Null,
        }
    }

    fn decide(
        op: &MemoryOp,
        states: &[&MemoryScope],
        cause: &ToolCause,
    ) -> Result<Decided, ToolError> {
        let empty = MemoryScope::default();
        let state = states.first().copied().unwrap_or(&empty);
        let scope = op.scope();
        let missing =
            |key: &str| ToolError::NotFound(format!("memory scope `{scope}` has no entry `{key}`"));
        match op {
            MemoryOp::Get(a) => {
                let entry = state.entries.get(&a.key).ok_or_else(|| missing(&a.key))?;
                Ok(Decided::Read(MemoryScope::entry_json(scope, &a.key, entry)))
            }
            MemoryOp::List(a) => {
                let limit = list_limit(a.limit)?;
                let prefix = a.prefix.as_deref().unwrap_or("");
                let matching: Vec<(&String, &MemoryEntry)> = state
                    .entries
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .collect();
                let entries: Vec<Value> = matching
                    .iter()
                    .take(limit)
                    .map(|(k, e)| json!({ "key": k, "value": e.value, "revision": e.revision }))
                    .collect();
                Ok(Decided::Read(
                    json!({ "scope": scope, "entries": entries, "total": matching.len() }),
                ))
            }
            MemoryOp::Search(a) => {
                let limit = list_limit(a.limit)?;
                let terms = terms(&a.query);
                let mut hits: Vec<(usize, &String, &MemoryEntry)> = state
                    .entries
                    .iter()
                    .filter_map(|(k, e)| score(&terms, k, &e.value).map(|s| (s, k, e)))
                    .collect();
                hits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
                let total = hits.len();
                let entries: Vec<Value> = hits
                    .into_iter()
                    .take(limit)
                    .map(|(s, k, e)| json!({ "key": k, "value": e.value, "revision": e.revision, "score": s }))
                    .collect();
                Ok(Decided::Read(
                    json!({ "scope": scope, "query": a.query, "entries": entries, "total": total }),
                ))
            }
            MemoryOp::Create(a) => {
                if state.entries.contains_key(&a.key) {
                    return Err(ToolError::AlreadyExists(format!(
                        "memory scope `{scope}` already has an entry `{}`",
                        a.key
                    )));
                }
                Ok(Decided::Write(vec![
                    MemoryEntryCreated {
                        run_id: cause.run_id,
                        node_id: cause.node_id.clone(),
                        node_run_id: cause.node_run_id,
                        idempotency_key: cause.idempotency_key.clone(),
                        scope: scope.to_owned(),
                        key: a.key.clone(),
                        value: a.value.clone(),
                        revision: 1,
                    }
                    .into(),
                ]))
            }
            MemoryOp::Update(a) => {
                let entry = state.entries.get(&a.key).ok_or_else(|| missing(&a.key))?;
                check_revision(scope, &a.key, a.expected_revision, entry)?;
                Ok(Decided::Write(vec![
                    MemoryEntryUpdated {
                        run_id: cause.run_id,
                        node_id: cause.node_id.clone(),
                        node_run_id: cause.node_run_id,
                        idempotency_key: cause.idempotency_key.clone(),
                        scope: scope.to_owned(),
                        key: a.key.clone(),
                        value: a.value.clone(),
                        revision: entry.revision + 1,
                    }
                    .into(),
                ]))
            }
            MemoryOp::Delete(a) => {
                let entry = state.entries.get(&a.key).ok_or_else(|| missing(&a.key))?;
                check_revision(scope, &a.key, a.expected_revision, entry)?;
                Ok(Decided::Write(vec![
                    MemoryEntryDeleted {
                        run_id: cause.run_id,
                        node_id: cause.node_id.clone(),
                        node_run_id: cause.node_run_id,
                        idempotency_key: cause.idempotency_key.clone(),
                        scope: scope.to_owned(),
                        key: a.key.clone(),
                        revision: entry.revision,
                    }
                    .into(),
                ]))
            }
        }
    }
}

fn check_key(key: &str) -> Result<(), ToolError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ToolError::InvalidInput {
            field: "args.key".into(),
            message: format!("must be 1 to {MAX_KEY_LEN} bytes, not {}", key.len()),
        });
    }
    Ok(())
}

/// A value the ledger can store: I-JSON, at most 1 MiB.
fn check_value(value: &Value) -> Result<(), ToolError> {
    let invalid = |message: String| ToolError::InvalidInput {
        field: "args.value".into(),
        message,
    };
    let bytes = runledger_contracts::canonical::to_canonical_vec(value)
        .map_err(|e| invalid(e.to_string()))?;
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(invalid(format!(
            "is {} bytes of JSON, more than {MAX_VALUE_BYTES}",
            bytes.len()
        )));
    }
    Ok(())
}

fn check_revision(
    scope: &str,
    key: &str,
    expected: Option<u64>,
    entry: &MemoryEntry,
) -> Result<(), ToolError> {
    match expected {
        Some(expected) if expected != entry.revision => Err(ToolError::RevisionMismatch {
            what: format!("memory entry `{key}` of scope `{scope}`"),
            expected,
            actual: entry.revision,
        }),
        _ => Ok(()),
    }
}

/// The query's terms, lowercased.
fn terms(query: &str) -> Vec<String> {
    query.split_whitespace().map(str::to_lowercase).collect()
}

/// How often the terms occur in the key and the value's JSON text (case-insensitive), when
/// every term occurs at least once.
fn score(terms: &[String], key: &str, value: &Value) -> Option<usize> {
    let text = match value {
        Value::String(s) => format!("{key}\n{s}"),
        other => format!("{key}\n{other}"),
    }
    .to_lowercase();
    let mut total = 0;
    for term in terms {
        let n = text.matches(term.as_str()).count();
        if n == 0 {
            return None;
        }
        total += n;
    }
    Some(total)
}

/// The entries of one scope, folded from its stream (for the CLI).
pub async fn load_scope<S: runledger_ledger::EventStore>(
    store: &S,
    scope: &str,
) -> Result<(u64, MemoryScope), ToolError> {
    check_id("scope", scope)?;
    super::cache::load::<Memory, S>(store, &ToolKind::Memory.stream(scope)?).await
}

/// The scopes that have a stream, by name (for the CLI).
pub async fn scopes<S: runledger_ledger::EventStore>(
    store: &S,
) -> Result<Vec<(String, u64)>, ToolError> {
    let heads = store
        .list_streams(ToolKind::Memory.stream_prefix())
        .await
        .map_err(|e| ToolError::Unavailable(e.to_string()))?;
    Ok(heads
        .into_iter()
        .filter_map(|h| {
            h.stream_id
                .as_str()
                .strip_prefix(ToolKind::Memory.stream_prefix())
                .map(|s| (s.to_owned(), h.version))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runledger_contracts::ids::{NodeRunId, RunId};

    fn cause(op: &str) -> ToolCause {
        let node_run_id = NodeRunId::new_v7();
        ToolCause {
            run_id: RunId::new_v7(),
            node_id: "m".into(),
            node_run_id,
            idempotency_key: format!("{node_run_id}:memory:{op}"),
        }
    }

    fn apply(state: &mut MemoryScope, op: &str, args: Value) -> Result<Value, ToolError> {
        let parsed = Memory::parse(op, args)?;
        match Memory::decide(&parsed, &[state], &cause(op))? {
            Decided::Read(v) => Ok(v),
            Decided::Write(events) => {
                let mut out = Value::Null;
                for e in &events {
                    Memory::evolve(state, e).unwrap();
                    out = Memory::output_after(state, e);
                }
                Ok(out)
            }
        }
    }

    #[test]
    fn every_operation_against_the_folded_state() {
        let mut s = MemoryScope::default();
        let created = apply(
            &mut s,
            "create",
            json!({ "key": "topic", "value": { "name": "owls" } }),
        )
        .unwrap();
        assert_eq!(
            created,
            json!({ "scope": "default", "key": "topic", "value": { "name": "owls" }, "revision": 1 })
        );
        apply(
            &mut s,
            "create",
            json!({ "key": "note", "value": "Owls hunt at night; owls are quiet" }),
        )
        .unwrap();
        let err = apply(&mut s, "create", json!({ "key": "topic", "value": 1 })).unwrap_err();
        assert_eq!(err.code(), "tool_already_exists");
        let updated = apply(
            &mut s,
            "update",
            json!({ "key": "topic", "value": "bats", "expected_revision": 1 }),
        )
        .unwrap();
        assert_eq!(updated["revision"], 2);
        let err = apply(
            &mut s,
            "update",
            json!({ "key": "topic", "value": "x", "expected_revision": 1 }),
        )
        .unwrap_err();
        assert_eq!(err.code(), "tool_revision_mismatch");
        assert_eq!(
            apply(&mut s, "get", json!({ "key": "topic" })).unwrap()["value"],
            "bats"
        );
        let listed = apply(&mut s, "list", json!({ "prefix": "no" })).unwrap();
        assert_eq!(listed["total"], 1);
        assert_eq!(listed["entries"][0]["key"], "note");
        let found = apply(&mut s, "search", json!({ "query": "OWLS night" })).unwrap();
        assert_eq!(found["total"], 1);
        assert_eq!(
            found["entries"][0]["score"], 3,
            "two `owls` and one `night`"
        );
        assert_eq!(
            apply(&mut s, "search", json!({ "query": "owls bats" })).unwrap()["total"],
            0
        );
        let deleted = apply(&mut s, "delete", json!({ "key": "topic" })).unwrap();
        assert_eq!(deleted["deleted"], true);
        assert_eq!(
            apply(&mut s, "get", json!({ "key": "topic" }))
                .unwrap_err()
                .code(),
            "tool_not_found"
        );
    }

    #[test]
    fn arguments_are_checked_against_the_operation_schema() {
        let err = Memory::parse("create", json!({ "key": "k", "value": 1, "colour": "red" }))
            .unwrap_err();
        assert_eq!(err.code(), "tool_invalid_input");
        assert!(err.to_string().contains("colour"), "{err}");
        let err = Memory::parse("create", json!({ "key": "k" })).unwrap_err();
        assert!(err.to_string().contains("missing field `value`"), "{err}");
        let err = Memory::parse("get", json!({ "key": 5 })).unwrap_err();
        assert!(err.to_string().starts_with("args.key:"), "{err}");
        let err = Memory::parse("get", json!({ "key": "k", "scope": "no spaces" })).unwrap_err();
        assert!(err.to_string().starts_with("args.scope:"), "{err}");
        let err = Memory::parse("list", json!({ "limit": 0 })).unwrap_err();
        assert!(err.to_string().starts_with("args.limit:"), "{err}");
        let err = Memory::parse("search", json!({ "query": "  " })).unwrap_err();
        assert!(err.to_string().starts_with("args.query:"), "{err}");
        let err = Memory::parse(
            "create",
            json!({ "key": "k", "value": 9_007_199_254_740_993u64 }),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("args.value:"), "{err}");
        assert_eq!(
            Memory::parse("upsert", json!({})).unwrap_err().code(),
            "tool_invalid_input"
        );
    }
}
