//! Leases and the run index on real PostgreSQL (a schema per test).

use std::time::Duration;

use runledger_contracts::envelope::NewEvent;
use runledger_contracts::ids::{CorrelationId, RequestId, RunId, StreamId};
use serde_json::json;

use super::LeaseStore;
use crate::testing::TestLedger;
use crate::{AppendRequest, EventStore, ExpectedVersion};

async fn append(ledger: &TestLedger, stream: &str, kind: &str) {
    let event = NewEvent {
        event_type: kind.into(),
        schema_version: 1,
        payload: json!({ "n": 1 }),
        blob_refs: vec![],
    };
    let request = AppendRequest::new(
        RequestId::generate(),
        CorrelationId::generate(),
        vec![event],
    );
    ledger
        .store
        .append(
            &StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            request,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lease_changes_hands_only_when_expired_or_handed_back_and_its_epoch_grows() {
    let ledger = TestLedger::new().await.unwrap();
    let leases = LeaseStore::new(ledger.store.pool().clone());
    let run = RunId::new_v7();
    let long = Duration::from_secs(60);
    let a = leases
        .acquire("a", run, long)
        .await
        .unwrap()
        .expect("a free run");
    assert_eq!(
        (a.epoch, a.changed_hands, a.previous_owner.as_deref()),
        (1, true, None)
    );
    assert!(
        leases.acquire("b", run, long).await.unwrap().is_none(),
        "a live lease is not taken"
    );
    let again = leases.acquire("a", run, long).await.unwrap().unwrap();
    assert_eq!(
        (again.epoch, again.changed_hands),
        (1, false),
        "renewing is not a change of hands"
    );
    // Expired: b takes it at the next epoch, and a's renewal no longer returns it.
    leases
        .acquire("a", run, Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = leases.acquire("b", run, long).await.unwrap().unwrap();
    assert_eq!(
        (b.epoch, b.changed_hands, b.previous_owner.as_deref()),
        (2, true, Some("a"))
    );
    assert!(leases.heartbeat("a", long, false).await.unwrap().is_empty());
    assert_eq!(leases.heartbeat("b", long, false).await.unwrap(), vec![run]);
    // Handed back: anyone may take it at once, at the next epoch.
    assert_eq!(leases.release("b", &[run], true).await.unwrap(), 1);
    assert_eq!(
        leases.release("a", &[run], true).await.unwrap(),
        0,
        "only the owner hands back"
    );
    let c = leases.acquire("c", run, long).await.unwrap().unwrap();
    assert_eq!((c.epoch, c.previous_owner), (3, None));
    let info = leases.lease_of(run).await.unwrap().unwrap();
    assert_eq!(
        (info.owner.as_deref(), info.epoch, info.live),
        (Some("c"), 3, true)
    );
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn the_run_index_follows_starts_and_ends_and_claims_take_each_run_once() {
    let ledger = TestLedger::new().await.unwrap();
    let leases = LeaseStore::new(ledger.store.pool().clone());
    let (one, two) = (RunId::new_v7(), RunId::new_v7());
    append(&ledger, &format!("run-{one}"), "RunStarted").await;
    append(&ledger, &format!("run-{two}"), "RunStarted").await;
    // Streams named like runs that are not the engine's are opaque: appended, not indexed.
    append(&ledger, "run-a", "RunStarted").await;
    assert!(leases.is_indexed(one).await.unwrap() && leases.is_indexed(two).await.unwrap());
    let long = Duration::from_secs(60);
    let first = leases.claim_unowned("x", long, 1).await.unwrap();
    let second = leases.claim_unowned("y", long, 10).await.unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(
        first[0].run_id, second[0].run_id,
        "each run is claimed once"
    );
    assert!(
        leases
            .claim_unowned("z", long, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing left without an owner"
    );
    // Ended runs leave the index; a reopened one comes back.
    append(&ledger, &format!("run-{one}"), "RunFailed").await;
    assert!(!leases.is_indexed(one).await.unwrap());
    append(&ledger, &format!("run-{one}"), "RunResumed").await;
    assert!(leases.is_indexed(one).await.unwrap());
    // A draining instance's deregistration hands its runs to the next claim.
    leases.heartbeat("x", long, false).await.unwrap();
    assert_eq!(leases.live_instances().await.unwrap(), 1);
    leases.deregister("x").await.unwrap();
    leases.deregister("y").await.unwrap();
    assert_eq!(leases.live_instances().await.unwrap(), 0);
    assert_eq!(leases.claim_unowned("z", long, 10).await.unwrap().len(), 2);
    ledger.drop_schema().await.unwrap();
}
