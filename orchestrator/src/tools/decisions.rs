//! Decisions an agent records: a question, its options, their scores and the option chosen,
//! one stream per decision (`decision-<decision_id>`). Operations: `create`, `get`, `list`,
//! `list_options`, `score_options`, `record_outcome`.
//!
//! Event-sourced like memory and plans ([`super::Tool`]), so a decision made by a model is
//! audited the way a decision node's routing is: who weighed which options, with what scores,
//! and what was chosen. Not to be confused with [`super::decision`], the outcome record of
//! `decision` nodes.

use std::collections::{BTreeMap, BTreeSet};

use runledger_contracts::events::{
    DecisionCreated, DecisionOption, DecisionOptionsScored, DecisionOutcomeRecorded, DomainEvent,
    OptionScore,
};
use runledger_contracts::ids::{NodeRunId, RunId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Decided, StateError, Target, Tool, ToolCause, ToolError, ToolKind, check_id, check_text,
    list_limit, parse_args,
};

/// Most options one decision may have.
pub const MAX_OPTIONS: usize = 100;
/// Largest `context`, as canonical JSON.
pub const MAX_CONTEXT_BYTES: usize = 64 << 10;

/// A decision as its stream tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub decision_id: String,
    pub question: String,
    pub options: Vec<DecisionOption>,
    pub criteria: Vec<String>,
    pub context: Option<Value>,
    /// The latest score of each option scored so far.
    pub scores: BTreeMap<String, OptionScore>,
    pub outcome: Option<Outcome>,
    /// The run and node run that opened it.
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub chosen_option_id: String,
    pub rationale: Option<String>,
    pub node_run_id: NodeRunId,
}

impl Decision {
    fn status(&self) -> &'static str {
        if self.outcome.is_some() {
            "decided"
        } else {
            "open"
        }
    }

    /// Options with their scores, in the order they were given.
    pub fn options_json(&self) -> Vec<Value> {
        self.options
            .iter()
            .map(|o| {
                let score = self.scores.get(&o.id);
                json!({
                    "id": o.id,
                    "description": o.description,
                    "score": score.map(|s| s.score),
                    "rationale": score.and_then(|s| s.rationale.clone()),
                })
            })
            .collect()
    }

    /// Scored option ids, best first (ties in option order).
    pub fn ranking(&self) -> Vec<String> {
        let mut scored: Vec<(usize, &DecisionOption, f64)> = self
            .options
            .iter()
            .enumerate()
            .filter_map(|(i, o)| self.scores.get(&o.id).map(|s| (i, o, s.score)))
            .collect();
        scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        scored.into_iter().map(|(_, o, _)| o.id.clone()).collect()
    }
}

/// One decision stream: the decision (absent before `DecisionCreated`) and how many events
/// its stream holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionStream {
    pub decision: Option<Decision>,
    pub revision: u64,
}

impl DecisionStream {
    pub fn to_json(&self) -> Value {
        match &self.decision {
            Some(d) => json!({
                "decision_id": d.decision_id,
                "question": d.question,
                "options": d.options_json(),
                "criteria": d.criteria,
                "context": d.context,
                "status": d.status(),
                "ranking": d.ranking(),
                "outcome": d.outcome.as_ref().map(|o| json!({
                    "option_id": o.chosen_option_id,
                    "rationale": o.rationale,
                    "node_run_id": o.node_run_id,
                })),
                "run_id": d.run_id,
                "node_run_id": d.node_run_id,
                "revision": self.revision,
            }),
            None => Value::Null,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    pub decision_id: String,
}

/// Which decisions `list` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    Open,
    Decided,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    #[serde(default)]
    pub status: Option<StatusFilter>,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    pub decision_id: String,
    pub question: String,
    pub options: Vec<DecisionOption>,
    #[serde(default)]
    pub criteria: Vec<String>,
    #[serde(default)]
    pub context: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreArgs {
    pub decision_id: String,
    pub scores: Vec<OptionScore>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeArgs {
    pub decision_id: String,
    pub option_id: String,
    #[serde(default)]
    pub rationale: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DecisionOp {
    Create(CreateArgs),
    Get(IdArgs),
    List(ListArgs),
    ListOptions(IdArgs),
    ScoreOptions(ScoreArgs),
    RecordOutcome(OutcomeArgs),
}

impl DecisionOp {
    fn decision_id(&self) -> Option<&str> {
        match self {
            DecisionOp::Create(a) => Some(&a.decision_id),
            DecisionOp::Get(a) | DecisionOp::ListOptions(a) => Some(&a.decision_id),
            DecisionOp::List(_) => None,
            DecisionOp::ScoreOptions(a) => Some(&a.decision_id),
            DecisionOp::RecordOutcome(a) => Some(&a.decision_id),
        }
    }
}

/// The decision tool.
pub struct Decisions;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ToolError {
    ToolError::InvalidInput {
        field: field.into(),
        message: message.into(),
    }
}

fn check_create(a: &CreateArgs) -> Result<(), ToolError> {
    check_text("question", &a.question)?;
    if a.options.is_empty() || a.options.len() > MAX_OPTIONS {
        return Err(invalid(
            "args.options",
            format!("must hold 1 to {MAX_OPTIONS} options"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, option) in a.options.iter().enumerate() {
        check_id(&format!("options[{i}].id"), &option.id)?;
        check_text(&format!("options[{i}].description"), &option.description)?;
        if !seen.insert(option.id.as_str()) {
            return Err(invalid(
                format!("args.options[{i}].id"),
                format!("`{}` is given twice", option.id),
            ));
        }
    }
    if let Some(context) = &a.context {
        let bytes = runledger_contracts::canonical::to_canonical_vec(context)
            .map_err(|e| invalid("args.context", e.to_string()))?;
        if bytes.len() > MAX_CONTEXT_BYTES {
            return Err(invalid(
                "args.context",
                format!(
                    "is {} bytes of JSON, more than {MAX_CONTEXT_BYTES}",
                    bytes.len()
                ),
            ));
        }
    }
    Ok(())
}

fn check_scores(scores: &[OptionScore]) -> Result<(), ToolError> {
    if scores.is_empty() {
        return Err(invalid("args.scores", "must hold at least one score"));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in scores.iter().enumerate() {
        if !s.score.is_finite() {
            return Err(invalid(
                format!("args.scores[{i}].score"),
                "must be a finite number",
            ));
        }
        if !seen.insert(s.option_id.as_str()) {
            return Err(invalid(
                format!("args.scores[{i}].option_id"),
                format!("`{}` is scored twice", s.option_id),
            ));
        }
    }
    Ok(())
}

impl Tool for Decisions {
    const KIND: ToolKind = ToolKind::Decision;
    type Op = DecisionOp;
    type State = DecisionStream;

    fn parse(operation: &str, args: Value) -> Result<DecisionOp, ToolError> {
        let op = match operation {
            "create" => DecisionOp::Create(parse_args(args)?),
            "get" => DecisionOp::Get(parse_args(args)?),
            "list" => DecisionOp::List(parse_args(args)?),
            "list_options" => DecisionOp::ListOptions(parse_args(args)?),
            "score_options" => DecisionOp::ScoreOptions(parse_args(args)?),
            "record_outcome" => DecisionOp::RecordOutcome(parse_args(args)?),
            other => {
                return Err(invalid(
                    "operation",
                    format!(
                        "decision has no operation `{other}` (create, get, list, list_options, score_options, record_outcome)"
                    ),
                ));
            }
        };
        if let Some(id) = op.decision_id() {
            check_id("decision_id", id)?;
        }
        match &op {
            DecisionOp::Create(a) => check_create(a)?,
            DecisionOp::List(a) => {
                list_limit(a.limit)?;
            }
            DecisionOp::ScoreOptions(a) => check_scores(&a.scores)?,
            _ => {}
        }
        Ok(op)
    }

    fn target(op: &DecisionOp) -> Result<Target, ToolError> {
        match op.decision_id() {
            Some(id) => ToolKind::Decision.stream(id).map(Target::Stream),
            None => Ok(Target::All),
        }
    }

    fn evolve(state: &mut DecisionStream, event: &DomainEvent) -> Result<(), StateError> {
        if let DomainEvent::DecisionCreated(e) = event {
            if state.decision.is_some() {
                return Err(StateError::Exists {
                    event: event.event_type(),
                    what: "the decision".into(),
                });
            }
            state.decision = Some(Decision {
                decision_id: e.decision_id.clone(),
                question: e.question.clone(),
                options: e.options.clone(),
                criteria: e.criteria.clone(),
                context: e.context.clone(),
                scores: BTreeMap::new(),
                outcome: None,
                run_id: e.run_id,
                node_run_id: e.node_run_id,
            });
            state.revision += 1;
            return Ok(());
        }
        let name = event.event_type();
        let Some(d) = &mut state.decision else {
            return Err(StateError::Missing {
                event: name,
                what: "the decision".into(),
            });
        };
        match event {
            DomainEvent::DecisionOptionsScored(e) => {
                for score in &e.scores {
                    d.scores.insert(score.option_id.clone(), score.clone());
                }
            }
            DomainEvent::DecisionOutcomeRecorded(e) => {
                if d.outcome.is_some() {
                    return Err(StateError::Inconsistent {
                        event: name,
                        reason: "the decision was made already".into(),
                    });
                }
                d.outcome = Some(Outcome {
                    chosen_option_id: e.chosen_option_id.clone(),
                    rationale: e.rationale.clone(),
                    node_run_id: e.node_run_id,
                });
            }
            _ => {
                return Err(StateError::Foreign {
                    event: name,
                    tool: "decision",
                });
            }
        }
        state.revision += 1;
        Ok(())
    }

    fn output_after(state: &DecisionStream, _event: &DomainEvent) -> Value {
        state.to_json()
    }

    fn decide(
        op: &DecisionOp,
        states: &[&DecisionStream],
        cause: &ToolCause,
    ) -> Result<Decided, ToolError> {
        if let DecisionOp::List(a) = op {
            let limit = list_limit(a.limit)?;
            let matching: Vec<&&DecisionStream> = states
                .iter()
                .filter(|s| {
                    s.decision.as_ref().is_some_and(|d| match a.status {
                        None => true,
                        Some(StatusFilter::Open) => d.outcome.is_none(),
                        Some(StatusFilter::Decided) => d.outcome.is_some(),
                    })
                })
                .collect();
            let decisions: Vec<Value> = matching.iter().take(limit).map(|s| s.to_json()).collect();
            return Ok(Decided::Read(
                json!({ "decisions": decisions, "total": matching.len() }),
            ));
        }
        let empty = DecisionStream::default();
        let state = states.first().copied().unwrap_or(&empty);
        let decision_id = op.decision_id().unwrap_or_default().to_owned();
        let existing = || {
            state
                .decision
                .as_ref()
                .ok_or_else(|| ToolError::NotFound(format!("there is no decision `{decision_id}`")))
        };
        let (run_id, node_id, node_run_id, idempotency_key) = (
            cause.run_id,
            cause.node_id.clone(),
            cause.node_run_id,
            cause.idempotency_key.clone(),
        );
        let event: DomainEvent = match op {
            DecisionOp::List(_) => return Ok(Decided::Read(Value::Null)),
            DecisionOp::Get(_) => {
                existing()?;
                return Ok(Decided::Read(state.to_json()));
            }
            DecisionOp::ListOptions(_) => {
                let d = existing()?;
                return Ok(Decided::Read(json!({
                    "decision_id": d.decision_id,
                    "options": d.options_json(),
                    "ranking": d.ranking(),
                })));
            }
            DecisionOp::Create(a) => {
                if state.decision.is_some() {
                    return Err(ToolError::AlreadyExists(format!(
                        "decision `{decision_id}` already exists"
                    )));
                }
                DecisionCreated {
                    run_id,
                    node_id,
                    node_run_id,
                    idempotency_key,
                    decision_id,
                    question: a.question.clone(),
                    options: a.options.clone(),
                    criteria: a.criteria.clone(),
                    context: a.context.clone(),
                }
                .into()
            }
            DecisionOp::ScoreOptions(a) => {
                let d = existing()?;
                if d.outcome.is_some() {
                    return Err(ToolError::InvalidOperation(format!(
                        "decision `{decision_id}` was made already; its options cannot be scored again"
                    )));
                }
                for (i, s) in a.scores.iter().enumerate() {
                    if !d.options.iter().any(|o| o.id == s.option_id) {
                        return Err(invalid(
                            format!("args.scores[{i}].option_id"),
                            format!("decision `{decision_id}` has no option `{}`", s.option_id),
                        ));
                    }
                }
                DecisionOptionsScored {
                    run_id,
                    node_id,
                    node_run_id,
                    idempotency_key,
                    decision_id,
                    scores: a.scores.clone(),
                }
                .into()
            }
            DecisionOp::RecordOutcome(a) => {
                let d = existing()?;
                if let Some(o) = &d.outcome {
                    return Err(ToolError::AlreadyExists(format!(
                        "decision `{decision_id}` was made already (option `{}`)",
                        o.chosen_option_id
                    )));
                }
                if !d.options.iter().any(|o| o.id == a.option_id) {
                    return Err(invalid(
                        "args.option_id",
                        format!("decision `{decision_id}` has no option `{}`", a.option_id),
                    ));
                }
                DecisionOutcomeRecorded {
                    run_id,
                    node_id,
                    node_run_id,
                    idempotency_key,
                    decision_id,
                    chosen_option_id: a.option_id.clone(),
                    rationale: a.rationale.clone(),
                }
                .into()
            }
        };
        Ok(Decided::Write(vec![event]))
    }
}
