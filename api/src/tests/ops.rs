use reqwest::StatusCode;
use serde_json::json;

use super::Backend;
use super::{GREET, TestServer};
use crate::ApiConfig;

async fn health_readiness_and_metrics(backend: Backend) {
    let server = TestServer::start(backend).await;
    let health = server.get("/healthz").await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    assert_eq!(ready.body["database"]["reachable"], json!(true));
    assert_eq!(
        ready.body["nats"]["reachable"],
        json!(true),
        "NATS runs on 127.0.0.1:4222 for the tests"
    );

    let run = server.start_inline(GREET, json!({})).await;
    server.wait(run).await;
    server.projected(run).await;
    // The shared follower counts events on its own schedule, apart from the projections:
    // wait (bounded) until it has seen the run end.
    let mut text = String::new();
    for _ in 0..200 {
        let r = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text; version=1.0.0")
        );
        text = r.text().await.unwrap();
        if text.contains("runledger_runs_finished_total{status=\"completed\"}") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("`{line_start}` missing in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Counted in process by the shared follower, which started with the server.
    assert_eq!(value("runledger_runs_started_total "), 1.0);
    // The gateway's counters, read from the process's GatewayMetrics (zero series included).
    use runledger_executor_gateway::metrics::{Consumer, DropReason, GatewayMetrics};
    let terminated = GatewayMetrics::global().terminated(Consumer::Intake, DropReason::UnknownRun);
    assert!(
        value(
            "runledger_gateway_messages_terminated_total{consumer=\"intake\",reason=\"unknown_run\"}"
        ) >= terminated as f64
    );
    value("runledger_gateway_max_deliveries_total{consumer=\"executor\"}");
    value("runledger_nats_disconnects_total ");
    assert!(text.contains("# TYPE runledger_gateway_messages_terminated counter"));
    assert_eq!(
        value("runledger_runs_finished_total{status=\"completed\"}"),
        1.0
    );
    assert_eq!(
        value("runledger_node_runs_finished_total{status=\"succeeded\"}"),
        3.0
    );
    assert_eq!(
        value("runledger_ledger_events_observed_total{event_type=\"RunStarted\"}"),
        1.0
    );
    let last = server.state.store().last_global_position().await.unwrap();
    assert_eq!(value("runledger_ledger_global_position "), last as f64);
    assert_eq!(
        value("runledger_projector_lag_events{projector=\"run_detail\"}"),
        0.0
    );
    assert!(
        text.contains("# TYPE runledger_dispatch_latency_seconds histogram"),
        "{text}"
    );
    let inf = value("runledger_dispatch_latency_seconds_bucket{le=\"+Inf\"}");
    assert_eq!(inf, value("runledger_dispatch_latency_seconds_count"));
    assert!(
        value("runledger_http_requests_total{method=\"POST\",status=\"201\"}") >= 1.0,
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Every sample line belongs to a declared family.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count")
            .trim_end_matches("_total");
        assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
    }
    // Another component's counter joins the same registry.
    let external = prometheus_client::metrics::counter::Counter::<u64>::default();
    server.state.metrics().register(
        "runledger_test_external",
        "A counter registered from outside.",
        external.clone(),
    );
    external.inc_by(7);
    let text = server.get("/metrics").await.text;
    assert!(text.contains("runledger_test_external_total 7"), "{text}");
    server.finish().await;
}

async fn readiness_fails_when_nats_is_unreachable(backend: Backend) {
    let server = TestServer::with_config(
        backend,
        ApiConfig {
            nats_url: "nats://127.0.0.1:1".into(),
            ..ApiConfig::default()
        },
    )
    .await;
    let r = server.get("/readyz").await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(
        r.body["error"]["details"]["database"]["reachable"],
        json!(true)
    );
    assert_eq!(
        r.body["error"]["details"]["nats"]["reachable"],
        json!(false)
    );
    assert!(
        r.body["error"]["details"]["nats"]["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1")
    );
    server.finish().await;
}

on_backends!(
    postgres: [readiness_fails_when_nats_is_unreachable],
    both: [health_readiness_and_metrics],
);
