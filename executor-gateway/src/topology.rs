//! The JetStream topology the gateway and its executors share: a work-queue stream of
//! dispatches (one subject per executor class) and a work-queue stream of executor reports,
//! each read through durable pull consumers with explicit acks.
//!
//! A namespace keeps deployments (and tests) that share one NATS server apart: it prefixes
//! every stream, subject and consumer name.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use runledger_contracts::ids::RunId;

use crate::GatewayError;

/// The executor classes: hosted providers over HTTP, and OpenAI-compatible local servers.
pub const CLASSES: [&str; 2] = ["frontier", "vllm"];

/// Deliveries of one dispatch before JetStream gives up on it. A dispatch is redelivered only
/// when its executor stopped acking and heartbeating (a crash, an OOM kill): one that kills
/// every executor that takes it must not go round forever. The engine's dispatch or execution
/// deadline then fails the node run, and its retry policy applies.
pub const DISPATCH_MAX_DELIVER: i64 = 10;

/// Deliveries of one report before JetStream gives up on it. Intake redelivers a report it
/// could not record with delays growing from 1 s to 30 s, so this is about 20 minutes of a
/// ledger that keeps failing.
pub const REPORT_MAX_DELIVER: i64 = 50;

/// How long an executor's own consumer (work routed to it) outlives the executor's last pull.
pub const ROUTED_CONSUMER_IDLE: Duration = Duration::from_secs(600);

/// `at_` and 24 hex digits of blake3 of an executor id: a subject token and a consumer name
/// part whatever characters the id holds.
fn executor_token(executor_id: &str) -> String {
    let hex = blake3::hash(executor_id.as_bytes()).to_hex();
    format!("at_{}", &hex[..24])
}

/// Where dispatches and reports live, and how long JetStream waits on an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Empty for the default deployment; `[a-z0-9_]` otherwise.
    pub namespace: String,
    /// How long a taken message may go without an ack or a progress heartbeat before
    /// JetStream hands it to another executor.
    pub ack_wait: Duration,
    /// Messages published twice with one `Nats-Msg-Id` within this window are stored once.
    pub duplicate_window: Duration,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl Topology {
    /// A topology in `namespace` (validated: lowercase letters, digits and `_`).
    pub fn in_namespace(namespace: &str) -> Result<Self, GatewayError> {
        let ok = namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok || namespace.len() > 64 {
            return Err(GatewayError::Config(format!(
                "--nats-namespace `{namespace}`: use at most 64 lowercase letters, digits and `_`"
            )));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            ..Self::default()
        })
    }

    fn subject_prefix(&self) -> String {
        if self.namespace.is_empty() {
            "runledger".to_owned()
        } else {
            format!("runledger.{}", self.namespace)
        }
    }

    fn name_prefix(&self) -> String {
        if self.namespace.is_empty() {
            "RUNLEDGER".to_owned()
        } else {
            format!("RUNLEDGER_{}", self.namespace.to_ascii_uppercase())
        }
    }

    pub fn dispatch_stream(&self) -> String {
        format!("{}_DISPATCH", self.name_prefix())
    }

    pub fn results_stream(&self) -> String {
        format!("{}_RESULTS", self.name_prefix())
    }

    /// `runledger.dispatch.<class>`.
    pub fn dispatch_subject(&self, class: &str) -> String {
        format!("{}.dispatch.{class}", self.subject_prefix())
    }

    /// `runledger.results.<run id>`.
    pub fn results_subject(&self, run_id: RunId) -> String {
        format!("{}.results.{run_id}", self.subject_prefix())
    }

    /// `runledger.dispatch.at_<24 hex>`: work routed to one executor (a run's workspace holder),
    /// named by a blake3 digest of its `--executor-id` (ids may hold any character; subject
    /// tokens may not). Inside the dispatch stream's `runledger.dispatch.*`, apart from every
    /// class subject.
    pub fn executor_subject(&self, executor_id: &str) -> String {
        format!(
            "{}.dispatch.{}",
            self.subject_prefix(),
            executor_token(executor_id)
        )
    }

    /// The durable consumer of [`Self::executor_subject`], pulled by that executor alone.
    pub fn routed_consumer(&self, executor_id: &str) -> String {
        format!(
            "{}_EXECUTOR_{}",
            self.name_prefix(),
            executor_token(executor_id).to_ascii_uppercase()
        )
    }

    /// `runledger.calls`: executors ask the engines (a queue group) which tool calls of a
    /// node run the ledger records (core NATS request/reply).
    pub fn calls_subject(&self) -> String {
        format!("{}.calls", self.subject_prefix())
    }

    /// `runledger.run_ended`: engines tell every executor that a run ended (core NATS).
    pub fn run_ended_subject(&self) -> String {
        format!("{}.run_ended", self.subject_prefix())
    }

    /// The durable consumer every executor of a class pulls from.
    pub fn executor_consumer(&self, class: &str) -> String {
        format!(
            "{}_EXECUTOR_{}",
            self.name_prefix(),
            class.to_ascii_uppercase()
        )
    }

    /// The durable consumer result intake pulls from.
    pub fn intake_consumer(&self) -> String {
        format!("{}_INTAKE", self.name_prefix())
    }

    /// Creates the streams if they are missing (idempotent; an existing stream is used as is).
    pub async fn ensure_streams(
        &self,
        js: &jetstream::Context,
    ) -> Result<(stream::Stream, stream::Stream), GatewayError> {
        let dispatch = js
            .get_or_create_stream(stream::Config {
                name: self.dispatch_stream(),
                subjects: vec![format!("{}.dispatch.*", self.subject_prefix())],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: self.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| GatewayError::nats("create the dispatch stream", e))?;
        let results = js
            .get_or_create_stream(stream::Config {
                name: self.results_stream(),
                subjects: vec![format!("{}.results.*", self.subject_prefix())],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: self.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| GatewayError::nats("create the results stream", e))?;
        Ok((dispatch, results))
    }

    /// The durable pull consumer of one executor class (created if missing).
    pub async fn executor_consumer_of(
        &self,
        js: &jetstream::Context,
        class: &str,
    ) -> Result<consumer::PullConsumer, GatewayError> {
        let (dispatch, _) = self.ensure_streams(js).await?;
        let name = self.executor_consumer(class);
        let consumer = dispatch
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.dispatch_subject(class),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: DISPATCH_MAX_DELIVER,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| GatewayError::nats("create the executor consumer", e))?;
        bound_deliveries(&dispatch, consumer, DISPATCH_MAX_DELIVER).await
    }

    /// The durable pull consumer of the work routed to `executor_id` (created if missing). The
    /// server removes it after [`ROUTED_CONSUMER_IDLE`] without pulls (an executor gone for
    /// good); the executor creates it again when it comes back under the same id.
    pub async fn routed_consumer_of(
        &self,
        js: &jetstream::Context,
        executor_id: &str,
    ) -> Result<consumer::PullConsumer, GatewayError> {
        let (dispatch, _) = self.ensure_streams(js).await?;
        let name = self.routed_consumer(executor_id);
        let consumer = dispatch
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.executor_subject(executor_id),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: DISPATCH_MAX_DELIVER,
                    inactive_threshold: ROUTED_CONSUMER_IDLE,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| GatewayError::nats("create the executor's own consumer", e))?;
        bound_deliveries(&dispatch, consumer, DISPATCH_MAX_DELIVER).await
    }

    /// Whether an executor pulls work routed to `executor_id`: its consumer exists (an
    /// executor of this build that ran within [`ROUTED_CONSUMER_IDLE`]).
    pub async fn routed_consumer_exists(
        &self,
        js: &jetstream::Context,
        executor_id: &str,
    ) -> Result<bool, GatewayError> {
        let dispatch = js
            .get_stream(self.dispatch_stream())
            .await
            .map_err(|e| GatewayError::nats("get the dispatch stream", e))?;
        match dispatch
            .consumer_info(self.routed_consumer(executor_id))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.to_string().contains("not found") => Ok(false),
            Err(e) => Err(GatewayError::nats("look up an executor's consumer", e)),
        }
    }

    /// The durable pull consumer of result intake (created if missing).
    pub async fn intake_consumer_of(
        &self,
        js: &jetstream::Context,
    ) -> Result<consumer::PullConsumer, GatewayError> {
        let (_, results) = self.ensure_streams(js).await?;
        let name = self.intake_consumer();
        let consumer = results
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: 10_000,
                    max_deliver: REPORT_MAX_DELIVER,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| GatewayError::nats("create the intake consumer", e))?;
        bound_deliveries(&results, consumer, REPORT_MAX_DELIVER).await
    }

    /// Creates both streams and every consumer, as the gateway does on start.
    pub async fn ensure_all(&self, js: &jetstream::Context) -> Result<(), GatewayError> {
        self.intake_consumer_of(js).await?;
        for class in CLASSES {
            self.executor_consumer_of(js, class).await?;
        }
        Ok(())
    }

    /// Deletes this namespace's streams (tests and `--reset` only).
    pub async fn delete_streams(&self, js: &jetstream::Context) -> Result<(), GatewayError> {
        for name in [self.dispatch_stream(), self.results_stream()] {
            match js.delete_stream(&name).await {
                Ok(_) => {}
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => return Err(GatewayError::nats("delete a stream", e)),
            }
        }
        Ok(())
    }
}

/// Gives a consumer created before `max_deliver` existed (unbounded) its bound; the rest of its
/// configuration (`ack_wait` included) stays as it is.
async fn bound_deliveries(
    stream: &stream::Stream,
    consumer: consumer::PullConsumer,
    max_deliver: i64,
) -> Result<consumer::PullConsumer, GatewayError> {
    let current = &consumer.cached_info().config;
    if current.max_deliver == max_deliver {
        return Ok(consumer);
    }
    let mut config = current.clone();
    config.max_deliver = max_deliver;
    let name = config.durable_name.clone().unwrap_or_default();
    stream
        .update_consumer(config)
        .await
        .map_err(|e| GatewayError::nats("set max_deliver on a consumer", e))?;
    stream
        .get_consumer(&name)
        .await
        .map_err(|e| GatewayError::nats("get a consumer", e))
}
