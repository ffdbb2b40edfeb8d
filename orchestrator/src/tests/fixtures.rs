//! Recorded ledgers in `replay-fixtures/` keep replaying: each verifies offline, every event
//! decodes through the current catalog (upcasting old versions), and each run rebuilds through
//! `evolve` to the status its file records.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::PathBuf;

use runledger_contracts::events::DomainEvent;
use serde_json::Value;

use super::check_invariants;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../replay-fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}

#[test]
fn recorded_ledgers_keep_replaying() {
    let files = fixtures();
    assert!(!files.is_empty(), "replay-fixtures/ holds recorded runs");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let file = std::fs::File::open(&path).unwrap();
        ledger_verify(&name, BufReader::new(file));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut streams: BTreeMap<String, Vec<DomainEvent>> = BTreeMap::new();
        for line in text.lines() {
            let object: Value = serde_json::from_str(line).unwrap();
            if object["kind"] != "event" {
                continue;
            }
            let version = u32::try_from(object["schema_version"].as_u64().unwrap()).unwrap();
            let event = DomainEvent::decode(
                object["event_type"].as_str().unwrap(),
                version,
                object["payload"].clone(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            streams
                .entry(object["stream_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(event);
        }
        // `<flowchart>.<status>.jsonl`: every run stream in it ends with that status.
        let expected = name
            .trim_end_matches(".jsonl")
            .rsplit('.')
            .next()
            .unwrap()
            .to_owned();
        for (stream, events) in streams.iter().filter(|(s, _)| s.starts_with("run-")) {
            let state = check_invariants(events);
            assert_eq!(state.status.as_str(), expected, "{name}: {stream}");
        }
    }
}

fn ledger_verify(name: &str, reader: BufReader<std::fs::File>) {
    if let Err(e) = runledger_ledger::verify::verify(reader) {
        panic!("{name} no longer verifies: {e}");
    }
}
