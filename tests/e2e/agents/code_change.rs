//! examples/code-change.yaml through the binary against a local repository the test makes with
//! git: the run's workspace is a clone of the `repo` input; README.md is read, branched, patched
//! with `workspace_apply_patch`, checked by `command_run`, committed, tagged and pushed under
//! the flowchart's `git_policy`. Every step is a `ToolCalled` in the export, the origin holds
//! the pushed branch, and the workspace is gone when the run has completed. Without the policy
//! the push is refused and recorded, and nothing reaches the origin.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use runledger_ledger::EventStore;
use runledger_ledger::testing::TestLedger;

use super::super::runledger;
use super::{TempDir, export_verified, root, run_flow, stderr, stdout, tool_calls};

/// `git ARGS` in `cwd` with no user or system configuration; its stdout, trimmed.
fn git(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// A bare repository `demo.git` under `dir` whose `main` has one commit: README.md is
/// "# demo\n\nHello.\n", the context of the example's patch.
fn origin(dir: &Path) -> PathBuf {
    let work = dir.join("demo");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "--quiet", "--initial-branch", "main"]);
    std::fs::write(work.join("README.md"), "# demo\n\nHello.\n").unwrap();
    git(&work, &["add", "README.md"]);
    git(
        &work,
        &[
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@example.org",
            "commit",
            "--quiet",
            "-m",
            "initial",
        ],
    );
    let bare = dir.join("demo.git");
    git(
        dir,
        &["clone", "--quiet", "--bare", "demo", bare.to_str().unwrap()],
    );
    bare
}

/// The tools of the recorded calls, model turns as `provider`.
fn tools<'a>(calls: &[&'a Value]) -> Vec<&'a str> {
    calls.iter().map(|c| c["tool"].as_str().unwrap()).collect()
}

/// The recorded call of `tool` (the only one).
fn call<'a>(calls: &[&'a Value], tool: &str) -> &'a Value {
    let mut found = calls.iter().filter(|c| c["tool"] == tool);
    let first = found.next().unwrap_or_else(|| panic!("no {tool} call"));
    assert!(found.next().is_none(), "{tool} called twice");
    first
}

#[test]
fn a_code_change_is_cloned_patched_checked_committed_tagged_pushed_and_exported() {
    let dir = TempDir::new();
    let cwd = dir.0.clone();
    let repo = origin(&cwd);
    let before = git(&repo, &["rev-parse", "main"]);
    // Workspaces go under RUNLEDGER_WORKSPACE_ROOT: here, inside the test's directory.
    let workspaces = cwd.join("workspaces");
    let summary = run_flow(
        &cwd,
        &root().join("examples/code-change.yaml"),
        &json!({ "repo": repo.to_str().unwrap() }),
        &[("RUNLEDGER_WORKSPACE_ROOT", &workspaces)],
    );
    let run_id = summary["run_id"].as_str().unwrap();

    let lines = export_verified(&cwd, run_id);
    let calls = tool_calls(&lines);
    assert_eq!(
        tools(&calls),
        [
            "provider",
            "workspace_read",
            "git_branch_create",
            "provider",
            "workspace_apply_patch",
            "provider",
            "command_run",
            "provider",
            "git_commit",
            "provider",
            "git_tag_create",
            "git_push",
            "provider",
            "git_status",
            "provider",
        ]
    );
    for c in &calls {
        assert_eq!(c["outcome"], "ok", "{c}");
        if c["tool"] != "provider" {
            let key = c["idempotency_key"].as_str().unwrap();
            let agent = &c["agent"];
            assert_eq!(
                key.split(':').skip(1).collect::<Vec<_>>(),
                [agent["turn"].to_string(), agent["call_index"].to_string()],
                "{c}"
            );
        }
    }
    let read = call(&calls, "workspace_read");
    assert_eq!(read["output"]["content"], "# demo\n\nHello.\n");
    let patch = call(&calls, "workspace_apply_patch");
    assert_eq!(patch["agent"]["side_effects"], true);
    let check = call(&calls, "command_run");
    assert_eq!(check["output"]["exit_code"], 0, "{check}");
    assert_eq!(check["output"]["stdout"], "1\n");
    let commit = call(&calls, "git_commit");
    assert_eq!(commit["output"]["branch"], "agent/greeting");
    let commit_id = commit["output"]["commit"].as_str().unwrap();
    let tag = call(&calls, "git_tag_create");
    assert_eq!(
        (&tag["output"]["tag"], &tag["output"]["commit"]),
        (&json!("v1"), &json!(commit_id))
    );
    assert_eq!(tag["output"]["annotated"], true);
    let push = call(&calls, "git_push");
    assert_eq!(push["output"]["pushed"], true, "{push}");
    assert_eq!(call(&calls, "git_status")["output"]["clean"], true);

    // The agent node's artifact: its lineage.
    let artifact = lines
        .iter()
        .find(|l| l["event_type"] == "ArtifactPersisted" && l["payload"]["node_id"] == "change")
        .unwrap();
    let agent = &artifact["payload"]["payload"]["agent"];
    assert_eq!(agent["turns"], 7);
    assert_eq!(agent["tool_calls"], 8);
    assert_eq!(
        artifact["payload"]["payload"]["output"]["branch"],
        "agent/greeting"
    );

    // The origin has the pushed branch with the agent's commit; main is as it was; tags are
    // not pushed (git_push pushes one branch).
    assert_eq!(git(&repo, &["rev-parse", "agent/greeting"]), commit_id);
    assert_eq!(
        git(&repo, &["show", "agent/greeting:README.md"]),
        "# demo\n\nHello from runledger."
    );
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s|%an", "agent/greeting"]),
        "Greet from runledger|runledger agent"
    );
    assert_eq!(git(&repo, &["rev-parse", "main"]), before);
    assert_eq!(git(&repo, &["tag", "--list"]), "");
    // The run completed: its workspace was torn down.
    let workspace = workspaces.join(run_id);
    assert!(
        workspaces.is_dir() && !workspace.exists(),
        "{} is left",
        workspace.display()
    );
}

#[test]
fn without_a_git_policy_the_push_is_refused_recorded_and_nothing_is_pushed() {
    let dir = TempDir::new();
    let cwd = dir.0.clone();
    let repo = origin(&cwd);
    let example = std::fs::read_to_string(root().join("examples/code-change.yaml")).unwrap();
    let policy = "git_policy: { push: true, branches: [\"agent/*\"] }\n";
    assert!(example.contains(policy));
    let flow = cwd.join("no-policy.yaml");
    std::fs::write(&flow, example.replace(policy, "")).unwrap();
    let workspaces = cwd.join("workspaces");
    let summary = run_flow(
        &cwd,
        &flow,
        &json!({ "repo": repo.to_str().unwrap() }),
        &[("RUNLEDGER_WORKSPACE_ROOT", &workspaces)],
    );
    let lines = export_verified(&cwd, summary["run_id"].as_str().unwrap());
    let calls = tool_calls(&lines);
    let push = call(&calls, "git_push");
    assert_eq!(push["outcome"], "error", "{push}");
    assert_eq!(push["error"]["code"], "git_policy_denied", "{push}");
    assert!(
        push["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs a git_policy"),
        "{push}"
    );
    // The refusal went back to the model, which answered: the node and the run completed.
    assert_eq!(call(&calls, "git_commit")["outcome"], "ok");
    assert_eq!(git(&repo, &["branch", "--list", "agent/*"]), "");
}

#[tokio::test]
async fn a_run_whose_inputs_cannot_fill_the_workspace_is_refused_before_it_starts() {
    let ledger = TestLedger::new().await.unwrap();
    let flow = root().join("examples/code-change.yaml");
    for (inputs, problem) in [
        ("{}", "the run has no input `inputs.repo`"),
        (
            r#"{"repo": 7}"#,
            "`inputs.repo` must be a string, found a number",
        ),
    ] {
        let out = runledger(
            &["run", flow.to_str().unwrap(), "--input", inputs, "--wait"],
            Some(ledger.schema()),
        );
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("workspace.repo") && err.contains(problem),
            "{err}"
        );
    }
    // Nothing was written: the ledger holds no run.
    let runs = ledger.store.list_streams("run-").await.unwrap();
    assert!(runs.is_empty(), "{runs:?}");
    ledger.drop_schema().await.unwrap();
}
