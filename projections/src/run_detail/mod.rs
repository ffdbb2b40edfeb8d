//! `run_detail`: one row per run (status, flowchart, inputs, timings, counts per node status,
//! warnings), one per node run (status, timings, output, error, routing, degraded and fallback
//! markers, artifacts), the run's timeline of transitions and operator actions, and its tool
//! calls.
//!
//! A batch loads the rows it touches (one query per table), applies its events in memory, and
//! writes each table back with one statement, so the cost per batch does not grow with the
//! number of events in it.

pub mod query;
mod rows;
mod sqlite;

use std::collections::{HashMap, HashSet};

use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::{Control, DomainEvent, NodeRunStatus};
use runledger_contracts::ids::{NodeRunId, RunId};
use sqlx::{PgConnection, SqliteConnection};

pub use rows::{
    CancelInfo, ForkLink, ForkedFrom, RetryInfo, Routing, RunWarning, TimelineEntry, TimeoutInfo,
    ToolCallRow,
};
pub(crate) use rows::{NodeRunRow, RunRow};

use crate::db::ProjectionTx;
use crate::error::ApplyError;
use crate::projector::{
    ApplyFuture, Projector, decode_all, doc, load_docs, parse_rows, run_of, status_name, write_rows,
};

pub struct RunDetailProjector;

const TABLES: &[&str] = &[
    "run_detail_runs",
    "run_detail_node_runs",
    "run_detail_timeline",
    "run_detail_tool_calls",
];

impl Projector for RunDetailProjector {
    fn name(&self) -> &'static str {
        "run_detail"
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut ProjectionTx,
        events: &'a [RecordedEvent],
    ) -> ApplyFuture<'a> {
        Box::pin(apply(tx, events))
    }
}

async fn apply(tx: &mut ProjectionTx, events: &[RecordedEvent]) -> Result<(), ApplyError> {
    let decoded = decode_all(events)?;
    // Rows to load: those the batch touches but does not create (a rebuild creates most).
    let mut run_ids = HashSet::new();
    let mut node_run_ids = HashSet::new();
    let mut started = HashSet::new();
    let mut scheduled = HashSet::new();
    for event in &decoded {
        match event {
            DomainEvent::RunStarted(e) => {
                started.insert(e.run_id.0);
            }
            DomainEvent::RunForked(e) => {
                started.insert(e.run_id.0);
            }
            DomainEvent::NodeScheduled(e) => {
                scheduled.insert(e.node_run_id.0);
            }
            _ => {}
        }
        if let Some(run) = run_of(event)
            && !started.contains(&run.0)
        {
            run_ids.insert(run.0);
        }
        node_runs_named(event, |id| {
            if !scheduled.contains(&id.0) {
                node_run_ids.insert(id.0);
            }
        });
    }
    let mut batch = match tx {
        ProjectionTx::Postgres(tx) => Batch::load(tx, run_ids, node_run_ids).await?,
        ProjectionTx::Sqlite(tx) => Batch::load_sqlite(tx, run_ids, node_run_ids).await?,
    };
    for (index, (event, domain)) in events.iter().zip(&decoded).enumerate() {
        batch.apply(index, event, domain)?;
    }
    match tx {
        ProjectionTx::Postgres(tx) => batch.write(tx).await,
        ProjectionTx::Sqlite(tx) => batch.write_sqlite(tx).await,
    }
}

/// Every node run id an event refers to.
fn node_runs_named(event: &DomainEvent, mut f: impl FnMut(NodeRunId)) {
    match event {
        DomainEvent::ChildRunStarted(e) => f(e.node_run_id),
        DomainEvent::NodeScheduled(e) => f(e.node_run_id),
        DomainEvent::NodeDispatched(e) => f(e.node_run_id),
        DomainEvent::NodeStarted(e) => f(e.node_run_id),
        DomainEvent::NodeSucceeded(e) => f(e.node_run_id),
        DomainEvent::NodeFailed(e) => f(e.node_run_id),
        DomainEvent::NodeTimedOut(e) => f(e.node_run_id),
        DomainEvent::NodeRetryScheduled(e) => f(e.node_run_id),
        DomainEvent::NodeSkipped(e) => f(e.node_run_id),
        DomainEvent::NodeCanceled(e) => f(e.node_run_id),
        DomainEvent::NodeRewound(e) => e.invalidated_node_run_ids.iter().copied().for_each(f),
        DomainEvent::NodeResultIgnored(e) => f(e.node_run_id),
        DomainEvent::RoutingDecided(e) => f(e.node_run_id),
        DomainEvent::ToolCalled(e) => f(e.node_run_id),
        DomainEvent::ArtifactPersisted(e) => f(e.node_run_id),
        _ => {}
    }
}

struct Entry<T> {
    row: T,
    new: bool,
    dirty: bool,
}

struct Batch {
    runs: HashMap<RunId, Entry<RunRow>>,
    node_runs: HashMap<NodeRunId, Entry<NodeRunRow>>,
    timeline: Vec<TimelineEntry>,
    tool_calls: Vec<ToolCallRow>,
    /// Stream version of the event being applied: what `node()` stamps on the rows it changes.
    version: u64,
}

// Joined with unnest rather than `= ANY($1)`: one primary key probe per id, whatever the
// planner thinks of the table's size (a growing table read by a stale estimate was scanned).
const LOAD_RUNS: &str = "SELECT (to_jsonb(r) - 'inputs')::text
     FROM unnest($1::uuid[]) AS k(id) JOIN run_detail_runs r ON r.run_id = k.id";
const LOAD_NODE_RUNS: &str = "SELECT to_json(n)::text
     FROM unnest($1::uuid[]) AS k(id) JOIN run_detail_node_runs n ON n.node_run_id = k.id";

const INSERT_RUNS: &str = "INSERT INTO run_detail_runs SELECT * FROM json_populate_recordset(NULL::run_detail_runs, $1::json)";
const UPDATE_RUNS: &str = "UPDATE run_detail_runs t
        SET status = r.status, ended_at = r.ended_at, duration_ms = r.duration_ms, output = r.output,
            error = r.error, node_runs = r.node_runs, status_counts = r.status_counts,
            warnings = r.warnings, last_version = r.last_version, updated_at = r.updated_at,
            forks = r.forks
       FROM json_populate_recordset(NULL::run_detail_runs, $1::json) r
      WHERE t.run_id = r.run_id";
const INSERT_NODE_RUNS: &str = "INSERT INTO run_detail_node_runs SELECT * FROM json_populate_recordset(NULL::run_detail_node_runs, $1::json)";
const UPDATE_NODE_RUNS: &str = "UPDATE run_detail_node_runs t
        SET status = r.status, executor_class = r.executor_class, executor = r.executor,
            dispatched_at = r.dispatched_at, started_at = r.started_at, finished_at = r.finished_at,
            duration_ms = r.duration_ms, output = r.output, error = r.error, timeout = r.timeout,
            warnings = r.warnings, fallback_used = r.fallback_used, routing = r.routing,
            artifact_ids = r.artifact_ids, tool_calls = r.tool_calls, child_run_id = r.child_run_id,
            retry = r.retry, skip = r.skip, cancel = r.cancel,
            invalidated_at_version = r.invalidated_at_version, ignored_results = r.ignored_results,
            last_version = r.last_version
       FROM json_populate_recordset(NULL::run_detail_node_runs, $1::json) r
      WHERE t.node_run_id = r.node_run_id";
const INSERT_TIMELINE: &str = "INSERT INTO run_detail_timeline SELECT * FROM json_populate_recordset(NULL::run_detail_timeline, $1::json)";
const INSERT_TOOL_CALLS: &str = "INSERT INTO run_detail_tool_calls SELECT * FROM json_populate_recordset(NULL::run_detail_tool_calls, $1::json)";

const SQLITE_LOAD_RUNS: &str =
    "SELECT doc FROM run_detail_runs WHERE run_id IN (SELECT value FROM json_each(?1))";
const SQLITE_LOAD_NODE_RUNS: &str =
    "SELECT doc FROM run_detail_node_runs WHERE node_run_id IN (SELECT value FROM json_each(?1))";
// A row the batch created is inserted (a second RunStarted of a run fails, as on PostgreSQL);
// one it loaded is replaced.
const SQLITE_INSERT_RUN: &str = "INSERT INTO run_detail_runs
        (run_id, status, flowchart_name, actor, started_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SQLITE_REPLACE_RUN: &str = "REPLACE INTO run_detail_runs
        (run_id, status, flowchart_name, actor, started_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SQLITE_INSERT_NODE_RUN: &str = "INSERT INTO run_detail_node_runs
        (node_run_id, run_id, ordinal, doc) VALUES (?1, ?2, ?3, ?4)";
const SQLITE_REPLACE_NODE_RUN: &str = "REPLACE INTO run_detail_node_runs
        (node_run_id, run_id, ordinal, doc) VALUES (?1, ?2, ?3, ?4)";
const SQLITE_INSERT_TIMELINE: &str = "INSERT INTO run_detail_timeline
        (run_id, stream_version, node_run_id, doc) VALUES (?1, ?2, ?3, ?4)";
const SQLITE_INSERT_TOOL_CALL: &str = "INSERT INTO run_detail_tool_calls
        (run_id, stream_version, node_run_id, doc) VALUES (?1, ?2, ?3, ?4)";

impl Batch {
    async fn load(
        conn: &mut PgConnection,
        runs: HashSet<uuid::Uuid>,
        node_runs: HashSet<uuid::Uuid>,
    ) -> Result<Self, ApplyError> {
        let runs: Vec<uuid::Uuid> = runs.into_iter().collect();
        let node_runs: Vec<uuid::Uuid> = node_runs.into_iter().collect();
        let run_rows: Vec<RunRow> = parse_rows(
            sqlx::query_scalar(LOAD_RUNS)
                .bind(&runs)
                .fetch_all(&mut *conn)
                .await?,
        )?;
        let node_rows: Vec<NodeRunRow> = parse_rows(
            sqlx::query_scalar(LOAD_NODE_RUNS)
                .bind(&node_runs)
                .fetch_all(&mut *conn)
                .await?,
        )?;
        Ok(Self::of_rows(run_rows, node_rows))
    }

    async fn load_sqlite(
        conn: &mut SqliteConnection,
        runs: HashSet<uuid::Uuid>,
        node_runs: HashSet<uuid::Uuid>,
    ) -> Result<Self, ApplyError> {
        let runs: Vec<String> = runs.into_iter().map(|id| id.to_string()).collect();
        let node_runs: Vec<String> = node_runs.into_iter().map(|id| id.to_string()).collect();
        let run_rows: Vec<RunRow> = load_docs(&mut *conn, SQLITE_LOAD_RUNS, &runs).await?;
        let node_rows: Vec<NodeRunRow> =
            load_docs(&mut *conn, SQLITE_LOAD_NODE_RUNS, &node_runs).await?;
        Ok(Self::of_rows(run_rows, node_rows))
    }

    fn of_rows(run_rows: Vec<RunRow>, node_rows: Vec<NodeRunRow>) -> Self {
        Self {
            runs: run_rows
                .into_iter()
                .map(|row| {
                    (
                        row.run_id,
                        Entry {
                            row,
                            new: false,
                            dirty: false,
                        },
                    )
                })
                .collect(),
            node_runs: node_rows
                .into_iter()
                .map(|row| {
                    (
                        row.node_run_id,
                        Entry {
                            row,
                            new: false,
                            dirty: false,
                        },
                    )
                })
                .collect(),
            timeline: Vec::new(),
            tool_calls: Vec::new(),
            version: 0,
        }
    }

    /// One statement per row: SQLite runs in this process, so a row costs no round trip.
    async fn write_sqlite(self, conn: &mut SqliteConnection) -> Result<(), ApplyError> {
        let (new_runs, old_runs) = split(self.runs);
        let runs = new_runs.iter().map(|r| (SQLITE_INSERT_RUN, r));
        for (sql, r) in runs.chain(old_runs.iter().map(|r| (SQLITE_REPLACE_RUN, r))) {
            sqlx::query(sql)
                .bind(r.run_id.to_string())
                .bind(&r.status)
                .bind(&r.flowchart_name)
                .bind(&r.actor)
                .bind(r.started_at.unix_micros())
                .bind(doc(r)?)
                .execute(&mut *conn)
                .await?;
        }
        let (new_nodes, old_nodes) = split(self.node_runs);
        let nodes = new_nodes.iter().map(|n| (SQLITE_INSERT_NODE_RUN, n));
        for (sql, n) in nodes.chain(old_nodes.iter().map(|n| (SQLITE_REPLACE_NODE_RUN, n))) {
            sqlx::query(sql)
                .bind(n.node_run_id.to_string())
                .bind(n.run_id.to_string())
                .bind(i64::from(n.ordinal))
                .bind(doc(n)?)
                .execute(&mut *conn)
                .await?;
        }
        for t in &self.timeline {
            sqlx::query(SQLITE_INSERT_TIMELINE)
                .bind(t.run_id.to_string())
                .bind(t.stream_version as i64)
                .bind(t.node_run_id.map(|id| id.to_string()))
                .bind(doc(t)?)
                .execute(&mut *conn)
                .await?;
        }
        for c in &self.tool_calls {
            sqlx::query(SQLITE_INSERT_TOOL_CALL)
                .bind(c.run_id.to_string())
                .bind(c.stream_version as i64)
                .bind(c.node_run_id.to_string())
                .bind(doc(c)?)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn write(self, conn: &mut PgConnection) -> Result<(), ApplyError> {
        let (new_runs, old_runs) = split(self.runs);
        let (new_nodes, old_nodes) = split(self.node_runs);
        write_rows(&mut *conn, INSERT_RUNS, &new_runs).await?;
        write_rows(&mut *conn, UPDATE_RUNS, &old_runs).await?;
        write_rows(&mut *conn, INSERT_NODE_RUNS, &new_nodes).await?;
        write_rows(&mut *conn, UPDATE_NODE_RUNS, &old_nodes).await?;
        write_rows(&mut *conn, INSERT_TIMELINE, &self.timeline).await?;
        write_rows(&mut *conn, INSERT_TOOL_CALLS, &self.tool_calls).await?;
        Ok(())
    }

    fn run(&mut self, index: usize, run_id: RunId) -> Result<&mut RunRow, ApplyError> {
        let entry = self.runs.get_mut(&run_id).ok_or_else(|| {
            ApplyError::event(
                index,
                format!("run {run_id} was never started (no RunStarted before)"),
            )
        })?;
        entry.dirty = true;
        Ok(&mut entry.row)
    }

    fn node(
        &mut self,
        index: usize,
        run_id: RunId,
        node_run_id: NodeRunId,
    ) -> Result<&mut NodeRunRow, ApplyError> {
        let entry = self.node_runs.get_mut(&node_run_id).ok_or_else(|| {
            ApplyError::event(
                index,
                format!("node run {node_run_id} was never scheduled (no NodeScheduled before)"),
            )
        })?;
        if entry.row.run_id != run_id {
            return Err(ApplyError::event(
                index,
                format!(
                    "node run {node_run_id} belongs to run {}, not {run_id}",
                    entry.row.run_id
                ),
            ));
        }
        entry.dirty = true;
        entry.row.last_version = self.version;
        Ok(&mut entry.row)
    }

    /// Moves a node run to `status`, keeping its run's counts per status.
    fn set_status(
        &mut self,
        index: usize,
        run_id: RunId,
        node_run_id: NodeRunId,
        status: &str,
    ) -> Result<(), ApplyError> {
        let node = self.node(index, run_id, node_run_id)?;
        let old = std::mem::replace(&mut node.status, status.to_owned());
        let run = self.run(index, run_id)?;
        if let Some(n) = run.status_counts.get_mut(&old) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                run.status_counts.remove(&old);
            }
        }
        *run.status_counts.entry(status.to_owned()).or_default() += 1;
        Ok(())
    }

    /// A node run ended: its status, finish time and duration.
    fn end_node(
        &mut self,
        index: usize,
        event: &RecordedEvent,
        run_id: RunId,
        node_run_id: NodeRunId,
        status: NodeRunStatus,
    ) -> Result<&mut NodeRunRow, ApplyError> {
        self.set_status(index, run_id, node_run_id, status_name(status))?;
        let node = self.node(index, run_id, node_run_id)?;
        let from = node.started_at.unwrap_or(node.scheduled_at);
        node.finished_at = Some(event.recorded_at);
        node.duration_ms = Some(from.millis_until(event.recorded_at));
        Ok(node)
    }

    /// Ends the run (completed, failed or canceled).
    fn end_run(
        &mut self,
        index: usize,
        event: &RecordedEvent,
        run_id: RunId,
        status: &str,
    ) -> Result<&mut RunRow, ApplyError> {
        let run = self.run(index, run_id)?;
        run.status = status.to_owned();
        run.ended_at = Some(event.recorded_at);
        run.duration_ms = Some(run.started_at.millis_until(event.recorded_at));
        Ok(run)
    }

    /// Creates the row of a run that begins (`RunStarted`, or `RunForked` with its source).
    fn start_run(
        &mut self,
        index: usize,
        event: &RecordedEvent,
        run_id: RunId,
        e: &runledger_contracts::events::RunStarted,
        forked_from: Option<ForkedFrom>,
    ) -> Result<(), ApplyError> {
        if self.runs.contains_key(&run_id) {
            return Err(ApplyError::event(
                index,
                format!("run {run_id} was already started"),
            ));
        }
        let at = event.recorded_at;
        let row = RunRow {
            run_id,
            stream_id: event.stream_id.to_string(),
            status: "running".into(),
            flowchart_name: e.flowchart.name.clone(),
            flowchart_version: e.flowchart.version,
            definition_hash: e.flowchart.definition_hash.to_hex(),
            inputs: e.inputs.clone(),
            actor: e.actor.clone(),
            parent_run_id: e.parent.as_ref().map(|p| p.run_id),
            parent_node_id: e.parent.as_ref().map(|p| p.node_id.clone()),
            parent_node_run_id: e.parent.as_ref().map(|p| p.node_run_id),
            deadline: e.deadline,
            started_at: at,
            ended_at: None,
            duration_ms: None,
            output: None,
            error: None,
            node_runs: 0,
            status_counts: Default::default(),
            warnings: Vec::new(),
            last_version: event.stream_version,
            updated_at: at,
            forked_from,
            forks: Vec::new(),
        };
        self.runs.insert(
            run_id,
            Entry {
                row,
                new: true,
                dirty: true,
            },
        );
        Ok(())
    }

    fn apply(
        &mut self,
        index: usize,
        event: &RecordedEvent,
        domain: &DomainEvent,
    ) -> Result<(), ApplyError> {
        let Some(run_id) = run_of(domain) else {
            return Ok(());
        };
        self.version = event.stream_version;
        let at = event.recorded_at;
        let line = Line::new(event, run_id);
        let entry = match domain {
            DomainEvent::RunStarted(e) => {
                self.start_run(index, event, run_id, e, None)?;
                let version = e
                    .flowchart
                    .version
                    .map_or(String::new(), |v| format!(" v{v}"));
                line.run(format!("flowchart {}{version}", e.flowchart.name))
                    .actor(&e.actor)
            }
            DomainEvent::RunForked(e) => {
                let from = ForkedFrom {
                    run_id: e.source.run_id,
                    stream_version: e.source.stream_version,
                    head_hash: e.source.head_hash.to_hex(),
                    from_node: e.from_node.clone(),
                };
                self.start_run(index, event, run_id, &e.as_started(), Some(from))?;
                line.operator(
                    &e.control,
                    format!(
                        "forked from run {} at version {}, node `{}` ({} node runs kept)",
                        e.source.run_id,
                        e.source.stream_version,
                        e.from_node,
                        e.kept.len()
                    ),
                )
            }
            DomainEvent::RunForkedTo(e) => {
                self.run(index, run_id)?.forks.push(ForkLink {
                    run_id: e.fork_run_id,
                    from_node: e.from_node.clone(),
                    stream_version: e.stream_version,
                });
                line.operator(
                    &e.control,
                    format!(
                        "forked to run {} from node `{}`",
                        e.fork_run_id, e.from_node
                    ),
                )
            }
            DomainEvent::RunCompleted(e) => {
                let run = self.end_run(index, event, run_id, "completed")?;
                run.output = e.output.clone();
                run.error = None;
                line.run(format!("{} node runs", e.node_runs))
            }
            DomainEvent::RunFailed(e) => {
                let run = self.end_run(index, event, run_id, "failed")?;
                run.error = Some(e.error.clone());
                let mut line = line.run(format!("{}: {}", e.error.code, e.error.message));
                line.entry.node_id = e.node_id.clone();
                line.entry.node_run_id = e.node_run_id;
                line
            }
            DomainEvent::RunPaused(e) => {
                self.run(index, run_id)?.status = "paused".into();
                line.operator(&e.control, "paused".into())
            }
            DomainEvent::RunResumed(e) => {
                let run = self.run(index, run_id)?;
                let reopened = run.status == "failed";
                run.status = "running".into();
                run.ended_at = None;
                run.duration_ms = None;
                run.error = None;
                line.operator(
                    &e.control,
                    if reopened {
                        "reopened the failed run".into()
                    } else {
                        "resumed".into()
                    },
                )
            }
            DomainEvent::RunCancelRequested(e) => {
                self.run(index, run_id)?.status = "canceling".into();
                line.operator(&e.control, format!("cancel requested (force: {})", e.force))
            }
            DomainEvent::RunCanceled(e) => {
                self.end_run(index, event, run_id, "canceled")?;
                line.run(format!("canceled (forced: {})", e.forced))
            }
            DomainEvent::ChildRunStarted(e) => {
                self.node(index, run_id, e.node_run_id)?.child_run_id = Some(e.child_run_id);
                line.node(
                    &e.node_id,
                    e.node_run_id,
                    None,
                    format!("child run {}", e.child_run_id),
                )
            }
            DomainEvent::NodeScheduled(e) => {
                if self.node_runs.contains_key(&e.node_run_id) {
                    return Err(ApplyError::event(
                        index,
                        format!("node run {} was already scheduled", e.node_run_id),
                    ));
                }
                let run = self.run(index, run_id)?;
                run.node_runs += 1;
                *run.status_counts.entry("scheduled".into()).or_default() += 1;
                let row = NodeRunRow {
                    node_run_id: e.node_run_id,
                    run_id,
                    ordinal: run.node_runs,
                    node_id: e.node_id.clone(),
                    node_type: e.node_type.as_str().to_owned(),
                    attempt: e.attempt,
                    execution_index: e.execution_index,
                    retry_of: e.retry_of,
                    input_context_hash: e.input_context_hash.to_hex(),
                    consumed_tokens: e.consumed_tokens.clone(),
                    status: "scheduled".into(),
                    executor_class: None,
                    executor: None,
                    scheduled_at: at,
                    dispatched_at: None,
                    started_at: None,
                    finished_at: None,
                    duration_ms: None,
                    output: None,
                    error: None,
                    timeout: None,
                    warnings: Vec::new(),
                    fallback_used: false,
                    routing: None,
                    artifact_ids: Vec::new(),
                    tool_calls: 0,
                    child_run_id: None,
                    retry: None,
                    skip: None,
                    cancel: None,
                    invalidated_at_version: None,
                    ignored_results: 0,
                    last_version: event.stream_version,
                };
                self.node_runs.insert(
                    e.node_run_id,
                    Entry {
                        row,
                        new: true,
                        dirty: true,
                    },
                );
                // Routine transitions are the node run's timestamps, not timeline entries.
                return self.finish(index, event, run_id, None);
            }
            DomainEvent::NodeDispatched(e) => {
                let node = self.node(index, run_id, e.node_run_id)?;
                node.executor_class = Some(e.executor_class.clone());
                node.dispatched_at = Some(at);
                if node.status == "scheduled" {
                    self.set_status(index, run_id, e.node_run_id, "dispatched")?;
                }
                return self.finish(index, event, run_id, None);
            }
            DomainEvent::NodeStarted(e) => {
                let node = self.node(index, run_id, e.node_run_id)?;
                node.executor = Some(e.executor.clone());
                node.started_at = Some(at);
                if matches!(node.status.as_str(), "scheduled" | "dispatched") {
                    self.set_status(index, run_id, e.node_run_id, "running")?;
                }
                return self.finish(index, event, run_id, None);
            }
            DomainEvent::NodeSucceeded(e) => {
                let status = if e.warnings.is_empty() {
                    NodeRunStatus::Succeeded
                } else {
                    NodeRunStatus::SuccessWithWarning
                };
                let node = self.end_node(index, event, run_id, e.node_run_id, status)?;
                node.output = Some(e.output.clone());
                node.warnings = e.warnings.clone();
                node.fallback_used = e.fallback_used;
                if !e.warnings.is_empty() {
                    let run = self.run(index, run_id)?;
                    run.warnings.extend(e.warnings.iter().map(|w| RunWarning {
                        node_id: e.node_id.clone(),
                        node_run_id: e.node_run_id,
                        code: w.code.clone(),
                        message: w.message.clone(),
                    }));
                }
                // A plain success is routine; a degraded one is worth a line.
                if e.warnings.is_empty() && !e.fallback_used {
                    return self.finish(index, event, run_id, None);
                }
                let mut detail = status_name(status).to_owned();
                if e.fallback_used {
                    detail.push_str(" (fallback result)");
                }
                if !e.warnings.is_empty() {
                    detail.push_str(&format!(" ({} warning(s))", e.warnings.len()));
                }
                line.node(&e.node_id, e.node_run_id, Some(e.attempt), detail)
            }
            DomainEvent::NodeFailed(e) => {
                self.end_node(index, event, run_id, e.node_run_id, NodeRunStatus::Failed)?
                    .error = Some(e.error.clone());
                line.node(
                    &e.node_id,
                    e.node_run_id,
                    Some(e.attempt),
                    format!("{}: {}", e.error.code, e.error.message),
                )
            }
            DomainEvent::NodeTimedOut(e) => {
                self.end_node(index, event, run_id, e.node_run_id, NodeRunStatus::TimedOut)?
                    .timeout = Some(TimeoutInfo {
                    phase: e.phase,
                    timeout_ms: e.timeout_ms,
                });
                let phase = match e.phase {
                    runledger_contracts::events::TimeoutPhase::Dispatch => "dispatch",
                    runledger_contracts::events::TimeoutPhase::Execution => "execution",
                };
                line.node(
                    &e.node_id,
                    e.node_run_id,
                    Some(e.attempt),
                    format!("{phase} timeout after {} ms", e.timeout_ms),
                )
            }
            DomainEvent::NodeRetryScheduled(e) => {
                self.node(index, run_id, e.node_run_id)?.retry = Some(RetryInfo {
                    next_attempt: e.next_attempt,
                    retry_at: e.retry_at,
                    backoff_ms: e.backoff_ms,
                    control: e.control.clone(),
                });
                let detail = format!(
                    "attempt {} at {} (backoff {} ms)",
                    e.next_attempt, e.retry_at, e.backoff_ms
                );
                let line = match &e.control {
                    Some(control) => line.operator(control, detail),
                    None => line.node_line(detail),
                };
                line.with_node(&e.node_id, e.node_run_id, Some(e.next_attempt))
            }
            DomainEvent::NodeSkipped(e) => {
                let node =
                    self.end_node(index, event, run_id, e.node_run_id, NodeRunStatus::Skipped)?;
                node.output = Some(e.output.clone());
                node.skip = Some(e.control.clone());
                line.operator(&e.control, "skipped with an operator's output".into())
                    .with_node(&e.node_id, e.node_run_id, None)
            }
            DomainEvent::NodeCanceled(e) => {
                self.end_node(index, event, run_id, e.node_run_id, NodeRunStatus::Canceled)?
                    .cancel = Some(CancelInfo {
                    reason: e.reason.clone(),
                    forced: e.forced,
                });
                line.node(&e.node_id, e.node_run_id, Some(e.attempt), e.reason.clone())
            }
            DomainEvent::NodeRewound(e) => {
                for id in &e.invalidated_node_run_ids {
                    self.node(index, run_id, *id)?.invalidated_at_version =
                        Some(event.stream_version);
                }
                let mut line = line.operator(
                    &e.control,
                    format!("{} node runs invalidated", e.invalidated_node_run_ids.len()),
                );
                line.entry.node_id = Some(e.node_id.clone());
                line
            }
            DomainEvent::NodeResultIgnored(e) => {
                self.node(index, run_id, e.node_run_id)?.ignored_results += 1;
                line.node(
                    &e.node_id,
                    e.node_run_id,
                    Some(e.attempt),
                    format!("result ignored: {}", e.reason),
                )
            }
            DomainEvent::RoutingDecided(e) => {
                self.node(index, run_id, e.node_run_id)?.routing = Some(Routing {
                    matched_connectors: e.matched_connectors.clone(),
                    route_key: e.route_key.clone(),
                    route_key_matched: e.route_key_matched,
                    no_match: e.no_match,
                    fallback_connector: e.fallback_connector.clone(),
                    evaluations: e.evaluations.clone(),
                });
                // The decision is on the node run; a fallback route is worth a line.
                match &e.fallback_connector {
                    Some(fallback) => line.node(
                        &e.node_id,
                        e.node_run_id,
                        None,
                        format!("nothing matched: fallback connector `{fallback}`"),
                    ),
                    None => return self.finish(index, event, run_id, None),
                }
            }
            DomainEvent::ToolCalled(e) => {
                self.node(index, run_id, e.node_run_id)?.tool_calls += 1;
                self.tool_calls.push(ToolCallRow {
                    run_id,
                    stream_version: event.stream_version,
                    node_run_id: e.node_run_id,
                    recorded_at: at,
                    tool: e.tool.clone(),
                    operation: e.operation.clone(),
                    outcome: match e.outcome {
                        runledger_contracts::events::ToolOutcome::Ok => "ok",
                        runledger_contracts::events::ToolOutcome::Error => "error",
                        runledger_contracts::events::ToolOutcome::Conflict => "conflict",
                    }
                    .into(),
                    duration_ms: e.duration_ms,
                    attempts: u32::try_from(e.attempts.len()).unwrap_or(u32::MAX),
                    provider: e.provider.as_ref().map(|p| p.provider.clone()),
                    model: e.provider.as_ref().map(|p| p.model.clone()),
                    latency_ms: e.provider.as_ref().map(|p| p.latency_ms),
                    input_tokens: e.provider.as_ref().and_then(|p| p.input_tokens),
                    output_tokens: e.provider.as_ref().and_then(|p| p.output_tokens),
                    error: e.error.clone(),
                });
                return self.finish(index, event, run_id, None);
            }
            DomainEvent::ArtifactPersisted(e) => {
                self.node(index, run_id, e.node_run_id)?
                    .artifact_ids
                    .push(e.artifact_id);
                return self.finish(index, event, run_id, None);
            }
            _ => return Ok(()),
        };
        self.finish(index, event, run_id, Some(entry))
    }

    /// Adds the event's timeline entry, if any, and moves the run's version: every event of a
    /// run does, whatever it changed.
    fn finish(
        &mut self,
        index: usize,
        event: &RecordedEvent,
        run_id: RunId,
        line: Option<Line>,
    ) -> Result<(), ApplyError> {
        if let Some(line) = line {
            self.timeline.push(line.entry);
        }
        let run = self.run(index, run_id)?;
        run.last_version = event.stream_version;
        run.updated_at = event.recorded_at;
        Ok(())
    }
}

/// Builds one timeline entry.
struct Line {
    entry: TimelineEntry,
}

impl Line {
    fn new(event: &RecordedEvent, run_id: RunId) -> Self {
        Self {
            entry: TimelineEntry {
                run_id,
                stream_version: event.stream_version,
                recorded_at: event.recorded_at,
                event_type: event.event_type.clone(),
                category: String::new(),
                node_id: None,
                node_run_id: None,
                attempt: None,
                actor: None,
                reason: None,
                detail: String::new(),
                request_id: event.request_id.to_string(),
                correlation_id: event.correlation_id.to_string(),
            },
        }
    }

    fn run(mut self, detail: String) -> Self {
        self.entry.category = "run".into();
        self.entry.detail = detail;
        self
    }

    fn actor(mut self, actor: &str) -> Self {
        self.entry.actor = Some(actor.to_owned());
        self
    }

    fn node_line(mut self, detail: String) -> Self {
        self.entry.category = "node".into();
        self.entry.detail = detail;
        self
    }

    fn node(
        self,
        node_id: &str,
        node_run_id: NodeRunId,
        attempt: Option<u32>,
        detail: String,
    ) -> Self {
        self.node_line(detail)
            .with_node(node_id, node_run_id, attempt)
    }

    fn with_node(mut self, node_id: &str, node_run_id: NodeRunId, attempt: Option<u32>) -> Self {
        self.entry.node_id = Some(node_id.to_owned());
        self.entry.node_run_id = Some(node_run_id);
        self.entry.attempt = attempt;
        self
    }

    fn operator(mut self, control: &Control, detail: String) -> Self {
        self.entry.category = "operator".into();
        self.entry.actor = Some(control.actor.clone());
        self.entry.reason = Some(control.reason.clone());
        self.entry.detail = detail;
        self
    }
}

/// New rows and changed existing rows, each in a stable order.
fn split<K: Ord + Copy, T>(entries: HashMap<K, Entry<T>>) -> (Vec<T>, Vec<T>) {
    let mut sorted: Vec<(K, Entry<T>)> = entries.into_iter().filter(|(_, e)| e.dirty).collect();
    sorted.sort_by_key(|(k, _)| *k);
    let (mut new, mut old) = (Vec::new(), Vec::new());
    for (_, e) in sorted {
        if e.new {
            new.push(e.row)
        } else {
            old.push(e.row)
        }
    }
    (new, old)
}
