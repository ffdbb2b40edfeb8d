//! What became of an executor report the engine was handed, told back to the queue that carried
//! it. Why it is typed: a queue must tell apart a report that is in the ledger (ack), one that
//! will be refused on every delivery (terminate at once, say why, count it) and one that may
//! succeed later (redeliver with a delay). With a bare "recorded or not" a permanent refusal
//! looked like a transient failure and was redelivered until `max_deliver`.

use tokio::sync::oneshot;

use crate::decide::DecideError;

/// The engine's answer about one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Its events are in the ledger now.
    Recorded,
    /// It changed nothing: already recorded (a redelivery), or moot for the node run as it is.
    Duplicate,
    /// Refused for good: every delivery of the same report would be refused the same way.
    Refused(Refusal),
    /// Not recorded this time (contention, the ledger unavailable, the engine stopping);
    /// another delivery may succeed.
    Transient,
}

/// Why a report is refused for good: a stable code and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `unknown_run`, `unknown_node_run`, `invalid_input`, or a permanent append error's code.
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The refusal a decider error means for a report, or `None` when the error is the
    /// engine's own trouble (a state it no longer trusts), which must not blame the report.
    pub fn of_decide(error: &DecideError) -> Option<Self> {
        match error {
            DecideError::UnknownNodeRun(_)
            | DecideError::InvalidInput { .. }
            | DecideError::NotApplicable { .. } => Some(Self::new(error.code(), error.to_string())),
            DecideError::State(_) => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Where the engine answers about one report. Dropped without an answer (the driver stopped,
/// the process is going down), the waiting side sees [`DeliveryOutcome::Transient`].
#[derive(Debug)]
pub struct Receipt(oneshot::Sender<DeliveryOutcome>);

/// The waiting side of a [`Receipt`].
#[derive(Debug)]
pub struct ReceiptWait(oneshot::Receiver<DeliveryOutcome>);

impl Receipt {
    pub fn channel() -> (Receipt, ReceiptWait) {
        let (tx, rx) = oneshot::channel();
        (Receipt(tx), ReceiptWait(rx))
    }

    pub fn settle(self, outcome: DeliveryOutcome) {
        // Nobody waiting any more (the queue gave up on it) is fine: it redelivers.
        let _ = self.0.send(outcome);
    }
}

impl ReceiptWait {
    /// The engine's answer; `Transient` when the receipt was dropped unanswered.
    pub async fn outcome(self) -> DeliveryOutcome {
        self.0.await.unwrap_or(DeliveryOutcome::Transient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_receipt_reads_as_transient() {
        let (receipt, wait) = Receipt::channel();
        drop(receipt);
        assert_eq!(wait.outcome().await, DeliveryOutcome::Transient);
        let (receipt, wait) = Receipt::channel();
        receipt.settle(DeliveryOutcome::Refused(Refusal::new("invalid_input", "x")));
        assert_eq!(
            wait.outcome().await,
            DeliveryOutcome::Refused(Refusal::new("invalid_input", "x"))
        );
    }

    #[test]
    fn a_state_error_blames_the_engine_not_the_report() {
        let state = DecideError::State(crate::state::StateError {
            event: "NodeStarted",
            message: "x".into(),
        });
        assert_eq!(Refusal::of_decide(&state), None);
        let unknown = DecideError::UnknownNodeRun(runledger_contracts::ids::NodeRunId::new_v7());
        assert_eq!(
            Refusal::of_decide(&unknown).map(|r| r.code),
            Some("unknown_node_run")
        );
    }
}
