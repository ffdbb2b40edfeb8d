//! What git may do beyond the local repository. `git_push` and `git_pr_create` need the node's
//! or flowchart's `git_policy` to allow them (the seeds' "policy-driven auto-allow"); the branch
//! must match one of its globs (none: any branch). Otherwise the call is refused with
//! `git_policy_denied`, which the loop records like any other result.

use globset::Glob;
use runledger_contracts::agent_tool::{GitPolicy, ToolCallError};

use crate::args::refused;

/// What the policy is asked to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    Push,
    PrCreate,
}

impl Remote {
    fn name(self) -> &'static str {
        match self {
            Remote::Push => "push",
            Remote::PrCreate => "pr_create",
        }
    }
}

/// Allowed, or `Refused { code: "git_policy_denied" }` saying why.
pub fn check(policy: Option<&GitPolicy>, what: Remote, branch: &str) -> Result<(), ToolCallError> {
    let Some(policy) = policy else {
        return Err(refused(
            "git_policy_denied",
            format!(
                "{} needs a git_policy on the node or flowchart; there is none",
                what.name()
            ),
        ));
    };
    let allowed = match what {
        Remote::Push => policy.push,
        Remote::PrCreate => policy.pr_create,
    };
    if !allowed {
        return Err(refused(
            "git_policy_denied",
            format!("the git_policy does not allow {}", what.name()),
        ));
    }
    if policy.branches.is_empty() {
        return Ok(());
    }
    for pattern in &policy.branches {
        let glob = Glob::new(pattern).map_err(|e| {
            refused(
                "git_policy_denied",
                format!("git_policy.branches: `{pattern}` is not a glob: {e}"),
            )
        })?;
        if glob.compile_matcher().is_match(branch) {
            return Ok(());
        }
    }
    Err(refused(
        "git_policy_denied",
        format!(
            "branch `{branch}` matches none of the git_policy's branches ({})",
            policy.branches.join(", ")
        ),
    ))
}
