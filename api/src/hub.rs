//! One ledger follower per process: it reads the ledger once, in commit-safe order, from its
//! end when the server starts, and hands every event to the live-event streams (a broadcast
//! channel) and to the metrics. Before, each SSE client scanned the ledger on every append
//! (one `read_all` per client per wake-up); now clients share this one read and only read the
//! ledger themselves to catch up (a resumed or per-run stream, or a client that fell behind).
//!
//! The follower is woken by the ledger's NOTIFY (`live::start_listener`) and polls as a
//! backstop; it ends once the server's state is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use runledger_contracts::envelope::RecordedEvent;
use runledger_ledger::{EventStore, LedgerStore};
use tokio::sync::{Notify, broadcast};

use crate::metrics::Metrics;

/// Events read per round trip.
const PAGE: usize = 500;

/// Events a stream may fall behind the follower before it must catch up by reading the
/// ledger itself.
const CHANNEL_CAPACITY: usize = 8_192;

/// The shared follower's channel.
pub struct LedgerHub {
    sender: broadcast::Sender<Arc<RecordedEvent>>,
    started: AtomicBool,
}

impl Default for LedgerHub {
    fn default() -> Self {
        Self::new()
    }
}

impl LedgerHub {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            sender,
            started: AtomicBool::new(false),
        }
    }

    /// Every event the follower reads from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RecordedEvent>> {
        self.sender.subscribe()
    }

    /// Starts the follower (once): from the ledger's end below the read horizon, woken by
    /// `appended`, polling every `poll`. It stops when `appended` is dropped with the state.
    pub fn start(
        &self,
        store: LedgerStore,
        appended: Weak<Notify>,
        metrics: Arc<Metrics>,
        poll: Duration,
    ) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let sender = self.sender.clone();
        tokio::spawn(follow(store, sender, appended, metrics, poll));
    }
}

/// Longest wait between two reads of an idle ledger (NOTIFY wakes the follower sooner).
const IDLE_POLL: Duration = Duration::from_secs(5);

async fn follow(
    store: LedgerStore,
    sender: broadcast::Sender<Arc<RecordedEvent>>,
    appended: Weak<Notify>,
    metrics: Arc<Metrics>,
    poll: Duration,
) {
    let mut position = loop {
        match store.horizon_position().await {
            Ok(position) => break position,
            Err(e) => {
                tracing::warn!(error = %e, "ledger follower: cannot find the ledger's end; retrying");
                if appended.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(poll * 5).await;
            }
        }
    };
    // Short after a wake-up or new events (an append may still be above the read horizon),
    // doubling while nothing happens: an idle server costs a read every IDLE_POLL, not every
    // `poll`.
    let mut wait = poll;
    loop {
        let Some(notify) = appended.upgrade() else {
            return;
        };
        // Armed before the read, so an append that commits meanwhile still wakes us.
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match store.read_all(position, PAGE).await {
            Ok(page) => {
                let full = page.events.len() == PAGE;
                if !page.events.is_empty() {
                    wait = poll;
                }
                for event in page.events {
                    metrics.observe_event(&event);
                    // No subscriber is fine: the metrics still count.
                    let _ = sender.send(Arc::new(event));
                }
                position = page.checkpoint;
                if !full {
                    tokio::select! {
                        _ = &mut woken => wait = poll,
                        _ = tokio::time::sleep(wait) => wait = (wait * 2).min(IDLE_POLL.max(poll)),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ledger follower: reading the ledger failed; retrying");
                tokio::time::sleep(poll * 5).await;
            }
        }
    }
}
