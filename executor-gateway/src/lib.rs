//! The executor gateway: how node work leaves the engine and comes back.
//!
//! - [`topology`]: the JetStream streams, subjects and durable consumers.
//! - [`messages`]: what travels over NATS (dispatches and executor reports).
//! - [`dispatcher`]: the engine's `NodeExecutor` for remote work: publishes each dispatch right
//!   after the commit that scheduled it.
//!   A crash between that commit and the publish is repaired by the run's next owner, which
//!   re-dispatches unpublished work when it takes the run over (docs/engine.md).
//! - [`intake`]: pulls executor reports and hands them to the engine, acking each message only
//!   after its append commits.
//! - [`worker`]: the executor runtime behind `runledger executor`.
//! - [`calls`]: the tool calls the ledger records for a node run, asked by an executor that
//!   runs a redelivered dispatch and answered by any engine; [`run_ended`]: engines tell
//!   executors that a run ended (in-flight work stops, workspaces are released).
//! - [`kube`]: runs executors as Kubernetes Jobs; [`jobs`] connects it to dispatch (launch on
//!   the first dispatch, `infra_error` for node runs of a failed Job).
//! - [`providers`]: LLM providers over HTTP (OpenAI-compatible, Anthropic, Gemini);
//!   [`models`]: the model registry they are built from; [`live_models`]: the registry
//!   followed while a process runs.
//! - [`metrics`]: counters of terminated messages and NATS connection losses for `/metrics`;
//!   [`dead_letter`]: what happens to a message JetStream stopped redelivering.
//!
//! See docs/gateway.md for the protocol and its guarantees.

pub mod calls;
pub mod dead_letter;
pub mod dispatcher;
pub mod intake;
pub mod jobs;
pub mod live_models;
pub mod messages;
pub mod metrics;
pub mod models;
pub mod providers;
pub mod retry_log;
pub mod run_ended;
pub mod topology;
pub mod worker;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod gateway_tests;

/// A gateway failure worth one line.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(String),
    #[error("NATS: cannot {what}: {message}")]
    Nats { what: &'static str, message: String },
}

impl GatewayError {
    pub fn nats(what: &'static str, e: impl std::fmt::Display) -> Self {
        GatewayError::Nats {
            what,
            message: e.to_string(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Config(_) => "invalid_config",
            GatewayError::Nats { .. } => "nats_unavailable",
        }
    }
}

/// Connects to NATS; the client reconnects on its own after the server comes back. Losing the
/// connection and getting it back are each logged once at warn (and counted in the process's
/// [`metrics::GatewayMetrics`]): an outage must show in the log at the default level.
pub async fn connect(url: &str) -> Result<async_nats::jetstream::Context, GatewayError> {
    connect_counting(url, metrics::GatewayMetrics::global()).await
}

/// [`connect`], counting connection losses in `metrics`.
pub async fn connect_counting(
    url: &str,
    metrics: std::sync::Arc<metrics::GatewayMetrics>,
) -> Result<async_nats::jetstream::Context, GatewayError> {
    let shown = redact_nats_url(url);
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = async_nats::ConnectOptions::new()
        .name("runledger")
        .connection_timeout(std::time::Duration::from_secs(5))
        .event_callback(move |event| {
            let (down, metrics, shown) = (
                std::sync::Arc::clone(&down),
                std::sync::Arc::clone(&metrics),
                shown.clone(),
            );
            async move { connection_event(&event, &down, &metrics, &shown) }
        })
        .connect(url)
        .await
        .map_err(|e| GatewayError::nats("connect", e))?;
    Ok(async_nats::jetstream::new(client))
}

/// Logs a loss once (the client reports `Disconnected` again on failed reconnects) and the
/// recovery once.
fn connection_event(
    event: &async_nats::Event,
    down: &std::sync::atomic::AtomicBool,
    metrics: &metrics::GatewayMetrics,
    url: &str,
) {
    use std::sync::atomic::Ordering;
    match event {
        async_nats::Event::Disconnected => {
            if !down.swap(true, Ordering::SeqCst) {
                metrics.count_disconnect();
                tracing::warn!(nats_url = %url, "NATS connection lost; reconnecting in the background");
            }
        }
        async_nats::Event::Connected => {
            if down.swap(false, Ordering::SeqCst) {
                metrics.count_reconnect();
                tracing::warn!(nats_url = %url, "NATS connection restored");
            }
        }
        async_nats::Event::ServerError(e) => {
            tracing::warn!(nats_url = %url, error = %e, "NATS server error")
        }
        async_nats::Event::SlowConsumer(_) | async_nats::Event::LameDuckMode => {
            tracing::warn!(nats_url = %url, %event, "NATS connection");
        }
        _ => tracing::debug!(nats_url = %url, %event, "NATS connection event"),
    }
}

/// A NATS URL (or comma-separated list of them) fit to print: a password becomes `***`, and
/// so does a token or a user given alone (`nats://TOKEN@host`), which NATS treats as a token.
pub fn redact_nats_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let Some(at) = one.rfind('@') else {
                return one.to_owned();
            };
            let start = one.find("://").map_or(0, |scheme| scheme + 3);
            if at < start {
                return one.to_owned();
            }
            let userinfo = &one[start..at];
            let shown = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => "***".to_owned(),
            };
            format!("{}{shown}{}", &one[..start], &one[at..])
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub mod kube;

/// Reads the `INFO` line a NATS server sends first on a plain TCP connect: the cheapest proof
/// that a server is there (health checks, `runledger status`), without a client connection.
/// Returns the INFO object (`version`, `jetstream`, ...) or a one-line reason naming the address.
pub async fn server_info(
    url: &str,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, ProbeError> {
    use tokio::io::AsyncBufReadExt;
    let address = url
        .split(',')
        .next()
        .unwrap_or(url)
        .trim_start_matches("nats://")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_owned();
    let probe = async {
        let stream = tokio::net::TcpStream::connect(&address).await?;
        let mut reader = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(line)) => line
            .strip_prefix("INFO ")
            .and_then(|info| serde_json::from_str(info.trim()).ok())
            .ok_or(ProbeError::NotNats { address }),
        Ok(Err(source)) => Err(ProbeError::Io { address, source }),
        Err(_) => Err(ProbeError::Timeout { address }),
    }
}

/// Why [`server_info`] found no NATS server; each names the address it tried.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{address}: {source}")]
    Io {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address}: timed out")]
    Timeout { address: String },
    #[error("{address} did not answer like a NATS server")]
    NotNats { address: String },
}
