//! Group commit across runs: the drivers' step appends that are ready together share one
//! database transaction ([`EventStore::append_batch`]), each still fenced by its own expected
//! version and deduplicated by its own request id.
//!
//! There is no committer task and no linger: a driver that appends queues its request, and if
//! fewer than `max_in_flight` commits are under way it takes the whole queue and writes it
//! itself, at once (a lone run pays no hop and no wait). While those commits are under way,
//! other drivers' requests queue up; whoever finishes a commit takes what queued meanwhile
//! (on a task of its own, so its driver is not held up) and writes it as the next batch. So
//! the batch size follows the load: one under a single run, many under many runs.

use std::sync::{Arc, Mutex};

use runledger_ledger::{AppendOutcome, EventStore, StoreError, StreamAppend};
use tokio::sync::oneshot;

/// How many group commits may run at once, and how big each may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// `false`: every step is its own append, as before group commit.
    pub enabled: bool,
    /// Concurrent commits (each holds a connection of the pool for its transaction).
    pub max_in_flight: usize,
    /// Most appends in one transaction.
    pub max_batch: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_in_flight: 3,
            max_batch: 128,
        }
    }
}

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;
type Outcome = oneshot::Receiver<Result<AppendOutcome, StoreError>>;
/// A commit slot and the batch its holder must write.
type Lead = Option<(Slot, Vec<Queued>)>;

/// One queued append and where its outcome goes.
pub(crate) struct Queued {
    item: StreamAppend,
    reply: Reply,
}

struct Queue {
    waiting: Vec<Queued>,
    flushing: usize,
}

/// The queue of appends waiting for a commit, shared by an engine's drivers.
pub(crate) struct GroupCommit {
    config: GroupCommitConfig,
    queue: Mutex<Queue>,
}

/// A commit slot taken by [`GroupCommit::enqueue`]; handed back when dropped, so a flush that
/// is cancelled or panics cannot keep the slot for ever. Its waiters' replies are dropped with
/// it, which their callers see as a transient failure and retry.
pub(crate) struct Slot {
    owner: Arc<GroupCommit>,
    released: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(mut q) = self.owner.queue.lock() {
            q.flushing = q.flushing.saturating_sub(1);
        }
    }
}

impl GroupCommit {
    pub(crate) fn new(config: GroupCommitConfig) -> Self {
        Self {
            config: GroupCommitConfig {
                max_in_flight: config.max_in_flight.max(1),
                max_batch: config.max_batch.max(1),
                ..config
            },
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                flushing: 0,
            }),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Queues an append. Returns where its outcome will arrive, and, when a commit slot was
    /// free, the slot and the batch the caller must now write (its own append among them).
    pub(crate) fn enqueue(self: &Arc<Self>, item: StreamAppend) -> (Outcome, Lead) {
        let (reply, outcome) = oneshot::channel();
        let Ok(mut q) = self.queue.lock() else {
            let _ = reply.send(Err(StoreError::InvalidRequest(
                "the group commit queue is poisoned".into(),
            )));
            return (outcome, None);
        };
        q.waiting.push(Queued { item, reply });
        if q.flushing >= self.config.max_in_flight {
            return (outcome, None);
        }
        q.flushing += 1;
        let batch = self.take(&mut q);
        (
            outcome,
            Some((
                Slot {
                    owner: Arc::clone(self),
                    released: false,
                },
                batch,
            )),
        )
    }

    /// After a commit: the next batch to write with the same slot, or `None` when nothing
    /// queued meanwhile. The slot is handed back under the same lock that found the queue
    /// empty, so an append queued right after finds the slot free and writes itself.
    pub(crate) fn next_batch(slot: &mut Slot) -> Option<Vec<Queued>> {
        let this = Arc::clone(&slot.owner);
        let mut q = this.queue.lock().ok()?;
        if q.waiting.is_empty() {
            q.flushing = q.flushing.saturating_sub(1);
            slot.released = true;
            return None;
        }
        Some(this.take(&mut q))
    }

    fn take(&self, q: &mut Queue) -> Vec<Queued> {
        let n = q.waiting.len().min(self.config.max_batch);
        q.waiting.drain(..n).collect()
    }
}

/// Writes one batch and answers each of its appends.
pub(crate) async fn write<S: EventStore>(store: &S, batch: Vec<Queued>) {
    let (items, replies): (Vec<StreamAppend>, Vec<Reply>) =
        batch.into_iter().map(|q| (q.item, q.reply)).unzip();
    let outcomes = store.append_batch(items).await;
    for (outcome, reply) in outcomes.into_iter().zip(replies) {
        let _ = reply.send(outcome);
    }
}

/// The outcome of a queued append whose reply was dropped (its flush was cancelled): a
/// transient failure, so the step is retried after a reload.
pub(crate) fn lost() -> StoreError {
    StoreError::interrupted()
}
