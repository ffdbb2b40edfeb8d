//! `artifact_history`: every `ArtifactPersisted`, listable newest first with filters (run, node
//! run, node id, node type, artifact type) and cursor pagination, and readable in full.

use std::collections::HashSet;

use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::{BlobRef, DomainEvent};
use runledger_contracts::flowchart::NodeType;
use runledger_contracts::ids::{ArtifactId, NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, SqliteConnection};

use crate::cursor;
use crate::db::{DbRef, ProjectionTx, ReadSource};
use crate::error::{ApplyError, QueryError};
use crate::projector::{ApplyFuture, Projector, decode_all, doc, rows_json, status_name};
use crate::query::Page;

pub struct ArtifactHistoryProjector;

const TABLES: &[&str] = &["artifact_history"];

impl Projector for ArtifactHistoryProjector {
    fn name(&self) -> &'static str {
        "artifact_history"
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut ProjectionTx,
        events: &'a [RecordedEvent],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let (rows, index_of) = rows_of(events)?;
            if rows.is_empty() {
                return Ok(());
            }
            let inserted = match tx {
                ProjectionTx::Postgres(tx) => insert_pg(tx, &rows).await?,
                ProjectionTx::Sqlite(tx) => insert_sqlite(tx, &rows).await?,
            };
            if inserted.len() != rows.len() {
                // An artifact id that an earlier batch already holds: name the event that
                // repeats it.
                let inserted: HashSet<uuid::Uuid> = inserted.into_iter().collect();
                if let Some((id, index)) = index_of.iter().find(|(id, _)| !inserted.contains(&id.0))
                {
                    return Err(ApplyError::event(
                        *index,
                        format!("artifact {id} was persisted twice"),
                    ));
                }
            }
            Ok(())
        })
    }
}

/// One artifact in full: the `artifact_history` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactDetail {
    pub artifact_id: ArtifactId,
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
    pub node_id: String,
    pub node_type: String,
    pub artifact_type: String,
    /// How the node run ended.
    pub status: String,
    pub contract_version: u32,
    pub payload: Value,
    /// Large content kept in the ledger's blob table.
    pub content: Option<BlobRef>,
    /// blake3 of the canonical JSON of `payload`.
    pub content_hash: String,
    pub idempotency_key: String,
    pub request_id: String,
    pub correlation_id: String,
    pub stream_id: String,
    pub stream_version: u64,
    pub global_position: u64,
    pub recorded_at: Timestamp,
}

/// One artifact in a list: everything but the payload and the ids of its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRow {
    pub artifact_id: ArtifactId,
    pub run_id: RunId,
    pub node_run_id: NodeRunId,
    pub node_id: String,
    pub node_type: String,
    pub artifact_type: String,
    pub status: String,
    pub contract_version: u32,
    pub content_hash: String,
    pub stream_id: String,
    pub stream_version: u64,
    pub global_position: u64,
    pub recorded_at: Timestamp,
}

/// Filters of [`list_artifacts`]; every one given must match. `cursor` is a previous page's
/// `next_cursor`; `limit` defaults to 50 (at most 500).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactFilter {
    pub run_id: Option<RunId>,
    pub node_run_id: Option<NodeRunId>,
    pub node_id: Option<String>,
    pub node_type: Option<NodeType>,
    pub artifact_type: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

const INSERT: &str = "INSERT INTO artifact_history
     SELECT * FROM json_populate_recordset(NULL::artifact_history, $1::json)
     ON CONFLICT (artifact_id) DO NOTHING
     RETURNING artifact_id";

const SQLITE_INSERT: &str = "INSERT INTO artifact_history
        (artifact_id, run_id, node_run_id, node_id, node_type, artifact_type, global_position, doc)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (artifact_id) DO NOTHING";

/// The batch's artifacts as rows, and the index of the event that persisted each.
#[allow(clippy::type_complexity)]
fn rows_of(
    events: &[RecordedEvent],
) -> Result<(Vec<ArtifactDetail>, Vec<(ArtifactId, usize)>), ApplyError> {
    let decoded = decode_all(events)?;
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    let mut index_of = Vec::new();
    for (index, (event, domain)) in events.iter().zip(&decoded).enumerate() {
        let DomainEvent::ArtifactPersisted(a) = domain else {
            continue;
        };
        if !seen.insert(a.artifact_id) {
            return Err(ApplyError::event(
                index,
                format!("artifact {} was persisted twice", a.artifact_id),
            ));
        }
        index_of.push((a.artifact_id, index));
        rows.push(ArtifactDetail {
            artifact_id: a.artifact_id,
            run_id: a.run_id,
            node_run_id: a.node_run_id,
            node_id: a.node_id.clone(),
            node_type: a.node_type.as_str().to_owned(),
            artifact_type: a.artifact_type.clone(),
            status: status_name(a.status).to_owned(),
            contract_version: a.contract_version,
            payload: a.payload.clone(),
            content: a.content.clone(),
            content_hash: a.content_hash.to_hex(),
            idempotency_key: a.idempotency_key.clone(),
            request_id: a.request_id.to_string(),
            correlation_id: a.correlation_id.to_string(),
            stream_id: event.stream_id.to_string(),
            stream_version: event.stream_version,
            global_position: event.position.global,
            recorded_at: event.recorded_at,
        });
    }
    Ok((rows, index_of))
}

/// Inserts the rows; returns the ids inserted (one already there is not).
async fn insert_pg(
    tx: &mut PgConnection,
    rows: &[ArtifactDetail],
) -> Result<Vec<uuid::Uuid>, ApplyError> {
    Ok(sqlx::query_scalar(INSERT)
        .bind(rows_json(rows)?)
        .fetch_all(&mut *tx)
        .await?)
}

async fn insert_sqlite(
    tx: &mut SqliteConnection,
    rows: &[ArtifactDetail],
) -> Result<Vec<uuid::Uuid>, ApplyError> {
    let mut inserted = Vec::with_capacity(rows.len());
    for a in rows {
        let done = sqlx::query(SQLITE_INSERT)
            .bind(a.artifact_id.to_string())
            .bind(a.run_id.to_string())
            .bind(a.node_run_id.to_string())
            .bind(&a.node_id)
            .bind(&a.node_type)
            .bind(&a.artifact_type)
            .bind(a.global_position as i64)
            .bind(doc(a)?)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            inserted.push(a.artifact_id.0);
        }
    }
    Ok(inserted)
}

const LIST_COLUMNS: &str =
    "artifact_id, run_id, node_run_id, node_id, node_type, artifact_type, status,
    contract_version, content_hash, stream_id, stream_version, global_position, recorded_at";

/// Artifacts newest first (by ledger position), filtered, one page at a time.
pub async fn list_artifacts(
    db: &(impl ReadSource + ?Sized),
    filter: &ArtifactFilter,
) -> Result<Page<ArtifactRow>, QueryError> {
    let limit = cursor::limit(filter.limit)?;
    let before = match &filter.cursor {
        Some(c) => {
            let parts = cursor::decode("a", c, 1)?;
            Some(
                parts[0]
                    .parse::<i64>()
                    .map_err(|_| QueryError::InvalidCursor { cursor: c.clone() })?,
            )
        }
        None => None,
    };
    // Only the conditions asked for are in the statement, so the planner picks the index of
    // that filter (a `$n IS NULL OR ...` form would defeat it under generic plans).
    let mut conditions: Vec<String> = Vec::new();
    let sqlite = matches!(db.db(), DbRef::Sqlite(_));
    let mark = if sqlite { '?' } else { '$' };
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("{mark}{n}")
    };
    if filter.run_id.is_some() {
        conditions.push(format!("run_id = {}", next()));
    }
    if filter.node_run_id.is_some() {
        conditions.push(format!("node_run_id = {}", next()));
    }
    if filter.node_id.is_some() {
        conditions.push(format!("node_id = {}", next()));
    }
    if filter.node_type.is_some() {
        conditions.push(format!("node_type = {}", next()));
    }
    if filter.artifact_type.is_some() {
        conditions.push(format!("artifact_type = {}", next()));
    }
    if before.is_some() {
        conditions.push(format!("global_position < {}", next()));
    }
    let limit_param = next();
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let mut items: Vec<ArtifactRow> = match db.db() {
        DbRef::Postgres(pool) => {
            list_pg(pool, filter, before, &where_clause, &limit_param, limit).await?
        }
        DbRef::Sqlite(store) => {
            let sql = format!(
                "SELECT doc FROM artifact_history {where_clause}
                  ORDER BY global_position DESC LIMIT {limit_param}"
            );
            // Built from the fixed fragments above; every value is a bind parameter.
            let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            if let Some(v) = filter.run_id {
                query = query.bind(v.to_string());
            }
            if let Some(v) = filter.node_run_id {
                query = query.bind(v.to_string());
            }
            if let Some(v) = &filter.node_id {
                query = query.bind(v.clone());
            }
            if let Some(v) = filter.node_type {
                query = query.bind(v.as_str());
            }
            if let Some(v) = &filter.artifact_type {
                query = query.bind(v.clone());
            }
            if let Some(v) = before {
                query = query.bind(v);
            }
            let rows = query
                .bind(i64::from(limit) + 1)
                .fetch_all(store.readers())
                .await?;
            let details: Vec<ArtifactDetail> = crate::query::parse(rows)?;
            details.into_iter().map(ArtifactRow::from).collect()
        }
    };
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items
            .last()
            .map(|a| cursor::encode("a", &[a.global_position.to_string()]))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

impl From<ArtifactDetail> for ArtifactRow {
    fn from(a: ArtifactDetail) -> Self {
        Self {
            artifact_id: a.artifact_id,
            run_id: a.run_id,
            node_run_id: a.node_run_id,
            node_id: a.node_id,
            node_type: a.node_type,
            artifact_type: a.artifact_type,
            status: a.status,
            contract_version: a.contract_version,
            content_hash: a.content_hash,
            stream_id: a.stream_id,
            stream_version: a.stream_version,
            global_position: a.global_position,
            recorded_at: a.recorded_at,
        }
    }
}

async fn list_pg(
    pool: &PgPool,
    filter: &ArtifactFilter,
    before: Option<i64>,
    where_clause: &str,
    limit_param: &str,
    limit: u32,
) -> Result<Vec<ArtifactRow>, QueryError> {
    let sql = format!(
        "SELECT to_json(x)::text FROM (
             SELECT {LIST_COLUMNS} FROM artifact_history {where_clause}
              ORDER BY global_position DESC LIMIT {limit_param}) x
          ORDER BY x.global_position DESC"
    );
    // Built from the fixed fragments above; every value is a bind parameter.
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    if let Some(v) = filter.run_id {
        query = query.bind(v.0);
    }
    if let Some(v) = filter.node_run_id {
        query = query.bind(v.0);
    }
    if let Some(v) = &filter.node_id {
        query = query.bind(v.clone());
    }
    if let Some(v) = filter.node_type {
        query = query.bind(v.as_str());
    }
    if let Some(v) = &filter.artifact_type {
        query = query.bind(v.clone());
    }
    if let Some(v) = before {
        query = query.bind(v);
    }
    let rows = query.bind(i64::from(limit) + 1).fetch_all(pool).await?;
    crate::query::parse(rows)
}

/// One artifact in full, with its payload.
pub async fn artifact(
    db: &(impl ReadSource + ?Sized),
    artifact_id: ArtifactId,
) -> Result<Option<ArtifactDetail>, QueryError> {
    let row: Option<String> = match db.db() {
        DbRef::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT to_json(a)::text FROM artifact_history a WHERE artifact_id = $1",
            )
            .bind(artifact_id.0)
            .fetch_optional(pool)
            .await?
        }
        DbRef::Sqlite(store) => {
            sqlx::query_scalar("SELECT doc FROM artifact_history WHERE artifact_id = ?1")
                .bind(artifact_id.to_string())
                .fetch_optional(store.readers())
                .await?
        }
    };
    row.map(|text| crate::query::parse_one(&text)).transpose()
}

/// The artifacts of one node run, oldest first (normally exactly one).
pub async fn artifacts_of_node_run(
    db: &(impl ReadSource + ?Sized),
    node_run_id: NodeRunId,
) -> Result<Vec<ArtifactDetail>, QueryError> {
    let rows: Vec<String> = match db.db() {
        DbRef::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT to_json(a)::text FROM artifact_history a WHERE node_run_id = $1 ORDER BY global_position",
            )
            .bind(node_run_id.0)
            .fetch_all(pool)
            .await?
        }
        DbRef::Sqlite(store) => {
            sqlx::query_scalar(
                "SELECT doc FROM artifact_history WHERE node_run_id = ?1 ORDER BY global_position",
            )
            .bind(node_run_id.to_string())
            .fetch_all(store.readers())
            .await?
        }
    };
    crate::query::parse(rows)
}
