//! Crash safety on a SQLite file through the binary: `runledger dev` (or a `run --wait`) killed
//! with SIGKILL mid-run leaves the run in the file's run index; the next engine on the file
//! drives it to its end, every node run ending once. One engine per file (its lock) keeps two
//! processes from driving a run at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{TempDir, stderr, stdout};

/// Four scripted nodes in a row, each answering after `delay_ms`.
fn chain_flow(name: &str, delay_ms: u64) -> String {
    let mut text = format!("name: {name}\nnodes:\n  - {{ id: start, type: start }}\n");
    for i in 1..=4 {
        text.push_str(&format!(
            "  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ n: {i} }}, delay_ms: {delay_ms} }}] }}\n"
        ));
    }
    text.push_str("  - { id: end, type: end }\nconnectors:\n  - { id: c0, from: start, to: t1 }\n");
    for i in 1..4 {
        text.push_str(&format!("  - {{ id: c{i}, from: t{i}, to: t{} }}\n", i + 1));
    }
    text.push_str("  - { id: c4, from: t4, to: end }\n");
    text
}

/// The binary on the file `ledger.db` of `dir`, with no PostgreSQL settings in its environment.
fn on_file(dir: &Path, args: &[&str]) -> Command {
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.arg("--database-url")
        .arg(url)
        .args(args)
        .current_dir(dir)
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env_remove("RUNLEDGER_DATABASE_SCHEMA")
        .env_remove("RUNLEDGER_NATS_URL")
        .env_remove("RUNLEDGER_LOG");
    cmd
}

fn output(dir: &Path, args: &[&str]) -> Output {
    on_file(dir, args)
        .output()
        .expect("run the runledger binary")
}

/// A background process whose stderr goes to a file; killed (SIGKILL) if still running when
/// dropped, so a failed assertion leaves nothing behind.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(dir: &Path, args: &[&str], log: &str) -> Self {
        let log = dir.join(log);
        let child = on_file(dir, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start runledger");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, patience: Duration) -> Option<i32> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The run's events, from the canonical export of the file.
fn run_events(dir: &Path, run_id: &str) -> Vec<Value> {
    let out = output(dir, &["export", "--run", run_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .skip(1)
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|e| e.get("event_type").is_some())
        .collect()
}

fn count(events: &[Value], event_type: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event_type"] == event_type)
        .count()
}

fn wait_for(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every node of the chain ran once: one node run per node, one terminal event and one
/// artifact per node run, one `RunCompleted`.
fn assert_ran_once(events: &[Value]) {
    assert_eq!(count(events, "RunCompleted"), 1);
    let mut scheduled: HashMap<String, usize> = HashMap::new();
    let mut ended: HashMap<String, usize> = HashMap::new();
    let mut artifacts: HashMap<String, usize> = HashMap::new();
    for event in events {
        let node_run = event["payload"]["node_run_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match event["event_type"].as_str().unwrap_or_default() {
            "NodeScheduled" => {
                let node = event["payload"]["node_id"].as_str().unwrap().to_owned();
                *scheduled.entry(node).or_default() += 1;
            }
            "NodeSucceeded" | "NodeFailed" | "NodeTimedOut" | "NodeSkipped" | "NodeCanceled" => {
                *ended.entry(node_run).or_default() += 1;
            }
            "ArtifactPersisted" => *artifacts.entry(node_run).or_default() += 1,
            _ => {}
        }
    }
    for node in ["t1", "t2", "t3", "t4"] {
        assert_eq!(scheduled.get(node), Some(&1), "{node}: {scheduled:?}");
    }
    assert_eq!(count(events, "NodeSucceeded"), ended.len());
    assert!(ended.values().all(|n| *n == 1), "{ended:?}");
    assert_eq!(ended.len(), artifacts.len());
    assert!(artifacts.values().all(|n| *n == 1), "{artifacts:?}");
}

fn status_of(dir: &Path, run_id: &str) -> String {
    let out = output(dir, &["runs", "show", run_id, "--json"]);
    serde_json::from_str::<Value>(stdout(&out).trim())
        .map(|v| v["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// `run` without `--wait` records the run; `dev` drives it; SIGKILL mid-run; the next `dev`
/// resumes it, refusing a second engine meanwhile; Ctrl-C stops `dev` cleanly.
#[test]
fn a_run_of_a_killed_dev_is_resumed_by_the_next_dev_with_no_node_run_twice() {
    let dir = TempDir::new();
    std::fs::write(dir.path("chain.yaml"), chain_flow("chain", 600)).unwrap();
    let recorded = output(&dir.0, &["run", "chain.yaml", "--json"]);
    assert!(recorded.status.success(), "{}", stderr(&recorded));
    assert!(
        stderr(&recorded).contains("no `runledger dev` runs on"),
        "{}",
        stderr(&recorded)
    );
    let started: Value = serde_json::from_str(stdout(&recorded).trim()).unwrap();
    let run_id = started["run_id"].as_str().unwrap().to_owned();

    let mut first = Process::spawn(&dir.0, &["dev", "--scan-ms", "100"], "dev1.log");
    wait_for(
        "t2 to start under the first dev",
        Duration::from_secs(30),
        || count(&run_events(&dir.0, &run_id), "NodeSucceeded") >= 2,
    );
    // The file has one engine: a second `dev` is refused while the first lives.
    let second = output(&dir.0, &["dev"]);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("[ledger_in_use]"),
        "{}",
        stderr(&second)
    );
    first.sigkill();
    let at_kill = run_events(&dir.0, &run_id);
    assert_eq!(
        count(&at_kill, "RunCompleted"),
        0,
        "the run was killed mid-way"
    );

    let mut again = Process::spawn(&dir.0, &["dev", "--scan-ms", "100"], "dev2.log");
    wait_for(
        "the resumed run to complete",
        Duration::from_secs(30),
        || status_of(&dir.0, &run_id) == "completed",
    );
    assert!(
        again.log().contains("resumed 1 unfinished run(s)"),
        "{}",
        again.log()
    );
    let events = run_events(&dir.0, &run_id);
    assert_ran_once(&events);
    assert!(
        events.len() > at_kill.len() && events[..at_kill.len()] == at_kill[..],
        "the resumed run continued the killed one's stream"
    );
    // A run recorded while dev runs is taken within a scan.
    let other = output(&dir.0, &["run", "chain.yaml", "--json"]);
    assert!(other.status.success(), "{}", stderr(&other));
    assert!(
        !stderr(&other).contains("no `runledger dev` runs on"),
        "{}",
        stderr(&other)
    );
    let other: Value = serde_json::from_str(stdout(&other).trim()).unwrap();
    let other_id = other["run_id"].as_str().unwrap().to_owned();
    wait_for(
        "the run recorded meanwhile",
        Duration::from_secs(30),
        || status_of(&dir.0, &other_id) == "completed",
    );
    again.signal("-INT");
    assert_eq!(
        again.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        again.log()
    );
    assert!(
        again.log().contains("runledger dev: stopped"),
        "{}",
        again.log()
    );
    assert_ran_once(&run_events(&dir.0, &other_id));
}

/// A `run --wait` killed mid-run: the next `run --wait` on the file (of another flowchart)
/// drives the left run too, and that run ends once.
#[test]
fn a_run_of_a_killed_run_wait_is_resumed_by_the_next_run_wait() {
    let dir = TempDir::new();
    std::fs::write(dir.path("chain.yaml"), chain_flow("chain", 600)).unwrap();
    // Long enough for the left run to finish while this one runs.
    std::fs::write(dir.path("long.yaml"), chain_flow("long", 1500)).unwrap();
    let mut killed = Process::spawn(
        &dir.0,
        &["run", "chain.yaml", "--wait", "--json"],
        "run1.log",
    );
    let mut run_id = String::new();
    wait_for("the first run to reach t2", Duration::from_secs(30), || {
        let out = output(&dir.0, &["export", "--all"]);
        let Some(manifest) = stdout(&out).lines().next().map(str::to_owned) else {
            return false;
        };
        let Ok(manifest) = serde_json::from_str::<Value>(&manifest) else {
            return false;
        };
        let Some(stream) = manifest["streams"][0]["stream_id"].as_str() else {
            return false;
        };
        run_id = stream.trim_start_matches("run-").to_owned();
        count(&run_events(&dir.0, &run_id), "NodeSucceeded") >= 2
    });
    killed.sigkill();
    assert_ne!(status_of(&dir.0, &run_id), "completed");
    let next = output(&dir.0, &["run", "long.yaml", "--wait"]);
    assert!(next.status.success(), "{}", stderr(&next));
    assert!(
        stderr(&next).contains("resumed 1 unfinished run(s)"),
        "{}",
        stderr(&next)
    );
    assert_eq!(status_of(&dir.0, &run_id), "completed");
    assert_ran_once(&run_events(&dir.0, &run_id));
}

/// A free port on loopback (bound, read, let go; the server binds it right after).
fn free_listen() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

async fn wait_healthy(client: &reqwest::Client, base: &str, dev: &Process) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => return,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("the API did not come up:\n{}", dev.log()),
        }
    }
}

/// `dev --listen` on a SQLite file with no service running: it prints the URL, serves the
/// Studio console and the API (a flowchart stored and started over HTTP, followed over SSE, its
/// run detail read from the projections), stops cleanly on SIGTERM mid-run, and the next
/// `dev --listen` resumes the run to its end, every node run once.
#[tokio::test(flavor = "multi_thread")]
async fn dev_listen_serves_the_api_live_events_and_studio_on_the_file_and_resumes() {
    let dir = TempDir::new();
    runledger_executor_gateway::providers::install_crypto_provider();
    let client = reqwest::Client::new();
    let listen = free_listen();
    let base = format!("http://{listen}");
    let mut dev = Process::spawn(
        &dir.0,
        &["dev", "--listen", &listen, "--scan-ms", "100"],
        "dev1.log",
    );
    wait_healthy(&client, &base, &dev).await;
    assert!(
        dev.log()
            .contains(&format!("API and Studio console on {base}/")),
        "{}",
        dev.log()
    );
    let studio = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(studio.status(), 200);
    assert!(
        studio.text().await.unwrap().contains("<html"),
        "the Studio page"
    );
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready with no NATS needed");

    let (status, created) = super::api::json_of(
        client
            .post(format!("{base}/v1/flowcharts"))
            .json(&serde_json::json!({ "definition": chain_flow("chain", 700) }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, started) = super::api::json_of(
        client
            .post(format!("{base}/v1/runs"))
            .json(&serde_json::json!({ "flowchart": "chain", "inputs": {} }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let run_id = started["run_id"].as_str().unwrap().to_owned();

    // Live events of the run until its first task node succeeded.
    let mut events = client
        .get(format!("{base}/v1/events?run_id={run_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let (mut buffer, mut seen) = (String::new(), Vec::<Value>::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'follow: loop {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .unwrap_or_else(|_| panic!("no NodeSucceeded over SSE: {seen:?}\n{}", dev.log()))
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            let t1_done = event["event_type"] == "NodeSucceeded" && event["node_id"] == "t1";
            seen.push(event);
            if t1_done {
                break 'follow;
            }
        }
    }
    drop(events);
    assert_eq!(seen[0]["event_type"], "RunStarted", "{seen:?}");

    // The run's detail from the projections on the file.
    let detail = loop {
        let (status, detail) = super::api::json_of(
            client
                .get(format!("{base}/v1/runs/{run_id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{detail}");
        if detail["node_runs"].as_array().is_some_and(|n| n.len() >= 2) {
            break detail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(detail["run"]["flowchart_name"], "chain", "{detail}");

    // SIGTERM mid-run: a clean stop, the run left for the next engine.
    dev.signal("-TERM");
    assert_eq!(
        dev.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        dev.log()
    );
    assert!(
        dev.log().contains("runledger dev: stopped"),
        "{}",
        dev.log()
    );
    assert_eq!(
        count(&run_events(&dir.0, &run_id), "RunCompleted"),
        0,
        "stopped mid-run"
    );

    let listen = free_listen();
    let base = format!("http://{listen}");
    let mut again = Process::spawn(
        &dir.0,
        &["dev", "--listen", &listen, "--scan-ms", "100"],
        "dev2.log",
    );
    wait_healthy(&client, &base, &again).await;
    assert!(
        again.log().contains("resumed 1 unfinished run(s)"),
        "{}",
        again.log()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let (status, detail) = super::api::json_of(
            client
                .get(format!("{base}/v1/runs/{run_id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{detail}");
        if detail["run"]["status"] == "completed" {
            break detail;
        }
        assert!(
            Instant::now() < deadline,
            "not completed: {detail}\n{}",
            again.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detail["node_runs"].as_array().unwrap().len(), 6, "{detail}");
    assert_ran_once(&run_events(&dir.0, &run_id));
    again.signal("-INT");
    assert_eq!(
        again.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        again.log()
    );
}
