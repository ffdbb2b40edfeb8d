//! git_push and git_pr_create: the two git tools that reach beyond the run's checkout, both
//! under the git policy ([`super::policy`]).
//!
//! `git_pr_create` opens the pull request on the forge the policy names (`git_policy.forge`)
//! through [`super::forge`]; it does not push: push the head branch with `git_push` first.

use runledger_contracts::agent_tool::{GitPolicy, ToolCallContext, ToolCallError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::forge::{ForgeClient, PullRequestAsk};
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
struct PrArgs {
    title: String,
    #[serde(default)]
    body: String,
    base: String,
    head: Option<String>,
}

/// Checks the policy, then opens the pull request on the policy's forge ([`super::forge`]).
pub async fn pr_create(
    git: &Git<'_>,
    forge: &ForgeClient,
    ctx: &ToolCallContext,
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
    plain_word("head", &head)?;
    let policy = ctx.git_policy.as_ref();
    check(policy, Remote::PrCreate, &head)?;
    plain_word("base", &args.base)?;
    if args.title.trim().is_empty() {
        return Err(invalid("title", "must not be blank"));
    }
    let Some(config) = policy.and_then(|p| p.forge.as_ref()) else {
        return Err(failed(
            "forge_not_configured",
            format!(
                "the git_policy allows pr_create but names no forge (git_policy.forge: api_base, repo, \
                 token_env), so no pull request from `{head}` into `{}` was opened",
                args.base
            ),
        ));
    };
    let ask = PullRequestAsk {
        title: &args.title,
        body: &args.body,
        head: &head,
        base: &args.base,
        key: &ctx.idempotency_key,
    };
    forge.open(config, &ask).await
}
