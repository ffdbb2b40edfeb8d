//! The catch-up outbox: the safety net under the dispatch hot path.
//!
//! The engine publishes a dispatch right after the commit that schedules a remote node run.
//! A crash between that commit and the publish leaves a node run scheduled and never sent.
//! The outbox reads the ledger in its horizon-safe order (`EventStore::read_all`, so it never
//! skips an event that commits late), remembers remote node runs that were scheduled but not
//! yet dispatched, and after a grace period republishes them with the same `Nats-Msg-Id`
//! (the stream's duplicate window absorbs a copy the hot path did send) and hands the
//! `Dispatched` report to the engine, which records `NodeDispatched` through the run's driver.
//! Its checkpoint and pending set are one row, written after each pass.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use runledger_contracts::envelope::Position;
use runledger_contracts::events::DomainEvent;
use runledger_contracts::ids::{NodeRunId, RunId};
use runledger_contracts::time::Timestamp;
use runledger_ledger::{EventStore, PgEventStore};
use runledger_orchestrator::decide::add_ms;
use runledger_orchestrator::engine::{Engine, load_run};
use runledger_orchestrator::executor::{Delivery, Report, remote_work};
use runledger_orchestrator::state::Phase;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::watch;

use crate::dispatcher::ClassOf;
use crate::messages::{DispatchMessage, WIRE_VERSION, dispatch_message_id, publish};
use crate::topology::Topology;

const NAME: &str = "dispatch";
const PAGE: usize = 1000;

#[derive(Clone)]
pub struct OutboxConfig {
    pub topology: Topology,
    pub class_of: ClassOf,
    pub dispatch_timeout: Duration,
    /// A node run scheduled longer ago than this without a `NodeDispatched` is republished.
    pub grace: Duration,
    /// Time between passes.
    pub interval: Duration,
}

/// A remote node run scheduled and not yet seen dispatched, started or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    run_id: RunId,
    node_run_id: NodeRunId,
    scheduled_at: Timestamp,
}

/// What one pass did, for tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub events_read: usize,
    pub republished: usize,
    pub pending: usize,
}

pub struct Outbox {
    engine: Engine<PgEventStore>,
    js: jetstream::Context,
    config: OutboxConfig,
    position: Position,
    pending: BTreeMap<NodeRunId, Pending>,
}

impl Outbox {
    /// Loads the checkpoint and pending set (a fresh ledger starts at its beginning).
    pub async fn load(
        engine: Engine<PgEventStore>,
        js: jetstream::Context,
        config: OutboxConfig,
    ) -> Result<Self, sqlx::Error> {
        let row = sqlx::query("SELECT tx_id::text AS tx, global_position, pending::text AS pending FROM dispatch_outbox WHERE name = $1")
            .bind(NAME)
            .fetch_optional(engine.store().pool())
            .await?;
        let (position, pending) = match row {
            Some(row) => {
                let tx: String = row.try_get("tx")?;
                let global: i64 = row.try_get("global_position")?;
                let pending: String = row.try_get("pending")?;
                let list: Vec<Pending> = serde_json::from_str(&pending).unwrap_or_default();
                let position = Position {
                    commit: tx.parse().unwrap_or(0),
                    global: u64::try_from(global).unwrap_or(0),
                };
                (
                    position,
                    list.into_iter().map(|p| (p.node_run_id, p)).collect(),
                )
            }
            None => (Position::START, BTreeMap::new()),
        };
        Ok(Self {
            engine,
            js,
            config,
            position,
            pending,
        })
    }

    /// Passes until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "dispatch outbox pass failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Reads what committed since the checkpoint, republishes overdue node runs, and saves
    /// the checkpoint.
    pub async fn pass(&mut self) -> Result<PassStats, String> {
        let mut stats = PassStats::default();
        loop {
            let page = self
                .engine
                .store()
                .read_all(self.position, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            stats.events_read += page.events.len();
            for event in &page.events {
                self.observe(event);
            }
            self.position = page.checkpoint;
            if page.events.len() < PAGE {
                break;
            }
        }
        let overdue_before = Timestamp::now()
            .unix_micros()
            .saturating_sub(i64::try_from(self.config.grace.as_micros()).unwrap_or(i64::MAX));
        let overdue: Vec<Pending> = self
            .pending
            .values()
            .filter(|p| p.scheduled_at.unix_micros() <= overdue_before)
            .cloned()
            .collect();
        for p in overdue {
            if self.republish(&p).await? {
                stats.republished += 1;
            }
            self.pending.remove(&p.node_run_id);
        }
        stats.pending = self.pending.len();
        self.save().await.map_err(|e| e.to_string())?;
        Ok(stats)
    }

    fn observe(&mut self, event: &runledger_contracts::envelope::RecordedEvent) {
        // Only these types can change what is pending; skip decoding every other payload.
        const RELEVANT: &[&str] = &[
            "NodeScheduled",
            "NodeDispatched",
            "NodeStarted",
            "NodeSucceeded",
            "NodeFailed",
            "NodeTimedOut",
            "NodeCanceled",
            "NodeSkipped",
        ];
        if !event.stream_id.as_str().starts_with("run-")
            || !RELEVANT.contains(&event.event_type.as_str())
        {
            return;
        }
        let Ok(decoded) = event.decode() else { return };
        match decoded {
            DomainEvent::NodeScheduled(e) if remote_work(e.node_type) => {
                self.pending.insert(
                    e.node_run_id,
                    Pending {
                        run_id: e.run_id,
                        node_run_id: e.node_run_id,
                        scheduled_at: event.recorded_at,
                    },
                );
            }
            DomainEvent::NodeDispatched(e) => drop(self.pending.remove(&e.node_run_id)),
            DomainEvent::NodeStarted(e) => drop(self.pending.remove(&e.node_run_id)),
            DomainEvent::NodeSucceeded(e) => drop(self.pending.remove(&e.node_run_id)),
            DomainEvent::NodeFailed(e) => drop(self.pending.remove(&e.node_run_id)),
            DomainEvent::NodeTimedOut(e) => drop(self.pending.remove(&e.node_run_id)),
            DomainEvent::NodeCanceled(e) => drop(self.pending.remove(&e.node_run_id)),
            DomainEvent::NodeSkipped(e) => drop(self.pending.remove(&e.node_run_id)),
            _ => {}
        }
    }

    /// Publishes the node run's dispatch if the run still waits for it. Returns whether it did.
    async fn republish(&self, p: &Pending) -> Result<bool, String> {
        let loaded = match load_run(self.engine.store(), p.run_id).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(run_id = %p.run_id, error = %e, "outbox cannot load a run; skipping its node run");
                return Ok(false);
            }
        };
        let state = &loaded.state;
        let Some(i) = state.node_run_index(&p.node_run_id) else {
            return Ok(false);
        };
        let nr = &state.node_runs[i];
        if state.status.is_terminal() || nr.phase != Phase::Scheduled || nr.dispatched {
            return Ok(false);
        }
        let Some(work) = state.work(i) else {
            return Ok(false);
        };
        let class = (self.config.class_of)(&work.node).await;
        let message_id = dispatch_message_id(work.run_id, work.node_run_id, work.attempt);
        let attempt = work.attempt;
        let timeout_ms =
            u64::try_from(self.config.dispatch_timeout.as_millis()).unwrap_or(u64::MAX);
        let message = DispatchMessage {
            wire_version: WIRE_VERSION,
            executor_class: class.clone(),
            not_after: Some(add_ms(Timestamp::now(), timeout_ms)),
            work,
        };
        let payload = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        let subject = self.config.topology.dispatch_subject(&class);
        let sequence = publish(&self.js, subject, &message_id, payload)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(run_id = %p.run_id, node_run_id = %p.node_run_id, "outbox republished an unpublished dispatch");
        let report = Report::Dispatched {
            node_run_id: p.node_run_id,
            attempt,
            executor_class: class,
            message_id,
            stream_sequence: Some(sequence),
        };
        self.engine
            .deliver(Delivery {
                run_id: p.run_id,
                report,
                message_id: None,
                recorded: None,
            })
            .await;
        Ok(true)
    }

    async fn save(&self) -> Result<(), sqlx::Error> {
        let pending: Vec<&Pending> = self.pending.values().collect();
        let pending = serde_json::to_string(&pending).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(
            "INSERT INTO dispatch_outbox (name, tx_id, global_position, pending, updated_at)
             VALUES ($1, $2::text::xid8, $3, $4::jsonb, now())
             ON CONFLICT (name) DO UPDATE
               SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position,
                   pending = EXCLUDED.pending, updated_at = now()",
        )
        .bind(NAME)
        .bind(self.position.commit.to_string())
        .bind(i64::try_from(self.position.global).unwrap_or(i64::MAX))
        .bind(pending)
        .execute(self.engine.store().pool())
        .await?;
        Ok(())
    }
}
