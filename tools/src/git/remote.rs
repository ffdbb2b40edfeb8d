//! git_push and git_pr_create: the two git tools that reach beyond the run's checkout, both
//! under the git policy ([`super::policy`]).
//!
//! `git_pr_create` has no forge client in this build (no GitHub/GitLab API is called): when the
//! policy allows it, the call still fails with `pr_create_unsupported`, saying so, rather than
//! pretending; push the branch with `git_push` and open the pull request outside runledger.

use runledger_contracts::agent_tool::{GitPolicy, ToolCallError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ops::{Git, message};
use super::policy::{Remote, check};
use crate::args::{failed, invalid, parse, plain_word};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushArgs {
    #[serde(default = "origin")]
    remote: String,
    branch: Option<String>,
    #[serde(default)]
    set_upstream: bool,
}

fn origin() -> String {
    "origin".to_owned()
}

/// Pushes one branch (the current one by default) to the same name on a configured remote.
/// Never forced; tags are not pushed.
pub async fn push(
    git: &Git<'_>,
    policy: Option<&GitPolicy>,
    arguments: Value,
) -> Result<Value, ToolCallError> {
    let args: PushArgs = parse(arguments)?;
    let branch = match args.branch {
        Some(b) => b,
        None => git
            .current_branch()
            .await?
            .ok_or_else(|| invalid("branch", "HEAD is detached; name the branch to push"))?,
    };
    plain_word("branch", &branch)?;
    check(policy, Remote::Push, &branch)?;
    plain_word("remote", &args.remote)?;
    if git
        .line(&["remote", "get-url", &args.remote])
        .await?
        .is_none()
    {
        return Err(failed(
            "unknown_remote",
            format!("no remote named `{}`", args.remote),
        ));
    }
    if git
        .line(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ])
        .await?
        .is_none()
    {
        return Err(invalid("branch", format!("no local branch `{branch}`")));
    }
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    let mut cmd = vec!["push", "--porcelain", "--no-verify"];
    if args.set_upstream {
        cmd.push("--set-upstream");
    }
    cmd.extend([args.remote.as_str(), refspec.as_str()]);
    let out = git.raw(&cmd).await?;
    if !out.success() {
        return Err(failed(
            "push_rejected",
            format!("git push: {}", message(&out)),
        ));
    }
    let commit = git
        .line(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ])
        .await?;
    Ok(json!({ "remote": args.remote, "branch": branch, "commit": commit, "pushed": true }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read for validation; there is no forge client to send them to.
struct PrArgs {
    title: String,
    #[serde(default)]
    body: String,
    base: String,
    head: Option<String>,
}

/// Checks the policy, then says that no forge client exists (see the module's doc).
pub async fn pr_create(
    git: &Git<'_>,
    policy: Option<&GitPolicy>,
    arguments: Value,
) -> Result<Value, ToolCallError> {
    let args: PrArgs = parse(arguments)?;
    let head = match args.head {
        Some(h) => h,
        None => git
            .current_branch()
            .await?
            .ok_or_else(|| invalid("head", "HEAD is detached; name the head branch"))?,
    };
    check(policy, Remote::PrCreate, &head)?;
    Err(failed(
        "pr_create_unsupported",
        format!(
            "no forge client is configured in this build, so no pull request from `{head}` into `{}` was \
             opened; push the branch with git_push and open it outside runledger",
            args.base
        ),
    ))
}
