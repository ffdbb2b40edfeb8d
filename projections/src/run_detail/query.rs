//! Queries over the run_detail tables.

use std::collections::BTreeMap;

use runledger_contracts::events::{ConsumedToken, Control, ErrorInfo, Warning};
use runledger_contracts::ids::{ArtifactId, NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::rows::{
    CancelInfo, ForkLink, ForkedFrom, NodeRunRow, RetryInfo, Routing, RunRow, RunWarning,
    TimelineEntry, TimeoutInfo, ToolCallRow,
};
use crate::artifact_history::ArtifactDetail;
use crate::cursor;
use crate::db::{DbRef, ReadSource};
use crate::error::QueryError;
use crate::query::{Page, parse, parse_one};

/// Run statuses a filter may name.
pub const RUN_STATUSES: [&str; 6] = [
    "running",
    "paused",
    "canceling",
    "completed",
    "failed",
    "canceled",
];

/// One run in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummaryRow {
    pub run_id: RunId,
    /// `running`, `paused`, `canceling`, `completed`, `failed` or `canceled`.
    pub status: String,
    pub flowchart_name: String,
    pub flowchart_version: Option<u32>,
    pub actor: String,
    pub parent_run_id: Option<RunId>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    /// Node runs the run has scheduled so far, retries included.
    pub node_run_count: u32,
    /// Node runs per status: `scheduled`, `dispatched`, `running`, and the endings
    /// (`succeeded`, `success_with_warning`, `failed`, `timed_out`, `skipped`, `canceled`).
    pub node_run_counts: BTreeMap<String, u64>,
    /// Stream version of the last event applied to the run.
    pub last_version: u64,
    pub updated_at: Timestamp,
}

/// The node run of a parent run that started this run as a sub-flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    pub run_id: RunId,
    pub node_id: Option<String>,
    pub node_run_id: Option<NodeRunId>,
}

/// One run in full.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetail {
    pub run: RunSummaryRow,
    pub stream_id: String,
    /// blake3 of the canonical JSON of the flowchart definition the run executes.
    pub definition_hash: String,
    pub inputs: Value,
    /// The run's durable deadline (`limits.max_runtime_s`).
    pub deadline: Option<Timestamp>,
    pub parent: Option<ParentLink>,
    /// The run this one was forked from (`RunForked`), with the version and head hash of the
    /// source it was planned from and the node it starts again at.
    pub forked_from: Option<ForkedFrom>,
    /// Runs forked from this one (`RunForkedTo`), oldest first.
    pub forks: Vec<ForkLink>,
    /// What reached `end`, once completed.
    pub output: Option<Value>,
    /// Why the run failed, while it is failed.
    pub error: Option<ErrorInfo>,
    /// Warnings of its node runs (successes with warnings).
    pub warnings: Vec<RunWarning>,
    /// Node runs in the order they were scheduled.
    pub node_runs: Vec<NodeRunView>,
    /// Transitions and operator actions in stream order (tool calls and artifacts are on the
    /// node runs).
    pub timeline: Vec<TimelineEntry>,
}

/// One node run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRunView {
    pub node_run_id: NodeRunId,
    pub run_id: RunId,
    /// 1, 2, 3, ... in scheduling order within the run.
    pub ordinal: u32,
    pub node_id: String,
    pub node_type: String,
    pub attempt: u32,
    pub execution_index: u32,
    pub retry_of: Option<NodeRunId>,
    /// `scheduled`, `dispatched`, `running`, or how it ended.
    pub status: String,
    pub executor_class: Option<String>,
    pub executor: Option<String>,
    pub scheduled_at: Timestamp,
    pub dispatched_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// From start (or scheduling, when it never started) to its end.
    pub duration_ms: Option<i64>,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub timeout: Option<TimeoutInfo>,
    pub warnings: Vec<Warning>,
    /// Succeeded with warnings, or with a fallback result, or routed through a fallback
    /// connector.
    pub degraded: bool,
    /// The output is a fallback result rather than the operation's own.
    pub fallback_used: bool,
    pub routing: Option<Routing>,
    pub artifact_ids: Vec<ArtifactId>,
    pub tool_calls: u32,
    pub child_run_id: Option<RunId>,
    pub retry: Option<RetryInfo>,
    /// The operator who skipped it, and why.
    pub skip: Option<Control>,
    pub cancel: Option<CancelInfo>,
    /// A rewind made its result stop counting.
    pub invalidated: bool,
    pub invalidated_at_version: Option<u64>,
    /// Results that arrived after it no longer accepted one.
    pub ignored_results: u32,
    pub input_context_hash: String,
    pub consumed_tokens: Vec<ConsumedToken>,
    pub last_version: u64,
}

impl From<NodeRunRow> for NodeRunView {
    fn from(n: NodeRunRow) -> Self {
        let degraded = n.status == "success_with_warning"
            || n.fallback_used
            || n.routing
                .as_ref()
                .is_some_and(|r| r.fallback_connector.is_some());
        Self {
            node_run_id: n.node_run_id,
            run_id: n.run_id,
            ordinal: n.ordinal,
            node_id: n.node_id,
            node_type: n.node_type,
            attempt: n.attempt,
            execution_index: n.execution_index,
            retry_of: n.retry_of,
            status: n.status,
            executor_class: n.executor_class,
            executor: n.executor,
            scheduled_at: n.scheduled_at,
            dispatched_at: n.dispatched_at,
            started_at: n.started_at,
            finished_at: n.finished_at,
            duration_ms: n.duration_ms,
            output: n.output,
            error: n.error,
            timeout: n.timeout,
            warnings: n.warnings,
            degraded,
            fallback_used: n.fallback_used,
            routing: n.routing,
            artifact_ids: n.artifact_ids,
            tool_calls: n.tool_calls,
            child_run_id: n.child_run_id,
            retry: n.retry,
            skip: n.skip,
            cancel: n.cancel,
            invalidated: n.invalidated_at_version.is_some(),
            invalidated_at_version: n.invalidated_at_version,
            ignored_results: n.ignored_results,
            input_context_hash: n.input_context_hash,
            consumed_tokens: n.consumed_tokens,
            last_version: n.last_version,
        }
    }
}

/// One node run with everything recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRunDetail {
    pub node_run: NodeRunView,
    pub timeline: Vec<TimelineEntry>,
    pub tool_calls: Vec<ToolCallRow>,
    /// Its artifacts (from artifact_history), oldest first: exactly one once it has ended.
    pub artifacts: Vec<ArtifactDetail>,
}

/// Filters of [`list_runs`]; every one given must match. `started_after` is inclusive,
/// `started_before` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    pub status: Option<String>,
    /// The flowchart's name.
    pub flowchart: Option<String>,
    pub started_after: Option<Timestamp>,
    pub started_before: Option<Timestamp>,
    /// Case-insensitive text search: runs whose id starts with it, or whose flowchart name or
    /// actor contains it (the Studio's search box).
    #[serde(default)]
    pub search: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

pub(super) fn summary(r: &RunRow) -> RunSummaryRow {
    RunSummaryRow {
        run_id: r.run_id,
        status: r.status.clone(),
        flowchart_name: r.flowchart_name.clone(),
        flowchart_version: r.flowchart_version,
        actor: r.actor.clone(),
        parent_run_id: r.parent_run_id,
        started_at: r.started_at,
        ended_at: r.ended_at,
        duration_ms: r.duration_ms,
        node_run_count: r.node_runs,
        node_run_counts: r.status_counts.clone(),
        last_version: r.last_version,
        updated_at: r.updated_at,
    }
}

#[derive(Deserialize)]
struct RawDetail {
    run: RunRow,
    timeline: Vec<TimelineEntry>,
}

/// Node runs are read as typed columns rather than as JSON built by the server: for a
/// 1,000-node run, formatting every row as JSON on the server was most of the query's time.
const NODE_RUNS_OF_RUN: &str = "SELECT node_run_id, run_id, ordinal, node_id, node_type, attempt,
        execution_index, retry_of, input_context_hash, consumed_tokens::text, status, executor_class,
        executor, scheduled_at, dispatched_at, started_at, finished_at, duration_ms, output::text,
        error::text, timeout::text, warnings::text, fallback_used, routing::text, artifact_ids::text,
        tool_calls, child_run_id, retry::text, skip::text, cancel::text, invalidated_at_version,
        ignored_results, last_version
   FROM run_detail_node_runs WHERE run_id = $1 ORDER BY ordinal";

fn node_run_from_row(row: &PgRow) -> Result<NodeRunRow, QueryError> {
    fn col<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
        row: &'r PgRow,
        i: usize,
    ) -> Result<T, QueryError> {
        row.try_get(i)
            .map_err(|e| QueryError::corrupt(format!("node run column {i}"), e))
    }
    fn json<T: serde::de::DeserializeOwned>(row: &PgRow, i: usize) -> Result<T, QueryError> {
        let text: &str = col(row, i)?;
        parse_one(text)
    }
    fn json_opt<T: serde::de::DeserializeOwned>(
        row: &PgRow,
        i: usize,
    ) -> Result<Option<T>, QueryError> {
        let text: Option<&str> = col(row, i)?;
        text.map(parse_one).transpose()
    }
    fn at(row: &PgRow, i: usize) -> Result<Option<Timestamp>, QueryError> {
        Ok(col::<Option<OffsetDateTime>>(row, i)?.map(Timestamp::from_datetime))
    }
    let uint = |i: usize| -> Result<u32, QueryError> { Ok(col::<i32>(row, i)?.max(0) as u32) };
    Ok(NodeRunRow {
        node_run_id: NodeRunId(col(row, 0)?),
        run_id: RunId(col(row, 1)?),
        ordinal: uint(2)?,
        node_id: col(row, 3)?,
        node_type: col(row, 4)?,
        attempt: uint(5)?,
        execution_index: uint(6)?,
        retry_of: col::<Option<Uuid>>(row, 7)?.map(NodeRunId),
        input_context_hash: col(row, 8)?,
        consumed_tokens: json(row, 9)?,
        status: col(row, 10)?,
        executor_class: col(row, 11)?,
        executor: col(row, 12)?,
        scheduled_at: at(row, 13)?.ok_or_else(|| QueryError::Corrupt {
            what: "scheduled_at is null".into(),
            source: None,
        })?,
        dispatched_at: at(row, 14)?,
        started_at: at(row, 15)?,
        finished_at: at(row, 16)?,
        duration_ms: col(row, 17)?,
        output: json_opt(row, 18)?,
        error: json_opt(row, 19)?,
        timeout: json_opt(row, 20)?,
        warnings: json(row, 21)?,
        fallback_used: col(row, 22)?,
        routing: json_opt(row, 23)?,
        artifact_ids: json(row, 24)?,
        tool_calls: uint(25)?,
        child_run_id: col::<Option<Uuid>>(row, 26)?.map(RunId),
        retry: json_opt(row, 27)?,
        skip: json_opt(row, 28)?,
        cancel: json_opt(row, 29)?,
        invalidated_at_version: col::<Option<i64>>(row, 30)?.map(|v| v.max(0) as u64),
        ignored_results: uint(31)?,
        last_version: col::<i64>(row, 32)?.max(0) as u64,
    })
}

/// The stream version of the last event the projection applied to the run; `None` when it
/// has no such run (yet). A cheap look before reading the whole detail.
pub async fn run_version(
    db: &(impl ReadSource + ?Sized),
    run_id: RunId,
) -> Result<Option<u64>, QueryError> {
    let version: Option<i64> =
        match db.db() {
            DbRef::Postgres(pool) => {
                sqlx::query_scalar("SELECT last_version FROM run_detail_runs WHERE run_id = $1")
                    .bind(run_id.0)
                    .fetch_optional(pool)
                    .await?
            }
            DbRef::Sqlite(store) => sqlx::query_scalar(
                "SELECT json_extract(doc, '$.last_version') FROM run_detail_runs WHERE run_id = ?1",
            )
            .bind(run_id.to_string())
            .fetch_optional(store.readers())
            .await?,
        };
    Ok(version.map(|v| v.max(0) as u64))
}

/// One run in full, or `None` when the projection has no such run (yet).
pub async fn run_detail(
    db: &(impl ReadSource + ?Sized),
    run_id: RunId,
) -> Result<Option<RunDetail>, QueryError> {
    match db.db() {
        DbRef::Postgres(pool) => run_detail_pg(pool, run_id).await,
        DbRef::Sqlite(store) => super::sqlite::run_detail(store, run_id).await,
    }
}

async fn run_detail_pg(pool: &PgPool, run_id: RunId) -> Result<Option<RunDetail>, QueryError> {
    let text: Option<String> = sqlx::query_scalar(
        "SELECT json_build_object(
                 'run', to_json(r),
                 'timeline', COALESCE((SELECT json_agg(t ORDER BY t.stream_version) FROM run_detail_timeline t
                                        WHERE t.run_id = r.run_id), '[]'::json))::text
           FROM run_detail_runs r WHERE r.run_id = $1",
    )
    .bind(run_id.0)
    .fetch_optional(pool)
    .await?;
    let Some(text) = text else { return Ok(None) };
    let raw: RawDetail = parse_one(&text)?;
    let rows = sqlx::query(NODE_RUNS_OF_RUN)
        .bind(run_id.0)
        .fetch_all(pool)
        .await?;
    let node_runs = rows
        .iter()
        .map(|row| node_run_from_row(row).map(NodeRunView::from))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(assemble(raw.run, node_runs, raw.timeline)))
}

/// A run's detail from its rows (both backends).
pub(super) fn assemble(
    r: RunRow,
    node_runs: Vec<NodeRunView>,
    timeline: Vec<TimelineEntry>,
) -> RunDetail {
    RunDetail {
        run: summary(&r),
        parent: r.parent_run_id.map(|run_id| ParentLink {
            run_id,
            node_id: r.parent_node_id.clone(),
            node_run_id: r.parent_node_run_id,
        }),
        forked_from: r.forked_from,
        forks: r.forks,
        stream_id: r.stream_id,
        definition_hash: r.definition_hash,
        inputs: r.inputs,
        deadline: r.deadline,
        output: r.output,
        error: r.error,
        warnings: r.warnings,
        node_runs,
        timeline,
    }
}

#[derive(Deserialize)]
struct RawNodeRun {
    node_run: NodeRunRow,
    timeline: Vec<TimelineEntry>,
    tool_calls: Vec<ToolCallRow>,
    artifacts: Vec<ArtifactDetail>,
}

/// One node run of a run, or `None` when the run has no such node run.
pub async fn node_run_detail(
    db: &(impl ReadSource + ?Sized),
    run_id: RunId,
    node_run_id: NodeRunId,
) -> Result<Option<NodeRunDetail>, QueryError> {
    match db.db() {
        DbRef::Postgres(pool) => node_run_detail_pg(pool, run_id, node_run_id).await,
        DbRef::Sqlite(store) => super::sqlite::node_run_detail(store, run_id, node_run_id).await,
    }
}

async fn node_run_detail_pg(
    pool: &PgPool,
    run_id: RunId,
    node_run_id: NodeRunId,
) -> Result<Option<NodeRunDetail>, QueryError> {
    let text: Option<String> = sqlx::query_scalar(
        "SELECT json_build_object(
                 'node_run', to_json(n),
                 'timeline', COALESCE((SELECT json_agg(t ORDER BY t.stream_version) FROM run_detail_timeline t
                                        WHERE t.node_run_id = n.node_run_id AND t.run_id = n.run_id), '[]'::json),
                 'tool_calls', COALESCE((SELECT json_agg(c ORDER BY c.stream_version) FROM run_detail_tool_calls c
                                          WHERE c.node_run_id = n.node_run_id), '[]'::json),
                 'artifacts', COALESCE((SELECT json_agg(a ORDER BY a.global_position) FROM artifact_history a
                                         WHERE a.node_run_id = n.node_run_id), '[]'::json))::text
           FROM run_detail_node_runs n WHERE n.node_run_id = $2 AND n.run_id = $1",
    )
    .bind(run_id.0)
    .bind(node_run_id.0)
    .fetch_optional(pool)
    .await?;
    let Some(text) = text else { return Ok(None) };
    let raw: RawNodeRun = parse_one(&text)?;
    Ok(Some(NodeRunDetail {
        node_run: raw.node_run.into(),
        timeline: raw.timeline,
        tool_calls: raw.tool_calls,
        artifacts: raw.artifacts,
    }))
}

const SUMMARY_COLUMNS: &str = "run_id, status, flowchart_name, flowchart_version, actor, parent_run_id,
    started_at, ended_at, duration_ms, node_runs AS node_run_count, status_counts AS node_run_counts,
    last_version, updated_at";

/// Runs newest first (by start time), filtered, one page at a time.
pub async fn list_runs(
    db: &(impl ReadSource + ?Sized),
    filter: &RunFilter,
) -> Result<Page<RunSummaryRow>, QueryError> {
    let limit = cursor::limit(filter.limit)?;
    if let Some(status) = &filter.status
        && !RUN_STATUSES.contains(&status.as_str())
    {
        return Err(QueryError::InvalidFilter {
            field: "status",
            message: format!(
                "`{status}` is not a run status ({})",
                RUN_STATUSES.join(", ")
            ),
        });
    }
    let after_key = match &filter.cursor {
        Some(c) => {
            let parts = cursor::decode("r", c, 2)?;
            let invalid = || QueryError::InvalidCursor { cursor: c.clone() };
            let micros: i64 = parts[0].parse().map_err(|_| invalid())?;
            let at = Timestamp::from_unix_micros(micros).ok_or_else(invalid)?;
            let run: uuid::Uuid = parts[1].parse().map_err(|_| invalid())?;
            Some((at, run))
        }
        None => None,
    };
    let search = filter
        .search
        .as_deref()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    let mut items = match db.db() {
        DbRef::Postgres(pool) => list_runs_pg(pool, filter, search, after_key, limit).await?,
        DbRef::Sqlite(store) => {
            super::sqlite::list_runs(store, filter, search, after_key, limit).await?
        }
    };
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|r| {
            cursor::encode(
                "r",
                &[r.started_at.unix_micros().to_string(), r.run_id.to_string()],
            )
        })
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Up to `limit + 1` runs of the filter, newest first.
async fn list_runs_pg(
    pool: &PgPool,
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
        conditions.push(format!("status = ${}", next()));
    }
    if filter.flowchart.is_some() {
        conditions.push(format!("flowchart_name = ${}", next()));
    }
    if filter.started_after.is_some() {
        conditions.push(format!("started_at >= ${}", next()));
    }
    if filter.started_before.is_some() {
        conditions.push(format!("started_at < ${}", next()));
    }
    if search.is_some() {
        // strpos rather than LIKE: no wildcard in the text can widen the match.
        let p = next();
        conditions.push(format!(
            "(strpos(run_id::text, ${p}) = 1 OR strpos(lower(flowchart_name), ${p}) > 0 \
               OR strpos(lower(actor), ${p}) > 0)"
        ));
    }
    if after_key.is_some() {
        let (a, b) = (next(), next());
        conditions.push(format!("(started_at, run_id) < (${a}, ${b})"));
    }
    let limit_param = next();
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT to_json(x)::text FROM (
             SELECT {SUMMARY_COLUMNS} FROM run_detail_runs {where_clause}
              ORDER BY started_at DESC, run_id DESC LIMIT ${limit_param}) x
          ORDER BY x.started_at DESC, x.run_id DESC"
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
        query = query.bind(v.as_datetime());
    }
    if let Some(v) = filter.started_before {
        query = query.bind(v.as_datetime());
    }
    if let Some(v) = search {
        query = query.bind(v);
    }
    if let Some((at, run)) = after_key {
        query = query.bind(at.as_datetime()).bind(run);
    }
    let rows = query.bind(i64::from(limit) + 1).fetch_all(pool).await?;
    parse(rows)
}
