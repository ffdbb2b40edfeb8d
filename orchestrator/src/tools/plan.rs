//! The plan tool: plans made of ordered stages, one stream per plan (`plan-<plan_id>`).
//! Operations: `get`, `list`, `create`, `update`, `delete`, `reorder_stages`,
//! `set_stage_status`.

use std::collections::BTreeSet;

use runledger_contracts::events::{
    DomainEvent, PlanCreated, PlanDeleted, PlanStage, PlanStageStatusSet, PlanStagesReordered,
    PlanUpdated, StageStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Decided, StateError, Target, Tool, ToolCause, ToolError, ToolKind, check_id, check_text,
    list_limit, parse_args,
};

/// A plan as its stream tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub plan_id: String,
    pub title: String,
    pub description: Option<String>,
    pub stages: Vec<PlanStage>,
}

/// One plan stream: the plan (absent before `PlanCreated` and after `PlanDeleted`) and how
/// many events its stream holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanStream {
    pub plan: Option<Plan>,
    pub revision: u64,
}

impl PlanStream {
    pub fn to_json(&self) -> Value {
        match &self.plan {
            Some(p) => json!({
                "plan_id": p.plan_id,
                "title": p.title,
                "description": p.description,
                "stages": p.stages,
                "revision": self.revision,
            }),
            None => Value::Null,
        }
    }
}

/// A stage as a call writes it: `status` defaults to `pending` (on `update`: to the status
/// the stage with that id has now).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageArgs {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub status: Option<StageStatus>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    pub plan_id: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    pub plan_id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub stages: Vec<StageArgs>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    pub plan_id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Replaces the whole list of stages.
    #[serde(default)]
    pub stages: Option<Vec<StageArgs>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReorderArgs {
    pub plan_id: String,
    /// Every stage id of the plan, once each, in the new order.
    pub order: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageStatusArgs {
    pub plan_id: String,
    pub stage_id: String,
    pub status: StageStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlanOp {
    Get(IdArgs),
    List(ListArgs),
    Create(CreateArgs),
    Update(UpdateArgs),
    Delete(IdArgs),
    ReorderStages(ReorderArgs),
    SetStageStatus(StageStatusArgs),
}

impl PlanOp {
    fn plan_id(&self) -> Option<&str> {
        match self {
            PlanOp::Get(a) | PlanOp::Delete(a) => Some(&a.plan_id),
            PlanOp::List(_) => None,
            PlanOp::Create(a) => Some(&a.plan_id),
            PlanOp::Update(a) => Some(&a.plan_id),
            PlanOp::ReorderStages(a) => Some(&a.plan_id),
            PlanOp::SetStageStatus(a) => Some(&a.plan_id),
        }
    }
}

/// The plan tool.
pub struct Plans;

impl Tool for Plans {
    const KIND: ToolKind = ToolKind::Plan;
    type Op = PlanOp;
    type State = PlanStream;

    fn parse(operation: &str, args: Value) -> Result<PlanOp, ToolError> {
        let op = match operation {
            "get" => PlanOp::Get(parse_args(args)?),
            "list" => PlanOp::List(parse_args(args)?),
            "create" => PlanOp::Create(parse_args(args)?),
            "update" => PlanOp::Update(parse_args(args)?),
            "delete" => PlanOp::Delete(parse_args(args)?),
            "reorder_stages" => PlanOp::ReorderStages(parse_args(args)?),
            "set_stage_status" => PlanOp::SetStageStatus(parse_args(args)?),
            other => {
                return Err(ToolError::InvalidInput {
                    field: "operation".into(),
                    message: format!(
                        "plan has no operation `{other}` (get, list, create, update, delete, reorder_stages, set_stage_status)"
                    ),
                });
            }
        };
        if let Some(id) = op.plan_id() {
            check_id("plan_id", id)?;
        }
        match &op {
            PlanOp::List(a) => {
                list_limit(a.limit)?;
            }
            PlanOp::Create(a) => {
                check_text("title", &a.title)?;
                check_stages("stages", &a.stages)?;
            }
            PlanOp::Update(a) => {
                if a.title.is_none() && a.description.is_none() && a.stages.is_none() {
                    return Err(ToolError::InvalidInput {
                        field: "args".into(),
                        message: "update needs at least one of `title`, `description`, `stages`"
                            .into(),
                    });
                }
                if let Some(title) = &a.title {
                    check_text("title", title)?;
                }
                if let Some(stages) = &a.stages {
                    check_stages("stages", stages)?;
                }
            }
            _ => {}
        }
        Ok(op)
    }

    fn target(op: &PlanOp) -> Result<Target, ToolError> {
        match op.plan_id() {
            Some(id) => ToolKind::Plan.stream(id).map(Target::Stream),
            None => Ok(Target::All),
        }
    }

    fn evolve(state: &mut PlanStream, event: &DomainEvent) -> Result<(), StateError> {
        let name = event.event_type();
        let live = |state: &mut PlanStream| -> Result<(), StateError> {
            if state.plan.is_none() {
                return Err(StateError::Missing {
                    event: name,
                    what: "the plan".into(),
                });
            }
            Ok(())
        };
        let inconsistent = |reason: String| StateError::Inconsistent {
            event: name,
            reason,
        };
        match event {
            DomainEvent::PlanCreated(e) => {
                if state.plan.is_some() {
                    return Err(StateError::Exists {
                        event: name,
                        what: "the plan".into(),
                    });
                }
                state.plan = Some(Plan {
                    plan_id: e.plan_id.clone(),
                    title: e.title.clone(),
                    description: e.description.clone(),
                    stages: e.stages.clone(),
                });
            }
            DomainEvent::PlanUpdated(e) => {
                live(state)?;
                if let Some(plan) = &mut state.plan {
                    if let Some(title) = &e.title {
                        plan.title = title.clone();
                    }
                    if let Some(description) = &e.description {
                        plan.description = Some(description.clone());
                    }
                    if let Some(stages) = &e.stages {
                        plan.stages = stages.clone();
                    }
                }
            }
            DomainEvent::PlanDeleted(_) => {
                live(state)?;
                state.plan = None;
            }
            DomainEvent::PlanStagesReordered(e) => {
                live(state)?;
                if let Some(plan) = &mut state.plan {
                    let mut reordered = Vec::with_capacity(plan.stages.len());
                    for id in &e.order {
                        let stage = plan
                            .stages
                            .iter()
                            .find(|s| &s.id == id)
                            .ok_or_else(|| inconsistent(format!("no stage `{id}`")))?;
                        reordered.push(stage.clone());
                    }
                    if reordered.len() != plan.stages.len() {
                        return Err(inconsistent("the order does not list every stage".into()));
                    }
                    plan.stages = reordered;
                }
            }
            DomainEvent::PlanStageStatusSet(e) => {
                live(state)?;
                if let Some(plan) = &mut state.plan {
                    let stage = plan
                        .stages
                        .iter_mut()
                        .find(|s| s.id == e.stage_id)
                        .ok_or_else(|| inconsistent(format!("no stage `{}`", e.stage_id)))?;
                    stage.status = e.status;
                }
            }
            _ => {
                return Err(StateError::Foreign {
                    event: name,
                    tool: "plan",
                });
            }
        }
        state.revision += 1;
        Ok(())
    }

    fn output_after(state: &PlanStream, event: &DomainEvent) -> Value {
        match event {
            DomainEvent::PlanDeleted(e) => {
                json!({ "plan_id": e.plan_id, "deleted": true, "revision": state.revision })
            }
            _ => state.to_json(),
        }
    }

    fn decide(
        op: &PlanOp,
        states: &[&PlanStream],
        cause: &ToolCause,
    ) -> Result<Decided, ToolError> {
        if let PlanOp::List(a) = op {
            let limit = list_limit(a.limit)?;
            let live: Vec<&&PlanStream> = states.iter().filter(|s| s.plan.is_some()).collect();
            let plans: Vec<Value> = live.iter().take(limit).map(|s| s.to_json()).collect();
            return Ok(Decided::Read(
                json!({ "plans": plans, "total": live.len() }),
            ));
        }
        let empty = PlanStream::default();
        let state = states.first().copied().unwrap_or(&empty);
        let plan_id = op.plan_id().unwrap_or_default().to_owned();
        let existing = || {
            state
                .plan
                .as_ref()
                .ok_or_else(|| ToolError::NotFound(format!("there is no plan `{plan_id}`")))
        };
        let write = |event: DomainEvent| Ok(Decided::Write(vec![event]));
        let (run_id, node_id, node_run_id, idempotency_key) = (
            cause.run_id,
            cause.node_id.clone(),
            cause.node_run_id,
            cause.idempotency_key.clone(),
        );
        match op {
            PlanOp::List(_) => Ok(Decided::Read(Value::Null)),
            PlanOp::Get(_) => {
                existing()?;
                Ok(Decided::Read(state.to_json()))
            }
            PlanOp::Create(a) => {
                if state.plan.is_some() {
                    return Err(ToolError::AlreadyExists(format!(
                        "plan `{plan_id}` already exists"
                    )));
                }
                let stages = a
                    .stages
                    .iter()
                    .map(|s| stage(s, StageStatus::Pending))
                    .collect();
                write(
                    PlanCreated {
                        run_id,
                        node_id,
                        node_run_id,
                        idempotency_key,
                        plan_id,
                        title: a.title.clone(),
                        description: a.description.clone(),
                        stages,
                    }
                    .into(),
                )
            }
            PlanOp::Update(a) => {
                let plan = existing()?;
                let stages = a.stages.as_ref().map(|new| {
                    new.iter()
                        .map(|s| {
                            let now = plan
                                .stages
                                .iter()
                                .find(|old| old.id == s.id)
                                .map_or(StageStatus::Pending, |old| old.status);
                            stage(s, now)
                        })
                        .collect()
                });
                write(
                    PlanUpdated {
                        run_id,
                        node_id,
                        node_run_id,
                        idempotency_key,
                        plan_id,
                        title: a.title.clone(),
                        description: a.description.clone(),
                        stages,
                    }
                    .into(),
                )
            }
            PlanOp::Delete(_) => {
                existing()?;
                write(
                    PlanDeleted {
                        run_id,
                        node_id,
                        node_run_id,
                        idempotency_key,
                        plan_id,
                    }
                    .into(),
                )
            }
            PlanOp::ReorderStages(a) => {
                let plan = existing()?;
                let have: BTreeSet<&str> = plan.stages.iter().map(|s| s.id.as_str()).collect();
                let want: BTreeSet<&str> = a.order.iter().map(String::as_str).collect();
                if want.len() != a.order.len() || have != want {
                    let missing: Vec<&str> = have.difference(&want).copied().collect();
                    let unknown: Vec<&str> = want.difference(&have).copied().collect();
                    return Err(ToolError::InvalidOperation(format!(
                        "`order` must list each of the {} stages of plan `{plan_id}` once (missing: [{}], unknown: [{}], repeated: {})",
                        have.len(),
                        missing.join(", "),
                        unknown.join(", "),
                        want.len() != a.order.len()
                    )));
                }
                write(
                    PlanStagesReordered {
                        run_id,
                        node_id,
                        node_run_id,
                        idempotency_key,
                        plan_id,
                        order: a.order.clone(),
                    }
                    .into(),
                )
            }
            PlanOp::SetStageStatus(a) => {
                let plan = existing()?;
                let previous = plan
                    .stages
                    .iter()
                    .find(|s| s.id == a.stage_id)
                    .map(|s| s.status)
                    .ok_or_else(|| {
                        ToolError::NotFound(format!(
                            "plan `{plan_id}` has no stage `{}`",
                            a.stage_id
                        ))
                    })?;
                write(
                    PlanStageStatusSet {
                        run_id,
                        node_id,
                        node_run_id,
                        idempotency_key,
                        plan_id,
                        stage_id: a.stage_id.clone(),
                        status: a.status,
                        previous,
                    }
                    .into(),
                )
            }
        }
    }
}

fn stage(s: &StageArgs, default: StageStatus) -> PlanStage {
    PlanStage {
        id: s.id.clone(),
        title: s.title.clone(),
        status: s.status.unwrap_or(default),
    }
}

fn check_stages(field: &str, stages: &[StageArgs]) -> Result<(), ToolError> {
    let mut seen = BTreeSet::new();
    for (i, s) in stages.iter().enumerate() {
        check_text(&format!("{field}[{i}].id"), &s.id)?;
        check_text(&format!("{field}[{i}].title"), &s.title)?;
        if !seen.insert(s.id.as_str()) {
            return Err(ToolError::InvalidInput {
                field: format!("args.{field}[{i}].id"),
                message: format!("stage id `{}` appears twice", s.id),
            });
        }
    }
    Ok(())
}

/// One plan, folded from its stream (for the CLI).
pub async fn load_plan<S: runledger_ledger::EventStore>(
    store: &S,
    plan_id: &str,
) -> Result<PlanStream, ToolError> {
    check_id("plan_id", plan_id)?;
    super::cache::load::<Plans, S>(store, &ToolKind::Plan.stream(plan_id)?)
        .await
        .map(|(_, s)| s)
}

/// Every plan that exists, by id (for the CLI).
pub async fn load_plans<S: runledger_ledger::EventStore>(
    store: &S,
) -> Result<Vec<PlanStream>, ToolError> {
    let all = super::cache::load_all::<Plans, S>(store).await?;
    Ok(all
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.plan.is_some())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runledger_contracts::ids::{NodeRunId, RunId};

    fn apply(state: &mut PlanStream, op: &str, args: Value) -> Result<Value, ToolError> {
        let node_run_id = NodeRunId::new_v7();
        let cause = ToolCause {
            run_id: RunId::new_v7(),
            node_id: "p".into(),
            node_run_id,
            idempotency_key: format!("{node_run_id}:plan:{op}"),
        };
        match Plans::decide(&Plans::parse(op, args)?, &[state], &cause)? {
            Decided::Read(v) => Ok(v),
            Decided::Write(events) => {
                let mut out = Value::Null;
                for e in &events {
                    Plans::evolve(state, e).unwrap();
                    out = Plans::output_after(state, e);
                }
                Ok(out)
            }
        }
    }

    #[test]
    fn stages_are_created_reordered_and_tracked() {
        let mut s = PlanStream::default();
        let stages = json!([{ "id": "draft", "title": "Draft" }, { "id": "review", "title": "Review", "status": "blocked" }]);
        let created = apply(
            &mut s,
            "create",
            json!({ "plan_id": "p1", "title": "Essay", "stages": stages }),
        )
        .unwrap();
        assert_eq!(created["stages"][0]["status"], "pending");
        assert_eq!(created["stages"][1]["status"], "blocked");
        assert_eq!(created["revision"], 1);
        let set = apply(
            &mut s,
            "set_stage_status",
            json!({ "plan_id": "p1", "stage_id": "draft", "status": "done" }),
        )
        .unwrap();
        assert_eq!(set["stages"][0]["status"], "done");
        let err = apply(
            &mut s,
            "reorder_stages",
            json!({ "plan_id": "p1", "order": ["review"] }),
        )
        .unwrap_err();
        assert_eq!(err.code(), "tool_invalid_operation");
        assert!(err.to_string().contains("missing: [draft]"), "{err}");
        let reordered = apply(
            &mut s,
            "reorder_stages",
            json!({ "plan_id": "p1", "order": ["review", "draft"] }),
        )
        .unwrap();
        assert_eq!(reordered["stages"][0]["id"], "review");
        // Stages replaced by update keep the status of the stage with the same id.
        let updated = apply(
            &mut s,
            "update",
            json!({ "plan_id": "p1", "title": "Essay v2", "stages": [{ "id": "draft", "title": "Draft" }, { "id": "ship", "title": "Ship" }] }),
        )
        .unwrap();
        assert_eq!(updated["title"], "Essay v2");
        assert_eq!(updated["stages"][0]["status"], "done");
        assert_eq!(updated["stages"][1]["status"], "pending");
        assert_eq!(updated["revision"], 4);
        assert_eq!(
            apply(
                &mut s,
                "set_stage_status",
                json!({ "plan_id": "p1", "stage_id": "x", "status": "done" })
            )
            .unwrap_err()
            .code(),
            "tool_not_found"
        );
        assert_eq!(
            apply(
                &mut s,
                "create",
                json!({ "plan_id": "p1", "title": "again" })
            )
            .unwrap_err()
            .code(),
            "tool_already_exists"
        );
        assert_eq!(
            apply(&mut s, "delete", json!({ "plan_id": "p1" })).unwrap()["deleted"],
            true
        );
        assert_eq!(
            apply(&mut s, "get", json!({ "plan_id": "p1" }))
                .unwrap_err()
                .code(),
            "tool_not_found"
        );
        // A deleted plan's id can be used again.
        assert_eq!(
            apply(&mut s, "create", json!({ "plan_id": "p1", "title": "new" })).unwrap()["revision"],
            6
        );
    }

    #[test]
    fn arguments_name_the_bad_field() {
        let err = Plans::parse(
            "set_stage_status",
            json!({ "plan_id": "p", "stage_id": "s", "status": "finished" }),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("args.status:"), "{err}");
        let err = Plans::parse("create", json!({ "plan_id": "p", "title": "t", "stages": [{ "id": "a", "title": "A" }, { "id": "a", "title": "B" }] }))
            .unwrap_err();
        assert!(err.to_string().starts_with("args.stages[1].id:"), "{err}");
        let err = Plans::parse("update", json!({ "plan_id": "p" })).unwrap_err();
        assert_eq!(err.code(), "tool_invalid_input");
        let err = Plans::parse("create", json!({ "plan_id": "p", "title": "t", "stages": [{ "id": "a", "title": "A", "owner": "me" }] })).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("args.stages[0].owner: unknown field"),
            "{err}"
        );
    }
}
