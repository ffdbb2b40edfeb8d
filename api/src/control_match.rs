//! Whether the events a request id wrote earlier on a run are the control asked for now.
//!
//! A control's `X-Request-ID` is its idempotency key: the engine answers a repeated id with the
//! events it wrote the first time (`deduplicated`). An id that wrote something else on the run
//! (another control, or the run's start) would make a cancel that cancels nothing look
//! applied, so the API compares what was recorded with what is asked: the control event's type
//! and fields, actor and reason. A difference is `409 request_id_reused`.

use runledger_contracts::canonical;
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::{Control, DomainEvent};
use runledger_orchestrator::ControlAction;
use serde_json::Value;

/// True when `events` (what the request id wrote before) hold the event `action` records with
/// `control`. An empty list (the engine found nothing to compare) counts as the same.
pub fn same_control(action: &ControlAction, control: &Control, events: &[RecordedEvent]) -> bool {
    if events.is_empty() {
        return true;
    }
    events
        .iter()
        .filter_map(|e| e.decode().ok())
        .any(|event| records(action, control, &event))
}

fn records(action: &ControlAction, control: &Control, event: &DomainEvent) -> bool {
    match (action, event) {
        (ControlAction::Pause, DomainEvent::RunPaused(e)) => e.control == *control,
        (ControlAction::Resume, DomainEvent::RunResumed(e)) => e.control == *control,
        (ControlAction::Cancel { force }, DomainEvent::RunCancelRequested(e)) => {
            e.control == *control && e.force == *force
        }
        (ControlAction::RetryNode { node }, DomainEvent::NodeRetryScheduled(e)) => {
            e.node_id == *node && e.control.as_ref() == Some(control)
        }
        (ControlAction::SkipNode { node, output }, DomainEvent::NodeSkipped(e)) => {
            e.node_id == *node && e.control == *control && same_json(&e.output, output)
        }
        (ControlAction::RewindNode { node }, DomainEvent::NodeRewound(e)) => {
            e.node_id == *node && e.control == *control
        }
        _ => false,
    }
}

/// Equal as canonical JSON (the ledger stores JSONB, which may spell numbers differently).
fn same_json(a: &Value, b: &Value) -> bool {
    match (
        canonical::to_canonical_vec(a),
        canonical::to_canonical_vec(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
