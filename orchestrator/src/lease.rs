//! Run ownership: which engine instance drives which run.
//!
//! The engine asks an [`Ownership`] before it drives a run and before it hands work to an
//! executor. [`Solo`] says yes to everything (one engine on its own ledger: tests, benchmarks).
//! [`Leases`] keeps a lease per run in PostgreSQL (`runledger_ledger::leases`): the instance
//! holds a run until its lease expires, renews every lease it holds in one statement every
//! third of the lease time, and [`keep`] picks up runs of the run index that nobody holds
//! (new ones, woken by NOTIFY; those of an instance that died, once their lease expired; those
//! a draining instance handed back). A run that changes hands gets a `RunTakenOver` event
//! (appended by the engine at the ledger version it loaded, so the previous owner's next
//! append fails its version check and it stops). Design: docs/adr/0002-run-leases.md.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger_contracts::ids::RunId;
use runledger_ledger::leases::{Claim, LeaseStore, Wakeup};
use runledger_ledger::{EventStore, StoreError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::Engine;

pub type ClaimFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Claim>, StoreError>> + Send + 'a>>;

/// What the engine asks before it drives a run or dispatches its work.
pub trait Ownership: Send + Sync + 'static {
    /// The instance named in `RunTakenOver`; `None` when runs never change hands.
    fn instance_id(&self) -> Option<&str>;
    /// Takes the run's lease (free, expired, or already ours). `None`: another instance drives
    /// it, or this one takes no runs now (draining, full).
    fn acquire(&self, run_id: RunId) -> ClaimFuture<'_>;
    /// Whether this instance may drive the run right now (its lease has not run out locally).
    fn holds(&self, run_id: RunId) -> bool;
    /// The driver of the run stopped; `wake`: let another instance (or this one) take it now.
    fn release(&self, run_id: RunId, wake: bool);
    /// Tells the run's owner, wherever it runs, that this instance wrote to the run (a late
    /// report, a control on a run it does not drive), so the owner reads it now instead of on
    /// a poll. One engine alone has nobody to tell.
    fn wake_owner(&self, _run_id: RunId) -> WakeFuture<'_> {
        Box::pin(std::future::ready(()))
    }
    /// Whether this instance hears [`Ownership::wake_owner`] from the others (its lease keeper
    /// listens and hands each wake to the run's driver): then an idle driver need not poll its
    /// stream for writes of others.
    fn hears_wakes(&self) -> bool {
        false
    }
}

pub type WakeFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One engine, alone on its ledger: every run is its own.
pub struct Solo;

impl Ownership for Solo {
    fn instance_id(&self) -> Option<&str> {
        None
    }

    fn acquire(&self, run_id: RunId) -> ClaimFuture<'_> {
        Box::pin(async move {
            Ok(Some(Claim {
                run_id,
                epoch: 0,
                previous_owner: None,
                changed_hands: false,
            }))
        })
    }

    fn holds(&self, _: RunId) -> bool {
        true
    }

    fn release(&self, _: RunId, _: bool) {}
}

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Written on `RunTakenOver` and in `engine_instances`.
    pub instance_id: String,
    /// How long a lease lasts without renewal: how long a dead instance's runs wait.
    pub ttl: Duration,
    /// Most runs this instance drives at once; it leaves the rest to other instances.
    pub max_active_runs: usize,
    /// How often to look for runs without an owner when no notification came.
    pub look_interval: Duration,
    /// Whether this instance takes runs it did not start (`serve`: yes; `run --wait`: no).
    pub takes_runs: bool,
}

impl LeaseConfig {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

    /// `<host>-<pid>-<8 hex>`: unique per process, readable in an audit.
    pub fn default_instance_id() -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "engine".to_owned());
        let nonce = &uuid::Uuid::now_v7().simple().to_string()[24..];
        format!("{host}-{}-{nonce}", std::process::id())
    }
}

/// Leases in PostgreSQL. Shared by the engine (through [`Ownership`]) and [`keep`].
pub struct Leases {
    store: LeaseStore,
    config: LeaseConfig,
    /// Runs held: the instant each lease runs out by this process's clock (measured from before
    /// the statement that granted or renewed it, so never later than the database's), and when
    /// the grant was known here (a renewal sent before that may not have seen it).
    held: Mutex<HashMap<RunId, Held>>,
    /// Rows the last renewal found owned by this instance but not in `held`: a grant whose
    /// answer was lost with its connection, or a hand-back that failed. Seen twice, handed back.
    strays: Mutex<HashSet<RunId>>,
    draining: AtomicBool,
    /// [`keep`] is running: it listens for wakes and pokes the drivers.
    listening: AtomicBool,
}

/// What a renewal found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Runs another instance took over (their leases ran out first): no longer driven here.
    pub lost: Vec<RunId>,
    /// Runs whose lease had run out of trust here (renewals failed) and is held again: their
    /// drivers skipped handing out work meanwhile and must look again.
    pub regained: Vec<RunId>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    until: Instant,
    granted: Instant,
}

impl Leases {
    pub fn new(store: LeaseStore, config: LeaseConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            held: Mutex::new(HashMap::new()),
            strays: Mutex::new(HashSet::new()),
            draining: AtomicBool::new(false),
            listening: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    pub fn store(&self) -> &LeaseStore {
        &self.store
    }

    /// How many runs this instance holds.
    pub fn held(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// A lease renewed at `sent` is trusted for nine tenths of its time, leaving a margin for
    /// the database's commit and for clocks that run at slightly different rates.
    fn trusted_until(&self, sent: Instant) -> Instant {
        sent + self.config.ttl.mul_f64(0.9)
    }

    fn note(&self, run_id: RunId, sent: Instant) {
        let until = self.trusted_until(sent);
        if let Ok(mut held) = self.held.lock() {
            held.insert(
                run_id,
                Held {
                    until,
                    granted: Instant::now(),
                },
            );
        }
    }

    /// Stops taking runs; renewals tell the other instances.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn has_room(&self) -> bool {
        self.held() < self.config.max_active_runs
    }

    /// Renews the instance and its leases: which runs it lost, and which it may trust again.
    pub async fn renew(&self) -> Result<Renewal, StoreError> {
        let sent = Instant::now();
        let accepting = self.config.takes_runs && !self.is_draining();
        let kept = self
            .store
            .heartbeat(&self.config.instance_id, self.config.ttl, !accepting)
            .await?;
        let until = self.trusted_until(sent);
        let now = Instant::now();
        let mut renewal = Renewal::default();
        let kept: HashSet<RunId> = kept.into_iter().collect();
        let mut untracked = HashSet::new();
        if let Ok(mut held) = self.held.lock() {
            untracked.extend(kept.iter().filter(|r| !held.contains_key(r)).copied());
            held.retain(|run_id, lease| {
                if kept.contains(run_id) {
                    if lease.until <= now {
                        renewal.regained.push(*run_id);
                    }
                    lease.until = until;
                    true
                } else if lease.granted >= sent {
                    // Granted while this renewal was on its way: it may not have seen it.
                    true
                } else {
                    renewal.lost.push(*run_id);
                    false
                }
            });
        }
        self.hand_back_strays(untracked).await;
        Ok(renewal)
    }

    /// A row this instance owns without driving its run would be renewed by every heartbeat for
    /// as long as the instance lives, and the run would never move again. It happens when a
    /// grant commits but its answer is lost with the connection, or a hand-back fails. Such a
    /// row is handed back once two renewals in a row saw it: a grant whose answer is still on its
    /// way shows up in one renewal at most.
    async fn hand_back_strays(&self, untracked: HashSet<RunId>) {
        let strays: Vec<RunId> = match self.strays.lock() {
            Ok(mut seen) => {
                let twice = untracked.intersection(&seen).copied().collect();
                *seen = untracked;
                twice
            }
            Err(_) => return,
        };
        if strays.is_empty() {
            return;
        }
        match self
            .store
            .release(&self.config.instance_id, &strays, true)
            .await
        {
            Ok(_) => {
                tracing::warn!(runs = ?strays, "handed back leases this instance held without driving their runs");
                if let Ok(mut seen) = self.strays.lock() {
                    seen.retain(|r| !strays.contains(r));
                }
            }
            // Still strays at the next renewal, which tries again.
            Err(e) => {
                tracing::warn!(runs = ?strays, error = %e, "cannot hand back leases held without a driver")
            }
        }
    }

    /// Hands back every lease and leaves the live instances (end of a drained shutdown).
    pub async fn deregister(&self) -> Result<usize, StoreError> {
        let released = self.store.deregister(&self.config.instance_id).await?;
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
        Ok(released)
    }

    async fn claim(&self) -> Result<Vec<Claim>, StoreError> {
        let room = self.config.max_active_runs.saturating_sub(self.held());
        if room == 0 || !self.config.takes_runs || self.is_draining() {
            return Ok(Vec::new());
        }
        let sent = Instant::now();
        let claims = self
            .store
            .claim_unowned(&self.config.instance_id, self.config.ttl, room)
            .await?;
        for claim in &claims {
            self.note(claim.run_id, sent);
        }
        Ok(claims)
    }
}

impl Ownership for Leases {
    fn instance_id(&self) -> Option<&str> {
        Some(&self.config.instance_id)
    }

    fn acquire(&self, run_id: RunId) -> ClaimFuture<'_> {
        Box::pin(async move {
            let already = self
                .held
                .lock()
                .map(|h| h.contains_key(&run_id))
                .unwrap_or(false);
            if !already && (self.is_draining() || !self.has_room()) {
                return Ok(None);
            }
            let sent = Instant::now();
            let claim = self
                .store
                .acquire(&self.config.instance_id, run_id, self.config.ttl)
                .await?;
            if claim.is_some() {
                self.note(run_id, sent);
            }
            Ok(claim)
        })
    }

    fn holds(&self, run_id: RunId) -> bool {
        self.held
            .lock()
            .map(|h| {
                h.get(&run_id)
                    .is_some_and(|lease| Instant::now() < lease.until)
            })
            .unwrap_or(false)
    }

    /// Hands the row back even when the run is no longer in `held` (a renewal that raced the
    /// grant can drop it from the map while the row still names this instance): the statement
    /// only touches a row this instance owns, and a row left owned would be renewed by every
    /// heartbeat for as long as the instance lives.
    fn release(&self, run_id: RunId, wake: bool) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&run_id);
        }
        let store = self.store.clone();
        let instance = self.config.instance_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.release(&instance, &[run_id], wake).await {
                // It expires on its own; only the hand-over is slower.
                tracing::warn!(%run_id, error = %e, "lease not handed back");
            }
        });
    }

    fn wake_owner(&self, run_id: RunId) -> WakeFuture<'_> {
        Box::pin(async move {
            if let Err(e) = self.store.wake_owner(run_id).await {
                // The owner still reads the write before its next append (its version check
                // fails and it reloads), or when its keeper's connection comes back.
                tracing::warn!(%run_id, error = %e, "cannot wake the run's owner");
            }
        })
    }

    fn hears_wakes(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }
}

/// Clears [`Leases::listening`] when [`keep`] ends, however it ends.
struct Listening<'a>(&'a AtomicBool);

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Keeps the instance's leases until `shutdown` turns true: renews them every third of the
/// lease time (stopping the drivers of runs it lost), and takes runs nobody holds when woken
/// by a notification or every `look_interval`. Idle, it costs one small statement per look and
/// one per renewal, however long the ledger.
pub async fn keep<S: EventStore + 'static>(
    leases: Arc<Leases>,
    engine: Engine<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let renew_every = (leases.config.ttl / 3).max(Duration::from_millis(100));
    let mut renew = tokio::time::interval(renew_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look =
        tokio::time::interval(leases.config.look_interval.max(Duration::from_millis(50)));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One listening connection: wakes for runs this instance drives (reports and controls
    // recorded elsewhere) and, when it takes runs, for runs waiting for an owner.
    let mut wakeups = match leases.store.wakeups(leases.config.takes_runs).await {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot LISTEN for wakes; looking every interval only");
            None
        }
    };
    leases.listening.store(true, Ordering::SeqCst);
    let _listening = Listening(&leases.listening);
    loop {
        let woken = async {
            match wakeups.as_mut() {
                Some(w) => w.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = renew.tick() => {
                match leases.renew().await {
                    Ok(renewal) => {
                        for run_id in renewal.lost {
                            tracing::warn!(%run_id, "lease lost to another instance; no longer driving the run");
                            engine.relinquish(run_id);
                        }
                        for run_id in renewal.regained {
                            tracing::info!(%run_id, "lease renewed after renewals failed; handing out the run's waiting work");
                            engine.poke(run_id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed; runs stop dispatching when their leases run out"),
                }
                continue;
            }
            wake = woken => match wake {
                Ok(Wakeup::Run(run_id)) => {
                    engine.poke(run_id);
                    continue;
                }
                Ok(Wakeup::Runs) => {}
                Ok(Wakeup::Lost) | Err(_) => {
                    // Wakes sent while the connection was down are lost: every driver reads
                    // its stream's head once, then the keeper looks for runs.
                    if let Err(e) = wake {
                        tracing::warn!(error = %e, "the wake listener cannot reconnect yet");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    engine.poke_all();
                }
            },
            _ = look.tick() => {
                if wakeups.is_none() {
                    // Nobody tells the drivers about writes of others: they look on each tick.
                    engine.poke_all();
                }
                if !leases.config.takes_runs {
                    continue;
                }
            }
        }
        if leases.config.takes_runs {
            take_unowned(&leases, &engine).await;
        }
    }
}

async fn take_unowned<S: EventStore + 'static>(leases: &Arc<Leases>, engine: &Engine<S>) {
    let claims = match leases.claim().await {
        Ok(claims) => claims,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for runs without an owner");
            return;
        }
    };
    for claim in claims {
        let engine = engine.clone();
        let leases = Arc::clone(leases);
        tokio::spawn(async move {
            let run_id = claim.run_id;
            match engine.adopt(claim).await {
                Ok(()) => {}
                // A run that cannot be rebuilt stays parked here (renewed, not driven) rather
                // than bounce between instances; the error names it.
                Err(e @ crate::engine::EngineError::Corrupt { .. }) => {
                    tracing::error!(%run_id, error = %e, "cannot drive a run taken over");
                }
                Err(e) => {
                    tracing::warn!(%run_id, error = %e, "cannot drive a run taken over yet; handing it back");
                    leases.release(run_id, false);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runledger_ledger::testing::TestLedger;

    /// Instance `engine-a`'s leases (30 s, never looking for runs by itself) on `ledger`.
    fn engine_a(ledger: &TestLedger) -> (LeaseStore, Arc<Leases>) {
        let store = LeaseStore::new(ledger.store.pool().clone());
        let config = LeaseConfig {
            instance_id: "engine-a".into(),
            ttl: Duration::from_secs(30),
            max_active_runs: 10,
            look_interval: Duration::from_secs(3600),
            takes_runs: true,
        };
        (store.clone(), Leases::new(store, config))
    }

    #[tokio::test]
    async fn release_hands_back_a_row_this_instance_owns_but_no_longer_tracks() {
        let ledger = TestLedger::new().await.unwrap();
        let (store, leases) = engine_a(&ledger);
        let run_id = RunId(uuid::Uuid::now_v7());
        // Granted in the database but not noted in `held`, as after a renewal that raced it.
        store
            .acquire("engine-a", run_id, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(!leases.holds(run_id));
        leases.release(run_id, false);
        let mut owner = Some(String::new());
        for _ in 0..100 {
            owner = store.lease_of(run_id).await.unwrap().unwrap().owner;
            if owner.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(owner, None, "the row still names the instance");
        // And the next heartbeat renews nothing.
        assert_eq!(leases.renew().await.unwrap(), Renewal::default());
        assert!(
            store
                .heartbeat("engine-a", Duration::from_secs(30), false)
                .await
                .unwrap()
                .is_empty()
        );
        ledger.drop_schema().await.unwrap();
    }

    /// A grant committed whose answer never arrived (the connection was cut): without a hand
    /// back, every heartbeat renews the row and no instance ever drives the run again.
    #[tokio::test]
    async fn a_row_owned_but_not_driven_is_handed_back_by_the_second_renewal() {
        let ledger = TestLedger::new().await.unwrap();
        let (store, leases) = engine_a(&ledger);
        let driven = RunId(uuid::Uuid::now_v7());
        let lost_answer = RunId(uuid::Uuid::now_v7());
        assert!(leases.acquire(driven).await.unwrap().is_some());
        store
            .acquire("engine-a", lost_answer, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        leases.renew().await.unwrap();
        let owner = store.lease_of(lost_answer).await.unwrap().unwrap().owner;
        assert_eq!(
            owner.as_deref(),
            Some("engine-a"),
            "one sighting is not enough"
        );
        leases.renew().await.unwrap();
        assert_eq!(
            store.lease_of(lost_answer).await.unwrap().unwrap().owner,
            None
        );
        assert_eq!(
            store
                .lease_of(driven)
                .await
                .unwrap()
                .unwrap()
                .owner
                .as_deref(),
            Some("engine-a"),
            "a run driven here keeps its lease"
        );
        assert!(leases.holds(driven));
        ledger.drop_schema().await.unwrap();
    }
}
