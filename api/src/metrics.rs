//! The process's metrics (crate `prometheus-client`), served at `/metrics` in the OpenMetrics
//! text format.
//!
//! Counters and histograms live in memory and are fed by what the process sees: each HTTP
//! request (the request-context middleware) and each ledger event the shared follower reads
//! (`hub.rs`), so a scrape costs no table scan. Gauges come from cheap queries at scrape time:
//! the ledger's last global position (the primary key's end) and the projectors' lag (an index
//! range over the events each is behind). Counters start at zero with the process, as
//! Prometheus expects of counters.
//!
//! Other parts of the process add their own metrics with [`Metrics::register`] (for instance
//! the executor gateway's counters), before or after the server starts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::time::Timestamp;
use runledger_executor_gateway::metrics::GatewayMetrics;

/// Upper bounds (seconds) of the dispatch-latency histogram buckets.
pub const DISPATCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the HTTP request duration buckets.
pub const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Scheduled node runs remembered until their dispatch; beyond this (dispatches that never
/// come, e.g. the in-process executor's) the oldest memory is dropped.
const PENDING_DISPATCH_LIMIT: usize = 100_000;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the process, and the registry that encodes them.
pub struct Metrics {
    registry: Mutex<Registry>,
    http_requests: Family<Labels, Counter>,
    http_duration: Family<Labels, Histogram>,
    events_observed: Family<Labels, Counter>,
    runs_started: Counter,
    runs_finished: Family<Labels, Counter>,
    node_runs_finished: Family<Labels, Counter>,
    dispatch_latency: Histogram,
    /// Node run id to when it was scheduled, until it is dispatched.
    scheduled: Mutex<HashMap<String, Timestamp>>,
    ledger_position: Gauge,
    lag_events: Family<Labels, Gauge>,
    lag_seconds: Family<Labels, FloatGauge>,
    projector_stopped: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::default()),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| {
                Histogram::new(HTTP_BUCKETS.iter().copied())
            }),
            events_observed: Family::default(),
            runs_started: Counter::default(),
            runs_finished: Family::default(),
            node_runs_finished: Family::default(),
            dispatch_latency: Histogram::new(DISPATCH_BUCKETS.iter().copied()),
            scheduled: Mutex::new(HashMap::new()),
            ledger_position: Gauge::default(),
            lag_events: Family::default(),
            lag_seconds: Family::default(),
            projector_stopped: Family::default(),
        };
        metrics.register(
            "runledger_http_requests",
            "HTTP requests answered, by method and status.",
            metrics.http_requests.clone(),
        );
        metrics.register(
            "runledger_http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head; SSE streams count until they start), by method.",
            metrics.http_duration.clone(),
        );
        metrics.register(
            "runledger_ledger_events_observed",
            "Ledger events this process read since it started, by event type.",
            metrics.events_observed.clone(),
        );
        metrics.register(
            "runledger_runs_started",
            "Runs started (RunStarted) since this process started.",
            metrics.runs_started.clone(),
        );
        metrics.register(
            "runledger_runs_finished",
            "Runs that ended since this process started, by status (completed, failed, canceled).",
            metrics.runs_finished.clone(),
        );
        metrics.register(
            "runledger_node_runs_finished",
            "Node runs that ended since this process started, by status.",
            metrics.node_runs_finished.clone(),
        );
        metrics.register(
            "runledger_dispatch_latency_seconds",
            "Time from NodeScheduled to NodeDispatched per node run (recorded_at of both).",
            metrics.dispatch_latency.clone(),
        );
        metrics.register(
            "runledger_ledger_global_position",
            "The ledger's last global position (events appended, plus positions of rolled-back appends).",
            metrics.ledger_position.clone(),
        );
        metrics.register(
            "runledger_projector_lag_events",
            "Ledger events a projector has not applied yet.",
            metrics.lag_events.clone(),
        );
        metrics.register(
            "runledger_projector_lag_seconds",
            "Age of the oldest event a projector has not applied yet.",
            metrics.lag_seconds.clone(),
        );
        metrics.register(
            "runledger_projector_stopped",
            "1 when a projector is stopped at an event it cannot apply.",
            metrics.projector_stopped.clone(),
        );
        if let Ok(mut registry) = metrics.registry.lock() {
            registry.register_collector(Box::new(GatewayCounters));
        }
        metrics
    }

    /// Adds a metric of another part of the process to `/metrics`. `name` is without the
    /// `_total` suffix counters get when encoded.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    /// One answered HTTP request.
    pub fn observe_request(&self, method: &str, status: u16, seconds: f64) {
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        self.http_requests
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_duration
            .get_or_create(&vec![("method", method.to_owned())])
            .observe(seconds);
    }

    /// One ledger event, read by the shared follower in commit-safe order.
    pub fn observe_event(&self, event: &RecordedEvent) {
        self.events_observed
            .get_or_create(&vec![("event_type", event.event_type.clone())])
            .inc();
        let node_run = || {
            event
                .payload
                .get("node_run_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let finished = |family: &Family<Labels, Counter>, status: &str| {
            family
                .get_or_create(&vec![("status", status.to_owned())])
                .inc();
        };
        match event.event_type.as_str() {
            "RunStarted" => {
                self.runs_started.inc();
            }
            "RunCompleted" => finished(&self.runs_finished, "completed"),
            "RunFailed" => finished(&self.runs_finished, "failed"),
            "RunCanceled" => finished(&self.runs_finished, "canceled"),
            "NodeSucceeded" => finished(&self.node_runs_finished, "succeeded"),
            "NodeFailed" => finished(&self.node_runs_finished, "failed"),
            "NodeTimedOut" => finished(&self.node_runs_finished, "timed_out"),
            "NodeCanceled" => finished(&self.node_runs_finished, "canceled"),
            "NodeSkipped" => finished(&self.node_runs_finished, "skipped"),
            "NodeScheduled" => {
                if let (Some(id), Ok(mut scheduled)) = (node_run(), self.scheduled.lock()) {
                    if scheduled.len() >= PENDING_DISPATCH_LIMIT {
                        scheduled.clear();
                    }
                    scheduled.insert(id, event.recorded_at);
                }
            }
            "NodeDispatched" => {
                let at = node_run().and_then(|id| self.scheduled.lock().ok()?.remove(&id));
                if let Some(at) = at {
                    let micros = event.recorded_at.unix_micros() - at.unix_micros();
                    self.dispatch_latency.observe(micros.max(0) as f64 / 1e6);
                }
            }
            _ => {}
        }
        // A node run that ended without a dispatch (in-process, canceled) is forgotten.
        if matches!(
            event.event_type.as_str(),
            "NodeSucceeded" | "NodeFailed" | "NodeTimedOut" | "NodeCanceled" | "NodeSkipped"
        ) && let (Some(id), Ok(mut scheduled)) = (node_run(), self.scheduled.lock())
        {
            scheduled.remove(&id);
        }
    }

    /// Sets the gauges from the scrape's queries.
    pub fn set_ledger(
        &self,
        last_global_position: u64,
        lag: &[runledger_projections::ProjectorLag],
    ) {
        self.ledger_position
            .set(i64::try_from(last_global_position).unwrap_or(i64::MAX));
        for l in lag {
            let labels = vec![("projector", l.name.clone())];
            self.lag_events
                .get_or_create(&labels)
                .set(i64::try_from(l.events_behind).unwrap_or(i64::MAX));
            self.lag_seconds
                .get_or_create(&labels)
                .set(l.seconds_behind);
            self.projector_stopped
                .get_or_create(&labels)
                .set(i64::from(l.error.is_some()));
        }
    }

    /// The OpenMetrics text of every registered metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        let registry = self.registry.lock().map_err(|_| std::fmt::Error)?;
        encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// The executor gateway's in-process counters (terminated and dead-lettered messages, NATS
/// connection losses; docs/gateway.md), read from its global [`GatewayMetrics`] at each scrape.
#[derive(Debug)]
struct GatewayCounters;

impl Collector for GatewayCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = GatewayMetrics::global().samples();
        let mut rest = samples.as_slice();
        while let Some(first) = rest.first() {
            let same = rest.iter().take_while(|s| s.name == first.name).count();
            let (family, tail) = rest.split_at(same);
            rest = tail;
            // OpenMetrics adds `_total` to a counter's name itself.
            let name = first.name.strip_suffix("_total").unwrap_or(first.name);
            let mut metric =
                encoder.encode_descriptor(name, first.help, None, MetricType::Counter)?;
            match family {
                [single] if single.labels.is_empty() => {
                    ConstCounter::new(single.value).encode(metric)?
                }
                _ => {
                    for sample in family {
                        ConstCounter::new(sample.value)
                            .encode(metric.encode_family(&sample.labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
