use std::time::Duration;

use reqwest::StatusCode;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::EventStore;
use serde_json::{Value, json};

use super::Backend;
use super::{GREET, TestServer};
use crate::live::event_name;

#[derive(Debug, Clone)]
struct Message {
    id: String,
    event: String,
    data: Value,
}

/// Reads SSE messages off a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(server: &TestServer, path: &str, last_event_id: Option<&str>) -> Self {
        let mut request = server.client.get(server.url(path));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped), or `None` after `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(Message {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(Duration::from_secs(20)).await {
                Some(m) => out.push(m),
                None => panic!("only {} of {n} messages arrived: {out:?}", out.len()),
            }
        }
        out
    }
}

async fn a_run_streams_in_ledger_order_with_names_ids_and_resumes_after_last_event_id(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let other = server.start_inline(GREET, json!({})).await;
    let run = server.start_inline(GREET, json!({ "name": "Ada" })).await;
    server.wait(other).await;
    server.wait(run).await;
    let ledger = server
        .state
        .store()
        .read_stream(&StreamId::for_run(run), 1, 1000)
        .await
        .unwrap();

    let mut reader = SseReader::open(&server, &format!("/v1/events?run_id={run}"), None).await;
    let all = reader.take(ledger.len()).await;
    assert!(
        reader.next(Duration::from_millis(400)).await.is_none(),
        "only this run's events"
    );
    for (m, e) in all.iter().zip(&ledger) {
        assert_eq!(m.event, event_name(&e.event_type));
        assert_eq!(m.data["event"], json!(m.event));
        assert_eq!(m.data["event_type"], json!(e.event_type));
        assert_eq!(m.data["event_id"], json!(e.event_id.to_string()));
        assert_eq!(m.data["sequence"], json!(e.position.global));
        assert_eq!(m.data["stream_version"], json!(e.stream_version));
        assert_eq!(m.data["request_id"], json!(e.request_id.as_str()));
        assert_eq!(m.data["correlation_id"], json!(e.correlation_id.as_str()));
        assert_eq!(m.data["run_id"], json!(run.to_string()));
        assert_eq!(m.id, format!("{}.{}", e.position.commit, e.position.global));
    }
    let names: Vec<&str> = all.iter().map(|m| m.event.as_str()).collect();
    for expected in [
        "flowchart:run:updated",
        "flowchart:node:updated",
        "flowchart:node_artifact:persisted",
        "flowchart:tool:called",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let artifact = all
        .iter()
        .find(|m| m.data["event_type"] == json!("ArtifactPersisted"))
        .unwrap();
    assert!(
        artifact.data["node_run_id"].is_string() && artifact.data["node_id"].is_string(),
        "{:?}",
        artifact.data
    );
    drop(reader);

    // Resume after the third message: exactly the rest, nothing twice.
    let mut resumed = SseReader::open(
        &server,
        &format!("/v1/events?run_id={run}"),
        Some(&all[2].id),
    )
    .await;
    let rest = resumed.take(all.len() - 3).await;
    assert_eq!(
        rest.iter().map(|m| &m.id).collect::<Vec<_>>(),
        all[3..].iter().map(|m| &m.id).collect::<Vec<_>>()
    );
    assert!(resumed.next(Duration::from_millis(400)).await.is_none());
    // `?after=` does the same for clients that cannot set headers.
    let mut after = SseReader::open(
        &server,
        &format!("/v1/events?run_id={run}&after={}", all[2].id),
        None,
    )
    .await;
    assert_eq!(after.take(1).await[0].id, all[3].id);

    // Errors are envelopes.
    let r = server
        .client
        .get(server.url("/v1/events"))
        .header("last-event-id", "nonsense")
        .send()
        .await
        .unwrap();
    super::Reply::read(r)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_header");
    server
        .get(&format!("/v1/events?run_id={}", RunId::new_v7()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "run_not_found");
    server
        .get("/v1/events?run_id=nope")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    server.finish().await;
}

async fn the_live_tail_delivers_new_events_as_they_commit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let earlier = server.start_inline(GREET, json!({})).await;
    server.wait(earlier).await;
    // Without run_id or a checkpoint the stream starts at the ledger's commit-safe end: events
    // of `earlier` still above the read horizon then (another transaction of the database
    // running) may come first; nothing else from before.
    let mut reader = SseReader::open(&server, "/v1/events", None).await;
    let created = server.create_flowchart(GREET).await;
    assert_eq!(created, 1);
    let run = server.start_inline(GREET, json!({})).await;
    server.wait(run).await;
    let head = server
        .state
        .store()
        .stream_head(&StreamId::for_run(run))
        .await
        .unwrap()
        .unwrap()
        .version as usize;
    let mut messages = Vec::new();
    while messages.len() < 1 + head {
        let m = reader
            .next(Duration::from_secs(20))
            .await
            .expect("every new event arrives");
        if m.data["run_id"] == json!(earlier.to_string()) {
            assert!(
                messages.is_empty(),
                "an earlier event after new ones: {m:?}"
            );
            continue;
        }
        messages.push(m);
    }
    assert_eq!(messages[0].event, "flowchart:definition:created");
    assert_eq!(messages[0].data["stream_id"], json!("flowchart-greet"));
    assert_eq!(messages[1].data["event_type"], json!("RunStarted"));
    assert!(
        messages[1..]
            .iter()
            .all(|m| m.data["run_id"] == json!(run.to_string()))
    );
    let versions: Vec<u64> = messages[1..]
        .iter()
        .map(|m| m.data["stream_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=head as u64).collect::<Vec<_>>());
    // Message ids are the read order: (commit, sequence) grows.
    let order: Vec<(u64, u64)> = messages
        .iter()
        .map(|m| {
            let (c, g) = m.id.split_once('.').unwrap();
            (c.parse().unwrap(), g.parse().unwrap())
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    server.finish().await;
}

/// With the poll set to a minute, only the ledger's NOTIFY can deliver in time.
async fn appends_wake_the_stream_through_listen_notify(backend: Backend) {
    let config = crate::ApiConfig {
        sse_poll: Duration::from_secs(60),
        ..crate::ApiConfig::default()
    };
    let server = TestServer::with_config(backend, config).await;
    let mut reader = SseReader::open(&server, "/v1/events", None).await;
    // Append until a message arrives: each append notifies, and one of them comes when no
    // other transaction of the database holds the read horizon back.
    let began = std::time::Instant::now();
    let mut version = 0;
    let first = loop {
        version += 1;
        let text = GREET.replace("Say hello.", &format!("version {version}"));
        assert_eq!(server.create_flowchart(&text).await, version);
        if let Some(m) = reader.next(Duration::from_millis(250)).await {
            break m;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no message in 20 s: NOTIFY did not wake the stream"
        );
    };
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "well before the 60 s poll"
    );
    assert_eq!(first.data["event_type"], json!("FlowchartVersionCreated"));
    server.finish().await;
}

/// Transaction ids 9 and 10 cross a power of ten: ordered as text (`"9" > "10"`), the tail's
/// start was the older transaction, and the stream replayed what came after it.
async fn the_live_tail_starts_at_the_end_when_transaction_ids_cross_a_power_of_ten(
    backend: Backend,
) {
    let server = TestServer::with_config(
        backend,
        crate::ApiConfig {
            sse_poll: Duration::from_millis(50),
            // The forged rows below are not events the projectors know.
            run_projections: false,
            ..crate::ApiConfig::default()
        },
    )
    .await;
    for (tx_id, stream) in [(9u64, "forged-old"), (10, "forged-new")] {
        sqlx::query(
            "INSERT INTO events (tx_id, event_id, stream_id, stream_version, event_type, schema_version,
                                 request_id, correlation_id, recorded_at, payload, prev_hash, hash)
             VALUES ($1::text::xid8, gen_random_uuid(), $2, 1, 'Forged', 1, 'r', 'c', now(), '{}',
                     decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex'))",
        )
        .bind(tx_id.to_string())
        .bind(stream)
        .execute(server.ledger.postgres().expect("PostgreSQL").store.pool())
        .await
        .unwrap();
    }
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(SseReader::open(&server, "/v1/events", None).await);
    }
    server.create_flowchart(GREET).await;
    // Every client of the shared follower gets the new event, and nothing from before it.
    for reader in &mut readers {
        let first = reader
            .next(Duration::from_secs(20))
            .await
            .expect("the new event arrives");
        assert_eq!(
            first.data["event_type"],
            json!("FlowchartVersionCreated"),
            "{first:?}"
        );
    }
    server.finish().await;
}

on_backends!(
    postgres: [appends_wake_the_stream_through_listen_notify, the_live_tail_starts_at_the_end_when_transaction_ids_cross_a_power_of_ten],
    both: [a_run_streams_in_ledger_order_with_names_ids_and_resumes_after_last_event_id, the_live_tail_delivers_new_events_as_they_commit],
);
