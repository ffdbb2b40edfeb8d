//! Executors: where node runs that do work (`task`, `memory`, `plan`, `milestone`, `rag`) run.
//!
//! The engine hands each started node run to a [`NodeExecutor`] as [`NodeWork`] and gets a
//! [`NodeResult`] back on a channel, whenever it comes. The in-process pool here is one
//! implementation; the NATS gateway is another behind the same trait. Results are fenced by
//! attempt in the decider, so an executor may deliver late or twice without harm.

use std::collections::HashMap;
use std::sync::Arc;

use runledger_contracts::agent_tool::{GitPolicy, WorkspaceSource};
use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::events::{ErrorInfo, ToolCalled};
use runledger_contracts::flowchart::{Node, NodeType};
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use crate::agent::{CallReporter, ChannelReporter, ToolRegistry};
use crate::decide::{NodeOutcome, NodeResult};
use crate::delivery::Receipt;
use crate::provider::{BoxFuture, ModelProvider, ScriptedProvider};
use crate::rag::RagBackend;
use crate::state::RunState;

/// `NodeStarted.executor` of node runs the in-process pool runs.
pub const INPROCESS: &str = "inprocess";
/// `NodeStarted.executor` of `flowchart` node runs: the engine runs them as child runs.
pub const SUBFLOW: &str = "subflow";

/// Node types whose work goes to remote executors when the engine dispatches over NATS; the
/// others run in the engine's process.
pub fn remote_work(node_type: NodeType) -> bool {
    matches!(node_type, NodeType::Task | NodeType::Rag)
}

/// Everything an executor needs for one node run. It carries the node's definition, not the
/// flowchart, so it can travel to a remote executor as one small message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeWork {
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
    pub attempt: u32,
    pub ordinal: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub input_context: Value,
    pub node: Arc<Node>,
    /// The flowchart's `workspace:` (agent nodes' workspace and git tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSource>,
    /// The flowchart's `git_policy:`; a node's own replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_policy: Option<GitPolicy>,
    /// The agent-loop calls of this node run the ledger already records (the attempt is run
    /// again after a crash): a call whose key is here is not applied again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recorded_calls: Vec<ToolCalled>,
    /// The executor that holds the run's workspace (`NodeStarted.executor` of the run's first
    /// workspace, git or command call), set when this node's allowlist reaches those tools.
    /// A remote executor other than this one refuses the work with `workspace_elsewhere`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_holder: Option<String>,
}

impl NodeWork {
    pub fn node(&self) -> Option<&Node> {
        Some(&self.node)
    }

    /// The recorded call with idempotency key `key`, if any.
    pub fn recorded_call(&self, key: &str) -> Option<&ToolCalled> {
        self.recorded_calls
            .iter()
            .find(|c| c.idempotency_key == key)
    }
}

impl RunState {
    /// The work of the node run at `index`, with its input context.
    pub fn work(&self, index: usize) -> Option<NodeWork> {
        self.work_with(index, None)
    }

    /// [`RunState::work`], with the node run's input context when the caller has it already
    /// (the step that scheduled it built it: [`crate::decide::Decided::contexts`]).
    pub fn work_with(&self, index: usize, input_context: Option<Value>) -> Option<NodeWork> {
        let nr = self.node_runs.get(index)?;
        Some(NodeWork {
            run_id: self.run_id,
            node_run_id: nr.id,
            attempt: nr.attempt,
            ordinal: nr.ordinal,
            deadline: nr.deadline,
            input_context: input_context.unwrap_or_else(|| self.input_context(index)),
            node: Arc::new(self.flowchart.node_at(nr.node)?.clone()),
            workspace: self.workspace(),
            git_policy: self.flowchart.doc().git_policy.as_ref().map(|p| p.policy()),
            recorded_calls: nr.agent_calls.clone(),
            workspace_holder: self.workspace_holder_for(nr.node),
        })
    }
}

impl RunState {
    /// The run's workspace holder, for a node whose allowlist reaches workspace tools.
    pub(crate) fn workspace_holder_for(&self, node: usize) -> Option<String> {
        if self.uses_run_workspace(node) {
            self.workspace_holder.clone()
        } else {
            None
        }
    }

    /// Whether `node`'s tool allowlist reaches the run's workspace.
    pub(crate) fn uses_run_workspace(&self, node: usize) -> bool {
        self.flowchart
            .node_at(node)
            .and_then(|n| n.tools.as_deref())
            .is_some_and(runledger_contracts::tool_catalog::allowlist_reaches_run_workspace)
    }

    /// The run's workspace source, its `{{ inputs.* }}` filled from the run's inputs. The run's
    /// start checked that they fill ([`crate::decide::start_run`]); a run recorded before that
    /// rule gets its templates as written, and its clone fails naming them.
    fn workspace(&self) -> Option<WorkspaceSource> {
        let doc = self.flowchart.doc().workspace.as_ref()?;
        Some(
            doc.resolve(&self.inputs)
                .unwrap_or_else(|_| WorkspaceSource {
                    repo: doc.repo.clone(),
                    git_ref: doc.git_ref.clone(),
                    keep_on_failure: doc.keep_on_failure,
                }),
        )
    }
}

/// What an executor tells the engine about one node run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// The work was published to an executor queue (`NodeDispatched`).
    Dispatched {
        node_run_id: NodeRunId,
        attempt: u32,
        executor_class: String,
        message_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_sequence: Option<u64>,
    },
    /// An executor took the work (`NodeStarted`).
    Started {
        node_run_id: NodeRunId,
        attempt: u32,
        executor: String,
    },
    /// The node run's result.
    Finished(NodeResult),
    /// An executor took the work and finished it before it had said so: `Started` and
    /// `Finished` in one message, so a fast node costs one report, not two.
    Ran {
        executor: String,
        result: NodeResult,
    },
    /// One call of an agent node run's loop (model or tool), reported as it happens; the
    /// engine appends it as its own step, idempotently by its idempotency key.
    ToolCall(Box<ToolCalled>),
}

impl Report {
    pub fn node_run_id(&self) -> NodeRunId {
        match self {
            Report::Dispatched { node_run_id, .. } | Report::Started { node_run_id, .. } => {
                *node_run_id
            }
            Report::Finished(result) | Report::Ran { result, .. } => result.node_run_id,
            Report::ToolCall(call) => call.node_run_id,
        }
    }
}

/// One report on its way to the run's driver.
#[derive(Debug)]
pub struct Delivery {
    pub run_id: RunId,
    pub report: Report,
    /// The message that carried it (`Nats-Msg-Id`), used as the append's request id.
    pub message_id: Option<String>,
    /// Answered with what became of the report once the engine knows (in the ledger, a
    /// duplicate, refused for good, or to be tried again), so a queue acks, terminates or
    /// redelivers its message by that. Dropped unanswered means "try again".
    pub receipt: Option<Receipt>,
}

impl Delivery {
    pub fn finished(run_id: RunId, result: NodeResult) -> Self {
        Self {
            run_id,
            report: Report::Finished(result),
            message_id: None,
            receipt: None,
        }
    }
}

/// Where executors send what happens to node runs.
pub type ResultSender = mpsc::UnboundedSender<Delivery>;

pub trait NodeExecutor: Send + Sync + 'static {
    /// Starts the work and returns at once; reports go to `results` as they are known.
    fn submit(&self, work: NodeWork, results: ResultSender);

    /// The run ended: tool domains release what they hold for it (workspaces, jobs).
    fn run_finished(&self, _run_id: RunId, _failed: bool) {}
}

/// Where providers of models that are not in the fixed table come from: the model registry,
/// which changes while an engine or executor runs. `None`: no such model.
pub trait ModelSource: Send + Sync {
    fn provider<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Option<Arc<dyn ModelProvider>>>;
}

/// Model names to providers; `scripted` is always there. Models not in the table are asked of
/// the [`ModelSource`], if there is one.
#[derive(Clone)]
pub struct Providers {
    by_model: HashMap<String, Arc<dyn ModelProvider>>,
    source: Option<Arc<dyn ModelSource>>,
    rag: Option<Arc<dyn RagBackend>>,
    tools: ToolRegistry,
}

impl Providers {
    pub fn scripted(provider: ScriptedProvider) -> Self {
        let mut by_model: HashMap<String, Arc<dyn ModelProvider>> = HashMap::new();
        by_model.insert(
            runledger_contracts::flowchart::SCRIPTED_MODEL.to_owned(),
            Arc::new(provider),
        );
        Self {
            by_model,
            source: None,
            rag: None,
            tools: ToolRegistry::empty(),
        }
    }

    pub fn insert(&mut self, model: impl Into<String>, provider: Arc<dyn ModelProvider>) {
        self.by_model.insert(model.into(), provider);
    }

    /// Asks `source` for every model the table does not hold.
    pub fn with_source(mut self, source: Arc<dyn ModelSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Serves `rag` nodes with `backend`.
    pub fn with_rag(mut self, backend: Arc<dyn RagBackend>) -> Self {
        self.rag = Some(backend);
        self
    }

    pub fn rag(&self) -> Option<&Arc<dyn RagBackend>> {
        self.rag.as_ref()
    }

    /// Serves agent nodes' tool calls from `registry`.
    pub fn with_tools(mut self, registry: ToolRegistry) -> Self {
        self.tools = registry;
        self
    }

    /// The tools agent nodes run here may call.
    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    pub fn get(&self, model: &str) -> Option<&Arc<dyn ModelProvider>> {
        self.by_model.get(model)
    }

    /// The provider of `model`: from the table, else from the source.
    pub async fn resolve(&self, model: &str) -> Option<Arc<dyn ModelProvider>> {
        if let Some(provider) = self.by_model.get(model) {
            return Some(Arc::clone(provider));
        }
        match &self.source {
            Some(source) => source.provider(model).await,
            None => None,
        }
    }
}

/// Runs node work on the engine's tokio runtime, at most `concurrency` at a time.
pub struct InProcessPool {
    providers: Arc<Providers>,
    permits: Arc<Semaphore>,
}

impl InProcessPool {
    pub const DEFAULT_CONCURRENCY: usize = 256;

    pub fn new(providers: Providers, concurrency: usize) -> Self {
        Self {
            providers: Arc::new(providers),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }
}

impl NodeExecutor for InProcessPool {
    fn submit(&self, work: NodeWork, results: ResultSender) {
        let providers = Arc::clone(&self.providers);
        let permits = Arc::clone(&self.permits);
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let reporter = ChannelReporter {
                run_id: work.run_id,
                results: results.clone(),
            };
            let result = run_node_reporting(&providers, &work, Some(&reporter)).await;
            // The engine may have shut down; then the result is recovered on restart.
            let _ = results.send(Delivery::finished(work.run_id, result));
        });
    }

    fn run_finished(&self, run_id: RunId, failed: bool) {
        self.providers.tools().run_finished(run_id, failed);
    }
}

/// Runs one node run to its result; an agent node's calls come back in the result.
pub async fn run_node(providers: &Providers, work: &NodeWork) -> NodeResult {
    run_node_reporting(providers, work, None).await
}

/// Runs one node run to its result; an agent node's calls go to `reporter` as they happen
/// (and are then not in the result).
pub async fn run_node_reporting(
    providers: &Providers,
    work: &NodeWork,
    reporter: Option<&dyn CallReporter>,
) -> NodeResult {
    let (outcome, tool_calls) = match work.node() {
        None => (
            NodeOutcome::Failed(error(
                "unknown_node",
                "the node is not in the flowchart",
                false,
            )),
            Vec::new(),
        ),
        Some(node) => match node.node_type {
            NodeType::Task => {
                let run =
                    crate::agent::run_task(providers, providers.tools(), reporter, work, node)
                        .await;
                (run.outcome, run.unreported)
            }
            NodeType::Rag => crate::rag::run_rag(providers, work, node).await,
            // Their tools keep state in the ledger: the run's driver executes them
            // (crate::tools), so their events commit with the node's end.
            NodeType::Memory | NodeType::Plan | NodeType::Milestone => (
                NodeOutcome::Failed(error(
                    "not_executable",
                    &format!(
                        "`{}` nodes are run by the engine's tools, not an executor",
                        node.node_type.as_str()
                    ),
                    false,
                )),
                Vec::new(),
            ),
            other => (
                NodeOutcome::Failed(error(
                    "not_executable",
                    &format!(
                        "`{}` nodes are run by the engine, not an executor",
                        other.as_str()
                    ),
                    false,
                )),
                Vec::new(),
            ),
        },
    };
    NodeResult {
        node_run_id: work.node_run_id,
        attempt: work.attempt,
        outcome,
        tool_calls,
    }
}

/// The refusal of a remote executor `executor_id` to run `work` whose run's workspace another
/// executor holds: a node run failing with `workspace_elsewhere` (naming the holder in
/// `details.holder`), decided before any tool runs, instead of cloning a second workspace
/// that would not see the earlier nodes' changes. `None` when the executor may run it.
pub fn refuse_workspace_elsewhere(work: &NodeWork, executor_id: &str) -> Option<NodeResult> {
    let holder = work.workspace_holder.as_deref()?;
    if holder == executor_id {
        return None;
    }
    let mut refusal = error(
        "workspace_elsewhere",
        &format!(
            "the run's workspace is held by executor `{holder}`; this node uses workspace tools \
             and must run there, not on `{executor_id}`"
        ),
        false,
    );
    refusal.details = Some(serde_json::json!({ "holder": holder, "executor": executor_id }));
    Some(NodeResult {
        node_run_id: work.node_run_id,
        attempt: work.attempt,
        outcome: NodeOutcome::Failed(refusal),
        tool_calls: Vec::new(),
    })
}

fn error(code: &str, message: &str, retryable: bool) -> ErrorInfo {
    ErrorInfo {
        code: code.to_owned(),
        message: message.to_owned(),
        retryable,
        details: None,
    }
}

pub(crate) fn hash_of(value: &Value) -> Digest {
    Digest::of(&canonical::to_canonical_vec(value).unwrap_or_default())
}
