//! The run_detail queries on SQLite: rows are read as their JSON documents and assembled as on
//! PostgreSQL, so both backends answer with the same values.

use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use runledger_ledger::SqliteEventStore;

use super::query::{
    NodeRunDetail, NodeRunView, RunDetail, RunFilter, RunSummaryRow, assemble, summary,
};
use super::rows::{NodeRunRow, RunRow, TimelineEntry, ToolCallRow};
use crate::artifact_history::ArtifactDetail;
use crate::error::QueryError;
use crate::query::{parse, parse_one};

pub(super) async fn run_detail(
    store: &SqliteEventStore,
    run_id: RunId,
) -> Result<Option<RunDetail>, QueryError> {
    let pool = store.readers();
    // One read transaction: the run, its node runs and its timeline as of one commit.
    let mut tx = pool.begin().await?;
    let run: Option<String> =
        sqlx::query_scalar("SELECT doc FROM run_detail_runs WHERE run_id = ?1")
            .bind(run_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(run) = run else { return Ok(None) };
    let run: RunRow = parse_one(&run)?;
    let nodes: Vec<NodeRunRow> = parse(
        sqlx::query_scalar(
            "SELECT doc FROM run_detail_node_runs WHERE run_id = ?1 ORDER BY ordinal",
        )
        .bind(run_id.to_string())
        .fetch_all(&mut *tx)
        .await?,
    )?;
    let timeline: Vec<TimelineEntry> = parse(
        sqlx::query_scalar(
            "SELECT doc FROM run_detail_timeline WHERE run_id = ?1 ORDER BY stream_version",
        )
        .bind(run_id.to_string())
        .fetch_all(&mut *tx)
        .await?,
    )?;
    tx.commit().await?;
    let nodes = nodes.into_iter().map(NodeRunView::from).collect();
    Ok(Some(assemble(run, nodes, timeline)))
}

pub(super) async fn node_run_detail(
    store: &SqliteEventStore,
    run_id: RunId,
    node_run_id: NodeRunId,
) -> Result<Option<NodeRunDetail>, QueryError> {
    let pool = store.readers();
    let mut tx = pool.begin().await?;
    let (run, node) = (run_id.to_string(), node_run_id.to_string());
    let row: Option<String> = sqlx::query_scalar(
        "SELECT doc FROM run_detail_node_runs WHERE node_run_id = ?1 AND run_id = ?2",
    )
    .bind(&node)
    .bind(&run)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let node_run: NodeRunRow = parse_one(&row)?;
    let timeline: Vec<TimelineEntry> = parse(
        sqlx::query_scalar(
            "SELECT doc FROM run_detail_timeline WHERE node_run_id = ?1 AND run_id = ?2
              ORDER BY stream_version",
        )
        .bind(&node)
        .bind(&run)
        .fetch_all(&mut *tx)
        .await?,
    )?;
    let tool_calls: Vec<ToolCallRow> = parse(
        sqlx::query_scalar(
            "SELECT doc FROM run_detail_tool_calls WHERE node_run_id = ?1 ORDER BY stream_version",
        )
        .bind(&node)
        .fetch_all(&mut *tx)
        .await?,
    )?;
    let artifacts: Vec<ArtifactDetail> = parse(
        sqlx::query_scalar(
            "SELECT doc FROM artifact_history WHERE node_run_id = ?1 ORDER BY global_position",
        )
        .bind(&node)
        .fetch_all(&mut *tx)
        .await?,
    )?;
    tx.commit().await?;
    Ok(Some(NodeRunDetail {
        node_run: node_run.into(),
        timeline,
        tool_calls,
        artifacts,
    }))
}

/// Up to `limit + 1` runs of the filter, newest first (start time, then run id).
pub(super) async fn list_runs(
    store: &SqliteEventStore,
    filter: &RunFilter,
    search: Option<String>,
    after_key: Option<(Timestamp, uuid::Uuid)>,
    limit: u32,
) -> Result<Vec<RunSummaryRow>, QueryError> {
    let mut conditions: Vec<String> = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if filter.status.is_some() {
        conditions.push(format!("status = ?{}", next()));
    }
    if filter.flowchart.is_some() {
        conditions.push(format!("flowchart_name = ?{}", next()));
    }
    if filter.started_after.is_some() {
        conditions.push(format!("started_at >= ?{}", next()));
    }
    if filter.started_before.is_some() {
        conditions.push(format!("started_at < ?{}", next()));
    }
    if search.is_some() {
        // instr rather than LIKE: no wildcard in the text can widen the match.
        let p = next();
        conditions.push(format!(
            "(instr(run_id, ?{p}) = 1 OR instr(lower(flowchart_name), ?{p}) > 0 \
               OR instr(lower(actor), ?{p}) > 0)"
        ));
    }
    if after_key.is_some() {
        let (a, b) = (next(), next());
        conditions.push(format!("(started_at, run_id) < (?{a}, ?{b})"));
    }
    let limit_param = next();
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT doc FROM run_detail_runs {where_clause}
          ORDER BY started_at DESC, run_id DESC LIMIT ?{limit_param}"
    );
    // Built from the fixed fragments above; every value is a bind parameter.
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    if let Some(v) = &filter.status {
        query = query.bind(v.clone());
    }
    if let Some(v) = &filter.flowchart {
        query = query.bind(v.clone());
    }
    if let Some(v) = filter.started_after {
        query = query.bind(v.unix_micros());
    }
    if let Some(v) = filter.started_before {
        query = query.bind(v.unix_micros());
    }
    if let Some(v) = search {
        query = query.bind(v);
    }
    if let Some((at, run)) = after_key {
        query = query.bind(at.unix_micros()).bind(run.to_string());
    }
    let query = query.bind(i64::from(limit) + 1);
    let rows: Vec<RunRow> = parse(query.fetch_all(store.readers()).await?)?;
    Ok(rows.iter().map(summary).collect())
}
