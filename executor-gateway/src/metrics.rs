//! Counters of what the gateway threw away or lost, kept in process so `/metrics` can expose
//! them without a query. Why they exist: a message the gateway terminates is gone for good
//! (JetStream will not redeliver it), so an operator must be able to see how many and why.
//!
//! The read API ([`GatewayMetrics::samples`]) is plain data (name, labels, value), so either a
//! hand-written text exposition or a `prometheus-client` registry can publish it.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a message was terminated (`AckKind::Term`) instead of being recorded or run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not JSON of the expected shape.
    Undecodable,
    /// A `wire_version` this build does not speak.
    UnknownWireVersion,
    /// A report for a run the ledger does not hold.
    UnknownRun,
    /// A report, not recorded, for a node run its run does not have.
    UnknownNodeRun,
    /// A report the engine refused for good for another reason (invalid content, a tool call
    /// of another node run, an append the ledger refuses): the log line says which.
    Refused,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Undecodable,
        DropReason::UnknownWireVersion,
        DropReason::UnknownRun,
        DropReason::UnknownNodeRun,
        DropReason::Refused,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Undecodable => "undecodable",
            DropReason::UnknownWireVersion => "unknown_wire_version",
            DropReason::UnknownRun => "unknown_run",
            DropReason::UnknownNodeRun => "unknown_node_run",
            DropReason::Refused => "refused",
        }
    }

    fn index(self) -> usize {
        match self {
            DropReason::Undecodable => 0,
            DropReason::UnknownWireVersion => 1,
            DropReason::UnknownRun => 2,
            DropReason::UnknownNodeRun => 3,
            DropReason::Refused => 4,
        }
    }
}

/// The consumers whose messages the counters are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// Result intake (the engine side): executor reports.
    Intake,
    /// An executor: dispatches.
    Executor,
}

impl Consumer {
    pub fn as_str(self) -> &'static str {
        match self {
            Consumer::Intake => "intake",
            Consumer::Executor => "executor",
        }
    }

    fn index(self) -> usize {
        match self {
            Consumer::Intake => 0,
            Consumer::Executor => 1,
        }
    }
}

/// One exposed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Prometheus metric name (a counter, ending in `_total`).
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, &'static str)>,
    pub value: u64,
}

/// The counters of one process (or one test).
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    terminated: [[AtomicU64; 5]; 2],
    max_deliveries: [AtomicU64; 2],
    nats_disconnects: AtomicU64,
    nats_reconnects: AtomicU64,
}

impl GatewayMetrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The process's counters: what the binary's intake, executors and NATS connections count,
    /// and what `/metrics` shows.
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<GatewayMetrics>> = OnceLock::new();
        Arc::clone(GLOBAL.get_or_init(GatewayMetrics::new))
    }

    pub fn count_terminated(&self, consumer: Consumer, reason: DropReason) {
        self.terminated[consumer.index()][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_max_deliveries(&self, consumer: Consumer) {
        self.max_deliveries[consumer.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_disconnect(&self) {
        self.nats_disconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_reconnect(&self) {
        self.nats_reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages of `consumer` terminated for `reason` so far.
    pub fn terminated(&self, consumer: Consumer, reason: DropReason) -> u64 {
        self.terminated[consumer.index()][reason.index()].load(Ordering::Relaxed)
    }

    /// Max-deliveries advisories seen for `consumer`'s messages so far.
    pub fn max_deliveries(&self, consumer: Consumer) -> u64 {
        self.max_deliveries[consumer.index()].load(Ordering::Relaxed)
    }

    pub fn nats_disconnects(&self) -> u64 {
        self.nats_disconnects.load(Ordering::Relaxed)
    }

    pub fn nats_reconnects(&self) -> u64 {
        self.nats_reconnects.load(Ordering::Relaxed)
    }

    /// Every counter, zeros included (so a dashboard sees the series before the first event).
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for consumer in [Consumer::Intake, Consumer::Executor] {
            for reason in DropReason::ALL {
                if consumer == Consumer::Executor
                    && matches!(
                        reason,
                        DropReason::UnknownRun | DropReason::UnknownNodeRun | DropReason::Refused
                    )
                {
                    // Executors do not look runs up: no such series.
                    continue;
                }
                out.push(Sample {
                    name: "runledger_gateway_messages_terminated_total",
                    help: "NATS messages terminated (never redelivered) because they can never be recorded or run.",
                    labels: vec![("consumer", consumer.as_str()), ("reason", reason.as_str())],
                    value: self.terminated(consumer, reason),
                });
            }
        }
        for consumer in [Consumer::Intake, Consumer::Executor] {
            out.push(Sample {
                name: "runledger_gateway_max_deliveries_total",
                help: "Messages JetStream stopped redelivering after max_deliver attempts (max-deliveries advisories).",
                labels: vec![("consumer", consumer.as_str())],
                value: self.max_deliveries(consumer),
            });
        }
        out.push(Sample {
            name: "runledger_nats_disconnects_total",
            help: "Times this process lost its NATS connection.",
            labels: Vec::new(),
            value: self.nats_disconnects(),
        });
        out.push(Sample {
            name: "runledger_nats_reconnects_total",
            help: "Times this process got its NATS connection back after losing it.",
            labels: Vec::new(),
            value: self.nats_reconnects(),
        });
        out
    }
}
