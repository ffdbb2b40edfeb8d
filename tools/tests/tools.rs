//! The crate's one test binary: each domain's operations against a real file system, real git
//! repositories (a local bare repository as the push remote), real processes, a real stdio
//! MCP server (examples/mcp_test_server.rs) and a stub forge over HTTP (tools/forge_stub.rs).

#[path = "tools/command.rs"]
mod command;
#[path = "tools/forge.rs"]
mod forge;
#[path = "tools/forge_stub.rs"]
mod forge_stub;
#[path = "tools/git.rs"]
mod git;
#[path = "tools/mcp.rs"]
mod mcp;
#[path = "tools/workspace.rs"]
mod workspace;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_tools::{
    GitPolicy, ToolCallContext, ToolCallError, ToolDomain, ToolsConfig, WorkspaceSource,
};
use serde_json::Value;

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("runledger-tools-{name}-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir.canonicalize().unwrap())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A configuration with workspaces under `scratch/workspaces` and no MCP registry.
pub fn config(scratch: &Scratch) -> ToolsConfig {
    ToolsConfig {
        workspace_root: scratch.path().join("workspaces"),
        mcp_registry: None,
        instance_id: "test-host".into(),
        ..ToolsConfig::default()
    }
}

/// The domains of a configuration, by domain name.
pub struct Domains(pub Vec<Arc<dyn ToolDomain>>);

impl Domains {
    pub async fn new(config: &ToolsConfig) -> Domains {
        Domains(runledger_tools::domains(config).await.unwrap())
    }
    pub fn get(&self, domain: &str) -> &Arc<dyn ToolDomain> {
        self.0.iter().find(|d| d.domain() == domain).unwrap()
    }
    /// Calls a tool of the domain its name starts with.
    pub async fn call(
        &self,
        ctx: &ToolCallContext,
        name: &str,
        args: Value,
    ) -> Result<Value, ToolCallError> {
        let domain = self
            .0
            .iter()
            .find(|d| d.specs().iter().any(|s| s.name == name))
            .unwrap_or_else(|| panic!("no domain offers {name}"));
        domain.call(ctx, name, args).await
    }
    pub fn run_finished(&self, run_id: RunId, failed: bool) {
        for d in &self.0 {
            d.run_finished(run_id, failed);
        }
    }
}

/// The context of a call of a new run.
pub fn ctx(workspace: Option<WorkspaceSource>, git_policy: Option<GitPolicy>) -> ToolCallContext {
    let node_run_id = NodeRunId::new_v7();
    ToolCallContext {
        run_id: RunId::new_v7(),
        node_id: "agent".into(),
        node_run_id,
        turn: 1,
        call_index: 0,
        idempotency_key: format!("{node_run_id}:1:0"),
        workspace,
        git_policy,
    }
}

/// Runs git in `dir` for the fixtures (with an identity, no user config).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Fixture",
            "-c",
            "user.email=fixture@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with `README.md` and `src/lib.rs` on `main`, one commit, tag `v0`.
pub fn source_repo(scratch: &Scratch) -> PathBuf {
    let repo = scratch.path().join("source");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "--quiet"]);
    std::fs::write(repo.join("README.md"), "# demo\n\nHello.\n").unwrap();
    std::fs::write(
        repo.join("src/lib.rs"),
        "pub fn answer() -> u32 {\n    41\n}\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "initial"]);
    git(&repo, &["tag", "v0"]);
    repo
}

/// A workspace source cloning `repo`.
pub fn source(repo: &Path) -> WorkspaceSource {
    WorkspaceSource {
        repo: repo.display().to_string(),
        git_ref: None,
        keep_on_failure: false,
    }
}

/// The refusal or failure code of a call's error.
pub fn code(result: Result<Value, ToolCallError>) -> &'static str {
    match result {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.code(),
    }
}

/// Whether the error is a refusal (not a failure) with `code`.
pub fn refused(result: Result<Value, ToolCallError>, expected: &str) {
    match result {
        Err(ToolCallError::Refused { code, message }) => {
            assert_eq!(code, expected, "{message}");
        }
        other => panic!("expected Refused({expected}), got {other:?}"),
    }
}
