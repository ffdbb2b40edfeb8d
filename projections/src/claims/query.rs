//! Claims with their status, counts and evidence, globally or for one run.

use std::collections::HashMap;

use runledger_contracts::ids::{NodeRunId, RunId};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use uuid::Uuid;

use super::registry::{Registry, Severity};
use crate::db::{DbRef, ReadSource};
use crate::error::QueryError;
use crate::query::parse;

/// Violating events shown per claim (all are counted).
pub const VIOLATIONS_SHOWN: i64 = 20;
/// Supporting events shown per claim.
pub const SUPPORTS_SHOWN: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimStatus {
    /// Something was checked and nothing violated the claim.
    Pass,
    /// At least one violation.
    Fail,
    /// Nothing the claim is about happened (e.g. no frontier node runs).
    InsufficientEvidence,
}

impl ClaimStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimStatus::Pass => "pass",
            ClaimStatus::Fail => "fail",
            ClaimStatus::InsufficientEvidence => "insufficient_evidence",
        }
    }
}

/// An event that proves or disproves a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceEvent {
    pub stream_id: String,
    pub stream_version: u64,
    pub global_position: u64,
    pub event_type: String,
    /// `None` for events outside run streams.
    pub run_id: Option<RunId>,
    pub node_run_id: Option<NodeRunId>,
    /// What the checker found, e.g. `node run … of `draft` ended with NodeSucceeded but has no
    /// ArtifactPersisted`.
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The first violating events, in ledger order (`violations` counts them all).
    pub violating: Vec<EvidenceEvent>,
    /// A few events that satisfy the claim, in ledger order.
    pub supporting: Vec<EvidenceEvent>,
}

/// One claim, evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimResult {
    pub id: String,
    pub statement: String,
    pub severity: Severity,
    pub checker: String,
    pub status: ClaimStatus,
    /// Things judged (events, node runs, schedulings, ...).
    pub checked: u64,
    pub violations: u64,
    pub evidence: Evidence,
}

/// The built-in claims (`contracts/claims/`), over the whole ledger or one run.
pub async fn claims(
    db: &(impl ReadSource + ?Sized),
    run: Option<RunId>,
) -> Result<Vec<ClaimResult>, QueryError> {
    let registry = Registry::builtin().map_err(QueryError::Registry)?;
    claims_with(db, &registry, run).await
}

#[derive(Deserialize)]
struct EvidenceRow {
    checker: String,
    verdict: String,
    stream_id: String,
    stream_version: u64,
    global_position: u64,
    event_type: String,
    run_id: Uuid,
    node_run_id: Option<NodeRunId>,
    message: String,
}

const TALLIES_ALL: &str = "SELECT checker, sum(checked)::bigint, sum(violations)::bigint
     FROM claim_tallies WHERE checker = ANY($1) GROUP BY checker";
const TALLIES_RUN: &str = "SELECT checker, checked, violations
     FROM claim_tallies WHERE checker = ANY($1) AND run_id = $2";

// One index range scan per checker and verdict (`claim_evidence_global` / `_run`).
const EVIDENCE_ALL: &str = "SELECT to_json(x)::text FROM unnest($1::text[]) AS c(checker),
     LATERAL (SELECT * FROM claim_evidence e WHERE e.checker = c.checker AND e.verdict = 'violation'
               ORDER BY e.global_position LIMIT $2) x
     UNION ALL
     SELECT to_json(x)::text FROM unnest($1::text[]) AS c(checker),
     LATERAL (SELECT * FROM claim_evidence e WHERE e.checker = c.checker AND e.verdict = 'support'
               ORDER BY e.global_position LIMIT $3) x";
const EVIDENCE_RUN: &str = "SELECT to_json(x)::text FROM unnest($1::text[]) AS c(checker),
     LATERAL (SELECT * FROM claim_evidence e WHERE e.checker = c.checker AND e.verdict = 'violation'
                 AND e.run_id = $4 ORDER BY e.global_position LIMIT $2) x
     UNION ALL
     SELECT to_json(x)::text FROM unnest($1::text[]) AS c(checker),
     LATERAL (SELECT * FROM claim_evidence e WHERE e.checker = c.checker AND e.verdict = 'support'
                 AND e.run_id = $4 ORDER BY e.global_position LIMIT $3) x";

/// The claims of `registry`, over the whole ledger (`run: None`) or one run. Reads the
/// claim_evidence projection as it is: catch it up first for an answer about the ledger's end.
pub async fn claims_with(
    db: &(impl ReadSource + ?Sized),
    registry: &Registry,
    run: Option<RunId>,
) -> Result<Vec<ClaimResult>, QueryError> {
    let checkers: Vec<String> = registry.checkers().into_iter().map(str::to_owned).collect();
    let (tallies, rows) = match db.db() {
        DbRef::Postgres(pool) => read_pg(pool, &checkers, run).await?,
        DbRef::Sqlite(store) => read_sqlite(store, &checkers, run).await?,
    };
    let tallies: HashMap<String, (u64, u64)> = tallies
        .into_iter()
        .map(|(c, checked, violations)| (c, (checked.max(0) as u64, violations.max(0) as u64)))
        .collect();
    let rows: Vec<EvidenceRow> = parse(rows)?;
    evaluate(registry, tallies, rows)
}

/// Tallies per checker (checked, violations) and evidence rows as JSON.
type Read = (Vec<(String, i64, i64)>, Vec<String>);

async fn read_sqlite(
    store: &runledger_ledger::SqliteEventStore,
    checkers: &[String],
    run: Option<RunId>,
) -> Result<Read, QueryError> {
    let mut tx = store.readers().begin().await?;
    let mut tallies = Vec::new();
    let mut rows = Vec::new();
    for checker in checkers {
        let tally: Option<(i64, i64)> = match run {
            None => {
                sqlx::query_as(
                    "SELECT sum(checked), sum(violations) FROM claim_tallies WHERE checker = ?1
                     HAVING count(*) > 0",
                )
                .bind(checker)
                .fetch_optional(&mut *tx)
                .await?
            }
            Some(run) => sqlx::query_as(
                "SELECT checked, violations FROM claim_tallies WHERE checker = ?1 AND run_id = ?2",
            )
            .bind(checker)
            .bind(run.to_string())
            .fetch_optional(&mut *tx)
            .await?,
        };
        if let Some((checked, violations)) = tally {
            tallies.push((checker.clone(), checked, violations));
        }
        for (verdict, shown) in [("violation", VIOLATIONS_SHOWN), ("support", SUPPORTS_SHOWN)] {
            let docs: Vec<String> = match run {
                None => {
                    sqlx::query_scalar(
                        "SELECT doc FROM claim_evidence WHERE checker = ?1 AND verdict = ?2
                          ORDER BY global_position LIMIT ?3",
                    )
                    .bind(checker)
                    .bind(verdict)
                    .bind(shown)
                    .fetch_all(&mut *tx)
                    .await?
                }
                Some(run) => {
                    sqlx::query_scalar(
                        "SELECT doc FROM claim_evidence WHERE checker = ?1 AND verdict = ?2
                            AND run_id = ?4 ORDER BY global_position LIMIT ?3",
                    )
                    .bind(checker)
                    .bind(verdict)
                    .bind(shown)
                    .bind(run.to_string())
                    .fetch_all(&mut *tx)
                    .await?
                }
            };
            rows.extend(docs);
        }
    }
    tx.commit().await?;
    Ok((tallies, rows))
}

async fn read_pg(
    pool: &PgPool,
    checkers: &[String],
    run: Option<RunId>,
) -> Result<Read, QueryError> {
    let tallies: Vec<(String, i64, i64)> = match run {
        None => {
            sqlx::query_as(TALLIES_ALL)
                .bind(checkers)
                .fetch_all(pool)
                .await?
        }
        Some(run) => {
            sqlx::query_as(TALLIES_RUN)
                .bind(checkers)
                .bind(run.0)
                .fetch_all(pool)
                .await?
        }
    };
    let rows: Vec<String> = match run {
        None => {
            sqlx::query_scalar(EVIDENCE_ALL)
                .bind(checkers)
                .bind(VIOLATIONS_SHOWN)
                .bind(SUPPORTS_SHOWN)
                .fetch_all(pool)
                .await?
        }
        Some(run) => {
            sqlx::query_scalar(EVIDENCE_RUN)
                .bind(checkers)
                .bind(VIOLATIONS_SHOWN)
                .bind(SUPPORTS_SHOWN)
                .bind(run.0)
                .fetch_all(pool)
                .await?
        }
    };
    Ok((tallies, rows))
}

/// Each claim of the registry, from its checker's tallies and evidence.
fn evaluate(
    registry: &Registry,
    tallies: HashMap<String, (u64, u64)>,
    rows: Vec<EvidenceRow>,
) -> Result<Vec<ClaimResult>, QueryError> {
    let mut evidence: HashMap<String, Evidence> = HashMap::new();
    for row in rows {
        let event = EvidenceEvent {
            stream_id: row.stream_id,
            stream_version: row.stream_version,
            global_position: row.global_position,
            event_type: row.event_type,
            run_id: (!row.run_id.is_nil()).then_some(RunId(row.run_id)),
            node_run_id: row.node_run_id,
            message: row.message,
        };
        let e = evidence.entry(row.checker).or_default();
        if row.verdict == "violation" {
            e.violating.push(event)
        } else {
            e.supporting.push(event)
        }
    }
    for e in evidence.values_mut() {
        e.violating.sort_by_key(|v| v.global_position);
        e.supporting.sort_by_key(|v| v.global_position);
    }
    Ok(registry
        .claims()
        .iter()
        .map(|claim| {
            let (checked, violations) = tallies.get(&claim.checker).copied().unwrap_or((0, 0));
            let status = if violations > 0 {
                ClaimStatus::Fail
            } else if checked == 0 {
                ClaimStatus::InsufficientEvidence
            } else {
                ClaimStatus::Pass
            };
            ClaimResult {
                id: claim.id.clone(),
                statement: claim.statement.clone(),
                severity: claim.severity,
                checker: claim.checker.clone(),
                status,
                checked,
                violations,
                evidence: evidence.get(&claim.checker).cloned().unwrap_or_default(),
            }
        })
        .collect())
}

/// Whether the claim_evidence projection has seen the run (its RunStarted or any of its events).
pub async fn run_known(db: &(impl ReadSource + ?Sized), run: RunId) -> Result<bool, QueryError> {
    let known: bool = match db.db() {
        DbRef::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM claim_runs WHERE run_id = $1)
                     OR EXISTS (SELECT 1 FROM claim_tallies WHERE run_id = $1)",
            )
            .bind(run.0)
            .fetch_one(pool)
            .await?
        }
        DbRef::Sqlite(store) => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM claim_runs WHERE run_id = ?1)
                     OR EXISTS (SELECT 1 FROM claim_tallies WHERE run_id = ?1)",
            )
            .bind(run.to_string())
            .fetch_one(store.readers())
            .await?
        }
    };
    Ok(known)
}
