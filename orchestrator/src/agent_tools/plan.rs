//! `plan_*`: plans of ordered stages (`plan-<plan_id>` streams), the operations of `plan`
//! nodes.

use runledger_contracts::agent_tool::ToolSpec;
use serde_json::{Value, json};

use super::schema::{id, limit, object, one_of, spec, string};
use crate::tools::MAX_LIST_LIMIT;

/// Stage statuses, as `StageStatus` serializes them.
pub const STAGE_STATUSES: &[&str] = &["pending", "in_progress", "done", "blocked", "skipped"];

fn plan_id() -> Value {
    id("The plan's id.")
}

fn stages() -> Value {
    json!({
        "type": "array",
        "description": "Stages in order; ids unique within the plan.",
        "items": object(
            json!({
                "id": id("The stage's id."),
                "title": string("What the stage does."),
                "status": one_of(STAGE_STATUSES, "Default pending (on update: the stage's current status)."),
            }),
            &["id", "title"],
        ),
    })
}

/// The `plan_*` tools.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        spec(
            "plan_get",
            "Read one plan with its stages and revision.",
            object(json!({ "plan_id": plan_id() }), &["plan_id"]),
            false,
        ),
        spec(
            "plan_list",
            "List the plans that exist, by id.",
            object(
                json!({ "limit": limit(MAX_LIST_LIMIT, "Most plans returned (default 100).") }),
                &[],
            ),
            false,
        ),
        spec(
            "plan_create",
            "Create a plan; fails with already_exists when the id is taken.",
            object(
                json!({
                    "plan_id": plan_id(),
                    "title": string("The plan's title."),
                    "description": string("What the plan is for."),
                    "stages": stages(),
                }),
                &["plan_id", "title"],
            ),
            true,
        ),
        spec(
            "plan_update",
            "Change a plan's title, description or whole list of stages (at least one).",
            object(
                json!({
                    "plan_id": plan_id(),
                    "title": string("The new title."),
                    "description": string("The new description."),
                    "stages": stages(),
                }),
                &["plan_id"],
            ),
            true,
        ),
        spec(
            "plan_delete",
            "Delete a plan.",
            object(json!({ "plan_id": plan_id() }), &["plan_id"]),
            true,
        ),
        spec(
            "plan_reorder_stages",
            "Put a plan's stages in a new order: every stage id once.",
            object(
                json!({
                    "plan_id": plan_id(),
                    "order": { "type": "array", "items": { "type": "string" }, "description": "Every stage id of the plan, once each, in the new order." },
                }),
                &["plan_id", "order"],
            ),
            true,
        ),
        spec(
            "plan_set_stage_status",
            "Set the status of one stage of a plan.",
            object(
                json!({
                    "plan_id": plan_id(),
                    "stage_id": id("The stage's id."),
                    "status": one_of(STAGE_STATUSES, "The stage's new status."),
                }),
                &["plan_id", "stage_id", "status"],
            ),
            true,
        ),
    ]
}
