//! Group commit ([`EventStore::append_batch`]): independent appends, usually to the streams of
//! different runs, written in one transaction so they share one commit, each with its own
//! outcome.
//!
//! Each item runs the single-append statement inside the shared transaction, in stream-id
//! order (two batches touching the same streams lock in the same order and cannot deadlock),
//! at most one item per stream per round (a second item of a stream waits for the next round,
//! so it chains from the first). The common path is BEGIN, one statement per item, COMMIT.
//! A statement that is rejected (a concurrent writer, a reused request id) or fails aborts the
//! transaction: it is rolled back, that one item gets its own answer outside the transaction
//! exactly as `append` would give it (deduplicated, `RequestMismatch`, `Conflict`, or the
//! error), and the rest are written in the next round. Nothing of a rolled-back round counts:
//! heads are remembered only after a commit.
//!
//! [`EventStore::append_batch`]: crate::EventStore::append_batch

use std::collections::HashSet;

use super::{Attempt, PgEventStore, Prepared, db_err, recorded_events};
use crate::{AppendOutcome, EventStore, ExpectedVersion, StoreError, StreamAppend};

/// Rounds before the items still pending are appended one by one. A round commits, or sets
/// aside at least one item, so this bounds only pathological cases (a database failing the
/// whole transaction again and again).
const MAX_ROUNDS: usize = 8;

type Outcome = Result<AppendOutcome, StoreError>;

/// Why a round stopped before its commit.
enum SetAside {
    /// The item's statement wrote nothing (a stale head, a concurrent writer, a request id
    /// seen before): decided outside the transaction, as `append` does.
    Rejected { expected: u64 },
    /// The item's statement failed; the error is that item's answer.
    Failed(StoreError),
}

impl PgEventStore {
    pub(super) async fn append_group(&self, items: Vec<StreamAppend>) -> Vec<Outcome> {
        if items.len() <= 1 {
            let mut out = Vec::with_capacity(1);
            for item in items {
                out.push(self.append(&item.stream, item.expected, item.request).await);
            }
            return out;
        }
        let n = items.len();
        let mut results: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
        let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(n);
        for (i, item) in items.iter().enumerate() {
            let checked = match crate::prepare::prepare(&item.request) {
                Ok(p) => self.check_blob_refs(&item.request, &p).await.map(|()| p),
                Err(e) => Err(e),
            };
            match checked {
                Ok(p) => prepared.push(Some(p)),
                Err(e) => {
                    results[i] = Some(Err(e));
                    prepared.push(None);
                }
            }
        }
        let mut items: Vec<Option<StreamAppend>> = items.into_iter().map(Some).collect();
        for round in 0.. {
            let mut streams = HashSet::new();
            let mut pending: Vec<usize> = (0..n)
                .filter(|&i| results[i].is_none())
                .filter(|&i| {
                    items[i]
                        .as_ref()
                        .is_some_and(|it| streams.insert(it.stream.clone()))
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            // `Any` re-reads heads in a loop of its own; a lone item needs no transaction;
            // after MAX_ROUNDS the database is in trouble and each item gets its own try.
            let alone: Vec<usize> = if round >= MAX_ROUNDS || pending.len() == 1 {
                std::mem::take(&mut pending)
            } else {
                let (any, rest): (Vec<usize>, Vec<usize>) = pending.into_iter().partition(|&i| {
                    items[i]
                        .as_ref()
                        .is_some_and(|it| it.expected == ExpectedVersion::Any)
                });
                pending = rest;
                any
            };
            for i in alone {
                if let Some(item) = items[i].take() {
                    results[i] = Some(self.append(&item.stream, item.expected, item.request).await);
                }
            }
            pending.sort_by(|&a, &b| {
                let stream = |i: usize| items[i].as_ref().map(|it| it.stream.as_str().to_owned());
                stream(a).cmp(&stream(b))
            });
            self.round(&mut items, &prepared, &mut results, pending)
                .await;
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(StoreError::Corrupt(
                        "append_batch left an item without an outcome".into(),
                    ))
                })
            })
            .collect()
    }

    /// One transaction over `pending` (sorted by stream): commits them all, or sets aside the
    /// first item that could not be written and answers it.
    async fn round(
        &self,
        items: &mut [Option<StreamAppend>],
        prepared: &[Option<Prepared>],
        results: &mut [Option<Outcome>],
        pending: Vec<usize>,
    ) {
        let mut heads = Vec::with_capacity(pending.len());
        for i in pending {
            let (Some(item), Some(p)) = (items[i].as_ref(), prepared[i].as_ref()) else {
                continue;
            };
            match self.head_for(&item.stream, item.expected).await {
                Err(e) => results[i] = Some(Err(e)),
                Ok(head) => {
                    let want = item.expected.as_version().unwrap_or(head.0);
                    if head.0 == want {
                        heads.push((i, head));
                    } else {
                        results[i] = Some(
                            self.resolve_rejected(
                                &item.stream,
                                &item.request,
                                &p.fingerprint,
                                want,
                            )
                            .await,
                        );
                    }
                }
            }
        }
        if heads.is_empty() {
            return;
        }
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                // No transaction to share: the first item carries the error, the others are
                // tried again in the next round.
                results[heads[0].0] = Some(Err(db_err(e)));
                return;
            }
        };
        let mut written = Vec::with_capacity(heads.len());
        let mut set_aside = None;
        for &(i, (version, hash)) in &heads {
            let (Some(item), Some(p)) = (items[i].as_ref(), prepared[i].as_ref()) else {
                continue;
            };
            match self
                .try_append(&mut *tx, &item.stream, version, hash, &item.request, p)
                .await
            {
                Ok(Attempt::Written {
                    recorded_at,
                    first_version,
                    assigned,
                }) => written.push((i, recorded_at, first_version, assigned)),
                Ok(Attempt::Rejected) => {
                    set_aside = Some((i, SetAside::Rejected { expected: version }));
                    break;
                }
                Err(e) => {
                    set_aside = Some((i, SetAside::Failed(e)));
                    break;
                }
            }
        }
        if let Some((i, why)) = set_aside {
            let _ = tx.rollback().await;
            results[i] = Some(match why {
                SetAside::Failed(e) => Err(e),
                SetAside::Rejected { expected } => {
                    match (items[i].as_ref(), prepared[i].as_ref()) {
                        (Some(item), Some(p)) => {
                            self.resolve_rejected(
                                &item.stream,
                                &item.request,
                                &p.fingerprint,
                                expected,
                            )
                            .await
                        }
                        _ => Err(StoreError::Corrupt("a batch item vanished".into())),
                    }
                }
            });
            return;
        }
        if let Err(e) = tx.commit().await {
            // Whether the commit happened is unknown: each item is appended again on its own,
            // which its request id makes safe (a committed one comes back deduplicated).
            tracing::warn!(error = %e, items = written.len(), "group commit failed; appending its items one by one");
            for (i, ..) in written {
                if let Some(item) = items[i].take() {
                    results[i] = Some(self.append(&item.stream, item.expected, item.request).await);
                }
            }
            return;
        }
        for (i, recorded_at, first_version, assigned) in written {
            let Some(item) = items[i].take() else {
                continue;
            };
            if let Some(last) = assigned.last() {
                self.remember_head(
                    &item.stream,
                    first_version - 1 + assigned.len() as u64,
                    last.hash,
                );
            }
            let events = recorded_events(
                &item.stream,
                item.request,
                recorded_at,
                first_version,
                assigned,
            );
            results[i] = Some(Ok(AppendOutcome {
                events,
                deduplicated: false,
            }));
        }
    }
}
