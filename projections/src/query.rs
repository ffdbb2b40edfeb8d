//! The public query API over the read models: what the HTTP API and the CLI call. Every result
//! type is `Serialize`; lists are pages with an opaque `next_cursor`.
//!
//! | function | answers |
//! |---|---|
//! | [`run_detail`] | one run: status, flowchart, inputs, timings, counts, warnings, node runs, timeline |
//! | [`list_runs`] | runs newest first, by status, flowchart and start time |
//! | [`node_run_detail`] | one node run with its timeline, tool calls and artifacts |
//! | [`list_artifacts`], [`artifact`] | artifacts newest first with filters; one artifact in full |
//! | [`claims`] | every registered claim, globally or for one run, with evidence |
//! | [`lag`] | how far each projector is behind the ledger |

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::artifact_history::{
    ArtifactDetail, ArtifactFilter, ArtifactRow, artifact, artifacts_of_node_run, list_artifacts,
};
pub use crate::claims::query::{
    ClaimResult, ClaimStatus, Evidence, EvidenceEvent, claims, claims_with,
};
pub use crate::cursor::{DEFAULT_LIMIT, MAX_LIMIT};
pub use crate::lag::{ProjectorLag, lag};
pub use crate::run_detail::query::{
    NodeRunDetail, NodeRunView, ParentLink, RunDetail, RunFilter, RunSummaryRow, list_runs,
    node_run_detail, run_detail, run_version,
};
pub use crate::run_detail::{
    CancelInfo, RetryInfo, Routing, RunWarning, TimelineEntry, TimeoutInfo, ToolCallRow,
};

use crate::error::QueryError;

/// One page of a list, and the cursor of the next page (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Rows selected as `to_json(...)::text`.
pub(crate) fn parse<T: DeserializeOwned>(rows: Vec<String>) -> Result<Vec<T>, QueryError> {
    rows.iter().map(|text| parse_one(text)).collect()
}

pub(crate) fn parse_one<T: DeserializeOwned>(text: &str) -> Result<T, QueryError> {
    serde_json::from_str(text).map_err(|e| QueryError::corrupt("a JSON column does not decode", e))
}
