//! The `git_*` tools as the model sees them.

use runledger_contracts::agent_tool::ToolSpec;
use serde_json::json;

use crate::args::{boolean, integer, object, spec, string, strings};

pub fn specs() -> Vec<ToolSpec> {
    let rev = "A commit, branch or tag (not starting with `-`).";
    vec![
        spec(
            "git_status",
            "The checkout's branch, HEAD commit and changed or untracked files (porcelain codes).",
            object(json!({}), &[]),
            false,
        ),
        spec(
            "git_diff",
            "The diff of the working tree (or of the index with `staged`, or against `rev`).",
            object(
                json!({
                    "staged": boolean("Diff the index against HEAD (default false)."),
                    "stat": boolean("Only the diffstat (default false)."),
                    "rev": string(rev),
                    "paths": strings("Limit to these workspace paths."),
                }),
                &[],
            ),
            false,
        ),
        spec(
            "git_log",
            "Recent commits (hash, author, email, date, subject), newest first.",
            object(
                json!({
                    "max_count": integer("How many (default 20).", 1, 200),
                    "rev": string(rev),
                    "paths": strings("Only commits touching these paths."),
                }),
                &[],
            ),
            false,
        ),
        spec(
            "git_show",
            "A commit with its diffstat and patch, or with `path` a file's content at that commit.",
            object(
                json!({ "rev": string(rev), "path": string("A file path in the repository.") }),
                &["rev"],
            ),
            false,
        ),
        spec(
            "git_branch_create",
            "Create a branch at `start_point` (default HEAD), optionally switching to it.",
            object(
                json!({
                    "name": string("The new branch's name."),
                    "start_point": string(rev),
                    "switch": boolean("Switch to it (default false)."),
                }),
                &["name"],
            ),
            true,
        ),
        spec(
            "git_branch_switch",
            "Switch the checkout to a branch (creating it from HEAD with `create`).",
            object(
                json!({ "name": string("The branch."), "create": boolean("Create it first (default false).") }),
                &["name"],
            ),
            true,
        ),
        spec(
            "git_commit",
            "Stage all changes (or only `paths`) and commit them with the configured identity; hooks do not run.",
            object(
                json!({
                    "message": string("The commit message."),
                    "paths": strings("Stage only these workspace paths."),
                    "allow_empty": boolean("Commit even with nothing staged (default false)."),
                }),
                &["message"],
            ),
            true,
        ),
        spec(
            "git_tag_create",
            "Create a tag at `rev` (default HEAD); annotated when `message` is given.",
            object(
                json!({ "name": string("The tag's name."), "rev": string(rev), "message": string("Annotation.") }),
                &["name"],
            ),
            true,
        ),
        spec(
            "git_cherry_pick",
            "Apply the given commits onto HEAD, in order. On a conflict everything is aborted and the conflicting files are named.",
            object(
                json!({ "commits": { "type": "array", "minItems": 1, "items": string(rev) } }),
                &["commits"],
            ),
            true,
        ),
        spec(
            "git_rebase_noninteractive",
            "Rebase the current branch onto `onto` (with `upstream`: `--onto onto upstream`). On a conflict the rebase is aborted and the conflicting files are named.",
            object(
                json!({ "onto": string(rev), "upstream": string(rev) }),
                &["onto"],
            ),
            true,
        ),
        spec(
            "git_push",
            "Push a branch (default: the current one) to the same name on a remote (default origin). Never forced. \
             Only when the git policy allows push for that branch; otherwise refused (git_policy_denied).",
            object(
                json!({
                    "remote": string("A configured remote's name (default origin)."),
                    "branch": string("The local branch."),
                    "set_upstream": boolean("Record the remote branch as upstream (default false)."),
                }),
                &[],
            ),
            true,
        ),
        spec(
            "git_pr_create",
            "Open a pull request from `head` (default: the current branch; push it first with git_push) into `base` \
             on the forge the git policy names. Only when the git policy allows pr_create for that branch; \
             otherwise refused (git_policy_denied). Answers the pull request's number and url.",
            object(
                json!({
                    "title": string("Title."),
                    "body": { "type": "string", "description": "Description." },
                    "base": string("Branch to merge into."),
                    "head": string("Branch to merge (default: the current one)."),
                }),
                &["title", "base"],
            ),
            true,
        ),
    ]
}
