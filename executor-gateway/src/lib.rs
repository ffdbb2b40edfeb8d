//! The executor gateway: how node work leaves the engine and comes back.
//!
//! - [`topology`]: the JetStream streams, subjects and durable consumers.
//! - [`messages`]: what travels over NATS (dispatches and executor reports).
//! - [`dispatcher`]: the engine's `NodeExecutor` for remote work: publishes each dispatch right
//!   after the commit that scheduled it.
//! - [`outbox`]: republishes dispatches a crash left unpublished (horizon-safe ledger reader
//!   with a checkpoint).
//! - [`intake`]: pulls executor reports and hands them to the engine, acking each message only
//!   after its append commits.
//! - [`worker`]: the executor runtime behind `runledger executor`.
//! - [`kube`]: runs executors as Kubernetes Jobs; [`jobs`] connects it to dispatch (launch on
//!   the first dispatch, `infra_error` for node runs of a failed Job).
//! - [`providers`]: LLM providers over HTTP (OpenAI-compatible, Anthropic, Gemini);
//!   [`models`]: the model registry they are built from.
//!
//! See docs/gateway.md for the protocol and its guarantees.

pub mod dispatcher;
pub mod intake;
pub mod jobs;
pub mod messages;
pub mod outbox;
pub mod models;
pub mod providers;
pub mod topology;
pub mod worker;

#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod fuzz_tests;

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
        GatewayError::Nats { what, message: e.to_string() }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Config(_) => "invalid_config",
            GatewayError::Nats { .. } => "nats_unavailable",
        }
    }
}

/// Connects to NATS; the client reconnects on its own after the server comes back.
pub async fn connect(url: &str) -> Result<async_nats::jetstream::Context, GatewayError> {
    let client = async_nats::ConnectOptions::new()
        .name("runledger")
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| GatewayError::nats("connect", e))?;
    Ok(async_nats::jetstream::new(client))
}

pub mod kube;

/// Reads the `INFO` line a NATS server sends first on a plain TCP connect: the cheapest proof
/// that a server is there (health checks, `runledger status`), without a client connection.
/// Returns the INFO object (`version`, `jetstream`, ...) or a one-line reason naming the address.
pub async fn server_info(url: &str, timeout: std::time::Duration) -> Result<serde_json::Value, String> {
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
            .ok_or_else(|| format!("{address} did not answer like a NATS server")),
        Ok(Err(e)) => Err(format!("{address}: {e}")),
        Err(_) => Err(format!("{address}: timed out")),
    }
}
