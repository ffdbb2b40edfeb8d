//! The executor gateway through the binary: `runledger run --dispatch nats` with
//! `runledger executor` processes, an executor killed mid-node, and a NATS server restarted
//! during a run. Each test has its own ledger schema and JetStream namespace; the restart
//! test runs a NATS server of its own so other tests never see the outage.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runledger_contracts::events::DomainEvent;
use runledger_contracts::ids::{RunId, StreamId};
use runledger_ledger::EventStore;
use runledger_ledger::testing::{TestLedger, test_database_url};

const SHARED_NATS: &str = "nats://127.0.0.1:4222";

#[path = "gateway_workspace.rs"]
mod workspace;

fn namespace() -> String {
    format!("e{}", RunId::new_v7().to_string().replace('-', ""))
}

fn runledger(schema: &str, nats: &str, namespace: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runledger"));
    cmd.args(args)
        .args([
            "--database-url",
            &test_database_url(),
            "--database-schema",
            schema,
        ])
        .args(["--nats-url", nats, "--nats-namespace", namespace])
        .current_dir(super::root())
        .env_remove("RUNLEDGER_DATABASE_URL")
        .env_remove("RUNLEDGER_DATABASE_SCHEMA")
        .env_remove("RUNLEDGER_NATS_URL")
        .env_remove("RUNLEDGER_NATS_NAMESPACE")
        .env_remove("RUNLEDGER_LOG");
    cmd
}

/// Child processes killed (SIGKILL) and reaped when dropped.
struct Procs(Vec<Child>);

impl Procs {
    fn spawn(&mut self, cmd: &mut Command, log: PathBuf) -> usize {
        let log = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.0.push(child);
        self.0.len() - 1
    }

    fn kill(&mut self, i: usize) {
        let _ = self.0[i].kill();
        let _ = self.0[i].wait();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn executor(schema: &str, nats: &str, ns: &str, id: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "executor",
        "--class",
        "frontier",
        "--executor-id",
        id,
        "--ack-wait-s",
        "2",
    ];
    args.extend_from_slice(extra);
    runledger(schema, nats, ns, &args)
}

async fn events(ledger: &TestLedger, run: RunId) -> Vec<DomainEvent> {
    let recorded = ledger
        .store
        .read_stream(&StreamId::for_run(run), 1, usize::MAX)
        .await
        .unwrap();
    recorded.iter().map(|e| e.decode().unwrap()).collect()
}

/// Per node id, its node runs' end events in order; asserts one end and one artifact each.
fn shape(events: &[DomainEvent]) -> BTreeMap<String, Vec<&'static str>> {
    let mut ends: BTreeMap<_, u32> = BTreeMap::new();
    let mut artifacts: BTreeMap<_, u32> = BTreeMap::new();
    let mut shape: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for e in events {
        let (id, node, end) = match e {
            DomainEvent::NodeScheduled(s) => {
                ends.insert(s.node_run_id, 0);
                continue;
            }
            DomainEvent::ArtifactPersisted(a) => {
                *artifacts.entry(a.node_run_id).or_default() += 1;
                continue;
            }
            DomainEvent::NodeSucceeded(s) => (s.node_run_id, &s.node_id, "succeeded"),
            DomainEvent::NodeFailed(s) => (s.node_run_id, &s.node_id, "failed"),
            DomainEvent::NodeTimedOut(s) => (s.node_run_id, &s.node_id, "timed_out"),
            DomainEvent::NodeCanceled(s) => (s.node_run_id, &s.node_id, "canceled"),
            DomainEvent::NodeSkipped(s) => (s.node_run_id, &s.node_id, "skipped"),
            _ => continue,
        };
        *ends.get_mut(&id).unwrap() += 1;
        shape.entry(node.clone()).or_default().push(end);
    }
    for (id, n) in &ends {
        assert_eq!(
            (*n, artifacts.get(id).copied()),
            (1, Some(1)),
            "node run {id}: one end, one artifact"
        );
    }
    shape
}

fn run_id_of(stdout: &[u8]) -> RunId {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().last().unwrap_or_default();
    let summary: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"));
    summary["run_id"].as_str().unwrap().parse().unwrap()
}

fn fanout_file(dir: &super::TempDir, n: usize) -> PathBuf {
    let mut yaml = String::from(
        "name: fanout\nnodes:\n  - { id: start, type: start }\n  - { id: done, type: end }\n",
    );
    let mut connectors = String::from("connectors:\n");
    for i in 1..=n {
        yaml.push_str(&format!("  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ output: {{ n: {i} }} }}] }}\n"));
        connectors.push_str(&format!(
            "  - {{ id: a{i}, from: start, to: t{i} }}\n  - {{ id: b{i}, from: t{i}, to: done }}\n"
        ));
    }
    let path = dir.path("fanout.yaml");
    std::fs::write(&path, yaml + &connectors).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_dispatch_with_two_executor_processes_gives_the_inprocess_shape() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let ns = namespace();
    let dir = super::TempDir::new();
    let mut procs = Procs(Vec::new());
    for id in ["x1", "x2"] {
        procs.spawn(
            &mut executor(&schema, SHARED_NATS, &ns, id, &[]),
            dir.path(&format!("{id}.log")),
        );
    }
    let fanout = fanout_file(&dir, 100);
    let flows = [
        "examples/review-loop.yaml",
        "examples/fan-in.yaml",
        "examples/fallback-route.yaml",
        fanout.to_str().unwrap(),
    ];
    for flow in flows {
        let mut shapes = Vec::new();
        for dispatch in ["inprocess", "nats"] {
            let out = runledger(
                &schema,
                SHARED_NATS,
                &ns,
                &[
                    "run",
                    flow,
                    "--input",
                    r#"{"topic":"owls"}"#,
                    "--wait",
                    "--json",
                    "--dispatch",
                    dispatch,
                ],
            )
            .output()
            .unwrap();
            assert!(
                out.status.success(),
                "{flow} via {dispatch}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let run = run_id_of(&out.stdout);
            let events = events(&ledger, run).await;
            let dispatched = events
                .iter()
                .filter(|e| matches!(e, DomainEvent::NodeDispatched(_)))
                .count();
            if dispatch == "nats" {
                assert!(dispatched > 0, "{flow}: task node runs went over NATS");
            } else {
                assert_eq!(dispatched, 0);
            }
            shapes.push(shape(&events));
        }
        assert_eq!(
            shapes[0], shapes[1],
            "{flow}: same node runs and ends either way"
        );
    }
    let logs: String = ["x1", "x2"]
        .iter()
        .map(|id| std::fs::read_to_string(dir.path(&format!("{id}.log"))).unwrap_or_default())
        .collect();
    assert!(logs.contains("class frontier"), "{logs}");
    drop(procs);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_killed_mid_node_is_replaced_and_the_node_completes_once() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let ns = namespace();
    let dir = super::TempDir::new();
    let flow = dir.path("slow.yaml");
    std::fs::write(
        &flow,
        "name: slow\nnodes:\n  - { id: start, type: start }\n  - { id: t, type: task, model: scripted, timeout_s: 60, scripted: [{ delay_ms: 4000, output: { ok: true } }] }\n  - { id: done, type: end }\nconnectors:\n  - { id: a, from: start, to: t }\n  - { id: b, from: t, to: done }\n",
    )
    .unwrap();
    let mut procs = Procs(Vec::new());
    let doomed = procs.spawn(
        &mut executor(&schema, SHARED_NATS, &ns, "doomed", &[]),
        dir.path("doomed.log"),
    );
    let run = RunId::new_v7();
    let mut runner = runledger(
        &schema,
        SHARED_NATS,
        &ns,
        &[
            "run",
            flow.to_str().unwrap(),
            "--wait",
            "--json",
            "--dispatch",
            "nats",
            "--ack-wait-s",
            "2",
            "--run-id",
            &run.to_string(),
        ],
    );
    let run_proc = procs.spawn(&mut runner, dir.path("run.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = events(&ledger, run).await;
        if events
            .iter()
            .any(|e| matches!(e, DomainEvent::NodeStarted(s) if s.executor == "doomed"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first executor never started the node: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    procs.kill(doomed);
    procs.spawn(
        &mut executor(&schema, SHARED_NATS, &ns, "healthy", &[]),
        dir.path("healthy.log"),
    );
    let status = loop {
        if let Some(status) = procs.0[run_proc].try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "the run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.path("run.log")).unwrap_or_default()
    );
    let events = events(&ledger, run).await;
    assert_eq!(shape(&events)["t"], vec!["succeeded"], "{events:#?}");
    let healthy_log = std::fs::read_to_string(dir.path("healthy.log")).unwrap_or_default();
    drop(procs);
    assert!(!healthy_log.is_empty());
    ledger.drop_schema().await.unwrap();
}

/// A NATS server of this test's own, with JetStream stored in a scratch directory.
struct OwnNats {
    port: u16,
    store: super::TempDir,
    child: Option<Child>,
}

impl OwnNats {
    fn start() -> Option<Self> {
        let binary = [
            "/usr/sbin/nats-server",
            "/usr/local/bin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut nats = Self {
            port,
            store: super::TempDir::new(),
            child: None,
        };
        nats.spawn(binary);
        Some(nats)
    }

    fn spawn(&mut self, binary: &str) {
        let child = Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_during_a_run_loses_and_repeats_nothing() {
    let Some(mut nats) = OwnNats::start() else {
        panic!("nats-server is not installed; ops/services.sh installs and starts it");
    };
    let binary = [
        "/usr/sbin/nats-server",
        "/usr/local/bin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap();
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    let ns = namespace();
    let url = nats.url();
    let dir = super::TempDir::new();
    let mut yaml = String::from(
        "name: chain\nnodes:\n  - { id: start, type: start }\n  - { id: done, type: end }\n",
    );
    let mut connectors = String::from("connectors:\n  - { id: c0, from: start, to: t1 }\n");
    let n = 40;
    for i in 1..=n {
        yaml.push_str(&format!("  - {{ id: t{i}, type: task, model: scripted, scripted: [{{ delay_ms: 40, output: {{ n: {i} }} }}] }}\n"));
        let to = if i == n {
            "done".to_owned()
        } else {
            format!("t{}", i + 1)
        };
        connectors.push_str(&format!("  - {{ id: c{i}, from: t{i}, to: {to} }}\n"));
    }
    let flow = dir.path("chain.yaml");
    std::fs::write(&flow, yaml + &connectors).unwrap();
    let mut procs = Procs(Vec::new());
    procs.spawn(
        &mut executor(&schema, &url, &ns, "x1", &[]),
        dir.path("x1.log"),
    );
    let run = RunId::new_v7();
    let mut runner = runledger(
        &schema,
        &url,
        &ns,
        &[
            "run",
            flow.to_str().unwrap(),
            "--wait",
            "--json",
            "--dispatch",
            "nats",
            "--ack-wait-s",
            "2",
            "--run-id",
            &run.to_string(),
        ],
    );
    let run_proc = procs.spawn(&mut runner, dir.path("run.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = events(&ledger, run)
            .await
            .iter()
            .filter(|e| matches!(e, DomainEvent::NodeSucceeded(_)))
            .count();
        if done >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nats.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.spawn(binary);
    let status = loop {
        if let Some(status) = procs.0[run_proc].try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "the run did not finish after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.path("run.log")).unwrap_or_default()
    );
    let events = events(&ledger, run).await;
    let shape = shape(&events);
    for i in 1..=n {
        assert_eq!(
            shape[&format!("t{i}")],
            vec!["succeeded"],
            "t{i} ran to success exactly once"
        );
    }
    // The outage is in both logs at the default level: the loss once, the recovery once.
    let deadline = Instant::now() + Duration::from_secs(10);
    for log in ["run.log", "x1.log"] {
        let (lost, restored) = loop {
            let text = std::fs::read_to_string(dir.path(log)).unwrap_or_default();
            let counts = (
                text.matches("NATS connection lost").count(),
                text.matches("NATS connection restored").count(),
            );
            if counts.1 > 0 || Instant::now() > deadline {
                break counts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            (lost, restored),
            (1, 1),
            "{log}: {}",
            std::fs::read_to_string(dir.path(log)).unwrap_or_default()
        );
        // The loops that wait the outage out say so once, not once a try.
        let text = std::fs::read_to_string(dir.path(log)).unwrap_or_default();
        for retrying in [
            "result intake waiting for NATS",
            "result intake cannot subscribe",
            "result intake lost its subscription",
            "pull failed",
        ] {
            let warns = text
                .lines()
                .filter(|l| l.contains("WARN") && l.contains(retrying))
                .count();
            assert!(warns <= 1, "{log}: {warns} warnings `{retrying}`:\n{text}");
        }
    }
    drop(procs);
    ledger.drop_schema().await.unwrap();
}

/// A NATS URL with credentials is never printed as is: not by `status` (text or JSON), not in
/// the connection error of a command, not in `--help` (environment values hidden).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_are_never_printed() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = ledger.schema().to_owned();
    for url in [
        "nats://operator:s3cr3t-pass@127.0.0.1:1",
        "nats://s3cr3t-token@127.0.0.1:1",
    ] {
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["executor", "--class", "frontier"],
        ] {
            let out = runledger(&schema, url, "", args).output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !text.contains("s3cr3t"),
                "{args:?} printed the credential: {text}"
            );
            assert!(
                text.contains("127.0.0.1:1"),
                "{args:?} names the server: {text}"
            );
        }
        let help = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .arg("--help")
            .env("RUNLEDGER_NATS_URL", url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            !text.contains("s3cr3t"),
            "--help printed the credential: {text}"
        );
    }
    ledger.drop_schema().await.unwrap();
}
