//! Save-time validation: everything about a flowchart that can be known before it runs.
//!
//! Why collect every problem instead of returning the first: a flowchart is edited by a person
//! (or an agent) in a loop of save -> fix; one round trip per mistake is slow and hides how
//! problems relate. Checks therefore never stop early, and a problem in one place (an unknown
//! node, a duplicate id) is reported once rather than cascading into follow-up errors.
//! Errors come out in a deterministic order (document order within each rule), so the output of
//! `runledger validate --json` is stable.

use super::error::{ValidationCode as C, ValidationError, join_index, join_key};
use super::graph::{CompiledCondition, Flowchart, NoMatchRoute, NodeFacts};
use super::model::{
    DEFAULT_TIMEOUT_S, FanIn, FlowchartDoc, MAX_TOP_K, NoMatchPolicy, Node, NodeType, Retry,
    SCRIPTED_MODEL,
};
use crate::condition::{self, Segment};
use std::collections::{HashMap, VecDeque};

/// The roots a condition path may start with: the input context of a node.
pub const CONDITION_ROOTS: &[&str] = &[
    "inputs",
    "upstream",
    "latest_upstream",
    "context",
    "run",
    "node",
];

/// The longest `timeout_s` or `limits.max_runtime_s` accepted: one year (366 days) in
/// seconds. Far beyond any real run, and small enough that every deadline computed from it
/// stays representable (a deadline that overflowed would fire at once).
pub const MAX_DURATION_S: u64 = 366 * 24 * 60 * 60;

/// Whether `id` matches `[A-Za-z_][A-Za-z0-9_-]*` (ids appear in condition paths).
pub fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Validates a document, returning the [`Flowchart`] or every problem found.
pub fn validate(doc: FlowchartDoc) -> Result<Flowchart, Vec<ValidationError>> {
    let mut v = Validator { errors: Vec::new() };
    v.document(&doc);
    v.storable(&doc);
    let node_index = v.index_ids(doc.nodes.iter().map(|n| n.id.as_str()), "nodes", "node");
    let connector_index = v.index_ids(
        doc.connectors.iter().map(|c| c.id.as_str()),
        "connectors",
        "connector",
    );
    for (i, node) in doc.nodes.iter().enumerate() {
        v.node_keys(i, node);
    }
    for (code, path, message) in super::agent_keys::check_doc(&doc) {
        v.push(code, path, message);
    }
    let starts = v.start_count(&doc);

    // Resolve connectors into per-node adjacency. Connectors naming unknown nodes are reported
    // and left out, so they do not cause follow-up errors.
    let n = doc.nodes.len();
    let mut facts: Vec<Adjacency> = (0..n).map(|_| Adjacency::default()).collect();
    let mut ends: Vec<Option<(usize, usize)>> = Vec::with_capacity(doc.connectors.len());
    for (j, c) in doc.connectors.iter().enumerate() {
        let at = join_index("connectors", j);
        let end = |field: &str, id: &str, v: &mut Validator| {
            let found = node_index.get(id).copied();
            if found.is_none() {
                v.push(
                    C::UnknownNode,
                    join_key(&at, field),
                    format!(
                        "connector `{}` {} `{id}`, which is not a node",
                        c.id,
                        if field == "from" {
                            "goes from"
                        } else {
                            "goes to"
                        }
                    ),
                );
            }
            found
        };
        let (from, to) = (end("from", &c.from, &mut v), end("to", &c.to, &mut v));
        let (Some(from), Some(to)) = (from, to) else {
            ends.push(None);
            continue;
        };
        if doc.nodes[from].node_type == NodeType::End {
            v.push(
                C::EndHasOutgoing,
                join_key(&at, "from"),
                format!(
                    "connector `{}` goes from `{}`, an end node; end nodes have no outgoing connectors",
                    c.id, c.from
                ),
            );
        }
        if c.is_solid() && doc.nodes[to].node_type == NodeType::Start {
            v.push(
                C::StartHasIncoming,
                join_key(&at, "to"),
                format!(
                    "solid connector `{}` goes to `{}`, the start node; nothing may trigger the start node",
                    c.id, c.to
                ),
            );
        }
        if c.is_solid() {
            facts[from].solid_out.push(j);
            facts[to].solid_in.push(j);
        } else {
            facts[from].dotted_out.push(j);
            facts[to].dotted_in.push(j);
        }
        ends.push(Some((from, to)));
    }
    let successors: Vec<Vec<usize>> = facts
        .iter()
        .map(|f| {
            f.solid_out
                .iter()
                .filter_map(|&c| ends[c].map(|e| e.1))
                .collect()
        })
        .collect();

    v.reachability(&doc, &starts, &successors, &facts, &node_index);

    let mut compiled: Vec<(Vec<CompiledCondition>, NoMatchRoute)> = Vec::with_capacity(n);
    for (i, node) in doc.nodes.iter().enumerate() {
        compiled.push(if node.node_type == NodeType::Decision {
            v.decision(i, node, &doc, &connector_index, &ends, &facts[i])
        } else {
            (Vec::new(), NoMatchRoute::Fail)
        });
        v.fan_in(i, node, facts[i].solid_in.len());
    }

    let cycle = find_cycle(&successors);
    if let Some(cycle) = &cycle
        && doc.max_node_executions().is_none()
    {
        let names: Vec<&str> = cycle.iter().map(|&i| doc.nodes[i].id.as_str()).collect();
        v.push(
            C::CycleWithoutLimit,
            "limits.max_node_executions",
            format!(
                "solid connectors form a cycle ({}); set limits.max_node_executions to bound how often nodes may run",
                names.join(" -> ")
            ),
        );
    }

    if !v.errors.is_empty() {
        return Err(v.errors);
    }
    let (Some(&start), Some(ends)) = (starts.first(), ends.into_iter().collect::<Option<Vec<_>>>())
    else {
        // Unreachable: both are checked above, and any problem there was reported.
        return Err(vec![ValidationError::new(
            C::StartCount,
            "nodes",
            "no start node",
        )]);
    };
    let defaults = doc.defaults.clone().unwrap_or_default();
    let node_facts = facts
        .into_iter()
        .zip(compiled)
        .zip(&doc.nodes)
        .map(|((adj, (conditions, no_match)), node)| NodeFacts {
            solid_in: adj.solid_in,
            solid_out: adj.solid_out,
            dotted_in: adj.dotted_in,
            dotted_out: adj.dotted_out,
            timeout_s: node
                .timeout_s
                .or(defaults.timeout_s)
                .unwrap_or(DEFAULT_TIMEOUT_S),
            retry: node.retry.or(defaults.retry).unwrap_or_default(),
            conditions,
            no_match,
        })
        .collect::<Vec<NodeFacts>>();
    let loop_back = super::graph::loop_back_connectors(start, &node_facts, &ends);
    Ok(Flowchart {
        doc,
        node_index,
        connector_index,
        start,
        facts: node_facts,
        ends,
        solid_cycle: cycle.is_some(),
        loop_back,
    })
}

#[derive(Default)]
struct Adjacency {
    solid_in: Vec<usize>,
    solid_out: Vec<usize>,
    dotted_in: Vec<usize>,
    dotted_out: Vec<usize>,
}

struct Validator {
    errors: Vec<ValidationError>,
}

/// The largest flowchart document (canonical JSON) a run can record: `RunStarted` holds it
/// beside the run's other fields in one event of at most
/// [`MAX_PAYLOAD_BYTES`](crate::storable::MAX_PAYLOAD_BYTES).
pub const MAX_DEFINITION_BYTES: usize = crate::storable::MAX_PAYLOAD_BYTES - (64 << 10);

/// The user-facing path (`nodes[1].prompt`) of the first unstorable value, from the JSON path
/// the check reports (`$.nodes[1].prompt`).
/// Why a connector a decision names is not one of its outgoing connectors.
#[derive(Debug, thiserror::Error)]
enum NotOutgoing {
    #[error("there is no connector `{connector}`")]
    Unknown { connector: String },
    #[error("connector `{connector}` goes from `{from}`, not from decision `{decision}`")]
    FromElsewhere {
        connector: String,
        from: String,
        decision: String,
    },
    #[error("connector `{connector}` does not connect known nodes")]
    Dangling { connector: String },
}

fn unstorable_path(e: &crate::storable::UnstorableError) -> String {
    use crate::canonical::CanonicalError as E;
    use crate::storable::UnstorableError as U;
    let path = match e {
        U::Nul { path } => path.as_str(),
        U::NotIJson(
            E::IntegerOutOfRange { path, .. }
            | E::NonFiniteNumber { path }
            | E::TooDeep { path, .. },
        ) => path.as_str(),
        _ => "$",
    };
    let path = path.strip_prefix('$').unwrap_or(path);
    path.strip_prefix('.').unwrap_or(path).to_owned()
}

fn node_path(i: usize) -> String {
    join_index("nodes", i)
}

impl Validator {
    fn push(&mut self, code: C, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError::new(code, path, message));
    }

    fn document(&mut self, doc: &FlowchartDoc) {
        if doc.name.trim().is_empty() {
            self.push(C::InvalidValue, "name", "`name` must not be empty");
        }
        if let Some(limits) = &doc.limits {
            for (key, value) in [
                ("max_node_executions", limits.max_node_executions),
                ("max_runtime_s", limits.max_runtime_s),
                ("max_parallel_nodes", limits.max_parallel_nodes),
            ] {
                if key == "max_runtime_s" {
                    self.duration("limits.max_runtime_s", "", value);
                } else if value == Some(0) {
                    self.push(
                        C::InvalidValue,
                        join_key("limits", key),
                        format!("`{key}` must be a positive integer, found 0"),
                    );
                }
            }
        }
        if let Some(defaults) = &doc.defaults {
            self.duration("defaults.timeout_s", "", defaults.timeout_s);
            if let Some(retry) = &defaults.retry {
                self.retry("defaults.retry", retry, "defaults");
            }
        }
    }

    /// A number of seconds: 1 to [`MAX_DURATION_S`].
    fn duration(&mut self, path: &str, owner: &str, value: Option<u64>) {
        let key = path.rsplit('.').next().unwrap_or(path);
        match value {
            Some(0) => self.push(
                C::InvalidValue,
                path,
                format!("{owner}`{key}` must be a positive integer, found 0"),
            ),
            Some(s) if s > MAX_DURATION_S => self.push(
                C::InvalidValue,
                path,
                format!(
                    "{owner}`{key}` must be at most {MAX_DURATION_S} seconds (366 days), found {s}"
                ),
            ),
            _ => {}
        }
    }

    /// The document as runs record it (`RunStarted.definition`, `FlowchartVersionCreated`)
    /// must be storable in the ledger: no U+0000 anywhere (a prompt, a scripted output, a
    /// name), no integer beyond I-JSON, within the size one event may hold. Checked here so
    /// that `validate` accepts exactly what `run` accepts.
    fn storable(&mut self, doc: &FlowchartDoc) {
        let value = match serde_json::to_value(doc) {
            Ok(value) => value,
            Err(e) => {
                return self.push(
                    C::InvalidValue,
                    "",
                    format!("the flowchart cannot be written as JSON: {e}"),
                );
            }
        };
        match crate::storable::storable_bytes(&value) {
            Ok(bytes) if bytes.len() > MAX_DEFINITION_BYTES => self.push(
                C::InvalidValue,
                "",
                format!(
                    "the flowchart is {} bytes of canonical JSON, more than the {MAX_DEFINITION_BYTES} a run can record",
                    bytes.len()
                ),
            ),
            Ok(_) => {}
            Err(e) => {
                let path = unstorable_path(&e);
                self.push(C::InvalidValue, path, format!("the ledger cannot store this flowchart: {e}"));
            }
        }
    }

    fn retry(&mut self, at: &str, retry: &Retry, owner: &str) {
        if retry.max_attempts == 0 {
            self.push(
                C::InvalidValue,
                join_key(at, "max_attempts"),
                format!("{owner}: `max_attempts` must be at least 1, found 0"),
            );
        }
        let m = retry.backoff_multiplier;
        if !m.is_finite() || m < 1.0 {
            self.push(
                C::InvalidValue,
                join_key(at, "backoff_multiplier"),
                format!("{owner}: `backoff_multiplier` must be a number >= 1.0, found {m}"),
            );
        }
    }

    /// Checks id syntax and uniqueness; returns id -> index of its first occurrence.
    fn index_ids<'a>(
        &mut self,
        ids: impl Iterator<Item = &'a str>,
        list: &str,
        what: &str,
    ) -> HashMap<String, usize> {
        let mut index = HashMap::new();
        for (i, id) in ids.enumerate() {
            let at = join_key(&join_index(list, i), "id");
            if !is_valid_id(id) {
                self.push(
                    C::InvalidId,
                    at.clone(),
                    format!(
                        "{what} id `{id}` is not valid: ids start with a letter or `_` and contain only letters, digits, `_` and `-`"
                    ),
                );
            }
            if let Some(&first) = index.get(id) {
                self.push(
                    C::DuplicateId,
                    at,
                    format!(
                        "{what} id `{id}` is already used by {}",
                        join_index(list, first)
                    ),
                );
            } else {
                index.insert(id.to_owned(), i);
            }
        }
        index
    }

    /// Keys allowed / required per type, and value ranges of the keys that are allowed.
    fn node_keys(&mut self, i: usize, node: &Node) {
        let at = node_path(i);
        let (id, ty) = (&node.id, node.node_type);
        let allowed = ty.allowed_keys();
        let present = node.present_keys();
        for key in &present {
            if !allowed.contains(key) {
                let hint = if allowed.is_empty() {
                    "it takes only `id`, `type` and `description`".to_owned()
                } else {
                    format!(
                        "it takes {}",
                        allowed
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                self.push(
                    C::KeyNotAllowed,
                    join_key(&at, key),
                    format!("key `{key}` is not allowed on node `{id}` of type {ty}; {hint}"),
                );
            }
        }
        for key in ty.required_keys() {
            if !present.contains(key) {
                let hint = if *key == "model" && node.scripted.is_some() {
                    " (its `scripted` responses need `model: scripted`)"
                } else {
                    ""
                };
                self.push(
                    C::MissingKey,
                    join_key(&at, key),
                    format!("node `{id}` of type {ty} requires `{key}`{hint}"),
                );
            }
        }
        let allows = |key: &str| allowed.contains(&key);

        if ty == NodeType::Task {
            match (node.model.as_deref(), &node.scripted) {
                (Some(SCRIPTED_MODEL), None) => self.push(
                    C::ScriptedMissing,
                    join_key(&at, "scripted"),
                    format!("node `{id}` uses `model: scripted` but has no `scripted` responses"),
                ),
                (Some(SCRIPTED_MODEL), Some(list)) if list.is_empty() => self.push(
                    C::ScriptedMissing,
                    join_key(&at, "scripted"),
                    format!("node `{id}` uses `model: scripted` but its `scripted` list is empty"),
                ),
                (Some(model), Some(_)) if model != SCRIPTED_MODEL => self.push(
                    C::KeyNotAllowed,
                    join_key(&at, "scripted"),
                    format!(
                        "`scripted` responses are only used with `model: scripted`; node `{id}` uses model `{model}`"
                    ),
                ),
                _ => {}
            }
            if let Some(list) = &node.scripted {
                for (k, response) in list.iter().enumerate() {
                    if response.kinds() != 1 {
                        self.push(
                            C::InvalidValue,
                            join_index(&join_key(&at, "scripted"), k),
                            format!(
                                "scripted response {k} of node `{id}` must have exactly one of `output`, `error` and `tool_calls`"
                            ),
                        );
                    }
                }
            }
            for (code, path, message) in super::agent_keys::check_node(&at, node) {
                self.push(code, path, message);
            }
        }
        if allows("timeout_s") {
            self.duration(
                &join_key(&at, "timeout_s"),
                &format!("node `{id}`: "),
                node.timeout_s,
            );
        }
        if allows("retry")
            && let Some(retry) = &node.retry
        {
            self.retry(&join_key(&at, "retry"), retry, &format!("node `{id}`"));
        }
        if allows("model")
            && let Some(model) = &node.model
            && model.trim().is_empty()
        {
            self.push(
                C::InvalidValue,
                join_key(&at, "model"),
                format!("node `{id}`: `model` must not be empty"),
            );
        }
        if allows("flowchart")
            && let Some(name) = &node.flowchart
            && name.trim().is_empty()
        {
            self.push(
                C::InvalidValue,
                join_key(&at, "flowchart"),
                format!("node `{id}`: `flowchart` must name a flowchart"),
            );
        }
        if allows("version") && node.version == Some(0) {
            self.push(
                C::InvalidValue,
                join_key(&at, "version"),
                format!("node `{id}`: `version` must be a positive integer, found 0"),
            );
        }
        if allows("rag")
            && let Some(rag) = &node.rag
        {
            let rag_at = join_key(&at, "rag");
            if rag.collection.trim().is_empty() {
                self.push(
                    C::InvalidValue,
                    join_key(&rag_at, "collection"),
                    format!("node `{id}`: `collection` must not be empty"),
                );
            }
            if rag.top_k == 0 || rag.top_k > MAX_TOP_K {
                self.push(
                    C::InvalidValue,
                    join_key(&rag_at, "top_k"),
                    format!(
                        "node `{id}`: `top_k` must be 1 to {MAX_TOP_K}, found {}",
                        rag.top_k
                    ),
                );
            }
            for (code, path, message) in super::rag_keys::check(id, &rag_at, rag) {
                self.push(code, path, message);
            }
        }
    }

    fn start_count(&mut self, doc: &FlowchartDoc) -> Vec<usize> {
        let starts: Vec<usize> = doc
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.node_type == NodeType::Start)
            .map(|(i, _)| i)
            .collect();
        match starts.as_slice() {
            [] => self.push(
                C::StartCount,
                "nodes",
                "a flowchart needs exactly one start node; it has none",
            ),
            [_] => {}
            [first, rest @ ..] => {
                for &i in rest {
                    self.push(
                        C::StartCount,
                        node_path(i),
                        format!(
                            "node `{}` is a second start node (`{}` is the first); a flowchart has exactly one",
                            doc.nodes[i].id, doc.nodes[*first].id
                        ),
                    );
                }
            }
        }
        starts
    }

    fn reachability(
        &mut self,
        doc: &FlowchartDoc,
        starts: &[usize],
        successors: &[Vec<usize>],
        adjacency: &[Adjacency],
        node_index: &HashMap<String, usize>,
    ) {
        if starts.is_empty() {
            return; // start_count already says why; every node would be "unreachable"
        }
        let mut seen = vec![false; doc.nodes.len()];
        let mut queue: VecDeque<usize> = starts.iter().copied().collect();
        for &s in starts {
            seen[s] = true;
        }
        while let Some(v) = queue.pop_front() {
            for &w in &successors[v] {
                if !seen[w] {
                    seen[w] = true;
                    queue.push_back(w);
                }
            }
        }
        for (i, node) in doc.nodes.iter().enumerate() {
            // A node hidden behind a duplicate id is already reported as duplicate_id.
            let shadowed = node_index.get(&node.id) != Some(&i);
            if !seen[i] && !shadowed {
                let why = if adjacency[i].dotted_in.is_empty() {
                    ""
                } else {
                    " (dotted connectors pass context only; they never trigger a node)"
                };
                self.push(
                    C::Unreachable,
                    node_path(i),
                    format!("node `{}` cannot be reached from the start node over solid connectors{why}", node.id),
                );
            }
        }
    }

    fn decision(
        &mut self,
        i: usize,
        node: &Node,
        doc: &FlowchartDoc,
        connector_index: &HashMap<String, usize>,
        ends: &[Option<(usize, usize)>],
        adjacency: &Adjacency,
    ) -> (Vec<CompiledCondition>, NoMatchRoute) {
        let at = node_path(i);
        let id = &node.id;
        let outgoing = |connector: &str| -> Result<usize, NotOutgoing> {
            match connector_index.get(connector) {
                None => Err(NotOutgoing::Unknown {
                    connector: connector.to_owned(),
                }),
                Some(&c) => match ends.get(c).copied().flatten() {
                    Some((from, _)) if from == i => Ok(c),
                    Some((from, _)) => Err(NotOutgoing::FromElsewhere {
                        connector: connector.to_owned(),
                        from: doc.nodes[from].id.clone(),
                        decision: id.clone(),
                    }),
                    None => Err(NotOutgoing::Dangling {
                        connector: connector.to_owned(),
                    }),
                },
            }
        };
        // From the node's own adjacency, never a scan of every connector: a scan per decision
        // made a 50,000-decision chain quadratic.
        if adjacency.solid_out.is_empty() {
            self.push(
                C::DecisionWithoutOutgoing,
                at.clone(),
                format!("decision `{id}` has no solid outgoing connector to route to"),
            );
        }

        let parents = |incoming: &[usize]| -> Vec<&str> {
            let mut ids: Vec<&str> = incoming
                .iter()
                .filter_map(|&c| ends[c].map(|(from, _)| doc.nodes[from].id.as_str()))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let (solid_parents, dotted_parents) =
            (parents(&adjacency.solid_in), parents(&adjacency.dotted_in));

        let mut compiled = Vec::new();
        for (k, cond) in node.conditions.iter().flatten().enumerate() {
            let cond_at = join_index(&join_key(&at, "conditions"), k);
            let connector = match outgoing(&cond.connector) {
                Ok(c) if doc.connectors[c].is_solid() => Some(c),
                Ok(_) => {
                    self.push(
                        C::ConditionOnDottedConnector,
                        join_key(&cond_at, "connector"),
                        format!(
                            "condition {k} of decision `{id}` names connector `{}`, which is dotted; dotted connectors pass context only and never fire",
                            cond.connector
                        ),
                    );
                    None
                }
                Err(why) => {
                    self.push(
                        C::ConditionUnknownConnector,
                        join_key(&cond_at, "connector"),
                        format!(
                            "condition {k} of decision `{id}` names connector `{}`, which is not one of its outgoing connectors: {why}",
                            cond.connector
                        ),
                    );
                    None
                }
            };
            let when_at = join_key(&cond_at, "when");
            let parsed = match condition::parse(&cond.when) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.push(
                        C::ConditionSyntax,
                        when_at,
                        format!("condition {k} of decision `{id}` does not parse: {e}"),
                    );
                    continue;
                }
            };
            let mut bad_roots: Vec<&str> = Vec::new();
            let mut bad_parents: Vec<String> = Vec::new();
            for path in parsed.paths() {
                let root = path.root();
                if !CONDITION_ROOTS.contains(&root) {
                    if !bad_roots.contains(&root) {
                        bad_roots.push(root);
                    }
                    continue;
                }
                // `upstream.<id>` / `context.<id>` only ever hold solid / dotted parents.
                let parents = match root {
                    "upstream" => &solid_parents,
                    "context" => &dotted_parents,
                    _ => continue,
                };
                let named = match path.segments().get(1) {
                    Some(Segment::Key(key)) => key.clone(),
                    Some(Segment::Index(index)) => index.to_string(),
                    None => continue,
                };
                if !parents.contains(&named.as_str()) {
                    let shown = format!("{root}.{named}");
                    if !bad_parents.contains(&shown) {
                        let kind = if root == "upstream" {
                            "solid"
                        } else {
                            "dotted"
                        };
                        let list = if parents.is_empty() {
                            "none".to_owned()
                        } else {
                            parents
                                .iter()
                                .map(|p| format!("`{p}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        self.push(
                            C::ConditionUnknownParent,
                            when_at.clone(),
                            format!(
                                "condition {k} of decision `{id}` reads `{shown}`, but `{named}` is not a {kind} parent of `{id}` (its {kind} parents: {list}), so the path can never resolve"
                            ),
                        );
                        bad_parents.push(shown);
                    }
                }
            }
            for root in &bad_roots {
                self.push(
                    C::ConditionUnknownRoot,
                    when_at.clone(),
                    format!(
                        "condition {k} of decision `{id}` reads `{root}`, which is not part of the input context; paths start with one of {}",
                        CONDITION_ROOTS.join(", ")
                    ),
                );
            }
            if let Some(connector) = connector
                && bad_roots.is_empty()
                && bad_parents.is_empty()
            {
                compiled.push(CompiledCondition {
                    connector,
                    when: parsed,
                });
            }
        }

        let mut route = NoMatchRoute::Fail;
        if let Some(no_match) = &node.no_match {
            let nm_at = join_key(&join_key(&at, "no_match"), "connector");
            match (no_match.policy, &no_match.connector) {
                (NoMatchPolicy::Fail, None) => {}
                (NoMatchPolicy::Fail, Some(_)) => self.push(
                    C::KeyNotAllowed,
                    nm_at,
                    format!("decision `{id}`: `connector` is only allowed with `policy: fallback`"),
                ),
                (NoMatchPolicy::Fallback, None) => self.push(
                    C::FallbackMissing,
                    nm_at,
                    format!("decision `{id}`: `policy: fallback` needs the `connector` to route to"),
                ),
                (NoMatchPolicy::Fallback, Some(name)) => match outgoing(name) {
                    Ok(c) if doc.connectors[c].is_solid() => {
                        route = NoMatchRoute::Fallback { connector: c };
                    }
                    Ok(_) => self.push(
                        C::FallbackInvalid,
                        nm_at,
                        format!(
                            "decision `{id}` falls back to connector `{name}`, which is dotted; the fallback must be a solid outgoing connector"
                        ),
                    ),
                    Err(why) => self.push(
                        C::FallbackInvalid,
                        nm_at,
                        format!(
                            "decision `{id}` falls back to connector `{name}`, which is not one of its solid outgoing connectors: {why}"
                        ),
                    ),
                },
            }
        }
        (compiled, route)
    }

    fn fan_in(&mut self, i: usize, node: &Node, solid_parents: usize) {
        let Some(FanIn::Custom(k)) = node.fan_in else {
            return;
        };
        if !node.node_type.allowed_keys().contains(&"fan_in") {
            return; // already key_not_allowed
        }
        let k = usize::try_from(k).unwrap_or(usize::MAX);
        if k == 0 || k > solid_parents {
            self.push(
                C::FanInOutOfRange,
                join_key(&node_path(i), "fan_in"),
                format!(
                    "node `{}` waits for {k} solid parents but has {solid_parents} solid incoming connector(s); custom fan-in must be between 1 and {solid_parents}",
                    node.id
                ),
            );
        }
    }
}

/// The first cycle over `successors` (iterative DFS, so deep graphs cannot overflow the stack),
/// as the node indices along it with the first repeated at the end.
fn find_cycle(successors: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; successors.len()];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..successors.len() {
        if mark[root] != Mark::New {
            continue;
        }
        mark[root] = Mark::Open;
        stack.push((root, 0));
        while let Some(top) = stack.len().checked_sub(1) {
            let (v, pos) = stack[top];
            match successors[v].get(pos) {
                Some(&w) => {
                    stack[top].1 += 1;
                    match mark[w] {
                        Mark::New => {
                            mark[w] = Mark::Open;
                            stack.push((w, 0));
                        }
                        Mark::Open => {
                            let from = stack.iter().position(|&(x, _)| x == w).unwrap_or(0);
                            let mut cycle: Vec<usize> =
                                stack[from..].iter().map(|&(x, _)| x).collect();
                            cycle.push(w);
                            return Some(cycle);
                        }
                        Mark::Done => {}
                    }
                }
                None => {
                    mark[v] = Mark::Done;
                    stack.pop();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowchart::{SourceFormat, load};

    /// Loads YAML that must parse, returning the validation errors as (code, path).
    fn problems(yaml: &str) -> Vec<(C, String)> {
        match load(yaml, SourceFormat::Yaml) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| (e.code, e.path)).collect(),
        }
    }

    fn one(yaml: &str, code: C, path: &str) {
        assert_eq!(
            problems(yaml),
            vec![(code, path.to_owned())],
            "for:\n{yaml}"
        );
    }

    /// start -> t -> end, with the given extra node YAML lines spliced into `t`.
    fn linear(task_extra: &str) -> String {
        format!(
            "name: x\nnodes:\n  - {{ id: s, type: start }}\n  - {{ id: t, type: task, model: scripted, scripted: [{{ output: 1 }}]{task_extra} }}\n  - {{ id: e, type: end }}\nconnectors:\n  - {{ id: c1, from: s, to: t }}\n  - {{ id: c2, from: t, to: e }}\n"
        )
    }

    /// A decision `d` after start, routing to `a` or `b`, then to end.
    fn decision(d_extra: &str, extra_connectors: &str) -> String {
        format!(
            r#"name: x
nodes:
  - {{ id: s, type: start }}
  - {{ id: d, type: decision{d_extra} }}
  - {{ id: a, type: end }}
  - {{ id: b, type: end }}
connectors:
  - {{ id: c1, from: s, to: d }}
  - {{ id: ca, from: d, to: a }}
  - {{ id: cb, from: d, to: b }}
{extra_connectors}"#
        )
    }

    #[test]
    fn valid_linear_flowchart_passes() {
        assert_eq!(problems(&linear("")), vec![]);
    }

    #[test]
    fn start_count_none() {
        one(
            "name: x\nnodes:\n  - { id: e, type: end }\n",
            C::StartCount,
            "nodes",
        );
    }

    #[test]
    fn start_count_two() {
        let yaml = "name: x\nnodes:\n  - { id: s, type: start }\n  - { id: s2, type: start }\n  - { id: e, type: end }\nconnectors:\n  - { id: c1, from: s, to: e }\n  - { id: c2, from: s2, to: e }\n";
        one(yaml, C::StartCount, "nodes[1]");
    }

    #[test]
    fn duplicate_node_id() {
        // The second `t` cannot be referenced, but is reported once, as a duplicate only.
        let yaml = linear("").replace(
            "  - { id: e, type: end }\n",
            "  - { id: e, type: end }\n  - { id: t, type: end }\n",
        );
        one(&yaml, C::DuplicateId, "nodes[3].id");
    }

    #[test]
    fn duplicate_connector_id() {
        let yaml = linear("").replace("id: c2,", "id: c1,");
        one(&yaml, C::DuplicateId, "connectors[1].id");
    }

    #[test]
    fn invalid_ids() {
        let yaml = linear("")
            .replace("id: t,", "id: 9t,")
            .replace("to: t", "to: 9t")
            .replace("from: t", "from: 9t");
        one(&yaml, C::InvalidId, "nodes[1].id");
        let yaml = linear("").replace("id: c2,", "id: \"c 2\",");
        one(&yaml, C::InvalidId, "connectors[1].id");
        assert!(
            is_valid_id("_a-b_9") && !is_valid_id("") && !is_valid_id("-a") && !is_valid_id("a.b")
        );
    }

    #[test]
    fn unknown_node_in_connector() {
        let yaml = linear("")
            + "  - { id: c3, from: ghost, to: e }\n  - { id: c4, from: t, to: nowhere }\n";
        assert_eq!(
            problems(&yaml),
            vec![
                (C::UnknownNode, "connectors[2].from".into()),
                (C::UnknownNode, "connectors[3].to".into())
            ]
        );
    }

    #[test]
    fn end_has_outgoing_names_the_connector() {
        let yaml = linear("") + "  - { id: c4, from: e, to: t, mode: dotted }\n";
        let errors = load(&yaml, SourceFormat::Yaml).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (errors[0].code, errors[0].path.as_str()),
            (C::EndHasOutgoing, "connectors[2].from")
        );
        assert_eq!(
            errors[0].message,
            "connector `c4` goes from `e`, an end node; end nodes have no outgoing connectors"
        );
    }

    #[test]
    fn start_has_incoming_solid_only() {
        let limited =
            linear("").replace("name: x\n", "name: x\nlimits: { max_node_executions: 5 }\n");
        let solid = limited.clone() + "  - { id: c3, from: t, to: s }\n";
        one(&solid, C::StartHasIncoming, "connectors[2].to");
        let dotted = limited + "  - { id: c3, from: t, to: s, mode: dotted }\n";
        assert_eq!(problems(&dotted), vec![]);
    }

    #[test]
    fn unreachable_over_dotted_only() {
        let yaml = linear("").replace(
            "  - { id: e, type: end }\n",
            "  - { id: e, type: end }\n  - { id: island, type: task, model: m }\n",
        ) + "  - { id: c3, from: t, to: island, mode: dotted }\n";
        let errors = load(&yaml, SourceFormat::Yaml).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].code, errors[0].path.as_str()),
            (C::Unreachable, "nodes[3]")
        );
        assert!(errors[0].message.contains("`island`") && errors[0].message.contains("dotted"));
    }

    #[test]
    fn decision_without_outgoing() {
        let yaml = "name: x\nnodes:\n  - { id: s, type: start }\n  - { id: d, type: decision }\n  - { id: e, type: end }\nconnectors:\n  - { id: c1, from: s, to: d }\n  - { id: c2, from: s, to: e }\n  - { id: c3, from: d, to: e, mode: dotted }\n";
        one(yaml, C::DecisionWithoutOutgoing, "nodes[1]");
    }

    #[test]
    fn valid_decision_passes_and_compiles() {
        let yaml = decision(
            ", conditions: [{ connector: ca, when: \"latest_upstream.output.ok == true\" }], no_match: { policy: fallback, connector: cb }",
            "",
        );
        let fc = load(&yaml, SourceFormat::Yaml).unwrap();
        let d = fc.node_index("d").unwrap();
        assert_eq!(fc.conditions(d).len(), 1);
        assert_eq!(
            fc.conditions(d)[0].connector,
            fc.connector_index("ca").unwrap()
        );
        assert_eq!(
            fc.no_match(d),
            NoMatchRoute::Fallback {
                connector: fc.connector_index("cb").unwrap()
            }
        );
        assert_eq!(fc.no_match(fc.start()), NoMatchRoute::Fail);
    }

    #[test]
    fn condition_unknown_connector() {
        let yaml = decision(
            ", conditions: [{ connector: c1, when: \"inputs.x == 1\" }, { connector: zz, when: \"inputs.x == 2\" }]",
            "",
        );
        assert_eq!(
            problems(&yaml),
            vec![
                (
                    C::ConditionUnknownConnector,
                    "nodes[1].conditions[0].connector".into()
                ),
                (
                    C::ConditionUnknownConnector,
                    "nodes[1].conditions[1].connector".into()
                )
            ]
        );
    }

    #[test]
    fn condition_on_dotted_connector() {
        let yaml = decision(
            ", conditions: [{ connector: cd, when: \"inputs.x == 1\" }]",
            "  - { id: cd, from: d, to: a, mode: dotted }\n",
        );
        one(
            &yaml,
            C::ConditionOnDottedConnector,
            "nodes[1].conditions[0].connector",
        );
    }

    #[test]
    fn conditions_and_no_match_on_a_task_are_not_allowed() {
        let yaml = linear(
            ", conditions: [{ connector: c2, when: \"inputs.x == 1\" }], no_match: { policy: fail }",
        );
        assert_eq!(
            problems(&yaml),
            vec![
                (C::KeyNotAllowed, "nodes[1].conditions".into()),
                (C::KeyNotAllowed, "nodes[1].no_match".into())
            ]
        );
    }

    #[test]
    fn fallback_missing() {
        one(
            &decision(", no_match: { policy: fallback }", ""),
            C::FallbackMissing,
            "nodes[1].no_match.connector",
        );
    }

    #[test]
    fn fallback_invalid() {
        one(
            &decision(", no_match: { policy: fallback, connector: c1 }", ""),
            C::FallbackInvalid,
            "nodes[1].no_match.connector",
        );
        one(
            &decision(
                ", no_match: { policy: fallback, connector: cd }",
                "  - { id: cd, from: d, to: a, mode: dotted }\n",
            ),
            C::FallbackInvalid,
            "nodes[1].no_match.connector",
        );
        one(
            &decision(", no_match: { policy: fail, connector: ca }", ""),
            C::KeyNotAllowed,
            "nodes[1].no_match.connector",
        );
    }

    #[test]
    fn fan_in_out_of_range() {
        // `e` has one solid parent (and one dotted one, which does not count).
        let yaml = linear("").replace(
            "{ id: e, type: end }",
            "{ id: e, type: end, fan_in: { custom: 2 } }",
        ) + "  - { id: c3, from: s, to: e, mode: dotted }\n";
        one(&yaml, C::FanInOutOfRange, "nodes[2].fan_in");
        let zero = linear("").replace(
            "{ id: e, type: end }",
            "{ id: e, type: end, fan_in: { custom: 0 } }",
        );
        one(&zero, C::FanInOutOfRange, "nodes[2].fan_in");
        let ok = linear("").replace(
            "{ id: e, type: end }",
            "{ id: e, type: end, fan_in: { custom: 1 } }",
        );
        assert_eq!(problems(&ok), vec![]);
    }

    #[test]
    fn condition_syntax_reports_column() {
        let yaml = decision(
            ", conditions: [{ connector: ca, when: \"(inputs.x == 1\" }]",
            "",
        );
        let errors = load(&yaml, SourceFormat::Yaml).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].code, errors[0].path.as_str()),
            (C::ConditionSyntax, "nodes[1].conditions[0].when")
        );
        assert!(
            errors[0].message.contains("column"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn condition_unknown_root() {
        let yaml = decision(
            ", conditions: [{ connector: ca, when: \"outputs.score >= 8 and inputs.x == 1\" }]",
            "",
        );
        let errors = load(&yaml, SourceFormat::Yaml).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].code, errors[0].path.as_str()),
            (C::ConditionUnknownRoot, "nodes[1].conditions[0].when")
        );
        assert!(errors[0].message.contains("`outputs`"));
    }

    #[test]
    fn condition_unknown_parent() {
        let yaml = decision(
            ", conditions: [{ connector: ca, when: \"upstream.s.status == \\\"ok\\\" and upstream.a.output.x == 1 and exists(context.s)\" }, { connector: cb, when: \"exists(upstream) and context.n.output == 1\" }]",
            "  - { id: dn, from: s, to: d, mode: dotted }\n",
        );
        let errors = load(&yaml, SourceFormat::Yaml).unwrap_err();
        let got: Vec<_> = errors.iter().map(|e| (e.code, e.path.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (C::ConditionUnknownParent, "nodes[1].conditions[0].when"),
                (C::ConditionUnknownParent, "nodes[1].conditions[1].when"),
            ],
            "{errors:#?}"
        );
        assert!(
            errors[0].message.contains("`upstream.a`")
                && errors[0].message.contains("solid parents: `s`")
        );
        assert!(
            errors[1].message.contains("`context.n`")
                && errors[1].message.contains("dotted parents: `s`")
        );
    }

    #[test]
    fn cycle_without_limit() {
        let looped = linear("") + "  - { id: c3, from: t, to: t }\n";
        let errors = load(&looped, SourceFormat::Yaml).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].code, errors[0].path.as_str()),
            (C::CycleWithoutLimit, "limits.max_node_executions")
        );
        assert!(
            errors[0].message.contains("t -> t"),
            "{}",
            errors[0].message
        );
        let limited = looped.replace("name: x\n", "name: x\nlimits: { max_node_executions: 9 }\n");
        let fc = load(&limited, SourceFormat::Yaml).unwrap();
        assert!(fc.has_solid_cycle());
        // A dotted back edge is not a cycle.
        let dotted = linear("") + "  - { id: c3, from: t, to: t, mode: dotted }\n";
        assert!(!load(&dotted, SourceFormat::Yaml).unwrap().has_solid_cycle());
    }

    #[test]
    fn find_cycle_reports_the_loop() {
        let succ = vec![vec![1], vec![2], vec![3, 1], vec![]];
        assert_eq!(find_cycle(&succ), Some(vec![1, 2, 1]));
        assert_eq!(find_cycle(&[vec![1], vec![2], vec![]]), None);
    }

    #[test]
    fn task_requires_model() {
        let yaml = linear("").replace("model: scripted, ", "");
        let errors = load(&yaml, SourceFormat::Yaml).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].code, errors[0].path.as_str()),
            (C::MissingKey, "nodes[1].model")
        );
        assert!(errors[0].message.contains("model: scripted"));
    }

    #[test]
    fn agent_keys_are_checked_with_their_paths() {
        // A valid agent node: names, globs, MCP names, servers, every agent key.
        let ok = linear(
            ", tools: [workspace_read, \"git_*\", mcp__docs__search], mcp_servers: [docs], max_turns: 5, agent: { system: s, role: r, skills: [rust] }, additional_prompt: more, git_policy: { push: true, branches: [\"feature/*\"] }",
        );
        assert_eq!(problems(&ok), vec![]);
        one(
            &linear(", tools: [workspace_read, workspace_reed]"),
            C::UnknownTool,
            "nodes[1].tools[1]",
        );
        one(
            &linear(", tools: [\"svn_*\"]"),
            C::UnknownTool,
            "nodes[1].tools[0]",
        );
        one(
            &linear(", tools: [mcp__Docs__x]"),
            C::InvalidValue,
            "nodes[1].tools[0]",
        );
        one(
            &linear(", mcp_servers: [\"a__b\"]"),
            C::InvalidValue,
            "nodes[1].mcp_servers[0]",
        );
        one(
            &linear(", max_turns: 0"),
            C::InvalidValue,
            "nodes[1].max_turns",
        );
        one(
            &linear(", max_turns: 201"),
            C::InvalidValue,
            "nodes[1].max_turns",
        );
        one(
            &linear(", agent: { skills: [\" \"] }"),
            C::InvalidValue,
            "nodes[1].agent.skills[0]",
        );
        one(
            &linear(", git_policy: { branches: [\"[\"] }"),
            C::InvalidValue,
            "nodes[1].git_policy.branches[0]",
        );
        // git_policy.forge: a URL without credentials, owner/name, a variable's name.
        let forge = |f: &str| {
            linear("").replace(
                "name: x\n",
                &format!("name: x\ngit_policy: {{ pr_create: true, forge: {f} }}\n"),
            )
        };
        let good = "{ api_base: \"https://git.example.org/api/v1\", repo: acme/app, token_env: GITEA_TOKEN }";
        assert_eq!(problems(&forge(good)), vec![]);
        for (bad, path) in [
            (
                "{ api_base: \"https://x:ghp_1@api.github.com\", repo: a/b, token_env: T }",
                "git_policy.forge.api_base",
            ),
            (
                "{ api_base: \"https://api.github.com?token=1\", repo: a/b, token_env: T }",
                "git_policy.forge.api_base",
            ),
            (
                "{ api_base: \"https://api.github.com\", repo: acme, token_env: T }",
                "git_policy.forge.repo",
            ),
            (
                "{ api_base: \"https://api.github.com\", repo: a/b, token_env: ghp_16C7e42F292c6912E7710c838347Ae178B4a }",
                "git_policy.forge.token_env",
            ),
        ] {
            one(&forge(bad), C::InvalidValue, path);
        }
        let misspelt = forge("{ api_base: \"https://api.github.com\", repo: a/b, token: T }");
        assert!(
            problems(&misspelt)
                .iter()
                .any(|(code, path)| *code == C::UnknownKey && path == "git_policy.forge.token"),
            "{:?}",
            problems(&misspelt)
        );
        let workspace = linear("").replace("name: x\n", "name: x\nworkspace: { repo: \" \" }\n");
        one(&workspace, C::InvalidValue, "workspace.repo");
        // A workspace is made for the whole run: only the run's inputs can fill it.
        let templated =
            |ws: &str| linear("").replace("name: x\n", &format!("name: x\nworkspace: {ws}\n"));
        assert!(
            problems(&templated(
                "{ repo: \"{{ inputs.repo }}\", ref: \"{{ inputs.ref }}\" }"
            ))
            .is_empty()
        );
        one(
            &templated("{ repo: \"{{ upstream.a.output }}\" }"),
            C::InvalidValue,
            "workspace.repo",
        );
        one(
            &templated("{ repo: /r, ref: \"{{ inputs.ref\" }"),
            C::InvalidValue,
            "workspace.ref",
        );
        let typo = linear(", agent: { sytem: s }");
        assert_eq!(
            problems(&typo),
            vec![(C::UnknownKey, "nodes[1].agent.sytem".to_owned())]
        );
        // Agent keys belong to task nodes.
        let on_decision = linear("").replace(
            "{ id: e, type: end }",
            "{ id: e, type: end, tools: [git_status] }",
        );
        one(&on_decision, C::KeyNotAllowed, "nodes[2].tools");
        // A scripted turn of tool calls is one kind of response.
        one(
            &linear("").replace(
                "scripted: [{ output: 1 }]",
                "scripted: [{ output: 1, tool_calls: [{ tool: git_status }] }]",
            ),
            C::InvalidValue,
            "nodes[1].scripted[0]",
        );
    }

    #[test]
    fn scripted_missing_and_not_allowed() {
        let missing = linear("").replace(", scripted: [{ output: 1 }]", "");
        one(&missing, C::ScriptedMissing, "nodes[1].scripted");
        let empty = linear("").replace("[{ output: 1 }]", "[]");
        one(&empty, C::ScriptedMissing, "nodes[1].scripted");
        let other_model = linear("").replace("model: scripted", "model: gpt-x");
        one(&other_model, C::KeyNotAllowed, "nodes[1].scripted");
    }

    #[test]
    fn config_keys_required_per_type() {
        for (ty, key) in [
            ("memory", "memory"),
            ("plan", "plan"),
            ("milestone", "milestone"),
            ("rag", "rag"),
            ("flowchart", "flowchart"),
        ] {
            let yaml = linear("").replace(
                "{ id: t, type: task, model: scripted, scripted: [{ output: 1 }] }",
                &format!("{{ id: t, type: {ty} }}"),
            );
            one(&yaml, C::MissingKey, &format!("nodes[1].{key}"));
        }
    }

    #[test]
    fn other_node_types_with_config_pass() {
        for node in [
            "{ id: t, type: memory, memory: { operation: search, args: { q: x } } }",
            "{ id: t, type: plan, plan: { operation: reorder_stages }, timeout_s: 5 }",
            "{ id: t, type: milestone, milestone: { operation: attach_evidence, allow_fallback: true } }",
            "{ id: t, type: rag, model: embed, rag: { collection: docs, query: \"{{ inputs.q }}\" } }",
            "{ id: t, type: flowchart, flowchart: child, version: 3 }",
        ] {
            let yaml = linear("").replace(
                "{ id: t, type: task, model: scripted, scripted: [{ output: 1 }] }",
                node,
            );
            assert_eq!(problems(&yaml), vec![], "{node}");
        }
    }

    #[test]
    fn keys_not_allowed_per_type() {
        let yaml = "name: x\nnodes:\n  - { id: s, type: start, fan_in: any, timeout_s: 3 }\n  - { id: e, type: end, model: m }\n  - { id: f, type: flowchart, flowchart: c, memory: { operation: get } }\nconnectors:\n  - { id: c1, from: s, to: f }\n  - { id: c2, from: f, to: e }\n";
        assert_eq!(
            problems(yaml),
            vec![
                (C::KeyNotAllowed, "nodes[0].fan_in".into()),
                (C::KeyNotAllowed, "nodes[0].timeout_s".into()),
                (C::KeyNotAllowed, "nodes[1].model".into()),
                (C::KeyNotAllowed, "nodes[2].memory".into())
            ]
        );
    }

    #[test]
    fn numeric_ranges() {
        let yaml = r#"name: " "
limits: { max_node_executions: 0, max_runtime_s: 0, max_parallel_nodes: 0 }
defaults: { timeout_s: 0, retry: { max_attempts: 0, backoff_multiplier: 0.5 } }
nodes:
  - { id: s, type: start }
  - id: t
    type: task
    model: scripted
    timeout_s: 0
    retry: { backoff_multiplier: 0.99 }
    scripted: [{ delay_ms: 5 }, { output: 1, error: { code: x, message: y } }]
  - { id: r, type: rag, model: "", rag: { collection: "", query: q, top_k: 0 } }
  - { id: f, type: flowchart, flowchart: "", version: 0 }
  - { id: e, type: end }
connectors:
  - { id: c1, from: s, to: t }
  - { id: c2, from: t, to: r }
  - { id: c3, from: r, to: f }
  - { id: c4, from: f, to: e }
"#;
        let p = problems(yaml);
        let expected: Vec<(C, String)> = [
            "name",
            "limits.max_node_executions",
            "limits.max_runtime_s",
            "limits.max_parallel_nodes",
            "defaults.timeout_s",
            "defaults.retry.max_attempts",
            "defaults.retry.backoff_multiplier",
            "nodes[1].scripted[0]",
            "nodes[1].scripted[1]",
            "nodes[1].timeout_s",
            "nodes[1].retry.backoff_multiplier",
            "nodes[2].model",
            "nodes[2].rag.collection",
            "nodes[2].rag.top_k",
            "nodes[3].flowchart",
            "nodes[3].version",
        ]
        .iter()
        .map(|p| (C::InvalidValue, (*p).to_owned()))
        .collect();
        assert_eq!(p, expected);
    }

    #[test]
    fn durations_beyond_a_year_are_refused_with_their_path() {
        let max = MAX_DURATION_S;
        assert_eq!(problems(&linear(&format!(", timeout_s: {max}"))), vec![]);
        one(
            &linear(&format!(", timeout_s: {}", max + 1)),
            C::InvalidValue,
            "nodes[1].timeout_s",
        );
        let message = load(&linear(", timeout_s: 9007199254740991"), SourceFormat::Yaml)
            .unwrap_err()[0]
            .message
            .clone();
        assert!(message.contains("at most 31622400 seconds"), "{message}");
    }

    #[test]
    fn what_a_run_cannot_record_is_refused_at_save_time() {
        let yaml = |extra: &str| {
            format!(
                "name: x\nlimits: {{ max_runtime_s: 9007199254740991 }}\ndefaults: {{ timeout_s: 31622401 }}\nnodes:\n  - {{ id: s, type: start }}\n  - {{ id: t, type: task, model: scripted, timeout_s: 9007199254740991, scripted: [{{ output: 1 }}]{extra} }}\n  - {{ id: e, type: end }}\nconnectors:\n  - {{ id: c1, from: s, to: t }}\n  - {{ id: c2, from: t, to: e }}\n"
            )
        };
        let found = problems(&yaml(""));
        assert_eq!(
            found,
            vec![
                (C::InvalidValue, "limits.max_runtime_s".to_owned()),
                (C::InvalidValue, "defaults.timeout_s".to_owned()),
                (C::InvalidValue, "nodes[1].timeout_s".to_owned()),
            ]
        );
        // U+0000 anywhere, and integers beyond I-JSON, as `run` would refuse them.
        let ok = linear("");
        for (text, path) in [
            (
                ok.replace("output: 1", "output: { text: \"a\\0b\" }"),
                "nodes[1].scripted[0].output.text",
            ),
            (
                ok.replace("model: scripted,", "model: scripted, prompt: \"hi\\0\","),
                "nodes[1].prompt",
            ),
            (ok.replace("name: x", "name: \"x\\0\""), "name"),
            (
                ok.replace("output: 1", "output: 9007199254740993"),
                "nodes[1].scripted[0].output",
            ),
            (
                ok.replace(
                    "output: 1 }]",
                    "output: 1 }], retry: { max_attempts: 2, backoff_ms: 9007199254740993 }",
                ),
                "nodes[1].retry.backoff_ms",
            ),
        ] {
            let found = problems(&text);
            assert_eq!(
                found,
                vec![(C::InvalidValue, path.to_owned())],
                "for:\n{text}"
            );
        }
        let message = load(
            &ok.replace("output: 1", "output: \"\\0\""),
            SourceFormat::Yaml,
        )
        .unwrap_err()[0]
            .message
            .clone();
        assert!(message.contains("U+0000"), "{message}");
    }

    #[test]
    fn output_schema_must_be_an_object() {
        let yaml = linear(", output_schema: [1, 2]");
        one(&yaml, C::InvalidValue, "nodes[1].output_schema");
    }

    #[test]
    fn several_problems_are_all_reported() {
        let yaml = r#"name: broken
nodes:
  - { id: s, type: start }
  - { id: s, type: task, model: scripted }
  - { id: d, type: decision, conditions: [{ connector: nope, when: "bogus.x == 1" }] }
  - { id: e, type: end, fan_in: { custom: 5 } }
connectors:
  - { id: c1, from: s, to: d }
  - { id: c2, from: d, to: e }
  - { id: c3, from: e, to: d }
  - { id: c4, from: d, to: ghost }
"#;
        let p = problems(yaml);
        let expected: Vec<(C, String)> = vec![
            (C::DuplicateId, "nodes[1].id".into()),
            (C::ScriptedMissing, "nodes[1].scripted".into()),
            (C::EndHasOutgoing, "connectors[2].from".into()),
            (C::UnknownNode, "connectors[3].to".into()),
            (
                C::ConditionUnknownConnector,
                "nodes[2].conditions[0].connector".into(),
            ),
            (
                C::ConditionUnknownRoot,
                "nodes[2].conditions[0].when".into(),
            ),
            (C::FanInOutOfRange, "nodes[3].fan_in".into()),
            (C::CycleWithoutLimit, "limits.max_node_executions".into()),
        ];
        assert_eq!(p, expected);
    }

    #[test]
    fn unknown_keys_and_graph_problems_come_together() {
        let yaml = linear(", colour: red") + "  - { id: c3, from: t, to: ghost }\n";
        assert_eq!(
            problems(&yaml),
            vec![
                (C::UnknownKey, "nodes[1].colour".into()),
                (C::UnknownNode, "connectors[2].to".into())
            ]
        );
    }
}

#[cfg(test)]
mod scale_tests {
    use crate::flowchart::{SourceFormat, load};

    /// start -> d0 -> d1 -> ... -> d{n-1} -> end: each decision routes on its parent's output
    /// and falls back to the next one, as a long generated chain does.
    pub(crate) fn decision_chain(n: usize) -> String {
        let mut yaml = String::with_capacity(n * 200);
        yaml.push_str("{\"name\": \"chain\", \"nodes\": [{\"id\": \"s\", \"type\": \"start\"}");
        for i in 0..n {
            let parent = if i == 0 {
                "s".to_owned()
            } else {
                format!("d{}", i - 1)
            };
            yaml.push_str(&format!(
                ", {{\"id\": \"d{i}\", \"type\": \"decision\", \"conditions\": [{{\"connector\": \"c{}\", \"when\": \"upstream.{parent}.output.ok == true\"}}], \"no_match\": {{\"policy\": \"fallback\", \"connector\": \"c{}\"}}}}",
                i + 1,
                i + 1
            ));
        }
        yaml.push_str(", {\"id\": \"e\", \"type\": \"end\"}], \"connectors\": [");
        for i in 0..=n {
            let from = if i == 0 {
                "s".to_owned()
            } else {
                format!("d{}", i - 1)
            };
            let to = if i == n {
                "e".to_owned()
            } else {
                format!("d{i}")
            };
            if i > 0 {
                yaml.push_str(", ");
            }
            yaml.push_str(&format!(
                "{{\"id\": \"c{i}\", \"from\": \"{from}\", \"to\": \"{to}\"}}"
            ));
        }
        yaml.push_str("]}");
        yaml
    }

    #[test]
    fn a_50000_decision_chain_validates() {
        // Every graph rule passes; what remains is that a run could not record a document this
        // large (11 MB) in `RunStarted`, so `validate` says so, as `run` would.
        let errors = load(&decision_chain(50_000), SourceFormat::Json)
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 1, "{:?}", &errors[..errors.len().min(3)]);
        assert_eq!(
            (errors[0].code, errors[0].path.as_str()),
            (crate::flowchart::ValidationCode::InvalidValue, "")
        );
        assert!(
            errors[0].message.contains("11422375 bytes"),
            "{}",
            errors[0].message
        );

        // The longest decision chain a run can record validates and compiles.
        let n = 15_000;
        let flowchart = load(&decision_chain(n), SourceFormat::Json)
            .unwrap_or_else(|e| panic!("{:?}", &e[..e.len().min(3)]));
        assert_eq!(flowchart.doc().nodes.len(), n + 2);
        assert_eq!(
            flowchart
                .node_at(flowchart.start())
                .map(|node| node.id.as_str()),
            Some("s")
        );
        let last = flowchart.node_index(&format!("d{}", n - 1)).unwrap();
        assert_eq!(
            flowchart.node_at(last).map(|node| node.id.as_str()),
            Some(format!("d{}", n - 1).as_str())
        );
    }
}
