//! Replay: re-drive the current decider over a run's recorded inputs and compare what it
//! decides with what was recorded.
//!
//! A run stream is a sequence of steps, one append (one request id) each. Every step was
//! decided from one input: the start, a settle (timers firing, scheduling), an operator
//! control, a child run's start, or a batch of executor reports (dispatches, starts, results,
//! child-run completions, which arrive as results). The replay recovers each step's input from
//! its recorded events ([`crate::inputs`]), decides it with a [`ReplayEnv`] that returns the
//! step's recorded time and ids, and compares every decided event with the recorded one:
//! event type, schema version (after upcasting) and payload. Events the decider never emits
//! (written by other parts of the system on the run stream) are fed to the state, not compared.
//! The first difference stops the replay and is reported with its stream version and the JSON
//! path of the first differing field.

mod diff;
mod env;

use runledger_contracts::canonical;
use runledger_contracts::envelope::{NewEvent, RecordedEvent};
use runledger_contracts::events::{DecodeError, DomainEvent};
use runledger_contracts::ids::RunId;
use serde::Serialize;
use serde_json::{Value, json};

pub use diff::first_difference;
pub use env::ReplayEnv;

use crate::decide::{self, Cause, Command, DecideError, RemoteDispatch, Settings, StartRun};
use crate::executor::{INPROCESS, SUBFLOW};
use crate::inputs::{is_settle_request, recorded_control, recorded_report, report_commands};
use crate::state::{RunState, StateError};

/// A replay that found no difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    pub run_id: RunId,
    /// Steps (appends) replayed.
    pub steps: usize,
    /// Recorded events the decider decided again and that matched.
    pub events_compared: usize,
    /// Recorded inputs fed to the decider (the start, each executor report, control, settle
    /// and child start) plus events fed to the state without comparing (not decisions).
    pub inputs_fed: usize,
    /// The run's status after the last event.
    pub status: String,
}

/// The first difference between the recording and the replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub run_id: RunId,
    pub stream_version: u64,
    /// The request id of the step the difference is in.
    pub request_id: String,
    /// JSON path of the first differing field in `{event_type, schema_version, payload}`.
    pub path: String,
    /// `{event_type, schema_version, payload}` as recorded; `null` when the replay decided an
    /// event the recording does not have.
    pub recorded: Value,
    /// The same as replayed; `null` when the replay decided nothing there, or
    /// `{"error": {code, message}}` when the decider refused the recorded input.
    pub replayed: Value,
    /// Events that matched before this one.
    pub events_compared: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReplayOutcome {
    Matched(ReplaySummary),
    Diverged(Divergence),
}

/// The recording cannot be replayed at all (not a run stream, or an event this build cannot
/// read): a different thing from a divergence.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the stream is empty")]
    Empty,
    #[error("{decoded} decoded payload(s) given for {events} event(s)")]
    DecodedCount { events: usize, decoded: usize },
    #[error("{stream_id} is not a run stream (it does not begin with RunStarted or RunForked)")]
    NotARun { stream_id: String },
    #[error("version {stream_version}: cannot decode {event_type}")]
    Decode {
        stream_version: u64,
        event_type: String,
        #[source]
        source: DecodeError,
    },
    #[error("version {stream_version}: the recorded flowchart or state does not load")]
    State {
        stream_version: u64,
        #[source]
        source: StateError,
    },
}

/// Replays one run stream (its events in version order).
pub fn replay_run(events: &[RecordedEvent]) -> Result<ReplayOutcome, ReplayError> {
    let mut decoded = Vec::with_capacity(events.len());
    for e in events {
        decoded.push(e.decode());
    }
    replay_decoded(events, decoded)
}

/// [`replay_run`] for events whose payloads were decoded already (`decoded[i]` is
/// `events[i]`'s, as [`RecordedEvent::decode`] gives it; `events[i].payload` is not read), so a
/// reader of an export decodes each payload once, straight from its text.
pub fn replay_decoded(
    events: &[RecordedEvent],
    decoded: Vec<Result<DomainEvent, DecodeError>>,
) -> Result<ReplayOutcome, ReplayError> {
    let first = events.first().ok_or(ReplayError::Empty)?;
    let decoded = events
        .iter()
        .zip(decoded)
        .map(|(e, d)| {
            d.map_err(|source| ReplayError::Decode {
                stream_version: e.stream_version,
                event_type: e.event_type.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if decoded.len() != events.len() {
        return Err(ReplayError::DecodedCount {
            events: events.len(),
            decoded: decoded.len(),
        });
    }
    let run_id = match &decoded[0] {
        DomainEvent::RunStarted(started) => started.run_id,
        DomainEvent::RunForked(forked) => forked.run_id,
        _ => {
            return Err(ReplayError::NotARun {
                stream_id: first.stream_id.to_string(),
            });
        }
    };
    let settings = recorded_settings(events, &decoded);
    let mut replay = Replay {
        run_id,
        state: None,
        settings,
        steps: 0,
        compared: 0,
        fed: 0,
    };
    let mut start = 0;
    while start < events.len() {
        let request = &events[start].request_id;
        let end = start
            + events[start..]
                .iter()
                .take_while(|e| &e.request_id == request)
                .count();
        if let Some(divergence) = replay.step(&events[start..end], &decoded[start..end])? {
            return Ok(ReplayOutcome::Diverged(divergence));
        }
        start = end;
    }
    let status = replay
        .state
        .as_ref()
        .map_or("unknown", |s| s.status.as_str())
        .to_owned();
    Ok(ReplayOutcome::Matched(ReplaySummary {
        run_id,
        steps: replay.steps,
        events_compared: replay.compared,
        inputs_fed: replay.fed,
        status,
    }))
}

struct Replay {
    run_id: RunId,
    state: Option<RunState>,
    settings: Settings,
    steps: usize,
    compared: usize,
    fed: usize,
}

impl Replay {
    /// Replays one recorded step; `Some` at the first difference.
    fn step(
        &mut self,
        recorded: &[RecordedEvent],
        decoded: &[DomainEvent],
    ) -> Result<Option<Divergence>, ReplayError> {
        self.steps += 1;
        let head = &recorded[0];
        let mut env = ReplayEnv::for_step(head.recorded_at, decoded);
        let cause = Cause {
            request_id: head.request_id.clone(),
            correlation_id: head.correlation_id.clone(),
        };
        let Some(state) = self.state.as_mut() else {
            if let DomainEvent::RunForked(forked) = &decoded[0] {
                // The kept results are the fork's input; what follows is decided again.
                self.fed += 1;
                return Ok(
                    match decide::fork_run(forked.clone(), &mut env, &cause, &self.settings) {
                        Ok((state, replayed)) => {
                            self.state = Some(state);
                            self.compare(recorded, decoded, &replayed)
                        }
                        Err(e) => Some(self.refused(recorded, decoded, &e)),
                    },
                );
            }
            let DomainEvent::RunStarted(started) = &decoded[0] else {
                return Err(ReplayError::NotARun {
                    stream_id: head.stream_id.to_string(),
                });
            };
            let loaded = RunState::from_started(started).map_err(|source| ReplayError::State {
                stream_version: head.stream_version,
                source,
            })?;
            let start = StartRun {
                run_id: started.run_id,
                flowchart: loaded.flowchart,
                version: started.flowchart.version,
                inputs: started.inputs.clone(),
                parent: started.parent.clone(),
                actor: started.actor.clone(),
            };
            self.fed += 1;
            return Ok(
                match decide::start_run(start, &mut env, &cause, &self.settings) {
                    Ok((state, replayed)) => {
                        self.state = Some(state);
                        self.compare(recorded, decoded, &replayed)
                    }
                    Err(e) => Some(self.refused(recorded, decoded, &e)),
                },
            );
        };
        if !decoded.iter().any(is_decision) {
            for (r, event) in recorded.iter().zip(decoded) {
                state.evolve(event).map_err(|source| ReplayError::State {
                    stream_version: r.stream_version,
                    source,
                })?;
            }
            self.fed += recorded.len();
            return Ok(None);
        }
        let single = if let Some((action, control)) = recorded_control(decoded) {
            Some(Command::Control { action, control })
        } else if let DomainEvent::ChildRunStarted(e) = &decoded[0] {
            Some(Command::ChildStarted {
                node_run_id: e.node_run_id,
                child_run_id: e.child_run_id,
            })
        } else if is_settle_request(self.run_id, head.request_id.as_str()) {
            Some(Command::Settle)
        } else {
            None
        };
        if let Some(command) = single {
            self.fed += 1;
            let outcome = decide::decide(state, command, &mut env, &cause, &self.settings);
            return Ok(match outcome {
                Ok(replayed) => self.compare(recorded, decoded, &replayed),
                Err(e) => Some(self.refused(recorded, decoded, &e)),
            });
        }
        // A batch of executor reports: each report's events follow the previous one's.
        let mut at = 0;
        while at < recorded.len() {
            let Some(report) = recorded_report(&decoded[at..]) else {
                // The recording holds events no recorded input explains.
                return Ok(Some(self.divergence(
                    &recorded[at],
                    Some(&decoded[at]),
                    None,
                )));
            };
            self.fed += 1;
            let mut replayed = Vec::new();
            for command in report_commands(report) {
                let Some(state) = self.state.as_mut() else {
                    break;
                };
                match decide::decide(state, command, &mut env, &cause, &self.settings) {
                    Ok(more) => replayed.extend(more),
                    Err(e) => return Ok(Some(self.refused(&recorded[at..], &decoded[at..], &e))),
                }
            }
            if replayed.is_empty() {
                return Ok(Some(self.divergence(
                    &recorded[at],
                    Some(&decoded[at]),
                    None,
                )));
            }
            let n = replayed.len().min(recorded.len() - at);
            if let Some(divergence) =
                self.compare(&recorded[at..at + n], &decoded[at..at + n], &replayed)
            {
                return Ok(Some(divergence));
            }
            at += n;
        }
        Ok(None)
    }

    /// Compares a step's recorded events with the replayed ones, counting matches.
    fn compare(
        &mut self,
        recorded: &[RecordedEvent],
        decoded: &[DomainEvent],
        replayed: &[DomainEvent],
    ) -> Option<Divergence> {
        for i in 0..recorded.len().max(replayed.len()) {
            match (recorded.get(i), replayed.get(i)) {
                (Some(r), Some(p)) => {
                    let d = decoded.get(i);
                    if !d.is_some_and(|d| same_event(d, p)) {
                        return Some(self.divergence(r, d, Some(p)));
                    }
                    self.compared += 1;
                }
                (Some(r), None) => return Some(self.divergence(r, decoded.get(i), None)),
                (None, Some(p)) => {
                    let last = recorded.last()?;
                    let mut d = self.divergence(last, None, Some(p));
                    d.stream_version = last.stream_version + 1;
                    return Some(d);
                }
                (None, None) => break,
            }
        }
        None
    }

    fn divergence(
        &self,
        at: &RecordedEvent,
        recorded: Option<&DomainEvent>,
        replayed: Option<&DomainEvent>,
    ) -> Divergence {
        let recorded = recorded.map_or(Value::Null, view);
        let replayed = replayed.map_or(Value::Null, view);
        Divergence {
            run_id: self.run_id,
            stream_version: at.stream_version,
            request_id: at.request_id.to_string(),
            path: first_difference(&recorded, &replayed).unwrap_or_else(|| "$".into()),
            recorded,
            replayed,
            events_compared: self.compared,
        }
    }

    /// The decider refused an input the recording shows was applied.
    fn refused(
        &self,
        recorded: &[RecordedEvent],
        decoded: &[DomainEvent],
        error: &DecideError,
    ) -> Divergence {
        let mut d = self.divergence(&recorded[0], Some(&decoded[0]), None);
        d.replayed = json!({ "error": { "code": error.code(), "message": error.to_string() } });
        d.path = "$".into();
        d
    }
}

/// What is compared of an event: its type, schema version and payload, as the current catalog
/// writes them (a recorded event is decoded, and so upcast, first), in canonical form (the
/// ledger stores RFC 8785 bytes, where `2.0` and `2` are the same number).
fn view(event: &DomainEvent) -> Value {
    match NewEvent::from_domain(event) {
        Ok(e) => {
            let payload = canonical::to_canonical_vec(&e.payload)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or(e.payload);
            json!({ "event_type": e.event_type, "schema_version": e.schema_version, "payload": payload })
        }
        Err(e) => json!({ "event_type": event.event_type().as_str(), "error": e.to_string() }),
    }
}

/// Whether two events are the same decision. Struct equality settles most comparisons without
/// encoding anything; only unequal structs (which may still be equal numbers written
/// differently) are compared in canonical form.
fn same_event(recorded: &DomainEvent, replayed: &DomainEvent) -> bool {
    recorded == replayed || view(recorded) == view(replayed)
}

/// Whether the decider emits events of this type (on a run stream). Anything else there is an
/// input from elsewhere and is fed, not compared.
fn is_decision(event: &DomainEvent) -> bool {
    matches!(
        event,
        DomainEvent::RunStarted(_)
            | DomainEvent::RunForked(_)
            | DomainEvent::RunCompleted(_)
            | DomainEvent::RunFailed(_)
            | DomainEvent::RunPaused(_)
            | DomainEvent::RunResumed(_)
            | DomainEvent::RunCancelRequested(_)
            | DomainEvent::RunCanceled(_)
            | DomainEvent::ChildRunStarted(_)
            | DomainEvent::NodeScheduled(_)
            | DomainEvent::NodeDispatched(_)
            | DomainEvent::NodeStarted(_)
            | DomainEvent::NodeSucceeded(_)
            | DomainEvent::NodeFailed(_)
            | DomainEvent::NodeTimedOut(_)
            | DomainEvent::NodeRetryScheduled(_)
            | DomainEvent::NodeSkipped(_)
            | DomainEvent::NodeCanceled(_)
            | DomainEvent::NodeRewound(_)
            | DomainEvent::NodeResultIgnored(_)
            | DomainEvent::RoutingDecided(_)
            | DomainEvent::ToolCalled(_)
            | DomainEvent::ArtifactPersisted(_)
    )
}

/// The engine settings the run was recorded under, read from what they shaped: remote
/// dispatch shows as `NodeDispatched` events (its timeout is the first armed deadline minus its
/// step's time), and the in-process executor's name as `NodeStarted.executor`.
fn recorded_settings(recorded: &[RecordedEvent], decoded: &[DomainEvent]) -> Settings {
    let mut remote = None;
    let mut executor = None;
    for (r, event) in recorded.iter().zip(decoded) {
        match event {
            DomainEvent::NodeDispatched(e) => {
                let timeout = e.dispatch_deadline.map(|d| {
                    u64::try_from(
                        d.unix_micros().saturating_sub(r.recorded_at.unix_micros()) / 1000,
                    )
                    .unwrap_or(0)
                });
                match (&mut remote, timeout) {
                    (None, t)
                    | (
                        Some(RemoteDispatch {
                            dispatch_timeout_ms: 0,
                        }),
                        t @ Some(_),
                    ) => {
                        remote = Some(RemoteDispatch {
                            dispatch_timeout_ms: t.unwrap_or(0),
                        });
                    }
                    _ => {}
                }
            }
            DomainEvent::NodeStarted(e) if executor.is_none() && e.executor != SUBFLOW => {
                executor = Some(e.executor.clone());
            }
            _ => {}
        }
    }
    Settings {
        executor: executor.unwrap_or_else(|| INPROCESS.to_owned()),
        remote,
    }
}
