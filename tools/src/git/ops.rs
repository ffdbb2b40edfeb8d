//! The local git operations: status, diff, log, show, branches, commit, tag, cherry-pick and a
//! non-interactive rebase. Every value the model gives that git reads as an argument is checked
//! not to look like an option ([`plain_word`]); paths are confined like the workspace tools'.

use runledger_contracts::agent_tool::ToolCallError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::runner::{GitOutput, GitRunner, redact_credentials};
use crate::args::{failed, failed_with, invalid, parse, plain_word};
use crate::workspace::{Workspace, confine};

/// git in one run's checkout.
pub struct Git<'a> {
    runner: &'a GitRunner,
    pub ws: &'a Workspace,
}

impl<'a> Git<'a> {
    pub fn new(runner: &'a GitRunner, ws: &'a Workspace) -> Self {
        Git { runner, ws }
    }

    /// Runs git; a failure to run at all is `git_unavailable` (or `git_timeout`).
    pub async fn raw(&self, args: &[&str]) -> Result<GitOutput, ToolCallError> {
        self.runner
            .run(&self.ws.repo, &self.ws.home, args)
            .await
            .map_err(|e| {
                let code = match e {
                    super::runner::GitRunError::TimedOut(_) => "git_timeout",
                    _ => "git_unavailable",
                };
                failed_with(code, e.to_string(), e)
            })
    }

    /// Runs git; a non-zero exit is `code` with git's message.
    pub async fn ok(&self, args: &[&str], code: &'static str) -> Result<GitOutput, ToolCallError> {
        let out = self.raw(args).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(failed(
                code,
                format!(
                    "git {}: {}",
                    args.first().copied().unwrap_or(""),
                    message(&out)
                ),
            ))
        }
    }

    /// One trimmed line of output, or `None` when git fails.
    pub async fn line(&self, args: &[&str]) -> Result<Option<String>, ToolCallError> {
        let out = self.raw(args).await?;
        Ok(out.success().then(|| out.stdout.text().trim().to_owned()))
    }

    /// The current branch, `None` when HEAD is detached.
    pub async fn current_branch(&self) -> Result<Option<String>, ToolCallError> {
        self.line(&["symbolic-ref", "--quiet", "--short", "HEAD"])
            .await
    }

    async fn head(&self) -> Result<Option<String>, ToolCallError> {
        self.line(&["rev-parse", "--verify", "--quiet", "HEAD"])
            .await
    }

    fn paths(&self, field: &str, paths: &[String]) -> Result<Vec<String>, ToolCallError> {
        paths
            .iter()
            .map(|p| {
                let c = confine(&self.ws.repo, p).map_err(|e| invalid(field, e))?;
                Ok(if c.relative.is_empty() {
                    ".".to_owned()
                } else {
                    c.relative
                })
            })
            .collect()
    }

    pub async fn status(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let _: Empty = parse(arguments)?;
        let out = self
            .ok(
                &[
                    "status",
                    "--porcelain=v1",
                    "--branch",
                    "--untracked-files=all",
                ],
                "git_failed",
            )
            .await?;
        let text = out.stdout.text();
        let mut branch_line = String::new();
        let mut entries = Vec::new();
        for line in text.lines() {
            if let Some(b) = line.strip_prefix("## ") {
                branch_line = b.to_owned();
            } else if line.len() > 3 {
                let (xy, path) = line.split_at(3);
                let mut codes = xy.chars();
                entries.push(json!({
                    "index": codes.next().map(String::from).unwrap_or_default(),
                    "worktree": codes.next().map(String::from).unwrap_or_default(),
                    "path": path,
                }));
            }
        }
        Ok(json!({
            "branch": self.current_branch().await?,
            "tracking": branch_line,
            "head": self.head().await?,
            "clean": entries.is_empty(),
            "entries": entries,
        }))
    }

    pub async fn diff(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: DiffArgs = parse(arguments)?;
        let mut cmd = vec!["diff".to_owned(), "--no-ext-diff".to_owned()];
        if args.staged {
            cmd.push("--cached".into());
        }
        if args.stat {
            cmd.push("--stat".into());
        }
        if let Some(rev) = &args.rev {
            plain_word("rev", rev)?;
            cmd.push(rev.clone());
        }
        cmd.push("--".into());
        cmd.extend(self.paths("paths", &args.paths)?);
        let out = self.ok(&strs(&cmd), "git_failed").await?;
        Ok(
            json!({ "diff": out.stdout.text(), "truncated": out.stdout.truncated(), "bytes": out.stdout.total() }),
        )
    }

    pub async fn log(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: LogArgs = parse(arguments)?;
        let count = args.max_count.unwrap_or(20).clamp(1, 200).to_string();
        let rev = args.rev.unwrap_or_else(|| "HEAD".into());
        plain_word("rev", &rev)?;
        let mut cmd = vec![
            "log".to_owned(),
            format!("--max-count={count}"),
            "--format=%H%x1f%an%x1f%ae%x1f%aI%x1f%s%x1e".to_owned(),
            rev,
            "--".to_owned(),
        ];
        cmd.extend(self.paths("paths", &args.paths)?);
        let out = self.ok(&strs(&cmd), "git_failed").await?;
        let commits: Vec<Value> = out
            .stdout
            .text()
            .split('\u{1e}')
            .filter_map(|record| {
                let mut f = record.trim_start_matches('\n').split('\u{1f}');
                let hash = f.next().filter(|h| !h.is_empty())?;
                Some(json!({
                    "hash": hash,
                    "author": f.next().unwrap_or(""),
                    "email": f.next().unwrap_or(""),
                    "date": f.next().unwrap_or(""),
                    "subject": f.next().unwrap_or(""),
                }))
            })
            .collect();
        Ok(json!({ "commits": commits }))
    }

    pub async fn show(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: ShowArgs = parse(arguments)?;
        plain_word("rev", &args.rev)?;
        let out = match &args.path {
            Some(path) => {
                let c = confine(&self.ws.repo, path).map_err(|e| invalid("path", e))?;
                self.ok(
                    &["show", &format!("{}:{}", args.rev, c.relative)],
                    "git_failed",
                )
                .await?
            }
            None => {
                self.ok(
                    &[
                        "show",
                        "--no-ext-diff",
                        "--stat",
                        "--patch",
                        "--format=fuller",
                        &args.rev,
                        "--",
                    ],
                    "git_failed",
                )
                .await?
            }
        };
        Ok(
            json!({ "output": out.stdout.text(), "truncated": out.stdout.truncated(), "bytes": out.stdout.total() }),
        )
    }

    async fn check_branch_name(&self, name: &str) -> Result<(), ToolCallError> {
        plain_word("name", name)?;
        match self.line(&["check-ref-format", "--branch", name]).await? {
            Some(_) => Ok(()),
            None => Err(invalid(
                "name",
                format!("`{name}` is not a valid branch name"),
            )),
        }
    }

    pub async fn branch_create(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: BranchCreateArgs = parse(arguments)?;
        self.check_branch_name(&args.name).await?;
        let mut cmd = vec!["branch", args.name.as_str()];
        if let Some(start) = &args.start_point {
            plain_word("start_point", start)?;
            cmd.push(start);
        }
        self.ok(&cmd, "git_branch_failed").await?;
        if args.switch {
            self.ok(&["switch", "--quiet", &args.name], "git_switch_failed")
                .await?;
        }
        let target = self
            .line(&[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{}", args.name),
            ])
            .await?;
        Ok(json!({ "branch": args.name, "commit": target, "switched": args.switch }))
    }

    pub async fn branch_switch(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: SwitchArgs = parse(arguments)?;
        self.check_branch_name(&args.name).await?;
        if args.create {
            self.ok(
                &["switch", "--quiet", "-c", &args.name],
                "git_switch_failed",
            )
            .await?;
        } else {
            self.ok(&["switch", "--quiet", &args.name], "git_switch_failed")
                .await?;
        }
        Ok(json!({ "branch": args.name, "head": self.head().await? }))
    }

    pub async fn commit(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: CommitArgs = parse(arguments)?;
        if args.message.trim().is_empty() {
            return Err(invalid("message", "must not be blank"));
        }
        if args.paths.is_empty() {
            self.ok(&["add", "--all"], "git_add_failed").await?;
        } else {
            let mut cmd = vec!["add".to_owned(), "--all".to_owned(), "--".to_owned()];
            cmd.extend(self.paths("paths", &args.paths)?);
            self.ok(&strs(&cmd), "git_add_failed").await?;
        }
        let staged = self.raw(&["diff", "--cached", "--quiet"]).await?;
        if staged.success() && !args.allow_empty {
            return Err(failed(
                "nothing_to_commit",
                "no changes to commit (set allow_empty to commit anyway)",
            ));
        }
        let mut cmd = vec![
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            args.message.as_str(),
        ];
        if args.allow_empty {
            cmd.push("--allow-empty");
        }
        self.ok(&cmd, "git_commit_failed").await?;
        let stat = self
            .ok(&["show", "--stat", "--format=", "HEAD"], "git_failed")
            .await?;
        Ok(json!({
            "commit": self.head().await?,
            "branch": self.current_branch().await?,
            "stat": stat.stdout.text().trim(),
        }))
    }

    pub async fn tag_create(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: TagArgs = parse(arguments)?;
        plain_word("name", &args.name)?;
        if self
            .line(&["check-ref-format", &format!("refs/tags/{}", args.name)])
            .await?
            .is_none()
        {
            return Err(invalid(
                "name",
                format!("`{}` is not a valid tag name", args.name),
            ));
        }
        let rev = args.rev.unwrap_or_else(|| "HEAD".into());
        plain_word("rev", &rev)?;
        match &args.message {
            Some(message) => {
                self.ok(
                    &["tag", "--annotate", "-m", message, &args.name, &rev],
                    "git_tag_failed",
                )
                .await?
            }
            None => {
                self.ok(&["tag", &args.name, &rev], "git_tag_failed")
                    .await?
            }
        };
        let target = self
            .line(&[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/tags/{}^{{commit}}", args.name),
            ])
            .await?;
        Ok(json!({ "tag": args.name, "commit": target, "annotated": args.message.is_some() }))
    }

    pub async fn cherry_pick(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: CherryPickArgs = parse(arguments)?;
        if args.commits.is_empty() {
            return Err(invalid("commits", "must name at least one commit"));
        }
        let mut cmd = vec!["cherry-pick"];
        for c in &args.commits {
            plain_word("commits", c)?;
            cmd.push(c);
        }
        let out = self.raw(&cmd).await?;
        if !out.success() {
            let conflicts = self.conflicts().await?;
            let _ = self.raw(&["cherry-pick", "--abort"]).await?;
            return Err(failed(
                "cherry_pick_conflict",
                format!(
                    "cherry-pick stopped and was aborted ({}); conflicting files: {}",
                    message(&out),
                    conflicts.join(", ")
                ),
            ));
        }
        Ok(json!({ "head": self.head().await?, "picked": args.commits }))
    }

    pub async fn rebase(&self, arguments: Value) -> Result<Value, ToolCallError> {
        let args: RebaseArgs = parse(arguments)?;
        plain_word("onto", &args.onto)?;
        let mut cmd = vec!["rebase", "--no-autosquash", "--no-autostash"];
        match &args.upstream {
            Some(upstream) => {
                plain_word("upstream", upstream)?;
                cmd.extend(["--onto", args.onto.as_str(), upstream.as_str()]);
            }
            None => cmd.push(&args.onto),
        }
        let out = self.raw(&cmd).await?;
        if !out.success() {
            let conflicts = self.conflicts().await?;
            let _ = self.raw(&["rebase", "--abort"]).await?;
            return Err(failed(
                "rebase_conflict",
                format!(
                    "rebase stopped and was aborted ({}); conflicting files: {}",
                    message(&out),
                    conflicts.join(", ")
                ),
            ));
        }
        Ok(json!({ "head": self.head().await?, "branch": self.current_branch().await? }))
    }

    async fn conflicts(&self) -> Result<Vec<String>, ToolCallError> {
        let out = self
            .raw(&["diff", "--name-only", "--diff-filter=U"])
            .await?;
        Ok(out.stdout.text().lines().map(str::to_owned).collect())
    }
}

/// git's complaint, last lines, credentials redacted.
pub fn message(out: &GitOutput) -> String {
    let text = out.stderr.text();
    let text = if text.trim().is_empty() {
        out.stdout.text()
    } else {
        text
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(6);
    redact_credentials(&lines[start..].join("; "))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffArgs {
    #[serde(default)]
    staged: bool,
    #[serde(default)]
    stat: bool,
    rev: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogArgs {
    max_count: Option<u32>,
    rev: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowArgs {
    rev: String,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BranchCreateArgs {
    name: String,
    start_point: Option<String>,
    #[serde(default)]
    switch: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchArgs {
    name: String,
    #[serde(default)]
    create: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitArgs {
    message: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    allow_empty: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagArgs {
    name: String,
    rev: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CherryPickArgs {
    commits: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebaseArgs {
    onto: String,
    upstream: Option<String>,
}
