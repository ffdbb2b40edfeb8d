//! The validated flowchart: the document plus the lookups the run engine needs, precomputed
//! once so that each scheduling step is O(1) per node however large the flowchart is.
//!
//! A [`Flowchart`] can only be obtained from [`super::validate`] / [`super::load`], so holding
//! one proves the invariants: ids are unique, connectors name existing nodes, there is exactly
//! one start node, conditions parsed, fallbacks name solid outgoing connectors, and so on.
//!
//! Nodes and connectors are addressed by their position in `doc.nodes` / `doc.connectors`.
//! Index-based accessors never panic: an out-of-range index yields an empty slice or `None`.

use super::model::{Connector, FanIn, FlowchartDoc, Node, NodeType, Retry};
use crate::condition::Condition;
use serde::{Serialize, Serializer};
use std::collections::HashMap;

/// A decision condition with its connector resolved to an index.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledCondition {
    /// Index of the (solid, outgoing) connector that fires when `when` holds.
    pub connector: usize,
    pub when: Condition,
}

/// What a decision does when nothing matches (validated form of [`super::NoMatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoMatchRoute {
    /// The decision node fails (also the behaviour when `no_match` is absent).
    #[default]
    Fail,
    /// Fire this connector (an index; always a solid outgoing connector of the decision).
    Fallback { connector: usize },
}

/// Per-node precomputed facts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NodeFacts {
    pub solid_in: Vec<usize>,
    pub solid_out: Vec<usize>,
    pub dotted_in: Vec<usize>,
    pub dotted_out: Vec<usize>,
    pub timeout_s: u64,
    pub retry: Retry,
    pub conditions: Vec<CompiledCondition>,
    pub no_match: NoMatchRoute,
}

/// A validated flowchart definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Flowchart {
    pub(super) doc: FlowchartDoc,
    pub(super) node_index: HashMap<String, usize>,
    pub(super) connector_index: HashMap<String, usize>,
    pub(super) start: usize,
    pub(super) facts: Vec<NodeFacts>,
    /// (from, to) node indices of each connector.
    pub(super) ends: Vec<(usize, usize)>,
    pub(super) solid_cycle: bool,
    /// Per connector: a solid connector that closes a loop (a back edge of a depth-first walk
    /// from the start node).
    pub(super) loop_back: Vec<bool>,
}

impl Flowchart {
    /// The document this flowchart was validated from.
    pub fn doc(&self) -> &FlowchartDoc {
        &self.doc
    }

    pub fn into_doc(self) -> FlowchartDoc {
        self.doc
    }

    pub fn name(&self) -> &str {
        &self.doc.name
    }

    pub fn nodes(&self) -> &[Node] {
        &self.doc.nodes
    }

    pub fn connectors(&self) -> &[Connector] {
        &self.doc.connectors
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.node_index.get(id).and_then(|&i| self.doc.nodes.get(i))
    }

    /// Position of the node with this id in [`Flowchart::nodes`].
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.node_index.get(id).copied()
    }

    pub fn node_at(&self, index: usize) -> Option<&Node> {
        self.doc.nodes.get(index)
    }

    pub fn connector(&self, id: &str) -> Option<&Connector> {
        self.connector_index
            .get(id)
            .and_then(|&i| self.doc.connectors.get(i))
    }

    pub fn connector_index(&self, id: &str) -> Option<usize> {
        self.connector_index.get(id).copied()
    }

    pub fn connector_at(&self, index: usize) -> Option<&Connector> {
        self.doc.connectors.get(index)
    }

    /// Node index the connector leaves from.
    pub fn connector_source(&self, connector: usize) -> Option<usize> {
        self.ends.get(connector).map(|e| e.0)
    }

    /// Node index the connector leads to.
    pub fn connector_target(&self, connector: usize) -> Option<usize> {
        self.ends.get(connector).map(|e| e.1)
    }

    /// Index of the (only) start node.
    pub fn start(&self) -> usize {
        self.start
    }

    fn facts(&self, node: usize) -> Option<&NodeFacts> {
        self.facts.get(node)
    }

    /// Solid connectors into the node (connector indices, document order).
    pub fn solid_incoming(&self, node: usize) -> &[usize] {
        self.facts(node).map_or(&[], |f| &f.solid_in)
    }

    /// Solid connectors out of the node (connector indices, document order).
    pub fn solid_outgoing(&self, node: usize) -> &[usize] {
        self.facts(node).map_or(&[], |f| &f.solid_out)
    }

    /// Dotted (context-only) connectors into the node.
    pub fn dotted_incoming(&self, node: usize) -> &[usize] {
        self.facts(node).map_or(&[], |f| &f.dotted_in)
    }

    /// Dotted (context-only) connectors out of the node.
    pub fn dotted_outgoing(&self, node: usize) -> &[usize] {
        self.facts(node).map_or(&[], |f| &f.dotted_out)
    }

    /// Number of solid incoming connectors (what fan-in counts against).
    pub fn solid_parent_count(&self, node: usize) -> usize {
        self.solid_incoming(node).len()
    }

    /// Whether a solid connector closes a loop (it leads back to a node on the path from the
    /// start node to its source). With `fan_in: all`, a token on such a connector triggers the
    /// node on its own: the next round of a loop does not wait for parents outside the loop.
    pub fn is_loop_back(&self, connector: usize) -> bool {
        self.loop_back.get(connector).copied().unwrap_or(false)
    }

    /// How many solid parents must deliver before the node runs: `all` = every solid incoming
    /// connector, `any` = 1 (0 for a node without solid parents), `custom N` = N.
    pub fn fan_in_threshold(&self, node: usize) -> Option<usize> {
        let n = self.doc.nodes.get(node)?;
        let parents = self.solid_parent_count(node);
        Some(match n.fan_in_or_default() {
            FanIn::All => parents,
            FanIn::Any => parents.min(1),
            FanIn::Custom(k) => usize::try_from(k).unwrap_or(usize::MAX),
        })
    }

    /// Whether solid connectors form a cycle (then `limits.max_node_executions` is set).
    pub fn has_solid_cycle(&self) -> bool {
        self.solid_cycle
    }

    /// `limits.max_node_executions`, if set.
    pub fn max_node_executions(&self) -> Option<u64> {
        self.doc.max_node_executions()
    }

    /// The node's `timeout_s`, else `defaults.timeout_s`, else 300.
    pub fn effective_timeout_s(&self, node: usize) -> Option<u64> {
        self.facts(node).map(|f| f.timeout_s)
    }

    /// The node's `retry`, else `defaults.retry`, else 1 attempt / 500 ms / x2.0.
    pub fn effective_retry(&self, node: usize) -> Option<&Retry> {
        self.facts(node).map(|f| &f.retry)
    }

    /// Parsed conditions of a decision, in evaluation order (empty for other nodes).
    pub fn conditions(&self, node: usize) -> &[CompiledCondition] {
        self.facts(node).map_or(&[], |f| &f.conditions)
    }

    /// What the decision does when nothing matches (`Fail` for other nodes).
    pub fn no_match(&self, node: usize) -> NoMatchRoute {
        self.facts(node).map_or(NoMatchRoute::Fail, |f| f.no_match)
    }

    /// Indices of nodes of a type, in document order.
    pub fn nodes_of_type(&self, node_type: NodeType) -> impl Iterator<Item = usize> + '_ {
        self.doc
            .nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.node_type == node_type)
            .map(|(i, _)| i)
    }
}

impl TryFrom<FlowchartDoc> for Flowchart {
    type Error = Vec<super::ValidationError>;

    fn try_from(doc: FlowchartDoc) -> Result<Self, Self::Error> {
        super::validate(doc)
    }
}

/// Serializes as its document.
impl Serialize for Flowchart {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.doc.serialize(serializer)
    }
}

/// Marks the back edges of an iterative depth-first walk over solid connectors from `start`.
pub(super) fn loop_back_connectors(
    start: usize,
    facts: &[NodeFacts],
    ends: &[(usize, usize)],
) -> Vec<bool> {
    let mut back = vec![false; ends.len()];
    // 0 = new, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; facts.len()];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    if start < facts.len() {
        mark[start] = 1;
        stack.push((start, 0));
    }
    while let Some(top) = stack.len().checked_sub(1) {
        let (node, pos) = stack[top];
        match facts[node].solid_out.get(pos) {
            Some(&connector) => {
                stack[top].1 += 1;
                let Some(&(_, target)) = ends.get(connector) else {
                    continue;
                };
                match mark[target] {
                    0 => {
                        mark[target] = 1;
                        stack.push((target, 0));
                    }
                    1 => back[connector] = true,
                    _ => {}
                }
            }
            None => {
                mark[node] = 2;
                stack.pop();
            }
        }
    }
    back
}
