//! Fork: a new run that starts from a node of a finished run, keeping the source's results
//! upstream of that node and running the node and everything downstream of it again.
//!
//! The fork's stream begins with `RunForked`, which holds everything the fork starts from (the
//! definition, the inputs, the kept node runs in the order they ended, the tokens the fork
//! node's re-run consumes), so the fork replays on its own. The source gets `RunForkedTo` in
//! the same transaction ([`EventStore::append_many`]), expected at the version the fork was
//! planned from: a source that moved meanwhile is read and planned again. The source's state
//! is unchanged by the link.
//!
//! What is kept is exactly what a rewind of the node would keep ([`plan_fork`]): every ended
//! node run that still counts, except the fork node's latest run and the runs after it that are
//! downstream of the fork node.

use runledger_contracts::digest::Digest;
use runledger_contracts::events::{
    ConsumedToken, Control, DomainEvent, ForkSource, KeptNodeRun, RunForked, RunForkedTo,
};
use runledger_contracts::flowchart::NodeType;
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use runledger_ledger::{EventStore, ExpectedVersion, StoreError, StreamAppend};
use serde_json::Value;

use crate::decide::{self, Cause, DecideError, Settings, StepEnv};
use crate::engine::{EngineError, append_request, load_run_noting};
use crate::state::{RunState, Token};
use crate::unstorable;

/// How many times a fork is planned again after the source moved under it.
const MAX_ATTEMPTS: u32 = 8;

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ForkRequest {
    pub source: RunId,
    pub from_node: String,
    /// The output the fork node's re-run ends with (as `skip`), instead of running it.
    pub output: Option<Value>,
    pub control: Control,
    pub request_id: RequestId,
    /// The fork's correlation id; a fresh one when `None`.
    pub correlation_id: Option<CorrelationId>,
}

/// The fork that was made (or, for a repeated request, the one made the first time).
#[derive(Debug, Clone, PartialEq)]
pub struct ForkOutcome {
    pub run_id: RunId,
    pub source: ForkSource,
    /// The request id had forked this source before: nothing new was written.
    pub deduplicated: bool,
}

/// Plans a fork of `source` (read at `version`, whose event hash is `head_hash`) from node
/// `from_node`. Pure: refuses what cannot be forked, with nothing decided.
///
/// Refused: a source that has not finished (`source_not_finished`: a running or paused run may
/// still change what the fork would keep), an unknown node (`unknown_node`), a node the source
/// never ran (`node_not_reached`), an output for a node the engine runs itself
/// (`node_not_skippable`) or one the ledger cannot store (`invalid_input`).
pub fn plan_fork(
    source: &RunState,
    version: u64,
    head_hash: Digest,
    run_id: RunId,
    from_node: &str,
    output: Option<Value>,
    control: Control,
) -> Result<RunForked, DecideError> {
    if !source.status.is_terminal() {
        return Err(DecideError::NotApplicable {
            code: "source_not_finished",
            message: format!(
                "run {} is {}: only a completed, failed or canceled run can be forked",
                source.run_id,
                source.status.as_str()
            ),
        });
    }
    let flowchart = &source.flowchart;
    let node = flowchart
        .node_index(from_node)
        .ok_or_else(|| DecideError::NotApplicable {
            code: "unknown_node",
            message: format!("the flowchart has no node `{from_node}`"),
        })?;
    let latest = source
        .latest_run_of(node)
        .ok_or_else(|| DecideError::NotApplicable {
            code: "node_not_reached",
            message: format!("node `{from_node}` never ran in run {}", source.run_id),
        })?;
    if let Some(output) = &output {
        let node_type = flowchart.node_at(node).map(|n| n.node_type);
        if matches!(
            node_type,
            Some(NodeType::Decision | NodeType::Start | NodeType::End)
        ) {
            return Err(DecideError::NotApplicable {
                code: "node_not_skippable",
                message: format!(
                    "node `{from_node}` is run by the engine itself; fork it without an output"
                ),
            });
        }
        unstorable::check_output(output).map_err(|e| DecideError::InvalidInput {
            field: "output",
            message: e.to_string(),
        })?;
    }
    let downstream = source.downstream(node);
    let mut kept: Vec<usize> = (0..source.node_runs.len())
        .filter(|&i| {
            let nr = &source.node_runs[i];
            let rerun = i >= latest && downstream.contains(&nr.node);
            !(nr.invalidated || nr.is_active() || rerun)
        })
        .collect();
    kept.sort_by_key(|&i| source.node_runs[i].ended_seq);
    let token = |t: &Token| ConsumedToken {
        connector_id: connector_id(source, t.connector),
        from_node_run_id: source.node_runs[t.from].id,
    };
    let kept = kept
        .into_iter()
        .map(|i| {
            let nr = &source.node_runs[i];
            KeptNodeRun {
                node_id: source.node_id(nr.node).to_owned(),
                node_run_id: nr.id,
                node_type: nr.node_type,
                attempt: nr.attempt,
                execution_index: nr.execution_index,
                status: nr
                    .status()
                    .unwrap_or(runledger_contracts::events::NodeRunStatus::Canceled),
                consumed_tokens: nr.consumed.iter().map(token).collect(),
                retry_of: nr.retry_of.map(|p| source.node_runs[p].id),
                output: nr.output.clone(),
                error: nr.error.clone(),
                routed: nr
                    .routed
                    .as_ref()
                    .map(|r| r.iter().map(|&c| connector_id(source, c)).collect()),
                artifact_id: nr.artifact,
            }
        })
        .collect();
    let definition =
        serde_json::to_value(flowchart.doc()).map_err(|e| DecideError::InvalidInput {
            field: "definition",
            message: e.to_string(),
        })?;
    Ok(RunForked {
        run_id,
        source: ForkSource {
            run_id: source.run_id,
            stream_version: version,
            head_hash,
        },
        from_node: from_node.to_owned(),
        output,
        flowchart: source.flowchart_ref.clone(),
        definition,
        inputs: source.inputs.clone(),
        deadline: None,
        control,
        kept,
        rerun_consumed: source.node_runs[latest]
            .consumed
            .iter()
            .map(token)
            .collect(),
    })
}

fn connector_id(state: &RunState, connector: usize) -> String {
    state
        .flowchart
        .connector_at(connector)
        .map(|c| c.id.clone())
        .unwrap_or_default()
}

/// Forks a run in the store: plans it from the source's head, then appends the fork's first
/// step (`RunForked`, and the skip of the fork node when an output is given) and the source's
/// `RunForkedTo` in one transaction. Idempotent by request id: a request
/// id that forked this source before returns that fork, and one used on the source for anything
/// else (another fork, a control) is `request_id_reused`. The fork is left to whichever engine
/// takes it from the run index (`serve`), like a run started without `--wait`.
pub async fn fork<S: EventStore>(
    store: &S,
    request: ForkRequest,
) -> Result<ForkOutcome, EngineError> {
    let source_stream = StreamId::for_run(request.source);
    for _ in 0..MAX_ATTEMPTS {
        let (loaded, used) =
            load_run_noting(store, request.source, Some(&request.request_id)).await?;
        if !used.is_empty() {
            return repeated(store, &request, &used).await;
        }
        let head = store
            .read_stream(&source_stream, loaded.version, 1)
            .await?
            .into_iter()
            .next()
            .map(|e| e.hash)
            .ok_or(EngineError::RunNotFound(request.source))?;
        let run_id = RunId::new_v7();
        let forked = plan_fork(
            &loaded.state,
            loaded.version,
            head,
            run_id,
            &request.from_node,
            request.output.clone(),
            request.control.clone(),
        )?;
        let source = forked.source.clone();
        let cause = Cause {
            request_id: request.request_id.clone(),
            correlation_id: request
                .correlation_id
                .clone()
                .unwrap_or_else(CorrelationId::generate),
        };
        let mut env = StepEnv::begin();
        let (_, events) = decide::fork_run(forked, &mut env, &cause, &Settings::default())?;
        let link = DomainEvent::RunForkedTo(RunForkedTo {
            run_id: request.source,
            fork_run_id: run_id,
            from_node: request.from_node.clone(),
            stream_version: loaded.version,
            control: request.control.clone(),
        });
        let fork_append = append_request(&cause, &events, &env)?;
        let link_cause = Cause {
            request_id: request.request_id.clone(),
            correlation_id: loaded.correlation_id.clone(),
        };
        let link_append = append_request(&link_cause, &[link], &env)?;
        let items = vec![
            StreamAppend::new(
                StreamId::for_run(run_id),
                ExpectedVersion::NoStream,
                fork_append,
            ),
            StreamAppend::new(
                source_stream.clone(),
                ExpectedVersion::Exact(loaded.version),
                link_append,
            ),
        ];
        match store.append_many(items).await {
            Ok(_) => {
                return Ok(ForkOutcome {
                    run_id,
                    source,
                    deduplicated: false,
                });
            }
            // The source moved (or the same request raced us): read it again.
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::Contended(MAX_ATTEMPTS))
}

/// The request id was used on the source before: the same fork again returns it, anything
/// else is `request_id_reused`.
async fn repeated<S: EventStore>(
    store: &S,
    request: &ForkRequest,
    used: &[runledger_contracts::envelope::RecordedEvent],
) -> Result<ForkOutcome, EngineError> {
    let reused = || {
        EngineError::Store(StoreError::RequestMismatch {
            stream_id: StreamId::for_run(request.source),
            request_id: request.request_id.clone(),
        })
    };
    let [event] = used else {
        return Err(reused());
    };
    let Ok(DomainEvent::RunForkedTo(link)) = event.decode() else {
        return Err(reused());
    };
    let first = store
        .read_stream(&StreamId::for_run(link.fork_run_id), 1, 1)
        .await?;
    let forked = first.first().and_then(|e| match e.decode() {
        Ok(DomainEvent::RunForked(f)) => Some(f),
        _ => None,
    });
    let Some(forked) = forked else {
        return Err(EngineError::Corrupt {
            run_id: link.fork_run_id,
            version: 1,
            message: "the fork named by RunForkedTo does not begin with RunForked".into(),
        });
    };
    if forked.from_node != request.from_node || forked.output != request.output {
        return Err(reused());
    }
    Ok(ForkOutcome {
        run_id: link.fork_run_id,
        source: forked.source,
        deduplicated: true,
    })
}
