//! Retrieval quality and latency over a question set: for each question, whether a relevant
//! file is among the `top_k` hits (recall@k), and how long each query took, measured in this
//! process (the figures docs/benchmarks.md reports come from here).

use std::time::Instant;

use runledger_ledger::EventStore;
use serde::{Deserialize, Serialize};

use crate::error::RagError;
use crate::service::{QueryRequest, Rag};

/// One question and the files that answer it (matched as suffixes of `<source>/<path>`,
/// e.g. `book/ch04-01-what-is-ownership.html`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub question: String,
    pub relevant: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub question: String,
    pub got: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub questions: usize,
    pub top_k: u32,
    pub found: usize,
    /// found / questions.
    pub recall: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub misses: Vec<Miss>,
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs every question `rounds` times (the first round warms the index; latencies are taken
/// over all rounds after it when `rounds > 1`).
pub async fn evaluate<S: EventStore>(
    rag: &Rag<S>,
    collection: &str,
    questions: &[Question],
    top_k: u32,
    rounds: usize,
) -> Result<EvalReport, RagError> {
    let mut latencies = Vec::new();
    let mut found = 0;
    let mut misses = Vec::new();
    for round in 0..rounds.max(1) {
        for q in questions {
            let clock = Instant::now();
            let result = rag
                .query(&QueryRequest {
                    collection: collection.to_owned(),
                    query: q.question.clone(),
                    top_k,
                    sources: Vec::new(),
                    path_glob: None,
                })
                .await?;
            let ms = clock.elapsed().as_secs_f64() * 1000.0;
            if round > 0 || rounds <= 1 {
                latencies.push(ms);
            }
            if round == 0 {
                let keys: Vec<String> = result
                    .hits
                    .iter()
                    .map(|h| format!("{}/{}", h.source, h.path))
                    .collect();
                if keys
                    .iter()
                    .any(|k| q.relevant.iter().any(|r| k.ends_with(r.as_str())))
                {
                    found += 1;
                } else {
                    misses.push(Miss {
                        question: q.question.clone(),
                        got: keys,
                    });
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(EvalReport {
        questions: questions.len(),
        top_k,
        found,
        recall: if questions.is_empty() {
            0.0
        } else {
            found as f64 / questions.len() as f64
        },
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        misses,
    })
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
