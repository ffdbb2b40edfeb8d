//! How a run's driver executes `memory`, `plan` and `milestone` node runs itself (included in
//! `engine.rs` as a child module, so it extends the private `Driver`).
//!
//! The node run starts like any work node (`NodeStarted`); instead of going to an executor it
//! is queued in the driver's own mailbox and run between steps, one tool node run at a time, so
//! tool node runs of one run never race each other on a tool stream:
//!
//! 1. [`crate::tools::attempt`] folds the tool stream (cached by version) and decides the
//!    operation: an output, plus tool events to append at the version the state was read at.
//! 2. [`crate::tools::finish`] turns that into the node run's result (`ToolCalled` with the trace
//!    of attempts, then success, failure or fallback).
//! 3. The result is decided as an ordinary step (`step_many`, request `result-<node_run_id>`);
//!    its append goes through [`Driver::append_step`], which adds the tool events as a second
//!    stream of the same `append_many` when the step's events complete this node run.
//! 4. When the tool stream moved on (another run wrote it), nothing was written: the step is
//!    dropped (the run state is rebuilt from its stream as after any lost race), and the
//!    operation is read and decided again, at most [`MAX_TOOL_ATTEMPTS`] tries in all. A call
//!    that loses every race ends with `tool_conflict`.
//!
//! A crash anywhere leaves either both the node's end and its tool events, or neither; a node
//! run found running after a restart is queued again and runs from the start. Its tool events
//! carry the idempotency key and use it as their request id, and an operation whose key is in
//! the stream already is not applied again (its recorded output is returned).

use std::time::{Duration, Instant};

use runledger_contracts::envelope::NewEvent;
use runledger_contracts::events::{ErrorInfo, ToolAttempt};
use runledger_contracts::ids::{CausationId, NodeRunId};
use runledger_contracts::time::Timestamp;
use runledger_ledger::{
    AppendOutcome, AppendRequest, EventStore, ExpectedVersion, StoreError, StreamAppend,
};

use super::{Driver, EngineError, Msg, request_id};
use crate::decide::{Command, NodeOutcome, NodeResult};
use crate::state::Phase;
use crate::tools::cache::ToolCache;
use crate::tools::{self, MAX_TOOL_ATTEMPTS, ToolAppend, ToolCall, ToolError};

/// A driver's tool state: the folded tool streams, and the tool events of the step in flight.
#[derive(Default)]
pub(super) struct ToolNodes {
    cache: ToolCache,
    /// Tool events to append with the step that ends their node run.
    pending: Option<ToolAppend>,
    /// Set by [`Driver::append_step`] when the tool stream had moved on: the step wrote nothing.
    conflict: Option<ErrorInfo>,
}

impl ToolNodes {
    /// Forgets the tool events of the step in flight: the ledger refused them for good, and
    /// the node run's result is recorded without them (as an `invalid_output` failure).
    pub(super) fn drop_pending(&mut self) {
        self.pending = None;
    }
}

impl<S: EventStore + 'static> Driver<S> {
    /// Runs a tool node run on this driver's loop, after the step that started it.
    pub(super) fn queue_tool_node(&mut self, node_run_id: NodeRunId) {
        let queued = self
            .me
            .upgrade()
            .is_some_and(|me| me.send(Msg::ToolNode(node_run_id)).is_ok());
        if !queued {
            // The driver is stopping; a restart finds the node run running and queues it then.
            self.dispatched.remove(&node_run_id);
        }
    }

    /// Executes one tool node run to its recorded end (see the module docs).
    pub(super) async fn run_tool_node(
        &mut self,
        node_run_id: NodeRunId,
    ) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let store = &engine.inner.store;
        let mut attempts: Vec<ToolAttempt> = Vec::new();
        loop {
            let active = self.state.node_run_index(&node_run_id).filter(|&i| {
                let nr = &self.state.node_runs[i];
                nr.is_active() && nr.phase == Phase::Running && !self.state.status.is_terminal()
            });
            let Some(work) = active.and_then(|i| self.state.work(i)) else {
                // Ended meanwhile (canceled, timed out, recorded by another engine).
                self.dispatched.remove(&node_run_id);
                return Ok(());
            };
            let Some(call) = ToolCall::of(&work) else {
                let error = ToolError::InvalidInput {
                    field: "operation".into(),
                    message: "the node has no tool configuration".into(),
                };
                let result = NodeResult {
                    node_run_id,
                    attempt: work.attempt,
                    outcome: NodeOutcome::Failed(error.to_error_info()),
                    tool_calls: Vec::new(),
                };
                return self.record_tool_result(result, None).await.map(|_| ());
            };
            let number = u32::try_from(attempts.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            let started_at = Timestamp::now();
            let clock = Instant::now();
            let planned = tools::attempt(store, &mut self.tools.cache, &call).await;
            let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
            attempts.push(ToolAttempt {
                attempt: number,
                started_at,
                duration_ms,
                error: None,
            });
            let planned = match planned {
                Ok(planned) => planned,
                Err(e) => {
                    if let Some(last) = attempts.last_mut() {
                        last.error = Some(e.to_error_info());
                    }
                    if e.retryable() && number < MAX_TOOL_ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(50 * u64::from(number))).await;
                        continue;
                    }
                    let result = tools::finish(&work, &call, attempts, Err(e));
                    return self.record_tool_result(result, None).await.map(|_| ());
                }
            };
            let result = tools::finish(&work, &call, attempts.clone(), Ok(planned.output));
            let Some(conflict) = self.record_tool_result(result, planned.append).await? else {
                return Ok(());
            };
            let message = conflict.message.clone();
            if let Some(last) = attempts.last_mut() {
                // A try that lost its race also spent the commit that found out.
                last.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
                last.error = Some(conflict);
            }
            if number >= MAX_TOOL_ATTEMPTS {
                let error =
                    ToolError::Conflict(format!("gave up after {number} attempts: {message}"));
                let result = tools::finish(&work, &call, attempts, Err(error));
                return self.record_tool_result(result, None).await.map(|_| ());
            }
            // Another run writes the same stream: step aside for a moment (jittered, so two
            // runs that collided do not collide again in lockstep).
            let jitter = u64::try_from(Timestamp::now().unix_micros().rem_euclid(10)).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis((jitter + 1) * u64::from(number))).await;
        }
    }

    /// Decides the node run's result as one step, with its tool events in the same append.
    /// Returns the conflict when the tool stream had moved on (then nothing was written).
    async fn record_tool_result(
        &mut self,
        result: NodeResult,
        append: Option<ToolAppend>,
    ) -> Result<Option<ErrorInfo>, EngineError> {
        let node_run_id = result.node_run_id;
        self.tools.pending = append;
        self.tools.conflict = None;
        let request = request_id(format!("result-{node_run_id}"));
        let stepped = self
            .step_many(vec![Command::RecordResult(result)], request)
            .await;
        self.tools.pending = None;
        let conflict = self.tools.conflict.take();
        stepped?;
        if conflict.is_none() {
            self.dispatched.remove(&node_run_id);
        }
        Ok(conflict)
    }

    /// Appends a step's events to the run stream. When the step ends the tool node run whose
    /// tool events are pending, both go in one `append_many`: the run stream at the driver's
    /// version, the tool stream at the version its state was read at. A tool stream that moved
    /// on is reported to [`Driver::run_tool_node`] through `tools.conflict` and answered here as
    /// "already recorded", which makes `step_many` rebuild the run state and stop.
    pub(super) async fn append_step(
        &mut self,
        append: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let store = &self.engine.inner.store;
        let expected = ExpectedVersion::Exact(self.version);
        let Some(tool) = self
            .tools
            .pending
            .as_ref()
            .filter(|t| ends_node_run(&append, t.node_run_id))
        else {
            return self.engine.commit(&self.stream, expected, append).await;
        };
        let mut events = Vec::with_capacity(tool.events.len());
        for event in &tool.events {
            let new = NewEvent::from_domain(event).map_err(|e| StoreError::InvalidEvent {
                index: events.len(),
                reason: e.to_string(),
            })?;
            events.push(new);
        }
        let mut tool_request = AppendRequest::new(
            tool.request_id.clone(),
            append.correlation_id.clone(),
            events,
        );
        tool_request.causation_id = CausationId::new(append.request_id.as_str()).ok();
        let tool_expected = match tool.expected_version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        let tool_stream = tool.stream.clone();
        let items = vec![
            StreamAppend::new(self.stream.clone(), expected, append),
            StreamAppend::new(tool_stream.clone(), tool_expected, tool_request),
        ];
        match store.append_many(items).await {
            Ok(mut outcomes) if !outcomes.is_empty() => Ok(outcomes.swap_remove(0)),
            Ok(_) => Err(StoreError::Corrupt(
                "append_many returned no outcome for the run stream".into(),
            )),
            Err(StoreError::Conflict {
                stream_id,
                expected,
                actual,
            }) if stream_id == tool_stream => {
                self.tools.conflict = Some(conflict_info(format!(
                    "stream `{stream_id}` moved to version {actual} while the operation was decided at version {expected}"
                )));
                Ok(AppendOutcome {
                    events: Vec::new(),
                    deduplicated: true,
                })
            }
            Err(StoreError::RequestMismatch {
                stream_id,
                request_id,
            }) if stream_id == tool_stream => {
                self.tools.conflict = Some(conflict_info(format!(
                    "stream `{stream_id}` already holds request `{request_id}` with other content"
                )));
                Ok(AppendOutcome {
                    events: Vec::new(),
                    deduplicated: true,
                })
            }
            Err(e) => Err(e),
        }
    }
}

fn conflict_info(message: String) -> ErrorInfo {
    ToolError::Conflict(message).to_error_info()
}

/// Whether the step's events end this node run (its `NodeSucceeded` or `NodeFailed`). A step
/// that records the result as ignored, or nothing, must not carry the tool events.
fn ends_node_run(append: &AppendRequest, node_run_id: NodeRunId) -> bool {
    let id = node_run_id.to_string();
    append.events.iter().any(|e| {
        matches!(e.event_type.as_str(), "NodeSucceeded" | "NodeFailed")
            && e.payload.get("node_run_id").and_then(|v| v.as_str()) == Some(id.as_str())
    })
}
