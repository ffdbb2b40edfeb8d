//! A small stand-in for the Kubernetes API server on 127.0.0.1: Jobs (create, get, delete,
//! list) and Pods (list) in namespaces, answering the way the API server does (201 with the
//! stored object, 409 `AlreadyExists`, 404 `NotFound`, 422 `Invalid`, label selectors, paged
//! lists). It records every request so tests can check what the launcher sent.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: &'static str,
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: Option<Value>,
}

#[derive(Default)]
pub struct StubState {
    /// Jobs by (namespace, name).
    pub jobs: BTreeMap<(String, String), Value>,
    pub pods: Vec<Value>,
    pub requests: Vec<Recorded>,
    /// When set, creates are answered with this status code and Status reason.
    pub refuse_create: Option<(u16, &'static str)>,
    next_uid: u64,
}

pub struct ApiStub {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<StubState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<StubState>>;

impl ApiStub {
    pub async fn start() -> ApiStub {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs",
                get(list_jobs).post(create_job),
            )
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                get(get_job).delete(delete_job),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .fallback(|| async { status(404, "NotFound", "the stub does not serve this path") })
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ApiStub { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> ::kube::Client {
        crate::kube::client_for(crate::kube::cluster_config(&self.url()).unwrap()).unwrap()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_to(&self, method: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    pub fn job(&self, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .jobs
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Stores a Job as if the API server had it, returning its uid.
    pub fn put_job(&self, ns: &str, mut job: Value) -> String {
        let mut s = self.state.lock().unwrap();
        let uid = s.fresh_uid();
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        job["metadata"]["uid"] = json!(uid);
        job["metadata"]["namespace"] = json!(ns);
        s.jobs.insert((ns.to_string(), name), job);
        uid
    }

    /// Sets `status` of a stored Job (as the Job controller would).
    pub fn set_job_status(&self, ns: &str, name: &str, status: Value) {
        let mut s = self.state.lock().unwrap();
        s.jobs.get_mut(&(ns.to_string(), name.to_string())).unwrap()["status"] = status;
    }

    pub fn add_pod(&self, pod: Value) {
        self.state.lock().unwrap().pods.push(pod);
    }
}

impl StubState {
    fn fresh_uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012}", self.next_uid)
    }

    fn record(
        &mut self,
        method: &'static str,
        path: String,
        query: &HashMap<String, String>,
        body: Option<Value>,
    ) {
        self.requests.push(Recorded {
            method,
            path,
            query: query.clone(),
            body,
        });
    }
}

/// A `Status` object the way the API server sends errors.
pub fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

async fn create_job(
    State(state): State<Shared>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let job: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return status(400, "BadRequest", &format!("body is not JSON: {e}")),
    };
    s.record(
        "POST",
        format!("/apis/batch/v1/namespaces/{ns}/jobs"),
        &query,
        Some(job.clone()),
    );
    if let Some((code, reason)) = s.refuse_create {
        return status(code, reason, "refused by the test");
    }
    if let Err(problem) = admit(&ns, &job) {
        return status(422, "Invalid", &format!("Job.batch is invalid: {problem}"));
    }
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if s.jobs.contains_key(&(ns.clone(), name.clone())) {
        return status(
            409,
            "AlreadyExists",
            &format!("jobs.batch \"{name}\" already exists"),
        );
    }
    let uid = s.fresh_uid();
    let mut stored = job;
    stored["metadata"]["uid"] = json!(uid);
    stored["metadata"]["namespace"] = json!(ns);
    stored["metadata"]["resourceVersion"] = json!(s.requests.len().to_string());
    stored["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    stored["status"] = json!({});
    s.jobs.insert((ns, name), stored.clone());
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

/// What the API server's validation would reject in the parts the launcher sets.
fn admit(ns: &str, job: &Value) -> Result<(), String> {
    if job["apiVersion"] != "batch/v1" || job["kind"] != "Job" {
        return Err("apiVersion/kind must be batch/v1 Job".into());
    }
    let name = job["metadata"]["name"]
        .as_str()
        .ok_or("metadata.name: Required value")?;
    if !crate::kube::settings::is_dns_label(name) {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": a DNS-1123 label of at most 63 characters"
        ));
    }
    if let Some(job_ns) = job["metadata"]["namespace"].as_str()
        && job_ns != ns
    {
        return Err("metadata.namespace: does not match the request namespace".into());
    }
    let pod = &job["spec"]["template"]["spec"];
    match pod["restartPolicy"].as_str() {
        Some("Never") | Some("OnFailure") => {}
        _ => return Err("spec.template.spec.restartPolicy: Unsupported value".into()),
    }
    if pod["containers"].as_array().is_none_or(|c| c.is_empty()) {
        return Err("spec.template.spec.containers: Required value".into());
    }
    Ok(())
}

async fn get_job(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    s.record(
        "GET",
        format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
        &query,
        None,
    );
    match s.jobs.get(&(ns, name.clone())) {
        Some(job) => axum::Json(job.clone()).into_response(),
        None => status(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
    }
}

async fn delete_job(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let options: Option<Value> = serde_json::from_slice(&body).ok();
    s.record(
        "DELETE",
        format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
        &query,
        options.clone(),
    );
    let key = (ns, name.clone());
    let Some(job) = s.jobs.get(&key).cloned() else {
        return status(404, "NotFound", &format!("jobs.batch \"{name}\" not found"));
    };
    if let Some(uid) = options
        .as_ref()
        .and_then(|o| o["preconditions"]["uid"].as_str())
        && job["metadata"]["uid"] != uid
    {
        return status(
            409,
            "Conflict",
            "Precondition failed: UID in precondition does not match",
        );
    }
    s.jobs.remove(&key);
    axum::Json(job).into_response()
}

async fn list_jobs(
    State(state): State<Shared>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    s.record(
        "GET",
        format!("/apis/batch/v1/namespaces/{ns}/jobs"),
        &query,
        None,
    );
    let items: Vec<Value> = s
        .jobs
        .iter()
        .filter(|((n, _), _)| *n == ns)
        .map(|(_, j)| j.clone())
        .collect();
    list_response("JobList", "batch/v1", items, &query)
}

async fn list_pods(
    State(state): State<Shared>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    s.record("GET", format!("/api/v1/namespaces/{ns}/pods"), &query, None);
    let items: Vec<Value> = s
        .pods
        .iter()
        .filter(|p| p["metadata"]["namespace"] == ns.as_str())
        .cloned()
        .collect();
    list_response("PodList", "v1", items, &query)
}

/// Filters by `labelSelector` (equality terms) and pages by `limit` / `continue` like the API
/// server (the continue token here is the offset).
fn list_response(
    kind: &str,
    api_version: &str,
    items: Vec<Value>,
    query: &HashMap<String, String>,
) -> Response {
    let selector: Vec<(&str, &str)> = query
        .get("labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|term| term.split_once('='))
                .collect()
        })
        .unwrap_or_default();
    let matching: Vec<Value> = items
        .into_iter()
        .filter(|item| {
            selector
                .iter()
                .all(|(k, v)| item["metadata"]["labels"][*k] == *v)
        })
        .collect();
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = matching.iter().skip(offset).take(limit).cloned().collect();
    let next = offset + page.len();
    let mut metadata = json!({ "resourceVersion": "1" });
    if next < matching.len() {
        metadata["continue"] = json!(next.to_string());
    }
    axum::Json(
        json!({ "kind": kind, "apiVersion": api_version, "metadata": metadata, "items": page }),
    )
    .into_response()
}
