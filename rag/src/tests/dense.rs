//! Dense retrieval against a local `/v1/embeddings` stub that returns deterministic vectors:
//! chunks embedded at index time (only new and changed ones on a delta), the query embedded,
//! BM25 and dense rankings fused by reciprocal rank.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use runledger_contracts::ids::RequestId;
use runledger_contracts::model::{ModelSpec, ProviderKind};
use runledger_contracts::rag::{CollectionSpec, IndexMode};
use runledger_executor_gateway::models::{ChangeRequest, ModelRegistry};
use runledger_ledger::testing::TestLedger;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Dir, change, index, query, source};
use crate::Rag;

/// A deterministic embedding: one dimension per concept (cats, dogs) so that words a text
/// does not share with the query can still match, and hashed dimensions for other words.
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 8];
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        match word.as_str() {
            "cat" | "cats" | "feline" | "kitten" => v[0] += 1.0,
            "dog" | "dogs" | "canine" | "puppy" => v[1] += 1.0,
            other => {
                let h = blake3::hash(other.as_bytes()).as_bytes()[0] as usize;
                v[2 + h % 6] += 0.05;
            }
        }
    }
    v
}

/// Serves `POST /v1/embeddings` on 127.0.0.1, one request per connection; counts the inputs.
async fn stub(inputs: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let inputs = Arc::clone(&inputs);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_end, length) = loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (at + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let request: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or_default();
                let texts: Vec<String> = request["input"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                inputs.fetch_add(texts.len(), Ordering::SeqCst);
                let data: Vec<Value> = texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({ "object": "embedding", "index": i, "embedding": embed(t) }))
                    .collect();
                let body = json!({ "object": "list", "model": request["model"], "data": data })
                    .to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn dense_hits_are_fused_with_bm25_and_only_changed_chunks_are_embedded() {
    let (docs, data) = (Dir::new(), Dir::new());
    let inputs = Arc::new(AtomicUsize::new(0));
    let base_url = stub(Arc::clone(&inputs)).await;
    let ledger = TestLedger::new().await.unwrap();
    let store = ledger.second_store().await.unwrap();
    let mut model = ModelSpec::new("embedder", ProviderKind::OpenaiCompatible, "stub-embed");
    model.base_url = Some(base_url);
    ModelRegistry::new(&store)
        .create(
            model,
            ChangeRequest::new(RequestId::new("m1").unwrap(), "tester"),
        )
        .await
        .unwrap();
    let rag = Rag::new(store, data.path());
    docs.write(
        "pets.md",
        "# Pets\n\nThe cat sleeps on the mat all afternoon.\n",
    );
    docs.write("tools.md", "# Tools\n\nA hammer drives nails into wood.\n");
    docs.write("yard.md", "# Yard\n\nA dog fetches the ball.\n");
    let spec = CollectionSpec {
        name: "home".into(),
        sources: vec![source("main", &docs, &[])],
        description: None,
        embedding_model: Some("embedder".into()),
    };
    rag.collections().create(spec, &change("h1")).await.unwrap();
    let full = rag.index(&index("home", IndexMode::Full)).await.unwrap();
    let embedded = inputs.load(Ordering::SeqCst);
    assert_eq!(embedded as u64, full.completed.chunks_total);
    assert!(collection_vectors(&data).exists());

    // No chunk says "feline": BM25 alone finds nothing, the fused ranking finds the cat.
    let hits = rag.query(&query("home", "feline")).await.unwrap();
    assert_eq!(hits.hits[0].path, "pets.md", "{:?}", hits.hits);
    // A word only one chunk has: BM25 and dense agree, it comes first.
    let hits = rag.query(&query("home", "hammer nails")).await.unwrap();
    assert_eq!(hits.hits[0].path, "tools.md");
    assert!(hits.hits[0].score > 1.0 / 61.0, "{:?}", hits.hits[0]);
    // Filters hold for the dense ranking too.
    let mut filtered = query("home", "feline");
    filtered.path_glob = Some("main/yard.md".into());
    let hits = rag.query(&filtered).await.unwrap();
    assert!(
        hits.hits.iter().all(|h| h.path == "yard.md"),
        "{:?}",
        hits.hits
    );

    // A delta over unchanged sources embeds nothing; a changed file embeds its chunks only.
    let before = inputs.load(Ordering::SeqCst);
    rag.index(&index("home", IndexMode::Delta)).await.unwrap();
    assert_eq!(inputs.load(Ordering::SeqCst), before);
    docs.write("yard.md", "# Yard\n\nA puppy chases the kitten.\n");
    let delta = rag.index(&index("home", IndexMode::Delta)).await.unwrap();
    assert_eq!(delta.completed.files.changed, 1);
    assert_eq!(
        (inputs.load(Ordering::SeqCst) - before) as u64,
        delta.completed.chunks_added
    );
    let hits = rag.query(&query("home", "canine")).await.unwrap();
    assert_eq!(hits.hits[0].path, "yard.md");

    // A fresh machine rebuilds the vectors with the index, from the ledger and the sources.
    let elsewhere = Dir::new();
    let fresh = Rag::new(ledger.second_store().await.unwrap(), elsewhere.path());
    let hits = fresh.query(&query("home", "feline")).await.unwrap();
    assert_eq!(hits.index_version, delta.index_version);
    assert!(
        hits.hits.iter().any(|h| h.path == "pets.md"),
        "{:?}",
        hits.hits
    );
    assert!(collection_vectors(&elsewhere).exists());

    // A collection naming a model the registry does not have: refused, nothing recorded.
    let ghost = CollectionSpec {
        name: "ghost".into(),
        sources: vec![source("main", &docs, &[])],
        description: None,
        embedding_model: Some("nobody".into()),
    };
    rag.collections()
        .create(ghost, &change("g1"))
        .await
        .unwrap();
    let version = rag.status("ghost").await.unwrap().version;
    let err = rag
        .index(&index("ghost", IndexMode::Full))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "model_not_found");
    assert_eq!(rag.status("ghost").await.unwrap().version, version);
    drop((rag, fresh));
    ledger.drop_schema().await.unwrap();
}

fn collection_vectors(data: &Dir) -> std::path::PathBuf {
    crate::dense::path(&crate::indexer::collection_dir(data.path(), "home"))
}
