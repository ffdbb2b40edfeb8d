//! git_pr_create through the binary against the stub forge of the tools crate's tests
//! (tools/tests/tools/forge_stub.rs): the flowchart's `git_policy.forge` names the forge and the
//! environment variable of its token; the pull request's number and url are the call's
//! recorded result, and the token is nowhere in the ledger, the export or the logs.

use std::path::Path;

use super::forge_stub::StubForge;
use super::{TempDir, bare_with, completed, export_verified, stderr, stdout, tool_calls};

const TOKEN_ENV: &str = "RUNLEDGER_E2E_FORGE_TOKEN";

/// Every file under `dir` (the SQLite ledger, its WAL, the export) holding `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_pull_request_is_opened_on_the_policys_forge_and_the_token_stays_out_of_every_record() {
    let dir = TempDir::new();
    let cwd = dir.0.clone();
    let secret = format!("ghp_e2e{}", std::process::id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let forge = runtime.block_on(StubForge::start(&secret));
    let flow = cwd.join("open-pr.yaml");
    std::fs::write(
        &flow,
        format!(
            r#"
name: open-pr
git_policy:
  pr_create: true
  branches: ["agent/*"]
  forge: {{ api_base: "{api}", repo: acme/demo, token_env: {TOKEN_ENV} }}
nodes:
  - {{ id: start, type: start }}
  - id: open
    type: task
    model: scripted
    prompt: Open the pull request.
    tools: [git_pr_create]
    scripted:
      - tool_calls:
          - {{ tool: git_pr_create, arguments: {{ title: Fix the answer, body: It was 41., base: main, head: agent/fix }} }}
      - output: {{ opened: true }}
  - {{ id: done, type: end }}
connectors:
  - {{ id: c1, from: start, to: open }}
  - {{ id: c2, from: open, to: done }}
"#,
            api = forge.api_base
        ),
    )
    .unwrap();
    let workspaces = cwd.join("workspaces");
    let out = bare_with(
        &cwd,
        &["run", flow.to_str().unwrap(), "--wait", "--json"],
        &[
            ("RUNLEDGER_WORKSPACE_ROOT", &workspaces),
            (TOKEN_ENV, Path::new(&secret)),
            ("RUNLEDGER_LOG", Path::new("debug")),
        ],
    );
    let summary = completed(&out);
    let run_id = summary["run_id"].as_str().unwrap();

    // One pull request, asked with the token.
    {
        let seen = forge.seen.lock().unwrap();
        assert_eq!(seen.posts.len(), 1, "{:?}", seen.posts);
        assert_eq!(seen.posts[0]["head"], "agent/fix");
        assert_eq!(seen.posts[0]["base"], "main");
        assert!(
            seen.authorizations
                .iter()
                .all(|a| a == &format!("Bearer {secret}"))
        );
    }

    // The call's result, as the model read it, is its recorded output.
    let lines = export_verified(&cwd, run_id);
    let calls = tool_calls(&lines);
    let pr = calls
        .iter()
        .find(|c| c["tool"] == "git_pr_create")
        .expect("a git_pr_create call");
    assert_eq!(pr["outcome"], "ok", "{pr}");
    assert_eq!(pr["output"]["number"], 1, "{pr}");
    assert_eq!(pr["output"]["created"], true, "{pr}");
    assert!(
        pr["output"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/acme/demo/pull/1"),
        "{pr}"
    );
    assert_eq!(pr["agent"]["side_effects"], true);

    // The token: not in the logs, not in the ledger's files or the export.
    let logs = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!logs.contains(&secret), "the logs hold the token");
    assert!(logs.contains("DEBUG"), "debug logs were on: {logs}");
    assert_eq!(
        files_holding(&cwd, secret.as_bytes()),
        Vec::<String>::new(),
        "files holding the token"
    );
}
