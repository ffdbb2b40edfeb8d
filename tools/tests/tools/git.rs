//! The git domain: local operations, the clean identity, and the policy on push and pr_create
//! (push to a local bare repository).

use std::path::PathBuf;

use runledger_tools::GitPolicy;
use serde_json::json;

use crate::{Domains, Scratch, code, config, ctx, git, refused, source, source_repo};

/// A bare clone of the source repo, to push to.
fn bare_remote(scratch: &Scratch) -> PathBuf {
    let repo = source_repo(scratch);
    let bare = scratch.path().join("remote.git");
    git(
        scratch.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            repo.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    bare
}

#[tokio::test]
async fn local_operations_status_diff_commit_log_show_branch_tag() {
    let scratch = Scratch::new("git-local");
    let repo = source_repo(&scratch);
    let mut cfg = config(&scratch);
    cfg.git_identity.name = "Agent Smith".into();
    cfg.git_identity.email = "smith@example.invalid".into();
    let domains = Domains::new(&cfg).await;
    let c = ctx(Some(source(&repo)), None);
    let call = |name: &'static str, args| domains.call(&c, name, args);

    let status = call("git_status", json!({})).await.unwrap();
    assert_eq!(status["branch"], "main");
    assert_eq!(status["clean"], true);

    call(
        "workspace_write",
        json!({ "path": "src/lib.rs", "content": "pub fn answer() -> u32 {\n    42\n}\n" }),
    )
    .await
    .unwrap();
    call(
        "workspace_write",
        json!({ "path": "new.txt", "content": "new\n" }),
    )
    .await
    .unwrap();
    let status = call("git_status", json!({})).await.unwrap();
    assert_eq!(status["clean"], false);
    let entries = status["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == "src/lib.rs" && e["worktree"] == "M")
    );
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == "new.txt" && e["index"] == "?")
    );

    let diff = call("git_diff", json!({})).await.unwrap();
    assert!(diff["diff"].as_str().unwrap().contains("+    42"));
    let stat = call("git_diff", json!({ "stat": true, "paths": ["src"] }))
        .await
        .unwrap();
    assert!(stat["diff"].as_str().unwrap().contains("src/lib.rs"));

    let commit = call("git_commit", json!({ "message": "Fix the answer" }))
        .await
        .unwrap();
    let hash = commit["commit"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 40);
    assert_eq!(commit["branch"], "main");
    assert_eq!(
        code(call("git_commit", json!({ "message": "again" })).await),
        "nothing_to_commit"
    );

    let log = call("git_log", json!({ "max_count": 5 })).await.unwrap();
    let commits = log["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[0]["hash"], hash.as_str());
    assert_eq!(commits[0]["subject"], "Fix the answer");
    assert_eq!(
        commits[0]["author"], "Agent Smith",
        "the configured identity, not the user's"
    );
    assert_eq!(commits[0]["email"], "smith@example.invalid");
    assert_eq!(commits[1]["subject"], "initial");

    let show = call("git_show", json!({ "rev": "HEAD" })).await.unwrap();
    assert!(show["output"].as_str().unwrap().contains("Fix the answer"));
    let old = call("git_show", json!({ "rev": "v0", "path": "src/lib.rs" }))
        .await
        .unwrap();
    assert!(old["output"].as_str().unwrap().contains("41"));
    assert_eq!(
        code(call("git_show", json!({ "rev": "--output=/tmp/x" })).await),
        "invalid_arguments"
    );

    let branch = call(
        "git_branch_create",
        json!({ "name": "feature/x", "switch": true }),
    )
    .await
    .unwrap();
    assert_eq!(branch["commit"], hash.as_str());
    assert_eq!(
        call("git_status", json!({})).await.unwrap()["branch"],
        "feature/x"
    );
    assert_eq!(
        code(call("git_branch_create", json!({ "name": "bad..name" })).await),
        "invalid_arguments"
    );
    call("git_branch_switch", json!({ "name": "main" }))
        .await
        .unwrap();
    call(
        "git_branch_switch",
        json!({ "name": "topic", "create": true }),
    )
    .await
    .unwrap();
    assert_eq!(
        call("git_status", json!({})).await.unwrap()["branch"],
        "topic"
    );
    assert_eq!(
        code(call("git_branch_switch", json!({ "name": "missing" })).await),
        "git_switch_failed"
    );

    let tag = call(
        "git_tag_create",
        json!({ "name": "v1.0.0", "message": "first release" }),
    )
    .await
    .unwrap();
    assert_eq!(tag["commit"], hash.as_str());
    assert_eq!(tag["annotated"], true);
    let light = call("git_tag_create", json!({ "name": "v0-again", "rev": "v0" }))
        .await
        .unwrap();
    assert_eq!(light["annotated"], false);
    assert_eq!(
        code(call("git_tag_create", json!({ "name": "v1.0.0" })).await),
        "git_tag_failed"
    );
}

#[tokio::test]
async fn cherry_pick_and_rebase_apply_or_abort_cleanly() {
    let scratch = Scratch::new("git-pick");
    let repo = source_repo(&scratch);
    let domains = Domains::new(&config(&scratch)).await;
    let c = ctx(Some(source(&repo)), None);
    let call = |name: &'static str, args| domains.call(&c, name, args);

    call(
        "git_branch_create",
        json!({ "name": "side", "switch": true }),
    )
    .await
    .unwrap();
    call(
        "workspace_write",
        json!({ "path": "side.txt", "content": "side\n" }),
    )
    .await
    .unwrap();
    let side = call("git_commit", json!({ "message": "side file" }))
        .await
        .unwrap()["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    call("git_branch_switch", json!({ "name": "main" }))
        .await
        .unwrap();
    call(
        "workspace_write",
        json!({ "path": "main.txt", "content": "main\n" }),
    )
    .await
    .unwrap();
    call("git_commit", json!({ "message": "main file" }))
        .await
        .unwrap();

    let picked = call("git_cherry_pick", json!({ "commits": [side] }))
        .await
        .unwrap();
    assert!(picked["head"].is_string());
    assert_eq!(
        call("workspace_read", json!({ "path": "side.txt" }))
            .await
            .unwrap()["content"],
        "side\n"
    );

    // Rebase side onto main.
    call("git_branch_switch", json!({ "name": "side" }))
        .await
        .unwrap();
    call(
        "workspace_write",
        json!({ "path": "more.txt", "content": "more\n" }),
    )
    .await
    .unwrap();
    call("git_commit", json!({ "message": "more" }))
        .await
        .unwrap();
    let rebased = call("git_rebase_noninteractive", json!({ "onto": "main" }))
        .await
        .unwrap();
    assert_eq!(rebased["branch"], "side");
    let log = call("git_log", json!({})).await.unwrap();
    let subjects: Vec<&str> = log["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects[0], "more");
    assert!(subjects.contains(&"main file"));

    // A conflicting pick is aborted and names the file.
    call(
        "workspace_write",
        json!({ "path": "README.md", "content": "side version\n" }),
    )
    .await
    .unwrap();
    let conflicting = call("git_commit", json!({ "message": "side readme" }))
        .await
        .unwrap()["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    call("git_branch_switch", json!({ "name": "main" }))
        .await
        .unwrap();
    call(
        "workspace_write",
        json!({ "path": "README.md", "content": "main version\n" }),
    )
    .await
    .unwrap();
    call("git_commit", json!({ "message": "main readme" }))
        .await
        .unwrap();
    let err = call("git_cherry_pick", json!({ "commits": [conflicting] }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "cherry_pick_conflict");
    assert!(err.to_string().contains("README.md"), "{err}");
    let status = call("git_status", json!({})).await.unwrap();
    assert_eq!(status["clean"], true, "aborted: {status}");
    assert_eq!(
        call("workspace_read", json!({ "path": "README.md" }))
            .await
            .unwrap()["content"],
        "main version\n"
    );
}

#[tokio::test]
async fn push_needs_a_policy_that_allows_the_branch() {
    let scratch = Scratch::new("git-push");
    let bare = bare_remote(&scratch);
    let cfg = config(&scratch);
    let domains = Domains::new(&cfg).await;
    let remote_head = |branch: &str| {
        let out = std::process::Command::new("git")
            .args([
                "--git-dir",
                bare.to_str().unwrap(),
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };

    // No policy: refused, nothing pushed.
    let c = ctx(Some(source(&bare)), None);
    domains
        .call(
            &c,
            "git_branch_switch",
            json!({ "name": "agent/fix", "create": true }),
        )
        .await
        .unwrap();
    domains
        .call(
            &c,
            "workspace_write",
            json!({ "path": "fix.txt", "content": "fix\n" }),
        )
        .await
        .unwrap();
    domains
        .call(&c, "git_commit", json!({ "message": "fix" }))
        .await
        .unwrap();
    refused(
        domains.call(&c, "git_push", json!({})).await,
        "git_policy_denied",
    );
    refused(
        domains
            .call(
                &c,
                "git_pr_create",
                json!({ "title": "Fix", "base": "main" }),
            )
            .await,
        "git_policy_denied",
    );
    assert_eq!(remote_head("agent/fix"), None);

    // A policy without push, or for other branches: refused.
    let mut c2 = c.clone();
    c2.git_policy = Some(GitPolicy {
        push: false,
        pr_create: true,
        branches: vec![],
        forge: None,
    });
    refused(
        domains.call(&c2, "git_push", json!({})).await,
        "git_policy_denied",
    );
    c2.git_policy = Some(GitPolicy {
        push: true,
        pr_create: false,
        branches: vec!["release/*".into()],
        forge: None,
    });
    refused(
        domains.call(&c2, "git_push", json!({})).await,
        "git_policy_denied",
    );
    refused(
        domains
            .call(
                &c2,
                "git_pr_create",
                json!({ "title": "Fix", "base": "main" }),
            )
            .await,
        "git_policy_denied",
    );
    assert_eq!(remote_head("agent/fix"), None);

    // Allowed for agent/*: pushed to the bare repository.
    c2.git_policy = Some(GitPolicy {
        push: true,
        pr_create: true,
        branches: vec!["agent/*".into()],
        forge: None,
    });
    let pushed = domains
        .call(&c2, "git_push", json!({ "set_upstream": true }))
        .await
        .unwrap();
    assert_eq!(pushed["branch"], "agent/fix");
    assert_eq!(
        remote_head("agent/fix").as_deref(),
        pushed["commit"].as_str()
    );
    // The same policy does not open `main`.
    refused(
        domains
            .call(&c2, "git_push", json!({ "branch": "main" }))
            .await,
        "git_policy_denied",
    );
    assert_eq!(
        code(
            domains
                .call(&c2, "git_push", json!({ "remote": "elsewhere" }))
                .await
        ),
        "unknown_remote"
    );
    assert_eq!(
        code(
            domains
                .call(&c2, "git_push", json!({ "remote": "--receive-pack=evil" }))
                .await
        ),
        "invalid_arguments"
    );

    // pr_create allowed, but the policy names no forge: a typed failure (forge.rs opens them).
    let err = domains
        .call(
            &c2,
            "git_pr_create",
            json!({ "title": "Fix", "base": "main" }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forge_not_configured");
    assert!(matches!(err, runledger_tools::ToolCallError::Failed { .. }));
}
