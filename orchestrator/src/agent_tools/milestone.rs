//! `milestone_*`: milestones with a status and evidence (`milestone-<milestone_id>` streams),
//! the operations of `milestone` nodes.

use runledger_contracts::agent_tool::ToolSpec;
use serde_json::{Value, json};

use super::schema::{any, id, limit, object, one_of, spec, string};
use crate::tools::MAX_LIST_LIMIT;

/// Milestone statuses, as `MilestoneStatus` serializes them.
pub const MILESTONE_STATUSES: &[&str] =
    &["pending", "in_progress", "achieved", "missed", "canceled"];

fn milestone_id() -> Value {
    id("The milestone's id.")
}

fn fields() -> serde_json::Map<String, Value> {
    let Value::Object(map) = json!({
        "milestone_id": milestone_id(),
        "title": string("The milestone's title."),
        "description": string("What reaching it means."),
        "due": string("When it is due (free text, e.g. an ISO 8601 date)."),
        "plan_id": id("The plan it belongs to."),
    }) else {
        return serde_json::Map::new();
    };
    map
}

/// The `milestone_*` tools.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        spec(
            "milestone_get",
            "Read one milestone with its status, evidence and revision.",
            object(json!({ "milestone_id": milestone_id() }), &["milestone_id"]),
            false,
        ),
        spec(
            "milestone_list",
            "List milestones, optionally of one plan or with one status.",
            object(
                json!({
                    "plan_id": id("Only milestones of this plan."),
                    "status": one_of(MILESTONE_STATUSES, "Only milestones with this status."),
                    "limit": limit(MAX_LIST_LIMIT, "Most milestones returned (default 100)."),
                }),
                &[],
            ),
            false,
        ),
        spec(
            "milestone_create",
            "Create a milestone (status pending); fails with already_exists when the id is taken.",
            object(Value::Object(fields()), &["milestone_id", "title"]),
            true,
        ),
        spec(
            "milestone_update",
            "Change a milestone's title, description, due date or plan.",
            object(Value::Object(fields()), &["milestone_id"]),
            true,
        ),
        spec(
            "milestone_delete",
            "Delete a milestone.",
            object(json!({ "milestone_id": milestone_id() }), &["milestone_id"]),
            true,
        ),
        spec(
            "milestone_set_status",
            "Set a milestone's status.",
            object(
                json!({
                    "milestone_id": milestone_id(),
                    "status": one_of(MILESTONE_STATUSES, "The new status."),
                }),
                &["milestone_id", "status"],
            ),
            true,
        ),
        spec(
            "milestone_attach_evidence",
            "Attach evidence of progress to a milestone; the calling node run is recorded with it.",
            object(
                json!({
                    "milestone_id": milestone_id(),
                    "summary": string("What the evidence shows."),
                    "reference": string("Where it is (a URL, a CI run, an artifact id)."),
                    "data": any("Any JSON, at most 64 KiB."),
                }),
                &["milestone_id", "summary"],
            ),
            true,
        ),
    ]
}
