//! `runledger memory|plans|milestones`: tool state written by a run, read back by replaying the
//! tool streams.

use serde_json::Value;

use super::{TestLedger, runledger, stderr, stdout};

#[tokio::test]
async fn tool_state_written_by_a_run_is_listed_and_shown() {
    let ledger = TestLedger::new().await.unwrap();
    let schema = Some(ledger.schema());
    let out = runledger(
        &[
            "run",
            "examples/project-tools.yaml",
            "--input",
            r#"{"project":"essay","topic":"owls"}"#,
            "--wait",
        ],
        schema,
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let json = |args: &[&str]| -> Value {
        let out = runledger(args, schema);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let entry = json(&["memory", "get", "topic", "--scope", "essay", "--json"]);
    assert_eq!(
        (entry["value"].as_str(), entry["revision"].as_u64()),
        (Some("owls"), Some(1))
    );
    let list = json(&["memory", "list", "--scope", "essay", "--json"]);
    assert_eq!(list["entries"].as_array().unwrap().len(), 1);
    let scopes = json(&["memory", "scopes", "--json"]);
    assert_eq!(scopes["scopes"][0]["scope"], "essay");
    let plan = json(&["plans", "get", "essay", "--json"]);
    assert_eq!(plan["stages"][0]["status"], "done");
    assert_eq!(plan["stages"][1]["status"], "pending");
    assert_eq!(
        json(&["plans", "list", "--json"])["plans"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let milestone = json(&["milestones", "get", "essay-first-draft", "--json"]);
    assert_eq!(milestone["evidence"][0]["summary"], "draft stage is done");
    assert_eq!(
        json(&["milestones", "list", "--plan", "essay", "--json"])["milestones"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        json(&["milestones", "list", "--status", "achieved", "--json"])["milestones"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Text output, and one clear line (exit 1) for what does not exist or is malformed.
    let out = runledger(&["plans", "get", "essay"], schema);
    assert!(
        stdout(&out).contains("1. [done] Draft (draft)"),
        "{}",
        stdout(&out)
    );
    let out = runledger(&["memory", "get", "nope", "--scope", "essay"], schema);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "runledger: error: memory scope `essay` has no entry `nope` [tool_not_found]"
    );
    let out = runledger(&["memory", "list", "--scope", "no spaces"], schema);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("runledger: error: --scope: `no spaces`"),
        "{}",
        stderr(&out)
    );
    let out = runledger(&["milestones", "get", "nope", "--json"], schema);
    assert_eq!(out.status.code(), Some(1));
    let envelope: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(envelope["error"]["code"], "tool_not_found");
    ledger.drop_schema().await.unwrap();
}
