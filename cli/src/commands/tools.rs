//! `runledger memory|plans|milestones list|get`: the state of the tools that `memory`, `plan`
//! and `milestone` nodes call, rebuilt by replaying their streams (docs/tools.md).

use clap::{Args, Subcommand, ValueEnum};
use runledger_contracts::events::MilestoneStatus;
use runledger_ledger::LedgerStore;
use runledger_orchestrator::tools::milestone::{MilestoneStream, load_milestone, load_milestones};
use runledger_orchestrator::tools::plan::{PlanStream, load_plan, load_plans};
use runledger_orchestrator::tools::{ToolError, memory};
use serde_json::{Value, json};

use crate::{Failure, GlobalArgs};

/// The three tool commands; flattened into the top level (`runledger memory ...`).
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Show the memory tool's entries (streams `memory-<scope>`).
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Show the plan tool's plans (streams `plan-<plan_id>`).
    #[command(subcommand)]
    Plans(PlansCommand),
    /// Show the milestone tool's milestones (streams `milestone-<milestone_id>`).
    #[command(subcommand)]
    Milestones(MilestonesCommand),
}

#[derive(Debug, Args)]
pub struct Output {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// List the entries of one scope, by key.
    List {
        /// The scope (`scope` argument of memory nodes).
        #[arg(long, default_value = memory::DEFAULT_SCOPE)]
        scope: String,
        /// Only keys that start with this.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Show one entry.
    Get {
        /// The entry's key.
        key: String,
        /// The scope (`scope` argument of memory nodes).
        #[arg(long, default_value = memory::DEFAULT_SCOPE)]
        scope: String,
        #[command(flatten)]
        output: Output,
    },
    /// List the scopes that have entries or had some, with their stream versions.
    Scopes {
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// List the plans that exist (deleted ones are left out), by id.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Show one plan with its stages in order.
    Get {
        /// The plan's id.
        plan_id: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum StatusArg {
    Pending,
    InProgress,
    Achieved,
    Missed,
    Canceled,
}

impl StatusArg {
    fn status(self) -> MilestoneStatus {
        match self {
            StatusArg::Pending => MilestoneStatus::Pending,
            StatusArg::InProgress => MilestoneStatus::InProgress,
            StatusArg::Achieved => MilestoneStatus::Achieved,
            StatusArg::Missed => MilestoneStatus::Missed,
            StatusArg::Canceled => MilestoneStatus::Canceled,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MilestonesCommand {
    /// List the milestones that exist (deleted ones are left out), by id.
    List {
        /// Only milestones of this plan.
        #[arg(long, value_name = "PLAN_ID")]
        plan: Option<String>,
        /// Only milestones with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        #[command(flatten)]
        output: Output,
    },
    /// Show one milestone with its evidence.
    Get {
        /// The milestone's id.
        milestone_id: String,
        #[command(flatten)]
        output: Output,
    },
}

impl ToolsCommand {
    pub fn wants_json(&self) -> bool {
        let output = match self {
            ToolsCommand::Memory(
                MemoryCommand::List { output, .. }
                | MemoryCommand::Get { output, .. }
                | MemoryCommand::Scopes { output },
            ) => output,
            ToolsCommand::Plans(
                PlansCommand::List { output } | PlansCommand::Get { output, .. },
            ) => output,
            ToolsCommand::Milestones(
                MilestonesCommand::List { output, .. } | MilestonesCommand::Get { output, .. },
            ) => output,
        };
        output.json
    }
}

pub async fn run(global: &GlobalArgs, command: ToolsCommand) -> Result<(), Failure> {
    let store = super::open_existing(global).await?;
    match command {
        ToolsCommand::Memory(c) => memory_command(&store, c).await,
        ToolsCommand::Plans(c) => plans_command(&store, c).await,
        ToolsCommand::Milestones(c) => milestones_command(&store, c).await,
    }
}

/// A tool error as one line, or as the API error envelope with `--json` (printed by `main`).
/// An argument error names the command-line argument, not the node argument it shares its
/// check with.
fn fail(e: ToolError) -> Failure {
    let e = match e {
        ToolError::InvalidInput { field, message } => {
            let field = match field.as_str() {
                "args.scope" => "--scope".to_owned(),
                "args.plan_id" => "PLAN_ID".to_owned(),
                "args.milestone_id" => "MILESTONE_ID".to_owned(),
                _ => field,
            };
            ToolError::InvalidInput { field, message }
        }
        other => other,
    };
    let code = e.code();
    Failure::new(e.to_string()).with_code(code)
}

fn print_json(value: &Value) {
    outln!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// A value on one line, cut to `width` characters.
fn brief(value: &Value, width: usize) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace('\n', " ");
    if text.chars().count() <= width {
        return text;
    }
    let cut: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

async fn memory_command(store: &LedgerStore, command: MemoryCommand) -> Result<(), Failure> {
    match command {
        MemoryCommand::List {
            scope,
            prefix,
            output,
        } => {
            let (version, state) = memory::load_scope(store, &scope).await.map_err(fail)?;
            let prefix = prefix.unwrap_or_default();
            let entries: Vec<(&String, &memory::MemoryEntry)> = state
                .entries
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .collect();
            if output.json {
                let list: Vec<Value> = entries
                    .iter()
                    .map(|(k, e)| json!({ "key": k, "value": e.value, "revision": e.revision }))
                    .collect();
                print_json(&json!({ "scope": scope, "version": version, "entries": list }));
                return Ok(());
            }
            outln!(
                "scope `{scope}` (stream version {version}): {} entr{}",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            );
            let width = entries
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(3)
                .max(3);
            if !entries.is_empty() {
                outln!("{:<width$}  {:>4}  VALUE", "KEY", "REV");
            }
            for (key, entry) in entries {
                outln!(
                    "{key:<width$}  {:>4}  {}",
                    entry.revision,
                    brief(&entry.value, 80)
                );
            }
            Ok(())
        }
        MemoryCommand::Get { key, scope, output } => {
            let (_, state) = memory::load_scope(store, &scope).await.map_err(fail)?;
            let Some(entry) = state.entries.get(&key) else {
                return Err(fail(ToolError::NotFound(format!(
                    "memory scope `{scope}` has no entry `{key}`"
                ))));
            };
            let value = memory::MemoryScope::entry_json(&scope, &key, entry);
            if output.json {
                print_json(&value);
            } else {
                outln!("{scope}/{key} (revision {})", entry.revision);
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&entry.value).unwrap_or_default()
                );
            }
            Ok(())
        }
        MemoryCommand::Scopes { output } => {
            let scopes = memory::scopes(store).await.map_err(fail)?;
            if output.json {
                let list: Vec<Value> = scopes
                    .iter()
                    .map(|(s, v)| json!({ "scope": s, "version": v }))
                    .collect();
                print_json(&json!({ "scopes": list }));
            } else if scopes.is_empty() {
                outln!("no memory scopes");
            } else {
                for (scope, version) in scopes {
                    outln!("{scope}  (stream version {version})");
                }
            }
            Ok(())
        }
    }
}

fn stage_progress(plan: &PlanStream) -> String {
    let Some(p) = &plan.plan else {
        return String::new();
    };
    let done = p
        .stages
        .iter()
        .filter(|s| s.status == runledger_contracts::events::StageStatus::Done)
        .count();
    format!("{done}/{} done", p.stages.len())
}

async fn plans_command(store: &LedgerStore, command: PlansCommand) -> Result<(), Failure> {
    match command {
        PlansCommand::List { output } => {
            let plans = load_plans(store).await.map_err(fail)?;
            if output.json {
                print_json(
                    &json!({ "plans": plans.iter().map(PlanStream::to_json).collect::<Vec<_>>() }),
                );
                return Ok(());
            }
            if plans.is_empty() {
                outln!("no plans");
                return Ok(());
            }
            let width = plans
                .iter()
                .filter_map(|p| p.plan.as_ref())
                .map(|p| p.plan_id.chars().count())
                .max()
                .unwrap_or(4)
                .max(4);
            outln!("{:<width$}  {:>4}  {:<10}  TITLE", "PLAN", "REV", "STAGES");
            for plan in &plans {
                if let Some(p) = &plan.plan {
                    outln!(
                        "{:<width$}  {:>4}  {:<10}  {}",
                        p.plan_id,
                        plan.revision,
                        stage_progress(plan),
                        p.title
                    );
                }
            }
            Ok(())
        }
        PlansCommand::Get { plan_id, output } => {
            let plan = load_plan(store, &plan_id).await.map_err(fail)?;
            let Some(p) = &plan.plan else {
                return Err(fail(ToolError::NotFound(format!(
                    "there is no plan `{plan_id}`"
                ))));
            };
            if output.json {
                print_json(&plan.to_json());
                return Ok(());
            }
            outln!(
                "plan `{}`: {} (revision {}, {})",
                p.plan_id,
                p.title,
                plan.revision,
                stage_progress(&plan)
            );
            if let Some(description) = &p.description {
                outln!("  {description}");
            }
            for (i, stage) in p.stages.iter().enumerate() {
                let status = serde_json::to_value(stage.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                outln!("  {}. [{status}] {} ({})", i + 1, stage.title, stage.id);
            }
            Ok(())
        }
    }
}

fn status_name(status: MilestoneStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn milestones_command(
    store: &LedgerStore,
    command: MilestonesCommand,
) -> Result<(), Failure> {
    match command {
        MilestonesCommand::List {
            plan,
            status,
            output,
        } => {
            let all = load_milestones(store).await.map_err(fail)?;
            let wanted = status.map(StatusArg::status);
            let milestones: Vec<&MilestoneStream> = all
                .iter()
                .filter(|m| {
                    m.milestone.as_ref().is_some_and(|m| {
                        plan.as_ref().is_none_or(|p| m.plan_id.as_ref() == Some(p))
                            && wanted.is_none_or(|s| m.status == s)
                    })
                })
                .collect();
            if output.json {
                print_json(
                    &json!({ "milestones": milestones.iter().map(|m| m.to_json()).collect::<Vec<_>>() }),
                );
                return Ok(());
            }
            if milestones.is_empty() {
                outln!("no milestones");
                return Ok(());
            }
            let width = milestones
                .iter()
                .filter_map(|m| m.milestone.as_ref())
                .map(|m| m.milestone_id.chars().count())
                .max()
                .unwrap_or(9)
                .max(9);
            outln!(
                "{:<width$}  {:<11}  {:>8}  TITLE",
                "MILESTONE",
                "STATUS",
                "EVIDENCE"
            );
            for stream in milestones {
                if let Some(m) = &stream.milestone {
                    outln!(
                        "{:<width$}  {:<11}  {:>8}  {}",
                        m.milestone_id,
                        status_name(m.status),
                        m.evidence.len(),
                        m.title
                    );
                }
            }
            Ok(())
        }
        MilestonesCommand::Get {
            milestone_id,
            output,
        } => {
            let stream = load_milestone(store, &milestone_id).await.map_err(fail)?;
            let Some(m) = &stream.milestone else {
                return Err(fail(ToolError::NotFound(format!(
                    "there is no milestone `{milestone_id}`"
                ))));
            };
            if output.json {
                print_json(&stream.to_json());
                return Ok(());
            }
            outln!(
                "milestone `{}`: {} [{}] (revision {})",
                m.milestone_id,
                m.title,
                status_name(m.status),
                stream.revision
            );
            for (label, value) in [
                ("description", &m.description),
                ("due", &m.due),
                ("plan", &m.plan_id),
            ] {
                if let Some(value) = value {
                    outln!("  {label}: {value}");
                }
            }
            for e in &m.evidence {
                let reference = e
                    .evidence
                    .reference
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                outln!(
                    "  evidence: {}{reference} [node run {}]",
                    e.evidence.summary,
                    e.node_run_id
                );
            }
            Ok(())
        }
    }
}
