//! The HTTP API of the real `runledger serve --listen 127.0.0.1:<port>` process: store a
//! flowchart, start a run over HTTP, follow it to completion over SSE, read it back, export it
//! and verify the export with the binary.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runledger_ledger::testing::{TestLedger, test_database_url};
use serde_json::{Value, json};

/// A `runledger serve` process, killed when dropped (also when an assertion fails).
pub(super) struct Serve {
    child: Child,
    pub(super) base: String,
    log: std::path::PathBuf,
}

impl Serve {
    pub(super) fn start(schema: &str) -> Self {
        // A free port: bind, read it, let it go (the serve binds it right after).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("runledger-api-e2e-{schema}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args([
                "serve",
                "--listen",
                &listen,
                "--poll-ms",
                "50",
                "--scan-ms",
                "100",
                "--dispatch",
                "inprocess",
            ])
            .args([
                "--database-url",
                &test_database_url(),
                "--database-schema",
                schema,
            ])
            .env_remove("RUNLEDGER_DATABASE_URL")
            .env_remove("RUNLEDGER_DATABASE_SCHEMA")
            .env_remove("RUNLEDGER_API_TOKEN")
            .env_remove("RUNLEDGER_API_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start runledger serve");
        Self {
            child,
            base: format!("http://{listen}"),
            log,
        }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

pub(super) async fn json_of(response: reqwest::Response) -> (reqwest::StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_http_a_run_starts_and_is_followed_to_completion() {
    let ledger = TestLedger::new().await.unwrap();
    let serve = Serve::start(ledger.schema());
    // reqwest is built with rustls but no default provider (the executor gateway's choice).
    runledger_executor_gateway::providers::install_crypto_provider();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", serve.base);

    // Wait for the server.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(url("/healthz")).send().await {
            Ok(r) if r.status().is_success() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("the API did not come up:\n{}", serve.log()),
        }
    }
    assert!(
        serve.log().contains(&format!("API on {}", serve.base)),
        "{}",
        serve.log()
    );

    // Store the documented example and start it by name.
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/review-loop.yaml"),
    )
    .unwrap();
    let (status, created) = json_of(
        client
            .post(url("/v1/flowcharts"))
            .json(&json!({ "definition": yaml }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], json!(1));
    let (status, started) = json_of(
        client
            .post(url("/v1/runs"))
            .header("x-correlation-id", "e2e-api")
            .header("idempotency-key", "e2e-start")
            .json(&json!({ "flowchart": "review-loop", "inputs": { "topic": "owls" } }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let run = started["run_id"].as_str().unwrap().to_owned();

    // Follow it over SSE until the run ends.
    let mut events = client
        .get(url(&format!("/v1/events?run_id={run}")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut buffer = String::new();
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    'follow: loop {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the run did not end in time; saw {} events:\n{}",
                    seen.len(),
                    serve.log()
                )
            })
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            let ended = ["RunCompleted", "RunFailed", "RunCanceled"]
                .contains(&event["event_type"].as_str().unwrap());
            seen.push(event);
            if ended {
                break 'follow;
            }
        }
    }
    drop(events);
    assert_eq!(
        seen.last().unwrap()["event_type"],
        json!("RunCompleted"),
        "{seen:?}"
    );
    assert_eq!(seen[0]["event"], json!("flowchart:run:updated"));
    assert!(
        seen.iter().all(|e| e["correlation_id"] == json!("e2e-api")),
        "the request's correlation id on every event"
    );
    let versions: Vec<u64> = seen
        .iter()
        .map(|e| e["stream_version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "every event, in order"
    );

    // The same start again (same key, same body): the same run.
    let (status, again) = json_of(
        client
            .post(url("/v1/runs"))
            .header("idempotency-key", "e2e-start")
            .json(&json!({ "flowchart": "review-loop", "inputs": { "topic": "owls" } }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), again["run_id"].clone()),
        (200, json!(run)),
        "{again}"
    );

    // The projections have it, once they catch up with the last event.
    let head = versions.len();
    let (status, detail) = json_of(
        client
            .get(url(&format!("/v1/runs/{run}?min_version={head}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["run"]["status"], json!("completed"));
    assert_eq!(detail["run"]["flowchart_name"], json!("review-loop"));

    // The export verifies offline with the binary.
    let export = client
        .get(url(&format!("/v1/runs/{run}/export")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let file = std::env::temp_dir().join(format!("runledger-api-e2e-{run}.jsonl"));
    std::fs::write(&file, &export).unwrap();
    let verified = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(["verify", file.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        String::from_utf8_lossy(&verified.stdout)
            .starts_with(&format!("ok: {head} event(s) in 1 stream(s)"))
    );

    // Errors are envelopes here too.
    let (status, missing) = json_of(client.get(url("/v1/nowhere")).send().await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), missing["error"]["code"].clone()),
        (404, json!("route_not_found"))
    );
    drop(serve);
    ledger.drop_schema().await.unwrap();
}
