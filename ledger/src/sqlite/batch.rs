//! Group commit on SQLite ([`EventStore::append_batch`]): independent appends, usually to the
//! streams of different runs, written in one write transaction so they share one commit (one
//! fsync of the WAL), each with its own outcome.
//!
//! The transaction holds the write lock from its first statement on, so every item runs the
//! single-append checks ([`append_locked`]) in item order with nothing to race: an item that
//! names a stream an earlier item wrote chains from it. Each item runs inside a savepoint: an
//! item refused for its own reasons (`Conflict`, `RequestMismatch`, a missing blob) is rolled
//! back to its savepoint and answered, and the others stay written. A database error may have
//! ended the whole transaction (SQLite rolls back on I/O errors and the like), so then nothing
//! of it counts and every unanswered item is appended again on its own. Likewise when the
//! commit fails: whether it happened is unknown, and each item's request id makes the retry
//! safe (a committed one comes back deduplicated).
//!
//! [`EventStore::append_batch`]: crate::EventStore::append_batch

use sqlx::SqliteConnection;

use super::{SqliteEventStore, Step, append_locked, db_err, next_tx_id};
use crate::prepare::{Prepared, prepare, recorded_events};
use crate::{AppendOutcome, EventStore, StoreError, StreamAppend};

type Outcome = Result<AppendOutcome, StoreError>;

/// What one item came to inside the shared transaction.
enum Inside {
    /// Written, pending the commit.
    Written(Step),
    /// Answered already (a repeated request, or refused and rolled back to its savepoint).
    Answered(Outcome),
}

impl SqliteEventStore {
    pub(super) async fn append_group(&self, items: Vec<StreamAppend>) -> Vec<Outcome> {
        if items.len() <= 1 {
            return self.one_by_one(items).await;
        }
        let prepared: Vec<Result<Prepared, StoreError>> =
            items.iter().map(|item| prepare(&item.request)).collect();
        let mut tx = match self.begin_write().await {
            Ok(tx) => tx,
            Err(_) => return self.one_by_one(items).await,
        };
        let tx_id = match next_tx_id(&mut tx).await {
            Ok(id) => id,
            Err(_) => {
                let _ = tx.rollback().await;
                return self.one_by_one(items).await;
            }
        };
        let mut inside: Vec<Inside> = Vec::with_capacity(items.len());
        let mut broken = false;
        for (item, prepared) in items.iter().zip(prepared) {
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    inside.push(Inside::Answered(Err(e)));
                    continue;
                }
            };
            match self.item_locked(&mut tx, tx_id, item, &prepared).await {
                Ok(done) => inside.push(done),
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            let _ = tx.rollback().await;
            return self.one_by_one(items).await;
        }
        if let Err(e) = tx.commit().await {
            tracing::warn!(error = %e, items = items.len(), "group commit failed; appending its items one by one");
            return self.one_by_one(items).await;
        }
        items
            .into_iter()
            .zip(inside)
            .map(|(item, done)| match done {
                Inside::Answered(outcome) => outcome,
                Inside::Written(Step::Written {
                    recorded_at,
                    first_version,
                    assigned,
                }) => Ok(AppendOutcome {
                    events: recorded_events(
                        &item.stream,
                        item.request,
                        recorded_at,
                        first_version,
                        assigned,
                    ),
                    deduplicated: false,
                }),
                Inside::Written(Step::Repeated(events)) => Ok(AppendOutcome {
                    events,
                    deduplicated: true,
                }),
            })
            .collect()
    }

    /// One item in its savepoint. `Err` only for a database error, which may have ended the
    /// whole transaction; the item's own refusals are `Ok(Inside::Answered(Err(..)))`.
    async fn item_locked(
        &self,
        conn: &mut SqliteConnection,
        tx_id: i64,
        item: &StreamAppend,
        prepared: &Prepared,
    ) -> Result<Inside, StoreError> {
        savepoint(conn, "SAVEPOINT batch_item").await?;
        let step = append_locked(
            &mut *conn,
            &self.clock,
            tx_id,
            &item.stream,
            item.expected,
            &item.request,
            prepared,
        )
        .await;
        match step {
            Ok(step @ Step::Written { .. }) => {
                savepoint(conn, "RELEASE batch_item").await?;
                Ok(Inside::Written(step))
            }
            Ok(Step::Repeated(events)) => {
                savepoint(conn, "RELEASE batch_item").await?;
                Ok(Inside::Answered(Ok(AppendOutcome {
                    events,
                    deduplicated: true,
                })))
            }
            Err(e @ StoreError::Database(_)) => Err(e),
            Err(refused) => {
                savepoint(conn, "ROLLBACK TO batch_item").await?;
                savepoint(conn, "RELEASE batch_item").await?;
                Ok(Inside::Answered(Err(refused)))
            }
        }
    }

    async fn one_by_one(&self, items: Vec<StreamAppend>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            outcomes.push(self.append(&item.stream, item.expected, item.request).await);
        }
        outcomes
    }
}

async fn savepoint(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(conn).await.map_err(db_err)?;
    Ok(())
}
