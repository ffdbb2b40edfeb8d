//! The `rag_*` tools called directly, as the agent loop calls them, against a real ledger.

use std::sync::Arc;

use runledger_contracts::agent_tool::{ToolCallContext, ToolCallError, ToolDomain};
use runledger_contracts::ids::{NodeRunId, RunId};
use serde_json::{Value, json};

use super::{Dir, setup};
use crate::tools::{INDEX_STATUS, QUERY, RagTools, SOURCE_LIST, TRIGGER_INDEX};

fn context() -> ToolCallContext {
    let node_run_id = NodeRunId::new_v7();
    ToolCallContext {
        run_id: RunId::new_v7(),
        node_id: "agent".into(),
        node_run_id,
        turn: 1,
        call_index: 0,
        idempotency_key: format!("{node_run_id}:1:0"),
        workspace: None,
        git_policy: None,
    }
}

async fn call<S: runledger_ledger::EventStore + 'static>(
    tools: &RagTools<S>,
    name: &str,
    arguments: Value,
) -> Result<Value, ToolCallError> {
    tools.call(&context(), name, arguments).await
}

#[test]
fn the_four_tools_have_closed_object_schemas() {
    let names: Vec<_> = crate::tools::specs().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "rag_source_list",
            "rag_index_status",
            "rag_trigger_index",
            "rag_query"
        ]
    );
    for spec in crate::tools::specs() {
        assert_eq!(spec.parameters["type"], "object", "{}", spec.name);
        assert_eq!(
            spec.parameters["additionalProperties"], false,
            "{}",
            spec.name
        );
        assert_eq!(spec.side_effects, spec.name == "rag_trigger_index");
    }
}

#[tokio::test]
async fn list_status_trigger_and_query_answer_from_the_ledger_and_the_index() {
    let (docs, data) = (Dir::new(), Dir::new());
    let (ledger, rag) = setup(&docs, &data).await;
    let tools = RagTools::new(Arc::new(rag));
    assert_eq!(tools.domain(), "rag");

    let listed = call(&tools, SOURCE_LIST, json!({})).await.unwrap();
    assert_eq!(listed["collections"][0]["name"], "docs");
    assert_eq!(listed["collections"][0]["sources"][0]["name"], "main");
    assert_eq!(listed["collections"][0]["index_version"], Value::Null);
    let one = call(&tools, SOURCE_LIST, json!({"collection": "docs"}))
        .await
        .unwrap();
    assert_eq!(one["collections"].as_array().map(Vec::len), Some(1));

    // Never indexed: the status says so, a query is a typed error.
    let status = call(&tools, INDEX_STATUS, json!({"collection": "docs"}))
        .await
        .unwrap();
    assert_eq!(
        (status["indexed"].clone(), status["index_runs"].clone()),
        (json!(false), json!(0))
    );
    let err = call(
        &tools,
        QUERY,
        json!({"collection": "docs", "query": "zebrafish"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "never_indexed");

    let indexed = call(
        &tools,
        TRIGGER_INDEX,
        json!({"collection": "docs", "mode": "full"}),
    )
    .await
    .unwrap();
    assert_eq!(indexed["files"]["added"], 4);
    let version = indexed["index_version"].as_u64().unwrap();
    let status = call(&tools, INDEX_STATUS, json!({"collection": "docs"}))
        .await
        .unwrap();
    assert_eq!(status["indexed"], true);
    assert_eq!(status["last_completed"]["index_version"], version);
    assert_eq!(status["last_completed"]["mode"], "full");
    assert_eq!(status["last_completed"]["manifest"], indexed["manifest"]);
    assert_eq!(status["running"], Value::Null);

    // A delta over unchanged sources reads nothing (the default mode).
    let delta = call(&tools, TRIGGER_INDEX, json!({"collection": "docs"}))
        .await
        .unwrap();
    assert_eq!(
        (delta["mode"].clone(), delta["files"]["read"].clone()),
        (json!("delta"), json!(0))
    );

    let hits = call(
        &tools,
        QUERY,
        json!({"collection": "docs", "query": "zebrafish owner", "top_k": 2}),
    )
    .await
    .unwrap();
    assert_eq!(hits["index_version"], delta["index_version"]);
    assert_eq!(hits["hits"][0]["path"], "guide.md");
    assert_eq!(
        (
            hits["hits"][0]["start_line"].clone(),
            hits["hits"][0]["end_line"].clone()
        ),
        (json!(5), json!(8))
    );
    assert!(hits["hits"].as_array().unwrap().len() <= 2);
    let filtered = call(
        &tools,
        QUERY,
        json!({"collection": "docs", "query": "zebrafish", "path_glob": "main/*.txt"}),
    )
    .await
    .unwrap();
    assert_eq!(filtered["hits"], json!([]));
    drop(tools);
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn bad_calls_are_typed_errors_that_write_nothing() {
    let (docs, data) = (Dir::new(), Dir::new());
    let (ledger, rag) = setup(&docs, &data).await;
    let rag = Arc::new(rag);
    let tools = RagTools::new(Arc::clone(&rag));
    for (name, args) in [
        (SOURCE_LIST, json!({"collection": "ghost"})),
        (INDEX_STATUS, json!({"collection": "ghost"})),
        (TRIGGER_INDEX, json!({"collection": "ghost"})),
        (QUERY, json!({"collection": "ghost", "query": "x"})),
    ] {
        let err = call(&tools, name, args).await.unwrap_err();
        assert_eq!(err.code(), "unknown_collection", "{name}");
        assert!(matches!(err, ToolCallError::Failed { .. }), "{name}");
    }
    let version = rag.status("docs").await.unwrap().version;
    call(&tools, TRIGGER_INDEX, json!({"collection": "docs"}))
        .await
        .unwrap();
    for args in [
        json!({"collection": "docs", "query": "x", "sources": ["nope"]}),
        json!({"collection": "docs", "query": "x", "path_glob": "[bad"}),
        json!({"collection": "docs", "query": "x", "top_k": 0}),
        json!({"collection": "docs", "query": "  "}),
        json!({"collection": "docs", "query": "x", "surprise": 1}),
    ] {
        let err = call(&tools, QUERY, args.clone()).await.unwrap_err();
        let expected = if args.get("sources").is_some() {
            "unknown_source"
        } else {
            "invalid_arguments"
        };
        assert_eq!(err.code(), expected, "{args}");
    }
    let err = call(
        &tools,
        TRIGGER_INDEX,
        json!({"collection": "docs", "mode": "sideways"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "invalid_arguments");
    let err = call(&tools, "rag_drop", json!({})).await.unwrap_err();
    assert_eq!(err.code(), "unknown_tool");
    // Only the one good trigger wrote: started + completed.
    assert_eq!(rag.status("docs").await.unwrap().version, version + 2);
    drop((tools, rag));
    ledger.drop_schema().await.unwrap();
}
