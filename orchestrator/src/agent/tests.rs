//! The loop with scripted tool calls and a tool domain defined here: parallel calls, bad
//! arguments and domain errors returned to the model, the turn budget, a crash between two
//! calls with no call applied twice, and a run through the engine on PostgreSQL whose calls
//! reach the ledger as they happen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::events::{DomainEvent, ToolCalled, ToolOutcome};
use runledger_contracts::flowchart::{Node, NodeType, ScriptedResponse, ScriptedToolCall};
use runledger_contracts::ids::{NodeRunId, RunId};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{CallReporter, ToolRegistry};
use crate::decide::{NodeOutcome, NodeResult};
use crate::executor::{NodeWork, Providers, run_node_reporting};
use crate::provider::ScriptedProvider;

/// A tiny file store: `workspace_write` (side effects) and `workspace_read`. Writing the path
/// in `hang_on` never returns (a process that dies mid-call).
#[derive(Default)]
struct Files {
    files: Mutex<BTreeMap<String, String>>,
    /// Every applied write: (idempotency key, path).
    writes: Arc<Mutex<Vec<(String, String)>>>,
    hang_on: Option<String>,
    /// `workspace_write` answers with the text it wrote too (a large result).
    echo: bool,
}

impl ToolDomain for Files {
    fn domain(&self) -> &str {
        "workspace"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "workspace_write".into(),
                description: "Write a file.".into(),
                parameters: json!({
                    "type": "object",
                    "required": ["path", "text"],
                    "properties": { "path": { "type": "string" }, "text": { "type": "string" } },
                    "additionalProperties": false,
                }),
                side_effects: true,
            },
            ToolSpec {
                name: "workspace_read".into(),
                description: "Read a file.".into(),
                parameters: json!({
                    "type": "object",
                    "required": ["path"],
                    "properties": { "path": { "type": "string" } },
                }),
                side_effects: false,
            },
        ]
    }

    fn call<'a>(
        &'a self,
        ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(async move {
            let path = arguments["path"].as_str().unwrap_or_default().to_owned();
            match name {
                "workspace_write" => {
                    if self.hang_on.as_deref() == Some(path.as_str()) {
                        std::future::pending::<()>().await;
                    }
                    let text = arguments["text"].as_str().unwrap_or_default().to_owned();
                    self.files
                        .lock()
                        .unwrap()
                        .insert(path.clone(), text.clone());
                    self.writes
                        .lock()
                        .unwrap()
                        .push((ctx.idempotency_key.clone(), path.clone()));
                    if self.echo {
                        return Ok(json!({ "written": path, "text": text }));
                    }
                    Ok(json!({ "written": path }))
                }
                "workspace_read" => match self.files.lock().unwrap().get(&path) {
                    Some(text) => Ok(json!({ "text": text })),
                    None => Err(ToolCallError::Failed {
                        code: "not_found",
                        message: format!("no file `{path}`"),
                        source: None,
                    }),
                },
                _ => Err(ToolCallError::InvalidArguments {
                    message: format!("no tool {name}"),
                }),
            }
        })
    }
}

/// The paths of the writes applied, in order.
fn applied_paths(writes: &Mutex<Vec<(String, String)>>) -> Vec<String> {
    writes
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| p.clone())
        .collect()
}

/// Collects reported calls.
struct Collect(mpsc::UnboundedSender<ToolCalled>);

impl CallReporter for Collect {
    fn report(&self, call: ToolCalled) {
        let _ = self.0.send(call);
    }
}

fn calls(list: &[(&str, Value)]) -> ScriptedResponse {
    ScriptedResponse {
        tool_calls: Some(
            list.iter()
                .map(|(tool, arguments)| ScriptedToolCall {
                    tool: (*tool).to_owned(),
                    arguments: arguments.clone(),
                })
                .collect(),
        ),
        output: None,
        error: None,
        delay_ms: None,
    }
}

fn answer(output: Value) -> ScriptedResponse {
    ScriptedResponse {
        tool_calls: None,
        output: Some(output),
        error: None,
        delay_ms: None,
    }
}

fn agent_work(script: Vec<ScriptedResponse>, tools: &[&str], max_turns: Option<u32>) -> NodeWork {
    let mut node = Node::new("fix", NodeType::Task);
    node.model = Some("scripted".into());
    node.prompt = Some("Fix it.".into());
    node.tools = Some(tools.iter().map(|t| (*t).to_owned()).collect());
    node.max_turns = max_turns;
    node.scripted = Some(script);
    NodeWork {
        run_id: RunId::new_v7(),
        node_run_id: NodeRunId::new_v7(),
        attempt: 1,
        ordinal: 0,
        deadline: None,
        input_context: json!({}),
        node: Arc::new(node),
        workspace: None,
        git_policy: None,
        recorded_calls: Vec::new(),
        workspace_holder: None,
    }
}

fn providers(files: Files) -> Providers {
    let registry = ToolRegistry::new(vec![Arc::new(files)]).unwrap();
    Providers::scripted(ScriptedProvider::new()).with_tools(registry)
}

async fn run(providers: &Providers, work: &NodeWork) -> (NodeResult, Vec<ToolCalled>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let result = run_node_reporting(providers, work, Some(&Collect(tx))).await;
    let mut reported = Vec::new();
    while let Ok(call) = rx.try_recv() {
        reported.push(call);
    }
    (result, reported)
}

fn keys(calls: &[ToolCalled]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            c.idempotency_key
                .split_once(':')
                .map_or(String::new(), |(_, k)| k.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn parallel_calls_run_in_order_and_every_call_is_reported() {
    let files = Files::default();
    let writes = Arc::clone(&files.writes);
    let providers = providers(files);
    let work = agent_work(
        vec![
            calls(&[
                (
                    "workspace_write",
                    json!({ "path": "a.txt", "text": "hello" }),
                ),
                ("workspace_read", json!({ "path": "a.txt" })),
            ]),
            answer(json!({ "summary": "done" })),
        ],
        &["workspace_*"],
        None,
    );
    let (result, reported) = run(&providers, &work).await;
    let NodeOutcome::Succeeded { output, agent, .. } = &result.outcome else {
        panic!("{:?}", result.outcome)
    };
    assert_eq!(output, &json!({ "summary": "done" }));
    // The calls went to the reporter as they happened, none rides on the result.
    assert!(result.tool_calls.is_empty());
    assert_eq!(keys(&reported), ["provider:1", "1:0", "1:1", "provider:2"]);
    assert_eq!(reported[2].output, Some(json!({ "text": "hello" })));
    let call = reported[1].agent.as_ref().unwrap();
    assert_eq!(
        (call.turn, call.call_index, call.side_effects),
        (1, Some(0), true)
    );
    assert_eq!(
        call.arguments,
        Some(json!({ "path": "a.txt", "text": "hello" }))
    );
    assert_eq!(writes.lock().unwrap().len(), 1);
    let lineage = agent.as_ref().unwrap();
    assert_eq!(lineage["turns"], 2);
    assert_eq!(lineage["tool_calls"], 2);
    assert_eq!(
        lineage["tools_used"],
        json!(["workspace_read", "workspace_write"])
    );
    assert_eq!(lineage["request_digests"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_arguments_and_tool_errors_go_back_to_the_model() {
    let files = Files::default();
    let writes = Arc::clone(&files.writes);
    let providers = providers(files);
    let work = agent_work(
        vec![
            calls(&[
                ("workspace_write", json!({ "path": 5 })),
                ("workspace_read", json!({ "path": "missing" })),
                ("git_push", json!({})),
                ("command_run", json!({ "command": "ls" })),
            ]),
            answer(json!({ "summary": "gave up" })),
        ],
        &["workspace_*", "command_run"],
        None,
    );
    let (result, reported) = run(&providers, &work).await;
    assert!(
        matches!(result.outcome, NodeOutcome::Succeeded { .. }),
        "{:?}",
        result.outcome
    );
    let codes: Vec<&str> = reported[1..5]
        .iter()
        .map(|c| {
            assert_eq!(c.outcome, ToolOutcome::Error);
            c.error.as_ref().unwrap().code.as_str()
        })
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_arguments",
            "not_found",
            "tool_not_allowed",
            "tool_unavailable"
        ]
    );
    let violations = &reported[1]
        .error
        .as_ref()
        .unwrap()
        .details
        .as_ref()
        .unwrap()["violations"];
    assert!(violations.to_string().contains("text"), "{violations}");
    assert!(
        writes.lock().unwrap().is_empty(),
        "an invalid call is not made"
    );
}

#[tokio::test]
async fn the_turn_budget_fails_the_node_with_the_transcript() {
    let providers = providers(Files::default());
    let work = agent_work(
        vec![calls(&[("workspace_read", json!({ "path": "x" }))])],
        &["workspace_read"],
        Some(3),
    );
    let (result, reported) = run(&providers, &work).await;
    let NodeOutcome::Failed(e) = &result.outcome else {
        panic!("{:?}", result.outcome)
    };
    assert_eq!(e.code, "max_turns_exceeded");
    let details = e.details.as_ref().unwrap();
    assert_eq!(details["turns"], 3);
    // Three tool-call turns, each with its results.
    assert_eq!(details["transcript"].as_array().unwrap().len(), 6);
    assert_eq!(details["transcript"][1]["results"][0]["is_error"], true);
    // Three model calls and three tool calls, all reported before the failure.
    assert_eq!(reported.len(), 6);
}

#[tokio::test]
async fn an_attempt_run_again_after_a_crash_applies_no_recorded_call_twice() {
    let writes: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let script = vec![
        calls(&[("workspace_write", json!({ "path": "a", "text": "1" }))]),
        calls(&[("workspace_write", json!({ "path": "b", "text": "2" }))]),
        answer(json!({ "summary": "both written" })),
    ];
    let work = agent_work(script, &["workspace_write"], None);
    // First try: the process dies during the second call.
    let dying = providers(Files {
        writes: Arc::clone(&writes),
        hang_on: Some("b".into()),
        ..Files::default()
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = {
        let work = work.clone();
        tokio::spawn(async move { run_node_reporting(&dying, &work, Some(&Collect(tx))).await })
    };
    let mut recorded = Vec::new();
    while let Some(call) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
    {
        let second_turn = call.idempotency_key.ends_with(":provider:2");
        recorded.push(call);
        if second_turn {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    assert_eq!(keys(&recorded), ["provider:1", "1:0", "provider:2"]);
    assert_eq!(writes.lock().unwrap().len(), 1);
    // Second try of the same attempt, with what the ledger recorded.
    let again = NodeWork {
        recorded_calls: recorded.clone(),
        workspace_holder: None,
        ..work
    };
    let healthy = providers(Files {
        writes: Arc::clone(&writes),
        ..Files::default()
    });
    let (result, reported) = run(&healthy, &again).await;
    assert!(
        matches!(result.outcome, NodeOutcome::Succeeded { .. }),
        "{:?}",
        result.outcome
    );
    let applied = applied_paths(&writes);
    assert_eq!(applied, ["a", "b"], "each write applied once");
    // The reused call is not reported again; the model calls are (the ledger keeps the first).
    assert_eq!(
        keys(&reported),
        ["provider:1", "provider:2", "2:0", "provider:3"]
    );
}

#[tokio::test]
async fn a_node_without_tools_records_its_calls_with_its_end() {
    let mut work = agent_work(vec![answer(json!(1))], &[], None);
    Arc::make_mut(&mut work.node).tools = None;
    let (result, reported) = run(&providers(Files::default()), &work).await;
    assert!(reported.is_empty());
    assert_eq!(keys(&result.tool_calls), ["provider:1"]);
    assert!(result.tool_calls[0].agent.is_none());
    let NodeOutcome::Succeeded { agent, .. } = &result.outcome else {
        panic!()
    };
    assert!(agent.is_none());
}

#[test]
fn the_registry_maps_names_to_domains_and_resolves_globs() {
    let registry = ToolRegistry::new(vec![Arc::new(Files::default())]).unwrap();
    assert_eq!(
        registry
            .domain_of("workspace_read")
            .map(|d| d.domain().to_owned()),
        Some("workspace".into())
    );
    let allowed = registry.resolve(
        &["workspace_*".into(), "git_status".into()],
        &["docs".into()],
    );
    let offered: Vec<&str> = allowed.offered.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(offered, ["workspace_read", "workspace_write"]);
    assert!(allowed.is_unavailable("workspace_chmod"));
    assert!(allowed.is_unavailable("git_status"));
    assert!(allowed.is_unavailable("mcp__docs__search"));
    assert!(!allowed.is_unavailable("command_run"));
    let twice = ToolRegistry::new(vec![Arc::new(Files::default()), Arc::new(Files::default())]);
    assert!(matches!(
        twice,
        Err(super::RegistryError::DuplicateTool { .. })
    ));
}

mod engine {
    use runledger_contracts::flowchart::{SourceFormat, load};
    use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
    use runledger_ledger::EventStore;
    use runledger_ledger::testing::TestLedger;

    use super::*;
    use crate::decide::StartRun;
    use crate::engine::{Engine, EngineConfig, NoFlowcharts};
    use crate::executor::InProcessPool;
    use crate::state::RunStatus;

    const FLOW: &str = r#"
name: agent
nodes:
  - { id: start, type: start }
  - id: fix
    type: task
    model: scripted
    prompt: "Write {{ inputs.path }}"
    agent: { system: "You are careful.", role: engineer, skills: [rust] }
    tools: [workspace_write, workspace_read]
    scripted:
      - tool_calls:
          - { tool: workspace_write, arguments: { path: notes.txt, text: hi } }
          - { tool: workspace_read, arguments: { path: notes.txt } }
      - output: { summary: done }
  - { id: end, type: end }
connectors:
  - { id: c1, from: start, to: fix }
  - { id: c2, from: fix, to: end }
"#;

    /// Starts a run of `flow` with `inputs` on `engine`.
    async fn start<S: EventStore>(engine: &Engine<S>, flow: &str, inputs: Value) -> RunId {
        let start = StartRun {
            run_id: RunId::new_v7(),
            flowchart: Arc::new(load(flow, SourceFormat::Yaml).unwrap()),
            version: None,
            inputs,
            parent: None,
            actor: "test".into(),
        };
        engine
            .start(start, RequestId::generate(), CorrelationId::generate())
            .await
            .unwrap()
    }

    /// Runs `flow` to its end on a fresh schema; the summary's status and the run's events.
    async fn run_to_end(
        ledger: &TestLedger,
        flow: &str,
    ) -> (RunStatus, Vec<runledger_contracts::envelope::RecordedEvent>) {
        let store = ledger.second_store().await.unwrap();
        let pool = InProcessPool::new(providers(Files::default()), 8);
        let engine = Engine::new(
            store,
            Arc::new(pool),
            Arc::new(NoFlowcharts),
            EngineConfig::default(),
        );
        let run = start(&engine, flow, json!({ "path": "notes.txt" })).await;
        let summary = tokio::time::timeout(Duration::from_secs(30), engine.wait(run))
            .await
            .unwrap()
            .unwrap();
        let recorded = ledger
            .store
            .read_stream(&StreamId::for_run(run), 1, usize::MAX)
            .await
            .unwrap();
        (summary.status, recorded)
    }

    #[tokio::test]
    async fn max_turns_fails_the_node_with_the_transcript_in_its_failure_artifact() {
        let ledger = TestLedger::new().await.unwrap();
        // The last scripted response repeats: the model asks for a read forever.
        let flow = FLOW
            .replace(
                "    tools: [workspace_write, workspace_read]\n",
                "    tools: [workspace_write, workspace_read]\n    max_turns: 2\n",
            )
            .replace("      - output: { summary: done }\n", "");
        let (status, recorded) = run_to_end(&ledger, &flow).await;
        assert_eq!(status, RunStatus::Failed);
        let calls = recorded
            .iter()
            .filter(|e| e.event_type == "ToolCalled")
            .count();
        assert_eq!(calls, 6, "two turns of a model call and two tool calls");
        let failure = recorded
            .iter()
            .find(|e| {
                e.event_type == "ArtifactPersisted" && e.payload["artifact_type"] == "failure"
            })
            .unwrap();
        let error = &failure.payload["payload"]["error"];
        assert_eq!(error["code"], "max_turns_exceeded");
        assert_eq!(error["details"]["turns"], 2);
        let transcript = error["details"]["transcript"].as_array().unwrap();
        assert_eq!(transcript.len(), 4, "{transcript:?}");
        assert_eq!(transcript[1]["results"].as_array().unwrap().len(), 2);
        assert_eq!(error["details"]["tool_calls"], 4);
        ledger.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn calls_are_steps_of_their_own_and_the_artifact_holds_the_lineage() {
        let ledger = TestLedger::new().await.unwrap();
        let (status, recorded) = run_to_end(&ledger, FLOW).await;
        assert_eq!(status, RunStatus::Completed);
        let calls: Vec<(&str, String)> = recorded
            .iter()
            .filter(|e| e.event_type == "ToolCalled")
            .map(|e| {
                (
                    e.request_id.as_str(),
                    e.payload["tool"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(calls.len(), 4, "{calls:?}");
        for (request, _) in &calls {
            assert!(request.starts_with("toolcall-"), "{request}");
        }
        let tools: Vec<&str> = calls.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            tools,
            ["provider", "workspace_write", "workspace_read", "provider"]
        );
        assert!(
            recorded
                .iter()
                .filter(|e| e.event_type == "ToolCalled")
                .all(|e| e.schema_version == 2)
        );
        let events: Vec<DomainEvent> = recorded.iter().map(|e| e.decode().unwrap()).collect();
        crate::tests::check_invariants(&events);
        let artifact = events
            .iter()
            .find_map(|e| match e {
                DomainEvent::ArtifactPersisted(a) if a.node_id == "fix" => Some(a),
                _ => None,
            })
            .unwrap();
        assert_eq!(artifact.payload["agent"]["turns"], 2);
        assert_eq!(
            artifact.payload["agent"]["tools_used"],
            json!(["workspace_read", "workspace_write"])
        );
        // The run replays through the decider with no divergence.
        let report = crate::replay::replay_run(&recorded).unwrap();
        assert!(
            matches!(report, crate::replay::ReplayOutcome::Matched(_)),
            "{report:?}"
        );
    }

    /// The ToolCalled events of `run` recorded so far.
    async fn tool_calls_of(ledger: &TestLedger, run: RunId) -> Vec<Value> {
        ledger
            .store
            .read_stream(&StreamId::for_run(run), 1, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == "ToolCalled")
            .map(|e| e.payload)
            .collect()
    }

    /// A side-effecting call whose result went to the blob table (over 16 KiB), met again when
    /// the attempt runs after a crash, is not applied again and the model reads the recorded
    /// result itself, read back from the blob table: before, it read
    /// `{"reused": true, "result_blob": ...}`.
    #[tokio::test]
    async fn a_recorded_result_kept_in_a_blob_is_given_back_to_the_model_after_a_restart() {
        let ledger = TestLedger::new().await.unwrap();
        let big = "x".repeat(20_000);
        // Two turns that write, then no answer: the node fails with max_turns_exceeded, and its
        // failure artifact holds the transcript, results included, the model was sent.
        let flow = format!(
            r#"
name: blob-result
nodes:
  - {{ id: start, type: start }}
  - id: fix
    type: task
    model: scripted
    prompt: Write.
    tools: [workspace_write]
    max_turns: 2
    scripted:
      - tool_calls:
          - {{ tool: workspace_write, arguments: {{ path: big.txt, text: "{big}" }} }}
      - tool_calls:
          - {{ tool: workspace_write, arguments: {{ path: b, text: "2" }} }}
  - {{ id: end, type: end }}
connectors:
  - {{ id: c1, from: start, to: fix }}
  - {{ id: c2, from: fix, to: end }}
"#
        );
        let writes: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let engine = |hang_on: Option<&str>, store| {
            let files = Files {
                writes: Arc::clone(&writes),
                hang_on: hang_on.map(str::to_owned),
                echo: true,
                ..Files::default()
            };
            Engine::new(
                store,
                Arc::new(InProcessPool::new(providers(files), 8)),
                Arc::new(NoFlowcharts),
                EngineConfig::default(),
            )
        };
        // The first engine dies during the second write, after the first is recorded.
        let first = engine(Some("b"), ledger.second_store().await.unwrap());
        let run = start(&first, &flow, json!({})).await;
        let recorded = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let calls = tool_calls_of(&ledger, run).await;
                if calls.len() >= 3 {
                    break calls;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        let blob = &recorded[1]["agent"]["result_blob"];
        assert!(blob["size"].as_u64().unwrap() > 20_000, "{}", recorded[1]);
        assert!(recorded[1].get("output").is_none_or(Value::is_null));
        first.drain(Duration::from_millis(100)).await;

        // The next engine runs the attempt again.
        let second = engine(None, ledger.second_store().await.unwrap());
        second.ensure_driven(run).await.unwrap();
        let summary = tokio::time::timeout(Duration::from_secs(30), second.wait(run))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(summary.status, RunStatus::Failed);
        let applied = applied_paths(&writes);
        assert_eq!(applied, ["big.txt", "b"], "each write applied once");
        let events = ledger
            .store
            .read_stream(&StreamId::for_run(run), 1, usize::MAX)
            .await
            .unwrap();
        let failure = events
            .iter()
            .find(|e| {
                e.event_type == "ArtifactPersisted" && e.payload["artifact_type"] == "failure"
            })
            .unwrap();
        let transcript = &failure.payload["payload"]["error"]["details"]["transcript"];
        let content = &transcript[1]["results"][0]["content"];
        assert!(
            content.get("result_blob").is_none(),
            "the model read a digest: {content}"
        );
        assert_eq!(content["written"], "big.txt");
        assert!(content["text"] == json!(big), "another text came back");
        ledger.drop_schema().await.unwrap();
    }
}

/// Arguments the ledger cannot store (U+0000, an integer beyond I-JSON, more bytes than an
/// event holds) are refused before the domain runs, and the call is recorded without them.
/// Before, the call was applied and its event refused by the ledger, which stopped the run's
/// driver and lost the turn's records.
#[tokio::test]
async fn arguments_the_ledger_cannot_store_are_refused_before_the_call() {
    let files = Files::default();
    let writes = Arc::clone(&files.writes);
    let providers = providers(files);
    let work = agent_work(
        vec![
            calls(&[
                ("workspace_write", json!({ "path": "a\u{0}b", "text": "x" })),
                (
                    "workspace_write",
                    json!({ "path": "n", "text": "x", "n": 9_007_199_254_740_993_u64 }),
                ),
                (
                    "workspace_write",
                    json!({ "path": "big", "text": "y".repeat(5 << 20) }),
                ),
                ("workspace_write", json!({ "path": "ok", "text": "fine" })),
            ]),
            answer(json!({ "summary": "done" })),
        ],
        &["workspace_*"],
        None,
    );
    let (result, reported) = run(&providers, &work).await;
    assert!(
        matches!(result.outcome, NodeOutcome::Succeeded { .. }),
        "{:?}",
        result.outcome
    );
    for call in &reported[1..4] {
        assert_eq!(call.error.as_ref().unwrap().code, "invalid_arguments");
        assert_eq!(call.agent.as_ref().unwrap().arguments, None);
        let payload = serde_json::to_value(call).unwrap();
        runledger_contracts::storable::storable_bytes(&payload).unwrap();
    }
    assert_eq!(reported[4].outcome, ToolOutcome::Ok);
    let applied = applied_paths(&writes);
    assert_eq!(applied, ["ok"]);
}
