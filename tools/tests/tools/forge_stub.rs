//! A stub forge with the GitHub REST shape of pull requests, on 127.0.0.1, for the tests of
//! `git_pr_create` (this crate's, and the binary's end-to-end test, which includes this file):
//! `GET` and `POST /api/repos/{owner}/{name}/pulls`. It checks the bearer token, keeps the pull
//! requests it opened, counts every request, and answers a chosen error status when told to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

/// What the stub saw and holds.
#[derive(Debug, Default)]
pub struct Seen {
    /// Bodies of the `POST`s, in order (also those answered with an error).
    pub posts: Vec<Value>,
    /// How many `GET`s of the list of pull requests.
    pub lists: usize,
    /// The `Authorization` header of every request.
    pub authorizations: Vec<String>,
    /// The pull requests opened (the list answers the open ones).
    pub opened: Vec<Value>,
}

/// How the stub answers a `POST`.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 201 with the new pull request.
    Open,
    /// This status with this body.
    Status(u16, Value),
    /// Nothing until this long has passed.
    Stall(Duration),
}

#[derive(Clone)]
struct Shared {
    token: String,
    seen: Arc<Mutex<Seen>>,
    answer: Arc<Mutex<Answer>>,
    base_url: String,
}

/// A running stub forge; it stops with the runtime that started it.
pub struct StubForge {
    /// `http://127.0.0.1:PORT/api`: the `api_base` of a git policy.
    pub api_base: String,
    pub seen: Arc<Mutex<Seen>>,
    answer: Arc<Mutex<Answer>>,
}

impl StubForge {
    /// Starts the stub on a free port; it accepts `Bearer <token>` only.
    pub async fn start(token: &str) -> StubForge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let answer = Arc::new(Mutex::new(Answer::Open));
        let shared = Shared {
            token: token.to_owned(),
            seen: Arc::clone(&seen),
            answer: Arc::clone(&answer),
            base_url: base_url.clone(),
        };
        let app = Router::new()
            .route("/api/repos/{owner}/{name}/pulls", get(list).post(create))
            .with_state(shared);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StubForge {
            api_base: format!("{base_url}/api"),
            seen,
            answer,
        }
    }

    /// How the next `POST`s are answered.
    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn posts(&self) -> usize {
        self.seen.lock().unwrap().posts.len()
    }
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let ok = auth == format!("Bearer {}", shared.token);
    shared.seen.lock().unwrap().authorizations.push(auth);
    ok
}

async fn list(State(shared): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if !authorized(&shared, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "message": "Bad credentials" })),
        );
    }
    let mut seen = shared.seen.lock().unwrap();
    seen.lists += 1;
    (StatusCode::OK, Json(Value::Array(seen.opened.clone())))
}

async fn create(
    State(shared): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let ok = authorized(&shared, &headers);
    shared.seen.lock().unwrap().posts.push(body.clone());
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "message": "Bad credentials" })),
        );
    }
    let answer = shared.answer.lock().unwrap().clone();
    match answer {
        Answer::Status(status, body) => {
            return (StatusCode::from_u16(status).unwrap(), Json(body));
        }
        Answer::Stall(time) => tokio::time::sleep(time).await,
        Answer::Open => {}
    }
    let mut seen = shared.seen.lock().unwrap();
    let number = seen.opened.len() + 1;
    let pr = json!({
        "number": number,
        "html_url": format!("{}/{owner}/{name}/pull/{number}", shared.base_url),
        "url": format!("{}/api/repos/{owner}/{name}/pulls/{number}", shared.base_url),
        "state": "open",
        "title": body["title"],
        "body": body["body"],
        "head": { "ref": body["head"], "label": format!("{owner}:{}", body["head"].as_str().unwrap_or("")) },
        "base": { "ref": body["base"] },
    });
    seen.opened.push(pr.clone());
    (StatusCode::CREATED, Json(pr))
}
