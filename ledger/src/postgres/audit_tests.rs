//! Signed exports, the verify gaps an outside tamper test found, and TRUNCATE.

use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use serde_json::json;

use runledger_contracts::envelope::NewEvent;

use crate::export::{ExportScope, export, export_signed};
use crate::sign;
use crate::testing::TestLedger;
use crate::verify::{verify, verify_with_key};
use crate::{AppendRequest, EventStore, ExpectedVersion};

fn request(id: &str, kinds: &[&str]) -> AppendRequest {
    let events = kinds
        .iter()
        .map(|k| NewEvent {
            event_type: (*k).into(),
            schema_version: 1,
            payload: json!({"k": k}),
            blob_refs: vec![],
        })
        .collect();
    AppendRequest::new(
        RequestId::new(id).unwrap(),
        CorrelationId::new("corr-1").unwrap(),
        events,
    )
}

async fn two_streams() -> TestLedger {
    let ledger = TestLedger::new().await.unwrap();
    for name in ["run-a", "run-b"] {
        let s = StreamId::new(name).unwrap();
        ledger
            .store
            .append(&s, ExpectedVersion::NoStream, request(name, &["A", "B"]))
            .await
            .unwrap();
    }
    ledger
}

async fn export_all(store: &impl EventStore, key: Option<&sign::SigningKey>) -> String {
    let mut out = Vec::new();
    export_signed(store, &ExportScope::All, &mut out, |_, _| {}, key)
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn a_signed_export_verifies_with_its_key_and_fails_with_another() {
    let ledger = two_streams().await;
    let pair = sign::generate().unwrap();
    let signed = export_all(&ledger.store, Some(&pair.secret)).await;
    let plain = export_all(&ledger.store, None).await;
    assert!(
        signed.starts_with(&plain),
        "signing only adds the last line"
    );
    let last = signed.lines().last().unwrap();
    assert!(
        last.starts_with("{\"algorithm\":\"ed25519\",\"kind\":\"signature\",\"public_key\":"),
        "{last}"
    );

    let report = verify_with_key(signed.as_bytes(), Some(&pair.public)).unwrap();
    assert_eq!(
        report.signed_by.as_deref(),
        Some(sign::hex(pair.public.as_bytes()).as_str())
    );
    assert_eq!(
        verify(signed.as_bytes()).unwrap().events,
        4,
        "a signed file verifies without a key too"
    );

    let other = sign::generate().unwrap();
    assert_eq!(
        verify_with_key(signed.as_bytes(), Some(&other.public))
            .unwrap_err()
            .code,
        "signature_key"
    );
    assert_eq!(
        verify_with_key(plain.as_bytes(), Some(&pair.public))
            .unwrap_err()
            .code,
        "unsigned"
    );

    // A forger rewrites an event, recomputes its hash and the manifest's head, and keeps the
    // old signature line: the chain checks out, the signature does not.
    let lines: Vec<&str> = signed.lines().collect();
    let mut event: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(lines[4]).unwrap();
    event.insert("payload".into(), json!({"k": "forged"}));
    event.remove("kind");
    let prev = runledger_contracts::digest::Digest::parse_hex(event["prev_hash"].as_str().unwrap())
        .unwrap();
    event.remove("hash");
    let hash = runledger_contracts::envelope::chain_hash(&prev, &event).unwrap();
    let old_head = serde_json::from_str::<serde_json::Value>(lines[4]).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    event.insert("hash".into(), json!(hash.to_hex()));
    event.insert("kind".into(), json!("event"));
    let forged_event =
        String::from_utf8(runledger_contracts::canonical::canonicalize(&event).unwrap()).unwrap();
    let forged_manifest = lines[0].replace(&old_head, &hash.to_hex());
    let mut forged: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    forged[0] = forged_manifest;
    forged[4] = forged_event;
    let without_signature = forged[..forged.len() - 1].join("\n") + "\n";
    assert!(
        verify(without_signature.as_bytes()).is_ok(),
        "the chain alone cannot tell"
    );
    let with_old_signature = forged.join("\n") + "\n";
    let err = verify_with_key(with_old_signature.as_bytes(), Some(&pair.public)).unwrap_err();
    assert_eq!(
        (err.code, err.line),
        ("signature", forged.len() as u64),
        "{err}"
    );
    // Re-signed by the forger's own key: signed, but not by the auditor's key.
    let mut resigned = forged.clone();
    let line = sign::signature_line(resigned[0].as_bytes(), &other.secret);
    *resigned.last_mut().unwrap() =
        String::from_utf8(runledger_contracts::canonical::canonicalize(&line).unwrap()).unwrap();
    let err =
        verify_with_key((resigned.join("\n") + "\n").as_bytes(), Some(&pair.public)).unwrap_err();
    assert_eq!(err.code, "signature_key", "{err}");

    // Nothing may follow the signature.
    let trailing = format!("{signed}{}\n", lines[5]);
    assert_eq!(verify(trailing.as_bytes()).unwrap_err().code, "signature");
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn key_files_round_trip_and_refuse_to_overwrite() {
    let dir = std::env::temp_dir().join(format!("runledger-keys-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.key");
    let pair = sign::generate().unwrap();
    let public_path = sign::write_key_pair(&path, &pair).unwrap();
    assert_eq!(
        sign::read_signing_key(&path).unwrap().to_bytes(),
        pair.secret.to_bytes()
    );
    assert_eq!(sign::read_verifying_key(&public_path).unwrap(), pair.public);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(matches!(
        sign::write_key_pair(&path, &pair),
        Err(sign::KeyError::Exists(_))
    ));
    std::fs::write(&public_path, "zz\n").unwrap();
    assert!(matches!(
        sign::read_verifying_key(&public_path),
        Err(sign::KeyError::Malformed { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn verify_requires_the_final_newline_and_the_stream_order() {
    let ledger = two_streams().await;
    let mut out = Vec::new();
    export(&ledger.store, &ExportScope::All, &mut out, |_, _| {})
        .await
        .unwrap();
    let file = String::from_utf8(out).unwrap();
    assert!(verify(file.as_bytes()).is_ok());

    let err = verify(file.trim_end_matches('\n').as_bytes()).unwrap_err();
    assert_eq!((err.code, err.line), ("not_json", 5), "{err}");

    // Lines 3 and 4 are run-a#2 and run-b#1: swapping them keeps each chain intact.
    let lines: Vec<&str> = file.lines().collect();
    assert!(
        lines[2].contains("\"stream_id\":\"run-a\"")
            && lines[3].contains("\"stream_id\":\"run-b\"")
    );
    let swapped = [lines[0], lines[1], lines[3], lines[2], lines[4]].join("\n") + "\n";
    let err = verify(swapped.as_bytes()).unwrap_err();
    assert_eq!((err.code, err.line), ("sequence", 4), "{err}");
    assert!(err.message.contains("resumes"), "{err}");

    // Whole streams in the wrong order.
    let reordered = [lines[0], lines[3], lines[4], lines[1], lines[2]].join("\n") + "\n";
    let err = verify(reordered.as_bytes()).unwrap_err();
    assert_eq!((err.code, err.line), ("sequence", 4), "{err}");
    ledger.drop_schema().await.unwrap();
}

#[tokio::test]
async fn the_ledger_refuses_truncate() {
    let ledger = two_streams().await;
    let err = sqlx::query("TRUNCATE events")
        .execute(ledger.store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(ledger.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 4);
    ledger.drop_schema().await.unwrap();
}

async fn export_of(store: &impl EventStore, scope: &ExportScope) -> Vec<u8> {
    let mut out = Vec::new();
    export(store, scope, &mut out, |_, _| {}).await.unwrap();
    out
}

async fn event_count(ledger: &TestLedger) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(ledger.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn import_loads_an_export_unchanged_once_and_refuses_another_history() {
    use crate::import::{ImportError, import_export};
    let source = two_streams().await;
    let s = StreamId::new("run-a").unwrap();
    source
        .store
        .append(&s, ExpectedVersion::Exact(2), request("more", &["C"]))
        .await
        .unwrap();
    let all = export_of(&source.store, &ExportScope::All).await;
    let one = export_of(&source.store, &ExportScope::Stream(s.clone())).await;

    let target = TestLedger::new().await.unwrap();
    let first = import_export(&target.store, &all).await.unwrap();
    assert_eq!((first.streams, first.written, first.unchanged), (2, 5, 0));
    assert_eq!(
        export_of(&target.store, &ExportScope::All).await,
        all,
        "export after import is byte-identical"
    );
    assert_eq!(
        export_of(&target.store, &ExportScope::Stream(s.clone())).await,
        one
    );
    let again = import_export(&target.store, &all).await.unwrap();
    assert_eq!(
        (again.written, again.unchanged),
        (0, 2),
        "a repeated import writes nothing"
    );
    assert_eq!(event_count(&target).await, 5);
    let (version, _, current) = target.store.import_marker(&s).await.unwrap().unwrap();
    assert_eq!((version, current), (3, true));

    // A store whose run-a went another way: refused, and run-b (fine on its own) not written.
    let other = TestLedger::new().await.unwrap();
    other
        .store
        .append(&s, ExpectedVersion::NoStream, request("run-a", &["A", "X"]))
        .await
        .unwrap();
    let err = import_export(&other.store, &all).await.unwrap_err();
    assert!(
        matches!(err, ImportError::Diverged { ref stream_id, .. } if stream_id == &s),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(event_count(&other).await, 2);
    assert!(
        other
            .store
            .stream_head(&StreamId::new("run-b").unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // A store holding a prefix (an import cut short): only the rest is written.
    let partial = TestLedger::new().await.unwrap();
    partial
        .store
        .append(&s, ExpectedVersion::NoStream, request("run-a", &["A", "B"]))
        .await
        .unwrap();
    let resumed = import_export(&partial.store, &one).await;
    // The prefix was appended here, not imported: same kinds and payloads but other event ids,
    // so it is another history and must be refused.
    assert!(
        matches!(resumed, Err(ImportError::Diverged { .. })),
        "{resumed:?}"
    );
    for l in [source, target, other, partial] {
        l.drop_schema().await.unwrap();
    }
}

#[tokio::test]
async fn an_interrupted_backfill_resumes_and_a_stale_marker_is_reimported() {
    use crate::export_file::read_export;
    use crate::import::import_export;
    let source = two_streams().await;
    let s = StreamId::new("run-a").unwrap();
    source
        .store
        .append(&s, ExpectedVersion::Exact(2), request("more", &["C"]))
        .await
        .unwrap();
    let one = export_of(&source.store, &ExportScope::Stream(s.clone())).await;
    let file = read_export(&one).unwrap();

    // A crash after the first two events: the store holds the file's own prefix.
    let target = TestLedger::new().await.unwrap();
    target
        .store
        .import_stream(&file.events[..2], &file.blobs)
        .await
        .unwrap();
    let resumed = import_export(&target.store, &one).await.unwrap();
    assert_eq!((resumed.written, resumed.unchanged), (1, 0));
    assert_eq!(
        export_of(&target.store, &ExportScope::Stream(s.clone())).await,
        one
    );

    // The marker outlives its stream (say the events were restored from an older backup):
    // it is stale, and the file is imported again.
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(target.store.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM events WHERE stream_id = 'run-a'")
        .execute(target.store.pool())
        .await
        .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(target.store.pool())
        .await
        .unwrap();
    let (_, _, current) = target.store.import_marker(&s).await.unwrap().unwrap();
    assert!(!current, "the marker no longer matches its stream");
    let again = import_export(&target.store, &one).await.unwrap();
    assert_eq!(again.written, 3);
    assert!(target.store.import_marker(&s).await.unwrap().unwrap().2);
    assert_eq!(export_of(&target.store, &ExportScope::Stream(s)).await, one);
    source.drop_schema().await.unwrap();
    target.drop_schema().await.unwrap();
}
