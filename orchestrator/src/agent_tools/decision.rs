//! `decision_*`: decisions an agent weighs and records (`decision-<decision_id>` streams:
//! `DecisionCreated`, `DecisionOptionsScored`, `DecisionOutcomeRecorded`), and
//! `decision_evaluate`, a condition of the flowchart language evaluated over a context with the
//! evaluator decision nodes use.

use runledger_contracts::agent_tool::ToolSpec;
use runledger_contracts::condition;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{any, id, limit, object, one_of, spec, string};
use super::{invalid, parse};
use crate::tools::MAX_LIST_LIMIT;
use crate::tools::decisions::MAX_OPTIONS;

fn decision_id() -> Value {
    id("The decision's id.")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateArgs {
    condition: String,
    context: Value,
}

/// Evaluates a condition over a context: `matched` is true, false, or null when the condition
/// could not be evaluated (`error` says why); `reason` is the evaluator's one-line account.
pub fn evaluate(arguments: Value) -> Result<Value, runledger_contracts::agent_tool::ToolCallError> {
    let args: EvaluateArgs = parse(arguments)?;
    let parsed =
        condition::parse(&args.condition).map_err(|e| invalid(format!("condition: {e}")))?;
    let evaluation = parsed.evaluate_explained(&args.context);
    Ok(match evaluation.outcome {
        Ok(matched) => json!({ "matched": matched, "reason": evaluation.reason }),
        Err(e) => json!({ "matched": null, "reason": evaluation.reason, "error": e.to_string() }),
    })
}

/// The `decision_*` tools.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        spec(
            "decision_create",
            "Open a decision: the question, the options to choose between, the criteria and context.",
            object(
                json!({
                    "decision_id": decision_id(),
                    "question": string("What is being decided."),
                    "options": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_OPTIONS,
                        "items": object(
                            json!({ "id": id("The option's id, unique in the decision."), "description": string("What the option is.") }),
                            &["id", "description"],
                        ),
                    },
                    "criteria": { "type": "array", "items": { "type": "string" }, "description": "What the options are weighed by, most important first." },
                    "context": any("Facts the decision is made on (at most 64 KiB of JSON)."),
                }),
                &["decision_id", "question", "options"],
            ),
            true,
        ),
        spec(
            "decision_evaluate",
            "Evaluate a condition of the flowchart condition language over a JSON context (no write).",
            object(
                json!({
                    "condition": string("e.g. `score >= 8 and exists(notes)`."),
                    "context": any("The JSON the condition's paths resolve in."),
                }),
                &["condition", "context"],
            ),
            false,
        ),
        spec(
            "decision_list_options",
            "List a decision's options with their latest scores, and the ranking of scored options.",
            object(json!({ "decision_id": decision_id() }), &["decision_id"]),
            false,
        ),
        spec(
            "decision_score_options",
            "Score options of an open decision; a later score of an option replaces the earlier one.",
            object(
                json!({
                    "decision_id": decision_id(),
                    "scores": {
                        "type": "array",
                        "minItems": 1,
                        "items": object(
                            json!({
                                "option_id": id("An option of the decision."),
                                "score": { "type": "number", "description": "Higher is better." },
                                "rationale": string("Why this score."),
                            }),
                            &["option_id", "score"],
                        ),
                    },
                }),
                &["decision_id", "scores"],
            ),
            true,
        ),
        spec(
            "decision_record_outcome",
            "Record the option chosen (once per decision) and why.",
            object(
                json!({
                    "decision_id": decision_id(),
                    "option_id": id("The option chosen."),
                    "rationale": string("Why it was chosen."),
                }),
                &["decision_id", "option_id"],
            ),
            true,
        ),
        spec(
            "decision_get",
            "Read one decision: question, options with scores, ranking, status and outcome.",
            object(json!({ "decision_id": decision_id() }), &["decision_id"]),
            false,
        ),
        spec(
            "decision_list",
            "List decisions, optionally only open or only decided ones.",
            object(
                json!({
                    "status": one_of(&["open", "decided"], "Only decisions with this status."),
                    "limit": limit(MAX_LIST_LIMIT, "Most decisions returned (default 100)."),
                }),
                &[],
            ),
            false,
        ),
    ]
}
