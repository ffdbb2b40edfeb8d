//! One isolated directory per run, created at the run's first workspace, git or command call,
//! bootstrapped by a fresh clone of the flowchart's `workspace: {repo, ref}` and removed when the
//! run ends (kept when the run failed and `keep_on_failure` is set).
//!
//! Layout: `<root>/<run_id>/owner.json` (which host created it, from what), `repo/` (the
//! checkout: the tools' root), `home/` (`HOME` of git and commands, empty), `tmp/` (`TMPDIR`).
//!
//! **Executor rule.** A run's workspace lives on the executor host that served the run's first
//! workspace, git or command call; every later such call of the run must be served there. With
//! the in-process pool (the default) that is always so. With NATS dispatch, the dispatcher must
//! send a run's tool-using task nodes to the executor that holds the workspace
//! ([`WorkspaceManager::holds`]). What this manager enforces: a host that finds a run's
//! workspace marked as created by another host (a workspace root shared between hosts) refuses
//! with `workspace_elsewhere` instead of using or replacing it; the same host (also after a
//! restart) takes its run's workspace back as it was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use runledger_contracts::agent_tool::{ToolCallError, WorkspaceSource};
use runledger_contracts::ids::RunId;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::args::{failed, failed_with, refused};
use crate::error::ToolsError;
use crate::git::runner::{GitRunner, redact_credentials};

/// The run's workspace: where its checkout is.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub run_id: RunId,
    /// `<root>/<run_id>`.
    pub dir: PathBuf,
    /// The checkout, canonical (symlinks of the root resolved), the root of every tool path.
    pub repo: PathBuf,
    /// `HOME` for git and commands.
    pub home: PathBuf,
    /// `TMPDIR` for commands.
    pub tmp: PathBuf,
    /// Keep the directory when the run fails.
    pub keep_on_failure: bool,
}

/// What `owner.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    instance_id: String,
    run_id: String,
    /// The source's repository with any credentials redacted.
    repo: Option<String>,
    git_ref: Option<String>,
    keep_on_failure: bool,
}

type Slot = Arc<OnceCell<Arc<Workspace>>>;

/// Creates, hands out and removes run workspaces under one root.
pub struct WorkspaceManager {
    root: PathBuf,
    instance_id: String,
    git: GitRunner,
    runs: Mutex<HashMap<RunId, Slot>>,
}

impl std::fmt::Debug for WorkspaceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceManager")
            .field("root", &self.root)
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl WorkspaceManager {
    /// A manager of workspaces under `root` (created if missing).
    pub fn new(root: &Path, instance_id: &str, git: GitRunner) -> Result<Self, ToolsError> {
        std::fs::create_dir_all(root).map_err(|source| ToolsError::WorkspaceRoot {
            path: root.to_owned(),
            source,
        })?;
        let root = root
            .canonicalize()
            .map_err(|source| ToolsError::WorkspaceRoot {
                path: root.to_owned(),
                source,
            })?;
        Ok(WorkspaceManager {
            root,
            instance_id: instance_id.to_owned(),
            git,
            runs: Mutex::new(HashMap::new()),
        })
    }

    /// The directory holding every run's workspace.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this manager holds the run's workspace now (the dispatcher's affinity check).
    pub fn holds(&self, run_id: RunId) -> bool {
        self.runs
            .lock()
            .map(|runs| runs.get(&run_id).is_some_and(|slot| slot.initialized()))
            .unwrap_or(false)
    }

    /// The run's workspace, created (and cloned) on the first call. Concurrent first calls of
    /// one run wait for one creation; a creation that fails is tried again by the next call.
    pub async fn acquire(
        &self,
        run_id: RunId,
        source: Option<&WorkspaceSource>,
    ) -> Result<Arc<Workspace>, ToolCallError> {
        let slot = {
            let mut runs = self
                .runs
                .lock()
                .map_err(|_| failed("workspace_unavailable", "workspace table poisoned"))?;
            runs.entry(run_id).or_default().clone()
        };
        slot.get_or_try_init(|| self.create(run_id, source))
            .await
            .cloned()
    }

    async fn create(
        &self,
        run_id: RunId,
        source: Option<&WorkspaceSource>,
    ) -> Result<Arc<Workspace>, ToolCallError> {
        let dir = self.root.join(run_id.to_string());
        let marker = dir.join("owner.json");
        let keep_on_failure = source.is_some_and(|s| s.keep_on_failure);
        if marker.exists() {
            return self.adopt(run_id, &dir, &marker);
        }
        if dir.exists() {
            // A creation that died half-way: start again.
            std::fs::remove_dir_all(&dir).map_err(|e| io("cannot clear a partial workspace", e))?;
        }
        let repo = dir.join("repo");
        let home = dir.join("home");
        let tmp = dir.join("tmp");
        for d in [&dir, &home, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| io("cannot create the workspace", e))?;
        }
        let bootstrap = async {
            match source {
                Some(source) => self.clone_source(&dir, &home, source).await,
                None => {
                    std::fs::create_dir_all(&repo)
                        .map_err(|e| io("cannot create the workspace", e))?;
                    self.git_ok(&repo, &home, &["init", "--quiet"], "git init")
                        .await
                }
            }
        };
        if let Err(e) = bootstrap.await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let owner = Owner {
            instance_id: self.instance_id.clone(),
            run_id: run_id.to_string(),
            repo: source.map(|s| redact_credentials(&s.repo)),
            git_ref: source.and_then(|s| s.git_ref.clone()),
            keep_on_failure,
        };
        let text = serde_json::to_vec_pretty(&owner)
            .map_err(|e| failed_with("workspace_unavailable", "cannot record the owner", e))?;
        std::fs::write(&marker, text).map_err(|e| io("cannot record the owner", e))?;
        let repo = repo
            .canonicalize()
            .map_err(|e| io("cannot resolve the checkout", e))?;
        tracing::info!(run_id = %run_id, dir = %dir.display(), "workspace created");
        Ok(Arc::new(Workspace {
            run_id,
            dir,
            repo,
            home,
            tmp,
            keep_on_failure,
        }))
    }

    /// A workspace already on disk: ours (a restart of this host) or another host's.
    fn adopt(
        &self,
        run_id: RunId,
        dir: &Path,
        marker: &Path,
    ) -> Result<Arc<Workspace>, ToolCallError> {
        let text = std::fs::read(marker).map_err(|e| io("cannot read the workspace owner", e))?;
        let owner: Owner = serde_json::from_slice(&text)
            .map_err(|e| failed_with("workspace_unavailable", "unreadable owner.json", e))?;
        if owner.instance_id != self.instance_id {
            return Err(refused(
                "workspace_elsewhere",
                format!(
                    "the workspace of run {run_id} was created by executor `{}`; a run's \
                     workspace calls must all go to the executor that made its first one",
                    owner.instance_id
                ),
            ));
        }
        let repo = dir
            .join("repo")
            .canonicalize()
            .map_err(|e| io("cannot resolve the checkout", e))?;
        Ok(Arc::new(Workspace {
            run_id,
            dir: dir.to_owned(),
            repo,
            home: dir.join("home"),
            tmp: dir.join("tmp"),
            keep_on_failure: owner.keep_on_failure,
        }))
    }

    async fn clone_source(
        &self,
        dir: &Path,
        home: &Path,
        source: &WorkspaceSource,
    ) -> Result<(), ToolCallError> {
        if source.repo.starts_with('-') || source.repo.contains(['\0', '\n']) {
            return Err(refused(
                "invalid_workspace_source",
                "workspace.repo must be a path or URL",
            ));
        }
        self.git_ok(
            dir,
            home,
            &[
                "clone",
                "--quiet",
                "--no-recurse-submodules",
                "--",
                &source.repo,
                "repo",
            ],
            "git clone",
        )
        .await?;
        if let Some(git_ref) = &source.git_ref {
            if git_ref.starts_with('-') {
                return Err(refused(
                    "invalid_workspace_source",
                    "workspace.ref must not start with `-`",
                ));
            }
            let repo = dir.join("repo");
            self.git_ok(
                &repo,
                home,
                &["checkout", "--quiet", git_ref, "--"],
                "git checkout",
            )
            .await?;
        }
        Ok(())
    }

    async fn git_ok(
        &self,
        cwd: &Path,
        home: &Path,
        args: &[&str],
        what: &str,
    ) -> Result<(), ToolCallError> {
        let out =
            self.git.run(cwd, home, args).await.map_err(|e| {
                failed_with("workspace_bootstrap_failed", format!("{what}: {e}"), e)
            })?;
        if out.success() {
            Ok(())
        } else {
            Err(failed(
                "workspace_bootstrap_failed",
                format!(
                    "{what} failed: {}",
                    redact_credentials(out.stderr.text().trim())
                ),
            ))
        }
    }

    /// The run ended: remove its workspace, unless it failed and asked to be kept. Idempotent;
    /// a workspace another host created is never touched.
    pub fn release(&self, run_id: RunId, failed: bool) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(&run_id);
        }
        let dir = self.root.join(run_id.to_string());
        let Some(owner) = std::fs::read(dir.join("owner.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<Owner>(&t).ok())
        else {
            return;
        };
        if owner.instance_id != self.instance_id {
            return;
        }
        if failed && owner.keep_on_failure {
            tracing::info!(run_id = %run_id, dir = %dir.display(), "workspace kept for inspection");
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(run_id = %run_id, error = %e, "cannot remove the workspace");
        }
    }
}

fn io(what: &str, e: std::io::Error) -> ToolCallError {
    failed_with("workspace_unavailable", format!("{what}: {e}"), e)
}
