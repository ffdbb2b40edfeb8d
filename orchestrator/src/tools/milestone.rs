//! The milestone tool: milestones with a status and the evidence attached to them, one stream
//! per milestone (`milestone-<milestone_id>`). Operations: `get`, `list`, `create`, `update`,
//! `delete`, `set_status`, `attach_evidence`.

use runledger_contracts::events::{
    DomainEvent, MilestoneCreated, MilestoneDeleted, MilestoneEvidence, MilestoneEvidenceAttached,
    MilestoneStatus, MilestoneStatusSet, MilestoneUpdated,
};
use runledger_contracts::ids::{NodeRunId, RunId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Decided, StateError, Target, Tool, ToolCause, ToolError, ToolKind, check_id, check_text,
    list_limit, parse_args,
};

/// Largest evidence `data`, as canonical JSON.
pub const MAX_EVIDENCE_BYTES: usize = 64 << 10;

/// Evidence as recorded, with the node run that attached it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachedEvidence {
    pub evidence: MilestoneEvidence,
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Milestone {
    pub milestone_id: String,
    pub title: String,
    pub description: Option<String>,
    pub due: Option<String>,
    pub plan_id: Option<String>,
    pub status: MilestoneStatus,
    pub evidence: Vec<AttachedEvidence>,
}

/// One milestone stream: the milestone (absent before `MilestoneCreated` and after
/// `MilestoneDeleted`) and how many events its stream holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MilestoneStream {
    pub milestone: Option<Milestone>,
    pub revision: u64,
}

impl MilestoneStream {
    pub fn to_json(&self) -> Value {
        match &self.milestone {
            Some(m) => json!({
                "milestone_id": m.milestone_id,
                "title": m.title,
                "description": m.description,
                "due": m.due,
                "plan_id": m.plan_id,
                "status": m.status,
                "evidence": m.evidence.iter().map(|e| json!({
                    "summary": e.evidence.summary,
                    "reference": e.evidence.reference,
                    "data": e.evidence.data,
                    "run_id": e.run_id,
                    "node_run_id": e.node_run_id,
                })).collect::<Vec<_>>(),
                "revision": self.revision,
            }),
            None => Value::Null,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    pub milestone_id: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only milestones of this plan.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// Only milestones with this status.
    #[serde(default)]
    pub status: Option<MilestoneStatus>,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    pub milestone_id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub due: Option<String>,
    #[serde(default)]
    pub plan_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    pub milestone_id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub due: Option<String>,
    #[serde(default)]
    pub plan_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    pub milestone_id: String,
    pub status: MilestoneStatus,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceArgs {
    pub milestone_id: String,
    pub summary: String,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MilestoneOp {
    Get(IdArgs),
    List(ListArgs),
    Create(CreateArgs),
    Update(UpdateArgs),
    Delete(IdArgs),
    SetStatus(StatusArgs),
    AttachEvidence(EvidenceArgs),
}

impl MilestoneOp {
    fn milestone_id(&self) -> Option<&str> {
        match self {
            MilestoneOp::Get(a) | MilestoneOp::Delete(a) => Some(&a.milestone_id),
            MilestoneOp::List(_) => None,
            MilestoneOp::Create(a) => Some(&a.milestone_id),
            MilestoneOp::Update(a) => Some(&a.milestone_id),
            MilestoneOp::SetStatus(a) => Some(&a.milestone_id),
            MilestoneOp::AttachEvidence(a) => Some(&a.milestone_id),
        }
    }
}

/// The milestone tool.
pub struct Milestones;

impl Tool for Milestones {
    const KIND: ToolKind = ToolKind::Milestone;
    type Op = MilestoneOp;
    type State = MilestoneStream;

    fn parse(operation: &str, args: Value) -> Result<MilestoneOp, ToolError> {
        let op = match operation {
            "get" => MilestoneOp::Get(parse_args(args)?),
            "list" => MilestoneOp::List(parse_args(args)?),
            "create" => MilestoneOp::Create(parse_args(args)?),
            "update" => MilestoneOp::Update(parse_args(args)?),
            "delete" => MilestoneOp::Delete(parse_args(args)?),
            "set_status" => MilestoneOp::SetStatus(parse_args(args)?),
            "attach_evidence" => MilestoneOp::AttachEvidence(parse_args(args)?),
            other => {
                return Err(ToolError::InvalidInput {
                    field: "operation".into(),
                    message: format!(
                        "milestone has no operation `{other}` (get, list, create, update, delete, set_status, attach_evidence)"
                    ),
                });
            }
        };
        if let Some(id) = op.milestone_id() {
            check_id("milestone_id", id)?;
        }
        match &op {
            MilestoneOp::List(a) => {
                list_limit(a.limit)?;
            }
            MilestoneOp::Create(a) => {
                check_text("title", &a.title)?;
                if let Some(plan) = &a.plan_id {
                    check_id("plan_id", plan)?;
                }
            }
            MilestoneOp::Update(a) => {
                if a.title.is_none()
                    && a.description.is_none()
                    && a.due.is_none()
                    && a.plan_id.is_none()
                {
                    return Err(ToolError::InvalidInput {
                        field: "args".into(),
                        message:
                            "update needs at least one of `title`, `description`, `due`, `plan_id`"
                                .into(),
                    });
                }
                if let Some(title) = &a.title {
                    check_text("title", title)?;
                }
                if let Some(plan) = &a.plan_id {
                    check_id("plan_id", plan)?;
                }
            }
            MilestoneOp::AttachEvidence(a) => {
                check_text("summary", &a.summary)?;
                if let Some(data) = &a.data {
                    let invalid = |message: String| ToolError::InvalidInput {
                        field: "args.data".into(),
                        message,
                    };
                    let bytes = runledger_contracts::canonical::to_canonical_vec(data)
                        .map_err(|e| invalid(e.to_string()))?;
                    if bytes.len() > MAX_EVIDENCE_BYTES {
                        return Err(invalid(format!(
                            "is {} bytes of JSON, more than {MAX_EVIDENCE_BYTES}",
                            bytes.len()
                        )));
                    }
                }
            }
            _ => {}
        }
        Ok(op)
    }

    fn target(op: &MilestoneOp) -> Result<Target, ToolError> {
        match op.milestone_id() {
            Some(id) => ToolKind::Milestone.stream(id).map(Target::Stream),
            None => Ok(Target::All),
        }
    }

    fn evolve(state: &mut MilestoneStream, event: &DomainEvent) -> Result<(), StateError> {
        if let DomainEvent::MilestoneCreated(e) = event {
            if state.milestone.is_some() {
                return Err(StateError::Exists {
                    event: event.event_type(),
                    what: "the milestone".into(),
                });
            }
            state.milestone = Some(Milestone {
                milestone_id: e.milestone_id.clone(),
                title: e.title.clone(),
                description: e.description.clone(),
                due: e.due.clone(),
                plan_id: e.plan_id.clone(),
                status: MilestoneStatus::Pending,
                evidence: Vec::new(),
            });
            state.revision += 1;
            return Ok(());
        }
        let name = event.event_type();
        let Some(m) = &mut state.milestone else {
            return Err(StateError::Missing {
                event: name,
                what: "the milestone".into(),
            });
        };
        match event {
            DomainEvent::MilestoneUpdated(e) => {
                if let Some(title) = &e.title {
                    m.title = title.clone();
                }
                if e.description.is_some() {
                    m.description = e.description.clone();
                }
                if e.due.is_some() {
                    m.due = e.due.clone();
                }
                if e.plan_id.is_some() {
                    m.plan_id = e.plan_id.clone();
                }
            }
            DomainEvent::MilestoneDeleted(_) => state.milestone = None,
            DomainEvent::MilestoneStatusSet(e) => m.status = e.status,
            DomainEvent::MilestoneEvidenceAttached(e) => m.evidence.push(AttachedEvidence {
                evidence: e.evidence.clone(),
                run_id: e.run_id,
                node_run_id: e.node_run_id,
            }),
            _ => {
                return Err(StateError::Foreign {
                    event: name,
                    tool: "milestone",
                });
            }
        }
        state.revision += 1;
        Ok(())
    }

    fn output_after(state: &MilestoneStream, event: &DomainEvent) -> Value {
        match event {
            DomainEvent::MilestoneDeleted(e) => {
                json!({ "milestone_id": e.milestone_id, "deleted": true, "revision": state.revision })
            }
            _ => state.to_json(),
        }
    }

    fn decide(
        op: &MilestoneOp,
        states: &[&MilestoneStream],
        cause: &ToolCause,
    ) -> Result<Decided, ToolError> {
        if let MilestoneOp::List(a) = op {
            let limit = list_limit(a.limit)?;
            let matching: Vec<&&MilestoneStream> = states
                .iter()
                .filter(|s| {
                    s.milestone.as_ref().is_some_and(|m| {
                        a.plan_id
                            .as_ref()
                            .is_none_or(|p| m.plan_id.as_ref() == Some(p))
                            && a.status.is_none_or(|st| m.status == st)
                    })
                })
                .collect();
            let milestones: Vec<Value> = matching.iter().take(limit).map(|s| s.to_json()).collect();
            return Ok(Decided::Read(
                json!({ "milestones": milestones, "total": matching.len() }),
            ));
        }
        let empty = MilestoneStream::default();
        let state = states.first().copied().unwrap_or(&empty);
        let milestone_id = op.milestone_id().unwrap_or_default().to_owned();
        let existing = || {
            state.milestone.as_ref().ok_or_else(|| {
                ToolError::NotFound(format!("there is no milestone `{milestone_id}`"))
            })
        };
        let (run_id, node_id, node_run_id, idempotency_key) = (
            cause.run_id,
            cause.node_id.clone(),
            cause.node_run_id,
            cause.idempotency_key.clone(),
        );
        let event: DomainEvent = match op {
            MilestoneOp::List(_) => return Ok(Decided::Read(Value::Null)),
            MilestoneOp::Get(_) => {
                existing()?;
                return Ok(Decided::Read(state.to_json()));
            }
            MilestoneOp::Create(a) => {
                if state.milestone.is_some() {
                    return Err(ToolError::AlreadyExists(format!(
                        "milestone `{milestone_id}` already exists"
                    )));
                }
                MilestoneCreated {
                    run_id,
                    node_id,
                    node_run_id,
                    idempotency_key,
                    milestone_id,
                    title: a.title.clone(),
                    description: a.description.clone(),
                    due: a.due.clone(),
                    plan_id: a.plan_id.clone(),
                }
                .into()
            }
            MilestoneOp::Update(a) => {
                existing()?;
                MilestoneUpdated {
                    run_id,
                    node_id,
                    node_run_id,
                    idempotency_key,
                    milestone_id,
                    title: a.title.clone(),
                    description: a.description.clone(),
                    due: a.due.clone(),
                    plan_id: a.plan_id.clone(),
                }
                .into()
            }
            MilestoneOp::Delete(_) => {
                existing()?;
                MilestoneDeleted {
                    run_id,
                    node_id,
                    node_run_id,
                    idempotency_key,
                    milestone_id,
                }
                .into()
            }
            MilestoneOp::SetStatus(a) => {
                let previous = existing()?.status;
                MilestoneStatusSet {
                    run_id,
                    node_id,
                    node_run_id,
                    idempotency_key,
                    milestone_id,
                    status: a.status,
                    previous,
                }
                .into()
            }
            MilestoneOp::AttachEvidence(a) => {
                existing()?;
                let evidence = MilestoneEvidence {
                    summary: a.summary.clone(),
                    reference: a.reference.clone(),
                    data: a.data.clone(),
                };
                MilestoneEvidenceAttached {
                    run_id,
                    node_id,
                    node_run_id,
                    idempotency_key,
                    milestone_id,
                    evidence,
                }
                .into()
            }
        };
        Ok(Decided::Write(vec![event]))
    }
}

/// One milestone, folded from its stream (for the CLI).
pub async fn load_milestone<S: runledger_ledger::EventStore>(
    store: &S,
    milestone_id: &str,
) -> Result<MilestoneStream, ToolError> {
    check_id("milestone_id", milestone_id)?;
    super::cache::load::<Milestones, S>(store, &ToolKind::Milestone.stream(milestone_id)?)
        .await
        .map(|(_, s)| s)
}

/// Every milestone that exists, by id (for the CLI).
pub async fn load_milestones<S: runledger_ledger::EventStore>(
    store: &S,
) -> Result<Vec<MilestoneStream>, ToolError> {
    let all = super::cache::load_all::<Milestones, S>(store).await?;
    Ok(all
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.milestone.is_some())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(state: &mut MilestoneStream, op: &str, args: Value) -> Result<Value, ToolError> {
        let node_run_id = NodeRunId::new_v7();
        let cause = ToolCause {
            run_id: RunId::new_v7(),
            node_id: "m".into(),
            node_run_id,
            idempotency_key: format!("{node_run_id}:milestone:{op}"),
        };
        match Milestones::decide(&Milestones::parse(op, args)?, &[state], &cause)? {
            Decided::Read(v) => Ok(v),
            Decided::Write(events) => {
                let mut out = Value::Null;
                for e in &events {
                    Milestones::evolve(state, e).unwrap();
                    out = Milestones::output_after(state, e);
                }
                Ok(out)
            }
        }
    }

    #[test]
    fn status_and_evidence_accumulate() {
        let mut s = MilestoneStream::default();
        let created = apply(
            &mut s,
            "create",
            json!({ "milestone_id": "m1", "title": "Beta", "plan_id": "p1" }),
        )
        .unwrap();
        assert_eq!(created["status"], "pending");
        let set = apply(
            &mut s,
            "set_status",
            json!({ "milestone_id": "m1", "status": "achieved" }),
        )
        .unwrap();
        assert_eq!(set["status"], "achieved");
        apply(
            &mut s,
            "attach_evidence",
            json!({ "milestone_id": "m1", "summary": "tests pass", "reference": "ci#42" }),
        )
        .unwrap();
        let with = apply(
            &mut s,
            "attach_evidence",
            json!({ "milestone_id": "m1", "summary": "demo", "data": { "views": 3 } }),
        )
        .unwrap();
        assert_eq!(with["evidence"].as_array().unwrap().len(), 2);
        assert_eq!(with["evidence"][1]["data"]["views"], 3);
        let updated = apply(
            &mut s,
            "update",
            json!({ "milestone_id": "m1", "due": "2026-01-01" }),
        )
        .unwrap();
        assert_eq!(
            (
                updated["due"].as_str(),
                updated["title"].as_str(),
                updated["revision"].as_u64()
            ),
            (Some("2026-01-01"), Some("Beta"), Some(5))
        );
        let listed = Milestones::decide(
            &Milestones::parse("list", json!({ "status": "achieved" })).unwrap(),
            &[&s],
            &ToolCause {
                run_id: RunId::new_v7(),
                node_id: "m".into(),
                node_run_id: NodeRunId::new_v7(),
                idempotency_key: "k".into(),
            },
        )
        .unwrap();
        assert!(matches!(listed, Decided::Read(v) if v["total"] == 1));
        assert_eq!(
            apply(&mut s, "delete", json!({ "milestone_id": "m1" })).unwrap()["deleted"],
            true
        );
        assert_eq!(
            apply(
                &mut s,
                "attach_evidence",
                json!({ "milestone_id": "m1", "summary": "x" })
            )
            .unwrap_err()
            .code(),
            "tool_not_found"
        );
        let err = Milestones::parse(
            "set_status",
            json!({ "milestone_id": "m1", "status": "done" }),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("args.status:"), "{err}");
    }
}
