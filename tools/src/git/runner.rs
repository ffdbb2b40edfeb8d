//! Runs the git binary for the workspace and git domains, with a clean environment: no system or
//! user configuration, no credential prompts, no hooks, no pager or editor, the configured
//! author and committer. One of the three places of the codebase that may start a process (with
//! `command/` and `mcp/stdio.rs`); see the no-spawn guardrail.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::config::GitIdentity;
use crate::output::{self, BoundedOutput};

/// Configuration given to every git invocation (`-c`), whatever the repository says.
const SAFE_CONFIG: [&str; 12] = [
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.pager=cat",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "credential.helper=",
    "protocol.ext.allow=never",
    "init.defaultBranch=main",
    "advice.detachedHead=false",
    "color.ui=false",
    "core.quotePath=false",
    "submodule.recurse=false",
];

/// How git is run.
#[derive(Debug, Clone)]
pub struct GitRunner {
    identity: GitIdentity,
    timeout: Duration,
    max_output: usize,
}

/// What one git invocation printed and how it ended.
#[derive(Debug)]
pub struct GitOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: BoundedOutput,
    pub stderr: BoundedOutput,
}

impl GitOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why git could not be run at all (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum GitRunError {
    #[error("cannot start git")]
    Start(#[source] std::io::Error),
    #[error("git did not finish within {0:?} and was killed")]
    TimedOut(Duration),
    #[error("waiting for git failed")]
    Wait(#[source] std::io::Error),
}

impl GitRunner {
    pub fn new(identity: GitIdentity, timeout: Duration, max_output: usize) -> Self {
        GitRunner {
            identity,
            timeout,
            max_output,
        }
    }

    /// Runs `git <args>` in `cwd` with `home` as `HOME` (an empty directory of the run, so no
    /// user configuration is read), capturing bounded output.
    pub async fn run(
        &self,
        cwd: &Path,
        home: &Path,
        args: &[&str],
    ) -> Result<GitOutput, GitRunError> {
        let mut cmd = Command::new("git");
        for setting in SAFE_CONFIG {
            cmd.arg("-c").arg(setting);
        }
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            .env("GIT_EDITOR", "true")
            .env("GIT_SEQUENCE_EDITOR", "true")
            .env("GIT_MERGE_AUTOEDIT", "no")
            .env("GIT_PAGER", "cat")
            .env("LC_ALL", "C")
            .env("GIT_AUTHOR_NAME", &self.identity.name)
            .env("GIT_AUTHOR_EMAIL", &self.identity.email)
            .env("GIT_COMMITTER_NAME", &self.identity.name)
            .env("GIT_COMMITTER_EMAIL", &self.identity.email)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let mut child = cmd.spawn().map_err(GitRunError::Start)?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let cap = self.max_output;
        let out = async move {
            match stdout {
                Some(s) => output::collect(s, cap).await,
                None => BoundedOutput::new(cap),
            }
        };
        let err = async move {
            match stderr {
                Some(s) => output::collect(s, 16 * 1024).await,
                None => BoundedOutput::new(0),
            }
        };
        let run = async {
            let (stdout, stderr, status) = tokio::join!(out, err, child.wait());
            (stdout, stderr, status)
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok((stdout, stderr, status)) => {
                let status = status.map_err(GitRunError::Wait)?;
                Ok(GitOutput {
                    code: status.code(),
                    stdout,
                    stderr,
                })
            }
            Err(_) => Err(GitRunError::TimedOut(self.timeout)),
        }
    }
}

/// `scheme://user:secret@host` becomes `scheme://***@host`: git echoes remote URLs in its
/// messages, and credentials never reach the ledger or the logs.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&after[userinfo_end..end]);
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}
