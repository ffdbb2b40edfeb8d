//! HTTP tests: the real router on 127.0.0.1:0, a real engine (in-process pool, `scripted`
//! model) on a `TestBackend` (a schema of real PostgreSQL or a SQLite file), and a real HTTP
//! client. Every test takes the [`Backend`]; `on_backends!` instantiates it for PostgreSQL
//! and, for the tests whose behaviour the backend can change (runs, controls, reads, live
//! events, errors, arrays, auth, hardening, metrics), for SQLite too.

/// Instantiates each test function (`async fn NAME(backend: Backend)`) as a `#[tokio::test]`:
/// `postgres: [..]` on PostgreSQL only, `both: [..]` once per backend (`postgres::NAME`,
/// `sqlite::NAME`).
macro_rules! on_backends {
    (postgres: [$($pg:ident),* $(,)?], both: [$($both:ident),* $(,)?] $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $pg() {
                    super::$pg(super::Backend::Postgres).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $both() {
                    super::$both(super::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $both() {
                    super::$both(super::Backend::Sqlite).await
                }
            )*
        }
    };
}

mod arrays;
mod auth;
mod control;
mod errors;
mod flowcharts;
mod fuzz;
mod hardening;
mod live;
mod models;
mod openapi;
mod ops;
mod rag;
mod read;
mod runs;
mod studio;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::testing::{Backend, TestBackend};
use runledger_orchestrator::engine::{Engine, EngineConfig};
use runledger_orchestrator::executor::{InProcessPool, Providers};
use runledger_orchestrator::provider::{Script, ScriptedProvider};
use serde_json::{Value, json};

use crate::{ApiConfig, ApiState, LedgerFlowcharts};

/// A flowchart that greets and ends.
pub const GREET: &str = r#"name: greet
description: Say hello.
nodes:
  - { id: start, type: start }
  - id: hello
    type: task
    model: scripted
    prompt: "Hello {{ inputs.name }}"
    scripted:
      - output: { text: "hi" }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: hello }
  - { id: c2, from: hello, to: done }
"#;

/// The task takes `delay_ms` before it answers: time to pause or cancel the run.
pub fn slow(name: &str, delay_ms: u64) -> String {
    format!(
        "name: {name}\nnodes:\n  - {{ id: start, type: start }}\n  - id: wait\n    type: task\n    model: scripted\n    scripted:\n      - {{ delay_ms: {delay_ms}, output: {{ text: slow }} }}\n  - {{ id: after, type: task, model: scripted, scripted: [{{ output: {{ text: after }} }}] }}\n  - {{ id: done, type: end }}\nconnectors:\n  - {{ id: c1, from: start, to: wait }}\n  - {{ id: c2, from: wait, to: after }}\n  - {{ id: c3, from: after, to: done }}\n"
    )
}

/// The task fails (not retryable) the first time and succeeds the second: the run fails, and a
/// node retry or skip reopens it.
pub const FLAKY: &str = r#"name: flaky
nodes:
  - { id: start, type: start }
  - id: work
    type: task
    model: scripted
    scripted:
      - error: { code: boom, message: "first try fails", retryable: false }
      - output: { text: "second try" }
  - { id: done, type: end }
connectors:
  - { id: c1, from: start, to: work }
  - { id: c2, from: work, to: done }
"#;

/// A chain of `n` task nodes.
pub fn chain(name: &str, n: usize) -> String {
    let mut text = format!("name: {name}\nnodes:\n  - {{ id: start, type: start }}\n");
    for i in 0..n {
        text.push_str(&format!("  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ ok: true }} }}] }}\n"));
    }
    text.push_str("  - { id: done, type: end }\nconnectors:\n");
    let mut prev = "start".to_owned();
    for i in 0..n {
        text.push_str(&format!("  - {{ id: c{i}, from: {prev}, to: t{i} }}\n"));
        prev = format!("t{i}");
    }
    text.push_str(&format!("  - {{ id: cend, from: {prev}, to: done }}\n"));
    text
}

/// The router serving on 127.0.0.1:0 over a fresh schema.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub ledger: TestBackend,
    pub state: ApiState,
    server: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// The default configuration, with a short live-event poll.
    pub async fn start(backend: Backend) -> Self {
        Self::with_config(
            backend,
            ApiConfig {
                sse_poll: Duration::from_millis(50),
                ..ApiConfig::default()
            },
        )
        .await
    }

    pub async fn with_config(backend: Backend, config: ApiConfig) -> Self {
        let ledger = TestBackend::new(backend).await.expect("test ledger");
        let store = ledger.second_store().await.expect("second store");
        let registry = Arc::new(LedgerFlowcharts::on_store(store.share()));
        let providers = Providers::scripted(ScriptedProvider::with_fixture(Script::new()));
        let executor = InProcessPool::new(providers, 64);
        let engine_config = EngineConfig {
            poll_interval: Duration::from_millis(50),
            ..EngineConfig::default()
        };
        let engine = Engine::new(store, Arc::new(executor), registry.clone(), engine_config);
        let state = ApiState::new(engine, registry, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let served = state.clone();
        let server = tokio::spawn(async move {
            let _ = crate::serve(listener, served).await;
        });
        // reqwest is built with rustls but no default provider (the executor gateway's choice).
        runledger_executor_gateway::providers::install_crypto_provider();
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            ledger,
            state,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; returns status, headers and the body as JSON (`Null` when empty or not
    /// JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        Reply::read(response).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// Stores a flowchart; returns its version.
    pub async fn create_flowchart(&self, yaml: &str) -> u64 {
        let r = self
            .post("/v1/flowcharts", json!({ "definition": yaml }))
            .await;
        assert!(r.status.is_success(), "{r:?}");
        r.body["version"].as_u64().expect("version")
    }

    /// Starts a run of an inline flowchart; returns its id.
    pub async fn start_inline(&self, yaml: &str, inputs: Value) -> RunId {
        let r = self
            .post("/v1/runs", json!({ "definition": yaml, "inputs": inputs }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.body["run_id"]
            .as_str()
            .expect("run id")
            .parse()
            .expect("uuid")
    }

    /// Waits until the run has ended (through the engine) and returns its status.
    pub async fn wait(&self, run: RunId) -> String {
        let summary = tokio::time::timeout(Duration::from_secs(30), self.state.engine().wait(run))
            .await
            .expect("run ends within 30 s")
            .expect("wait");
        summary.status.as_str().to_owned()
    }

    /// Waits until the run_detail projection shows the run at the ledger's head.
    pub async fn projected(&self, run: RunId) -> Value {
        let head = self
            .state
            .store()
            .stream_head(&StreamId::for_run(run))
            .await
            .unwrap()
            .unwrap()
            .version;
        let r = self
            .get(&format!("/v1/runs/{run}?min_version={head}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body
    }

    /// Waits until every projector has applied every event of the ledger.
    pub async fn caught_up(&self) {
        for _ in 0..400 {
            let lag = runledger_projections::lag(self.state.db())
                .await
                .expect("lag");
            if lag.iter().all(|l| l.events_behind == 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the projectors did not catch up within 10 s");
    }

    /// Every event in the test's schema (all streams).
    pub async fn event_count(&self) -> i64 {
        self.ledger.count_events().await.unwrap()
    }

    pub async fn finish(self) {
        self.server.abort();
        let _ = self.server.await;
        // Nothing of this server may hold locks while the schema is dropped: close its pool
        // (waits for connections in use, e.g. an aborted projector's transaction).
        self.state.store().close().await;
        self.ledger.finish().await.expect("remove the test ledger");
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error envelope with this status and code, naming the response's ids.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["ok"], json!(false), "{self:?}");
        assert_eq!(self.body["error"]["code"], json!(code), "{self:?}");
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
        assert_eq!(
            self.body["error"]["request_id"].as_str(),
            self.header("x-request-id"),
            "{self:?}"
        );
        assert_eq!(
            self.body["correlation_id"].as_str(),
            self.header("x-correlation-id"),
            "{self:?}"
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{self:?}"
        );
    }
}
