//! Optional OpenTelemetry export: with `RUNLEDGER_OTLP_ENDPOINT` set (e.g.
//! `http://127.0.0.1:4318`, an OpenTelemetry Collector's OTLP/HTTP port), the spans of the run,
//! node run, append, dispatch and HTTP request paths go there as OTLP/HTTP with the JSON
//! encoding, batched on the exporter's own thread. Plain HTTP only: put the collector beside
//! the process (a sidecar) rather than across a network.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable naming the collector.
pub const ENDPOINT_ENV: &str = "RUNLEDGER_OTLP_ENDPOINT";

/// Flushes the spans still queued when dropped (the end of `main`).
pub struct Exporting(SdkTracerProvider);

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            errln!("runledger: warning: could not send the last spans to {ENDPOINT_ENV}: {e}");
        }
    }
}

/// The layer that exports spans, when the endpoint is set. Its filter is its own: spans of
/// runledger's crates down to `debug` (`append`, `dispatch`), whatever `RUNLEDGER_LOG` prints.
/// Must be called outside the async runtime: the exporter's blocking HTTP client owns one.
pub fn layer<S>() -> Option<(impl Layer<S>, Exporting)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let endpoint = std::env::var(ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.trim().is_empty())?;
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // The HTTP client is reqwest with rustls and no provider of its own (as for the LLM
    // providers): without the process-wide one, building it panics.
    runledger_executor_gateway::providers::install_crypto_provider();
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(traces)
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            errln!("runledger: warning: {ENDPOINT_ENV}: cannot export spans: {e}");
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("runledger").build())
        .build();
    let tracer = provider.tracer("runledger");
    let filter = Targets::new()
        .with_target("runledger_orchestrator", LevelFilter::DEBUG)
        .with_target("runledger_executor_gateway", LevelFilter::DEBUG)
        .with_target("runledger_api", LevelFilter::DEBUG)
        .with_target("runledger_ledger", LevelFilter::DEBUG)
        .with_default(LevelFilter::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter);
    Some((layer, Exporting(provider)))
}
