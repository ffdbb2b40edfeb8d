//! The inputs of the decider: how the outside world's reports become `decide` commands, and how
//! those inputs are read back out of recorded events.
//!
//! The engine turns executor reports into commands with [`report_commands`]; the replay
//! ([`crate::replay`]) recovers each recorded report with [`recorded_report`] and then goes
//! through the same [`report_commands`], so both drive the decider the same way. An input's
//! content is in the first events its command decides (a result's `ToolCalled`s and
//! `NodeSucceeded`/`NodeFailed`, a `NodeDispatched`, a control's event); the replay re-decides
//! them from that content and compares, so the input is fed and its consequences are checked.

use runledger_contracts::events::{Control, DomainEvent, ErrorInfo};
use runledger_contracts::ids::RunId;

use crate::decide::{Command, ControlAction, NodeOutcome, NodeResult};
use crate::executor::Report;

/// The request id of a settle step (timers and scheduling) at stream version `version`.
pub(crate) fn settle_request_id(run_id: RunId, version: u64) -> String {
    format!("settle-{run_id}-v{version}")
}

/// Whether a recorded step was a settle step of `run_id`.
pub(crate) fn is_settle_request(run_id: RunId, request_id: &str) -> bool {
    request_id
        .strip_prefix(&format!("settle-{run_id}-v"))
        .is_some_and(|v| v.parse::<u64>().is_ok())
}

/// The commands an executor report stands for, in order.
pub(crate) fn report_commands(report: Report) -> Vec<Command> {
    match report {
        Report::Finished(result) => vec![Command::RecordResult(result)],
        Report::ToolCall(call) => vec![Command::RecordToolCall(call)],
        Report::Dispatched {
            node_run_id,
            attempt,
            executor_class,
            message_id,
            stream_sequence,
        } => {
            vec![Command::Dispatched {
                node_run_id,
                attempt,
                executor_class,
                message_id,
                stream_sequence,
            }]
        }
        Report::Started {
            node_run_id,
            attempt,
            executor,
        } => vec![Command::Started {
            node_run_id,
            attempt,
            executor,
        }],
        Report::Ran { executor, result } => vec![
            Command::Started {
                node_run_id: result.node_run_id,
                attempt: result.attempt,
                executor,
            },
            Command::RecordResult(result),
        ],
    }
}

/// The report whose command decided the events starting at `events[0]`, if they begin with
/// one: a `NodeDispatched`, a `NodeStarted`, a result (its `ToolCalled`s, then the node run's
/// `NodeSucceeded`/`NodeFailed`, or a `NodeResultIgnored`), or one agent-loop call reported on
/// its own.
pub(crate) fn recorded_report(events: &[DomainEvent]) -> Option<Report> {
    match events.first()? {
        DomainEvent::NodeDispatched(e) => Some(Report::Dispatched {
            node_run_id: e.node_run_id,
            attempt: e.attempt,
            executor_class: e.executor_class.clone(),
            message_id: e.message_id.clone(),
            stream_sequence: e.stream_sequence,
        }),
        DomainEvent::NodeStarted(e) => Some(Report::Started {
            node_run_id: e.node_run_id,
            attempt: e.attempt,
            executor: e.executor.clone(),
        }),
        DomainEvent::NodeResultIgnored(e) => Some(Report::Finished(NodeResult {
            node_run_id: e.node_run_id,
            attempt: e.attempt,
            // An ignored result's content is not recorded, and the decider does not read it.
            outcome: NodeOutcome::Failed(ErrorInfo {
                code: "ignored".into(),
                message: e.reason.clone(),
                retryable: false,
                details: None,
            }),
            tool_calls: Vec::new(),
        })),
        DomainEvent::ToolCalled(_) | DomainEvent::NodeSucceeded(_) | DomainEvent::NodeFailed(_) => {
            let mut tool_calls = Vec::new();
            for (k, event) in events.iter().enumerate() {
                match event {
                    DomainEvent::ToolCalled(call) => tool_calls.push(call.clone()),
                    DomainEvent::NodeSucceeded(e) => {
                        // An agent node's lineage is in its artifact, right after.
                        let agent = match events.get(k + 1) {
                            Some(DomainEvent::ArtifactPersisted(a)) => {
                                a.payload.get("agent").cloned()
                            }
                            _ => None,
                        };
                        let outcome = NodeOutcome::Succeeded {
                            output: e.output.clone(),
                            warnings: e.warnings.clone(),
                            fallback_used: e.fallback_used,
                            agent,
                        };
                        return Some(Report::Finished(NodeResult {
                            node_run_id: e.node_run_id,
                            attempt: e.attempt,
                            outcome,
                            tool_calls,
                        }));
                    }
                    DomainEvent::NodeFailed(e) => {
                        let outcome = NodeOutcome::Failed(e.error.clone());
                        return Some(Report::Finished(NodeResult {
                            node_run_id: e.node_run_id,
                            attempt: e.attempt,
                            outcome,
                            tool_calls,
                        }));
                    }
                    _ => return reported_call(events),
                }
            }
            reported_call(events)
        }
        _ => None,
    }
}

/// A step that records one agent-loop call reported as it happened ([`Report::ToolCall`]):
/// an agent `ToolCalled` not followed by its node run's end.
fn reported_call(events: &[DomainEvent]) -> Option<Report> {
    match events.first()? {
        DomainEvent::ToolCalled(call) if call.agent.is_some() => {
            Some(Report::ToolCall(Box::new(call.clone())))
        }
        _ => None,
    }
}

/// The operator control a recorded step applied, if it was one. A control is one step of its
/// own; a node control on a failed run first reopens it (`RunResumed`), so the node's event
/// decides which control it was.
pub(crate) fn recorded_control(events: &[DomainEvent]) -> Option<(ControlAction, Control)> {
    let mut resumed = None;
    for event in events {
        match event {
            DomainEvent::NodeSkipped(e) => {
                return Some((
                    ControlAction::SkipNode {
                        node: e.node_id.clone(),
                        output: e.output.clone(),
                    },
                    e.control.clone(),
                ));
            }
            DomainEvent::NodeRewound(e) => {
                return Some((
                    ControlAction::RewindNode {
                        node: e.node_id.clone(),
                    },
                    e.control.clone(),
                ));
            }
            DomainEvent::NodeRetryScheduled(e) => {
                if let Some(control) = &e.control {
                    return Some((
                        ControlAction::RetryNode {
                            node: e.node_id.clone(),
                        },
                        control.clone(),
                    ));
                }
            }
            DomainEvent::RunCancelRequested(e) => {
                return Some((ControlAction::Cancel { force: e.force }, e.control.clone()));
            }
            DomainEvent::RunPaused(e) => return Some((ControlAction::Pause, e.control.clone())),
            DomainEvent::RunResumed(e) => {
                resumed.get_or_insert_with(|| e.control.clone());
            }
            _ => {}
        }
    }
    resumed.map(|control| (ControlAction::Resume, control))
}
