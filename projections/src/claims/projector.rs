//! `claim_evidence`: runs every built-in checker over the ledger, in order, and keeps per
//! checker and run how much was checked, how much violated, every violating event and the first
//! few supporting ones. Claims are then a lookup (`claims::query`), whatever the ledger's size.
//!
//! Judgments of a node run's ending (one artifact, frontier provider) are made at the end of the
//! ledger transaction that ended it: the engine appends a terminal event and its artifact
//! together, and batches hold whole transactions, so the verdict does not depend on where a
//! batch boundary falls.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use runledger_contracts::envelope::RecordedEvent;
use runledger_contracts::events::{DomainEvent, NodeRunStatus};
use runledger_contracts::flowchart::{Flowchart, FlowchartDoc, validate};
use runledger_contracts::ids::{NodeRunId, RunId};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, SqliteConnection};
use uuid::Uuid;

use super::checkers::{self, SourceRun, Violation};
use crate::db::ProjectionTx;
use crate::error::{ApplyError, EventRef};
use crate::projector::{
    ApplyFuture, Projector, decode_all, doc, load_docs, parse_rows, run_of, status_name, write_rows,
};

/// Supporting events kept per checker and run.
pub const SAMPLES_PER_RUN: u32 = 3;

/// Flowcharts kept in memory between batches (they are re-read from the ledger when evicted).
const FLOWCHART_CACHE: usize = 256;

/// The run of events outside run streams.
const NO_RUN: RunId = RunId(Uuid::nil());

#[derive(Default)]
pub struct ClaimEvidenceProjector {
    /// Validated flowchart of each run (`None`: its definition does not validate). A cache: the
    /// source is the run's RunStarted in the ledger.
    flowcharts: Mutex<HashMap<RunId, Option<Arc<Flowchart>>>>,
}

const TABLES: &[&str] = &[
    "claim_runs",
    "claim_node_runs",
    "claim_tallies",
    "claim_evidence",
];

impl Projector for ClaimEvidenceProjector {
    fn name(&self) -> &'static str {
        "claim_evidence"
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut ProjectionTx,
        events: &'a [RecordedEvent],
    ) -> ApplyFuture<'a> {
        Box::pin(self.apply_batch(tx, events))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRow {
    run_id: RunId,
    stream_id: String,
    terminal_event: Option<String>,
    terminal_version: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRunRow {
    node_run_id: NodeRunId,
    run_id: RunId,
    node_id: String,
    stream_id: String,
    /// `None` for a node run some event named but no NodeScheduled created.
    scheduled_version: Option<u64>,
    scheduled_position: Option<u64>,
    ended_status: Option<String>,
    ended_version: Option<u64>,
    ended_position: Option<u64>,
    ended_event: Option<String>,
    artifacts: u32,
    frontier: bool,
    http_provider_calls: u32,
    scripted_provider_calls: u32,
}

impl NodeRunRow {
    fn placeholder(node_run_id: NodeRunId, run_id: RunId, node_id: &str, stream_id: &str) -> Self {
        Self {
            node_run_id,
            run_id,
            node_id: node_id.to_owned(),
            stream_id: stream_id.to_owned(),
            scheduled_version: None,
            scheduled_position: None,
            ended_status: None,
            ended_version: None,
            ended_position: None,
            ended_event: None,
            artifacts: 0,
            frontier: false,
            http_provider_calls: 0,
            scripted_provider_calls: 0,
        }
    }

    fn ended_ref(&self) -> Option<EventRef> {
        Some(EventRef {
            stream_id: self.stream_id.clone(),
            stream_version: self.ended_version?,
            global_position: self.ended_position?,
            event_type: self.ended_event.clone()?,
        })
    }

    fn scheduled_ref(&self) -> Option<EventRef> {
        Some(EventRef {
            stream_id: self.stream_id.clone(),
            stream_version: self.scheduled_version?,
            global_position: self.scheduled_position?,
            event_type: "NodeScheduled".into(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TallyRow {
    checker: String,
    run_id: RunId,
    checked: u64,
    violations: u64,
    samples: u32,
}

#[derive(Debug, Clone, Serialize)]
struct EvidenceRow {
    checker: &'static str,
    run_id: RunId,
    verdict: &'static str,
    stream_id: String,
    stream_version: u64,
    global_position: u64,
    event_type: String,
    node_run_id: Option<NodeRunId>,
    message: String,
    subject: String,
}

struct Entry<T> {
    row: T,
    dirty: bool,
}

// Joined with unnest rather than `= ANY($1)`: index probes per key, whatever the planner thinks
// of the table's size.
const LOAD_RUNS: &str = "SELECT to_json(r)::text
     FROM unnest($1::uuid[]) AS k(id) JOIN claim_runs r ON r.run_id = k.id";
const LOAD_NODE_RUNS: &str = "SELECT to_json(n)::text
     FROM unnest($1::uuid[]) AS k(id) JOIN claim_node_runs n ON n.node_run_id = k.id
     UNION
     SELECT to_json(n)::text
     FROM unnest($2::uuid[]) AS k(id) JOIN claim_node_runs n ON n.run_id = k.id AND n.ended_status IS NULL";
const LOAD_TALLIES: &str = "SELECT to_json(t)::text
     FROM unnest($1::uuid[]) AS k(id) JOIN claim_tallies t ON t.run_id = k.id";
const LOAD_DEFINITIONS: &str = "SELECT event_type, schema_version, payload::text FROM events
     WHERE stream_id = ANY($1) AND stream_version = 1";

const SQLITE_LOAD_RUNS: &str =
    "SELECT doc FROM claim_runs WHERE run_id IN (SELECT value FROM json_each(?1))";
const SQLITE_LOAD_NODE_RUNS: &str = "SELECT doc FROM claim_node_runs
     WHERE node_run_id IN (SELECT value FROM json_each(?1))";
const SQLITE_LOAD_OPEN_NODE_RUNS: &str = "SELECT doc FROM claim_node_runs
     WHERE run_id IN (SELECT value FROM json_each(?1)) AND open = 1";
const SQLITE_LOAD_TALLIES: &str =
    "SELECT doc FROM claim_tallies WHERE run_id IN (SELECT value FROM json_each(?1))";
const SQLITE_LOAD_DEFINITIONS: &str = "SELECT event_type, schema_version, payload FROM events
     WHERE stream_id IN (SELECT value FROM json_each(?1)) AND stream_version = 1";
const SQLITE_PUT_RUN: &str = "REPLACE INTO claim_runs (run_id, doc) VALUES (?1, ?2)";
const SQLITE_PUT_NODE_RUN: &str =
    "REPLACE INTO claim_node_runs (node_run_id, run_id, open, doc) VALUES (?1, ?2, ?3, ?4)";
const SQLITE_PUT_TALLY: &str =
    "REPLACE INTO claim_tallies (run_id, checker, checked, violations, doc)
     VALUES (?1, ?2, ?3, ?4, ?5)";
const SQLITE_INSERT_EVIDENCE: &str = "INSERT OR IGNORE INTO claim_evidence
     (checker, verdict, subject, run_id, global_position, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The rows a batch starts from.
type Loaded = (Vec<RunRow>, Vec<NodeRunRow>, Vec<TallyRow>);

async fn load_pg(
    tx: &mut PgConnection,
    runs: &[Uuid],
    node_runs: &[Uuid],
    ending_runs: &[Uuid],
    tally_runs: &[Uuid],
) -> Result<Loaded, ApplyError> {
    let run_rows: Vec<RunRow> = parse_rows(
        sqlx::query_scalar(LOAD_RUNS)
            .bind(runs)
            .fetch_all(&mut *tx)
            .await?,
    )?;
    let node_rows: Vec<NodeRunRow> = parse_rows(
        sqlx::query_scalar(LOAD_NODE_RUNS)
            .bind(node_runs)
            .bind(ending_runs)
            .fetch_all(&mut *tx)
            .await?,
    )?;
    let tallies: Vec<TallyRow> = parse_rows(
        sqlx::query_scalar(LOAD_TALLIES)
            .bind(tally_runs)
            .fetch_all(&mut *tx)
            .await?,
    )?;
    Ok((run_rows, node_rows, tallies))
}

async fn load_sqlite(
    tx: &mut SqliteConnection,
    runs: &[Uuid],
    node_runs: &[Uuid],
    ending_runs: &[Uuid],
    tally_runs: &[Uuid],
) -> Result<Loaded, ApplyError> {
    let text = |ids: &[Uuid]| ids.iter().map(Uuid::to_string).collect::<Vec<_>>();
    let run_rows: Vec<RunRow> = load_docs(&mut *tx, SQLITE_LOAD_RUNS, &text(runs)).await?;
    let mut node_rows: Vec<NodeRunRow> =
        load_docs(&mut *tx, SQLITE_LOAD_NODE_RUNS, &text(node_runs)).await?;
    let open: Vec<NodeRunRow> =
        load_docs(&mut *tx, SQLITE_LOAD_OPEN_NODE_RUNS, &text(ending_runs)).await?;
    // The union of both, as PostgreSQL's UNION gives it.
    let seen: HashSet<NodeRunId> = node_rows.iter().map(|n| n.node_run_id).collect();
    node_rows.extend(open.into_iter().filter(|n| !seen.contains(&n.node_run_id)));
    let tallies: Vec<TallyRow> =
        load_docs(&mut *tx, SQLITE_LOAD_TALLIES, &text(tally_runs)).await?;
    Ok((run_rows, node_rows, tallies))
}

const UPSERT_RUNS: &str = "INSERT INTO claim_runs
     SELECT * FROM json_populate_recordset(NULL::claim_runs, $1::json)
     ON CONFLICT (run_id) DO UPDATE
        SET terminal_event = EXCLUDED.terminal_event, terminal_version = EXCLUDED.terminal_version";
const UPSERT_NODE_RUNS: &str = "INSERT INTO claim_node_runs
     SELECT * FROM json_populate_recordset(NULL::claim_node_runs, $1::json)
     ON CONFLICT (node_run_id) DO UPDATE
        SET node_id = EXCLUDED.node_id, scheduled_version = EXCLUDED.scheduled_version,
            scheduled_position = EXCLUDED.scheduled_position, ended_status = EXCLUDED.ended_status,
            ended_version = EXCLUDED.ended_version, ended_position = EXCLUDED.ended_position,
            ended_event = EXCLUDED.ended_event, artifacts = EXCLUDED.artifacts,
            frontier = EXCLUDED.frontier, http_provider_calls = EXCLUDED.http_provider_calls,
            scripted_provider_calls = EXCLUDED.scripted_provider_calls";
const UPSERT_TALLIES: &str = "INSERT INTO claim_tallies
     SELECT * FROM json_populate_recordset(NULL::claim_tallies, $1::json)
     ON CONFLICT (checker, run_id) DO UPDATE
        SET checked = EXCLUDED.checked, violations = EXCLUDED.violations, samples = EXCLUDED.samples";
const INSERT_EVIDENCE: &str = "INSERT INTO claim_evidence
     SELECT * FROM json_populate_recordset(NULL::claim_evidence, $1::json)
     ON CONFLICT DO NOTHING";

impl ClaimEvidenceProjector {
    async fn apply_batch(
        &self,
        tx: &mut ProjectionTx,
        events: &[RecordedEvent],
    ) -> Result<(), ApplyError> {
        let decoded = decode_all(events)?;
        let mut runs = HashSet::new();
        let mut node_runs = HashSet::new();
        let mut ending_runs = HashSet::new();
        let mut started_here = HashSet::new();
        let mut scheduled_here = HashSet::new();
        let mut need_flowchart = HashSet::new();
        for (event, domain) in events.iter().zip(&decoded) {
            let run = run_of(domain).unwrap_or(NO_RUN);
            runs.insert(run.0);
            match domain {
                DomainEvent::RunStarted(_) | DomainEvent::RunForked(_) => {
                    started_here.insert(run);
                }
                DomainEvent::RunCompleted(_)
                | DomainEvent::RunFailed(_)
                | DomainEvent::RunCanceled(_) => {
                    ending_runs.insert(run.0);
                }
                DomainEvent::NodeScheduled(e) => {
                    scheduled_here.insert(e.node_run_id.0);
                    node_runs.insert(e.node_run_id.0);
                    node_runs.extend(e.consumed_tokens.iter().map(|t| t.from_node_run_id.0));
                    need_flowchart.insert((run, event.stream_id.to_string()));
                }
                DomainEvent::RoutingDecided(e) => {
                    node_runs.insert(e.node_run_id.0);
                    need_flowchart.insert((run, event.stream_id.to_string()));
                }
                DomainEvent::NodeDispatched(e) => node_runs.extend([e.node_run_id.0]),
                DomainEvent::NodeStarted(e) => node_runs.extend([e.node_run_id.0]),
                DomainEvent::NodeSucceeded(e) => node_runs.extend([e.node_run_id.0]),
                DomainEvent::NodeFailed(e) => node_runs.extend([e.node_run_id.0]),
                DomainEvent::NodeTimedOut(e) => node_runs.extend([e.node_run_id.0]),
                DomainEvent::NodeSkipped(e) => node_runs.extend([e.node_run_id.0]),
                DomainEvent::NodeCanceled(e) => node_runs.extend([e.node_run_id.0]),
                DomainEvent::ToolCalled(e) => node_runs.extend([e.node_run_id.0]),
                DomainEvent::ArtifactPersisted(e) => node_runs.extend([e.node_run_id.0]),
                _ => {}
            }
        }
        // Tallies are loaded for every run; runs and node runs only when this batch did not
        // create them (a rebuild creates most).
        let tally_runs: Vec<Uuid> = runs.iter().copied().collect();
        let runs: Vec<Uuid> = runs
            .into_iter()
            .filter(|r| !started_here.contains(&RunId(*r)))
            .collect();
        let node_runs: Vec<Uuid> = node_runs
            .into_iter()
            .filter(|n| !scheduled_here.contains(n))
            .collect();
        let ending_runs: Vec<Uuid> = ending_runs.into_iter().collect();
        let (run_rows, node_rows, tallies) = match tx {
            ProjectionTx::Postgres(tx) => {
                load_pg(tx, &runs, &node_runs, &ending_runs, &tally_runs).await?
            }
            ProjectionTx::Sqlite(tx) => {
                load_sqlite(tx, &runs, &node_runs, &ending_runs, &tally_runs).await?
            }
        };
        let flowcharts = self
            .flowcharts_for(tx, need_flowchart, &started_here)
            .await?;

        let mut batch = Batch {
            runs: run_rows
                .into_iter()
                .map(|row| (row.run_id, Entry { row, dirty: false }))
                .collect(),
            node_runs: node_rows
                .into_iter()
                .map(|row| (row.node_run_id, Entry { row, dirty: false }))
                .collect(),
            tallies: tallies
                .into_iter()
                .filter_map(|row| {
                    let checker = checkers::CHECKERS.iter().find(|c| **c == row.checker)?;
                    Some(((*checker, row.run_id), Entry { row, dirty: false }))
                })
                .collect(),
            evidence: Vec::new(),
            flowcharts,
            ended_in_tx: Vec::new(),
            runs_ended_in_tx: Vec::new(),
            artifact_in_tx: HashMap::new(),
        };
        let mut current_tx = None;
        for (event, domain) in events.iter().zip(&decoded) {
            if current_tx.is_some_and(|t| t != event.position.commit) {
                batch.end_of_transaction();
            }
            current_tx = Some(event.position.commit);
            batch.judge_event(event, domain);
        }
        batch.end_of_transaction();

        // Keep what this batch learned about flowcharts for the next one.
        if let Ok(mut cache) = self.flowcharts.lock() {
            if cache.len() > FLOWCHART_CACHE {
                cache.clear();
            }
            for run in &started_here {
                if let Some(fc) = batch.flowcharts.get(run) {
                    cache.insert(*run, fc.clone());
                }
            }
        }
        match tx {
            ProjectionTx::Postgres(tx) => batch.write(tx).await,
            ProjectionTx::Sqlite(tx) => batch.write_sqlite(tx).await,
        }
    }

    /// The flowchart of every run whose checks need one: from the cache, else from its
    /// RunStarted in the ledger (runs started in this batch are added as they are met).
    async fn flowcharts_for(
        &self,
        tx: &mut ProjectionTx,
        need: HashSet<(RunId, String)>,
        started_here: &HashSet<RunId>,
    ) -> Result<HashMap<RunId, Option<Arc<Flowchart>>>, ApplyError> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self
                .flowcharts
                .lock()
                .map_err(|_| ApplyError::Encode("flowchart cache poisoned".into()))?;
            for (run, stream) in need {
                if started_here.contains(&run) {
                    continue;
                }
                match cache.get(&run) {
                    Some(fc) => {
                        found.insert(run, fc.clone());
                    }
                    None => missing.push(stream),
                }
            }
        }
        if !missing.is_empty() {
            let rows: Vec<(String, i32, String)> = match tx {
                ProjectionTx::Postgres(tx) => {
                    sqlx::query_as(LOAD_DEFINITIONS)
                        .bind(&missing)
                        .fetch_all(&mut **tx)
                        .await?
                }
                ProjectionTx::Sqlite(tx) => {
                    let keys = serde_json::to_string(&missing)
                        .map_err(|e| ApplyError::Encode(e.to_string()))?;
                    sqlx::query_as(SQLITE_LOAD_DEFINITIONS)
                        .bind(keys)
                        .fetch_all(&mut **tx)
                        .await?
                }
            };
            let mut loaded = Vec::new();
            for (event_type, version, payload) in rows {
                let payload: serde_json::Value = serde_json::from_str(&payload)
                    .map_err(|e| ApplyError::Encode(e.to_string()))?;
                match DomainEvent::decode(&event_type, version as u32, payload) {
                    Ok(DomainEvent::RunStarted(started)) => {
                        loaded.push((started.run_id, flowchart_of(&started.definition)));
                    }
                    Ok(DomainEvent::RunForked(forked)) => {
                        loaded.push((forked.run_id, flowchart_of(&forked.definition)));
                    }
                    _ => {}
                }
            }
            if let Ok(mut cache) = self.flowcharts.lock() {
                if cache.len() > FLOWCHART_CACHE {
                    cache.clear();
                }
                for (run, fc) in loaded {
                    cache.insert(run, fc.clone());
                    found.insert(run, fc);
                }
            }
        }
        Ok(found)
    }
}

/// The run's flowchart, validated exactly as the engine validates it; `None` when it does not.
fn flowchart_of(definition: &serde_json::Value) -> Option<Arc<Flowchart>> {
    let doc: FlowchartDoc = serde_json::from_value(definition.clone()).ok()?;
    validate(doc).ok().map(Arc::new)
}

struct Batch {
    runs: HashMap<RunId, Entry<RunRow>>,
    node_runs: HashMap<NodeRunId, Entry<NodeRunRow>>,
    tallies: HashMap<(&'static str, RunId), Entry<TallyRow>>,
    evidence: Vec<EvidenceRow>,
    flowcharts: HashMap<RunId, Option<Arc<Flowchart>>>,
    /// Node runs that ended in the current ledger transaction, in order.
    ended_in_tx: Vec<NodeRunId>,
    /// Runs that ended in the current ledger transaction.
    runs_ended_in_tx: Vec<(RunId, EventRef)>,
    /// The artifact event of node runs that got one in the current transaction.
    artifact_in_tx: HashMap<NodeRunId, EventRef>,
}

impl Batch {
    /// One verdict of `checker` about the thing at `at`.
    fn judge(
        &mut self,
        checker: &'static str,
        run: RunId,
        at: &EventRef,
        node_run: Option<NodeRunId>,
        subject: String,
        verdict: Result<String, Violation>,
    ) {
        let tally = &mut self.tallies.entry((checker, run)).or_insert_with(|| Entry {
            row: TallyRow {
                checker: checker.to_owned(),
                run_id: run,
                checked: 0,
                violations: 0,
                samples: 0,
            },
            dirty: true,
        });
        tally.dirty = true;
        tally.row.checked += 1;
        let (verdict, message) = match verdict {
            Err(Violation(message)) => {
                tally.row.violations += 1;
                ("violation", message)
            }
            Ok(message) => {
                if tally.row.samples >= SAMPLES_PER_RUN {
                    return;
                }
                tally.row.samples += 1;
                ("support", message)
            }
        };
        self.evidence.push(EvidenceRow {
            checker,
            run_id: run,
            verdict,
            stream_id: at.stream_id.clone(),
            stream_version: at.stream_version,
            global_position: at.global_position,
            event_type: at.event_type.clone(),
            node_run_id: node_run,
            message,
            subject,
        });
    }

    fn node(
        &mut self,
        id: NodeRunId,
        run: RunId,
        node_id: &str,
        stream_id: &str,
    ) -> &mut NodeRunRow {
        let entry = self.node_runs.entry(id).or_insert_with(|| Entry {
            row: NodeRunRow::placeholder(id, run, node_id, stream_id),
            dirty: true,
        });
        entry.dirty = true;
        &mut entry.row
    }

    fn flowchart(&self, run: RunId) -> Result<Arc<Flowchart>, Violation> {
        match self.flowcharts.get(&run) {
            Some(Some(fc)) => Ok(fc.clone()),
            Some(None) => Err(Violation(format!(
                "run {run}'s definition is not a valid flowchart"
            ))),
            None => Err(Violation(format!("run {run} has no RunStarted"))),
        }
    }

    fn judge_event(&mut self, event: &RecordedEvent, domain: &DomainEvent) {
        let run = run_of(domain).unwrap_or(NO_RUN);
        let at = EventRef::of(event);
        let subject = event.position.global.to_string();
        let stream = event.stream_id.as_str();
        let artifact = match domain {
            DomainEvent::ArtifactPersisted(a) => Some(a),
            _ => None,
        };
        let ids = checkers::check_ids(event, artifact)
            .map(|()| "carries request and correlation ids".to_owned());
        self.judge(checkers::IDS, run, &at, None, subject.clone(), ids);

        match domain {
            DomainEvent::RunStarted(e) => {
                self.runs.entry(run).or_insert_with(|| Entry {
                    row: RunRow {
                        run_id: run,
                        stream_id: stream.to_owned(),
                        terminal_event: None,
                        terminal_version: None,
                    },
                    dirty: true,
                });
                self.flowcharts
                    .entry(run)
                    .or_insert_with(|| flowchart_of(&e.definition));
            }
            DomainEvent::RunForked(e) => {
                self.runs.entry(run).or_insert_with(|| Entry {
                    row: RunRow {
                        run_id: run,
                        stream_id: stream.to_owned(),
                        terminal_event: None,
                        terminal_version: None,
                    },
                    dirty: true,
                });
                self.flowcharts
                    .entry(run)
                    .or_insert_with(|| flowchart_of(&e.definition));
            }
            DomainEvent::RunCompleted(_)
            | DomainEvent::RunFailed(_)
            | DomainEvent::RunCanceled(_) => {
                let entry = self.runs.entry(run).or_insert_with(|| Entry {
                    row: RunRow {
                        run_id: run,
                        stream_id: stream.to_owned(),
                        terminal_event: None,
                        terminal_version: None,
                    },
                    dirty: true,
                });
                entry.dirty = true;
                entry.row.terminal_event = Some(event.event_type.clone());
                entry.row.terminal_version = Some(event.stream_version);
                self.runs_ended_in_tx.push((run, at));
            }
            DomainEvent::RunResumed(_) => {
                if let Some(entry) = self.runs.get_mut(&run)
                    && entry.row.terminal_event.is_some()
                {
                    entry.dirty = true;
                    entry.row.terminal_event = None;
                    entry.row.terminal_version = None;
                }
            }
            DomainEvent::NodeScheduled(e) => {
                let after_end = match self.runs.get(&run) {
                    None => Err(Violation(format!(
                        "node run {} is scheduled in run {run}, which never started",
                        e.node_run_id
                    ))),
                    Some(r) => match (&r.row.terminal_event, r.row.terminal_version) {
                        (Some(t), Some(v)) => Err(Violation(format!(
                            "node run {} of `{}` is scheduled after the run's {t} (version {v})",
                            e.node_run_id, e.node_id
                        ))),
                        _ => Ok(format!(
                            "node run {} scheduled while the run is open",
                            e.node_run_id
                        )),
                    },
                };
                self.judge(
                    checkers::AFTER_END,
                    run,
                    &at,
                    Some(e.node_run_id),
                    subject.clone(),
                    after_end,
                );

                let fan_in = self.flowchart(run).and_then(|fc| {
                    checkers::check_fan_in(&fc, e, |id| {
                        self.node_runs
                            .get(id)
                            .filter(|n| n.row.scheduled_version.is_some())
                            .map(|n| SourceRun {
                                node_id: n.row.node_id.as_str(),
                                ended_status: n.row.ended_status.as_deref(),
                            })
                    })
                });
                let fan_in = fan_in
                    .map(|()| {
                        format!(
                            "`{}` scheduled on {} valid token(s)",
                            e.node_id,
                            e.consumed_tokens.len()
                        )
                    })
                    .map_err(|m| {
                        Violation(format!(
                            "node run {} of `{}`: {m}",
                            e.node_run_id, e.node_id
                        ))
                    });
                self.judge(
                    checkers::FAN_IN,
                    run,
                    &at,
                    Some(e.node_run_id),
                    subject,
                    fan_in,
                );

                let node = self.node(e.node_run_id, run, &e.node_id, stream);
                if node.scheduled_version.is_none() {
                    node.scheduled_version = Some(event.stream_version);
                    node.scheduled_position = Some(event.position.global);
                }
            }
            DomainEvent::NodeDispatched(e) if e.executor_class == checkers::FRONTIER_CLASS => {
                self.node(e.node_run_id, run, &e.node_id, stream).frontier = true;
            }
            DomainEvent::ToolCalled(e) => {
                if let Some(p) = &e.provider {
                    let node = self.node(e.node_run_id, run, &e.node_id, stream);
                    if p.provider == checkers::SCRIPTED_PROVIDER {
                        node.scripted_provider_calls += 1;
                    } else {
                        node.http_provider_calls += 1;
                    }
                }
            }
            DomainEvent::NodeSucceeded(e) => {
                let status = if e.warnings.is_empty() {
                    NodeRunStatus::Succeeded
                } else {
                    NodeRunStatus::SuccessWithWarning
                };
                self.end(event, run, e.node_run_id, &e.node_id, status);
            }
            DomainEvent::NodeFailed(e) => {
                self.end(event, run, e.node_run_id, &e.node_id, NodeRunStatus::Failed)
            }
            DomainEvent::NodeTimedOut(e) => self.end(
                event,
                run,
                e.node_run_id,
                &e.node_id,
                NodeRunStatus::TimedOut,
            ),
            DomainEvent::NodeSkipped(e) => self.end(
                event,
                run,
                e.node_run_id,
                &e.node_id,
                NodeRunStatus::Skipped,
            ),
            DomainEvent::NodeCanceled(e) => self.end(
                event,
                run,
                e.node_run_id,
                &e.node_id,
                NodeRunStatus::Canceled,
            ),
            DomainEvent::ArtifactPersisted(a) => {
                let contract = checkers::check_artifact_contract(a)
                    .map(|()| {
                        format!(
                            "`{}` artifact {} follows contract v{}",
                            a.artifact_type, a.artifact_id, a.contract_version
                        )
                    })
                    .map_err(|m| {
                        Violation(format!(
                            "artifact {} of node run {}: {m}",
                            a.artifact_id, a.node_run_id
                        ))
                    });
                self.judge(
                    checkers::CONTRACT,
                    run,
                    &at,
                    Some(a.node_run_id),
                    subject.clone(),
                    contract,
                );

                let node = self.node(a.node_run_id, run, &a.node_id, stream);
                node.artifacts += 1;
                let verdict = if node.scheduled_version.is_none() {
                    Some(format!(
                        "artifact {} is for node run {}, which was never scheduled",
                        a.artifact_id, a.node_run_id
                    ))
                } else if node.artifacts > 1 {
                    Some(format!(
                        "node run {} of `{}` has a second artifact ({})",
                        a.node_run_id, a.node_id, a.artifact_id
                    ))
                } else if node.ended_status.is_none() {
                    Some(format!(
                        "artifact {} was recorded before node run {} of `{}` ended",
                        a.artifact_id, a.node_run_id, a.node_id
                    ))
                } else {
                    None
                };
                match verdict {
                    Some(message) => self.judge(
                        checkers::ONE_ARTIFACT,
                        run,
                        &at,
                        Some(a.node_run_id),
                        subject,
                        Err(Violation(message)),
                    ),
                    None => {
                        self.artifact_in_tx.insert(a.node_run_id, at);
                    }
                }
            }
            DomainEvent::RoutingDecided(e) => {
                let verdict = self
                    .flowchart(run)
                    .and_then(|fc| checkers::check_routing(&fc, e))
                    .map(|()| format!("decision `{}` fires only its own connectors", e.node_id))
                    .map_err(|m| Violation(format!("node run {}: {m}", e.node_run_id)));
                self.judge(
                    checkers::ROUTING,
                    run,
                    &at,
                    Some(e.node_run_id),
                    subject,
                    verdict,
                );
            }
            _ => {}
        }
    }

    /// A node run's terminal event; judged at the end of its transaction.
    fn end(
        &mut self,
        event: &RecordedEvent,
        run: RunId,
        id: NodeRunId,
        node_id: &str,
        status: NodeRunStatus,
    ) {
        let node = self.node(id, run, node_id, event.stream_id.as_str());
        if node.ended_status.is_some() {
            return;
        }
        node.ended_status = Some(status_name(status).to_owned());
        node.ended_version = Some(event.stream_version);
        node.ended_position = Some(event.position.global);
        node.ended_event = Some(event.event_type.clone());
        self.ended_in_tx.push(id);
    }

    /// Judges what could only be judged once the whole ledger transaction was seen.
    fn end_of_transaction(&mut self) {
        let ended = std::mem::take(&mut self.ended_in_tx);
        let artifacts = std::mem::take(&mut self.artifact_in_tx);
        for id in ended {
            let Some(node) = self.node_runs.get(&id).map(|e| e.row.clone()) else {
                continue;
            };
            let Some(end) = node.ended_ref() else {
                continue;
            };
            let subject = format!("{}:{id}", end.global_position);
            let one = if node.scheduled_version.is_none() {
                Some(Err(Violation(format!(
                    "node run {id} of `{}` ended with {} but was never scheduled",
                    node.node_id, end.event_type
                ))))
            } else {
                match node.artifacts {
                    0 => Some(Err(Violation(format!(
                        "node run {id} of `{}` ended with {} but has no ArtifactPersisted",
                        node.node_id, end.event_type
                    )))),
                    1 => Some(Ok(format!(
                        "node run {id} of `{}` ended with {} and one artifact",
                        node.node_id, end.event_type
                    ))),
                    // Judged when the extra artifact arrived.
                    _ => None,
                }
            };
            if let Some(verdict) = one {
                let at = match (&verdict, artifacts.get(&id)) {
                    (Ok(_), Some(artifact)) => artifact.clone(),
                    _ => end.clone(),
                };
                self.judge(
                    checkers::ONE_ARTIFACT,
                    node.run_id,
                    &at,
                    Some(id),
                    subject.clone(),
                    verdict,
                );
            }
            if node.frontier {
                let success = matches!(
                    node.ended_status.as_deref(),
                    Some("succeeded" | "success_with_warning")
                );
                let verdict = if node.scripted_provider_calls > 0 {
                    Err(Violation(format!(
                        "frontier node run {id} of `{}` called the scripted model {} time(s)",
                        node.node_id, node.scripted_provider_calls
                    )))
                } else if success && node.http_provider_calls == 0 {
                    Err(Violation(format!(
                        "frontier node run {id} of `{}` succeeded without any provider call",
                        node.node_id
                    )))
                } else {
                    Ok(format!(
                        "frontier node run {id} of `{}` made {} HTTP provider call(s)",
                        node.node_id, node.http_provider_calls
                    ))
                };
                self.judge(
                    checkers::FRONTIER,
                    node.run_id,
                    &end,
                    Some(id),
                    subject,
                    verdict,
                );
            }
        }
        for (run, at) in std::mem::take(&mut self.runs_ended_in_tx) {
            let mut open: Vec<NodeRunRow> = self
                .node_runs
                .values()
                .filter(|e| {
                    e.row.run_id == run
                        && e.row.ended_status.is_none()
                        && e.row.scheduled_version.is_some()
                })
                .map(|e| e.row.clone())
                .collect();
            open.sort_by_key(|n| n.scheduled_version);
            for node in open {
                let Some(scheduled) = node.scheduled_ref() else {
                    continue;
                };
                let message = format!(
                    "node run {} of `{}` never ended and has no artifact, yet the run ended ({} at version {})",
                    node.node_run_id, node.node_id, at.event_type, at.stream_version
                );
                let subject = format!("{}:{}:open", at.global_position, node.node_run_id);
                self.judge(
                    checkers::ONE_ARTIFACT,
                    run,
                    &scheduled,
                    Some(node.node_run_id),
                    subject,
                    Err(Violation(message)),
                );
            }
        }
    }

    async fn write(self, tx: &mut PgConnection) -> Result<(), ApplyError> {
        let runs = dirty_sorted(self.runs, |r| r.run_id);
        let node_runs = dirty_sorted(self.node_runs, |n| n.node_run_id);
        let mut tallies: Vec<TallyRow> = self
            .tallies
            .into_values()
            .filter(|e| e.dirty)
            .map(|e| e.row)
            .collect();
        tallies.sort_by(|a, b| (&a.checker, a.run_id).cmp(&(&b.checker, b.run_id)));
        write_rows(&mut *tx, UPSERT_RUNS, &runs).await?;
        write_rows(&mut *tx, UPSERT_NODE_RUNS, &node_runs).await?;
        write_rows(&mut *tx, UPSERT_TALLIES, &tallies).await?;
        write_rows(&mut *tx, INSERT_EVIDENCE, &self.evidence).await?;
        Ok(())
    }

    async fn write_sqlite(self, tx: &mut SqliteConnection) -> Result<(), ApplyError> {
        for r in dirty_sorted(self.runs, |r| r.run_id) {
            sqlx::query(SQLITE_PUT_RUN)
                .bind(r.run_id.to_string())
                .bind(doc(&r)?)
                .execute(&mut *tx)
                .await?;
        }
        for n in dirty_sorted(self.node_runs, |n| n.node_run_id) {
            sqlx::query(SQLITE_PUT_NODE_RUN)
                .bind(n.node_run_id.to_string())
                .bind(n.run_id.to_string())
                .bind(n.ended_status.is_none())
                .bind(doc(&n)?)
                .execute(&mut *tx)
                .await?;
        }
        for t in self
            .tallies
            .into_values()
            .filter(|e| e.dirty)
            .map(|e| e.row)
        {
            sqlx::query(SQLITE_PUT_TALLY)
                .bind(t.run_id.to_string())
                .bind(&t.checker)
                .bind(t.checked as i64)
                .bind(t.violations as i64)
                .bind(doc(&t)?)
                .execute(&mut *tx)
                .await?;
        }
        for e in &self.evidence {
            sqlx::query(SQLITE_INSERT_EVIDENCE)
                .bind(e.checker)
                .bind(e.verdict)
                .bind(&e.subject)
                .bind(e.run_id.to_string())
                .bind(e.global_position as i64)
                .bind(doc(e)?)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

fn dirty_sorted<K, T, O: Ord>(entries: HashMap<K, Entry<T>>, key: impl Fn(&T) -> O) -> Vec<T> {
    let mut rows: Vec<T> = entries
        .into_values()
        .filter(|e| e.dirty)
        .map(|e| e.row)
        .collect();
    rows.sort_by_key(|r| key(r));
    rows
}
