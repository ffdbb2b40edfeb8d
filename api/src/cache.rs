//! Encoded run details, keyed by run and the projection's `last_version` of it.
//!
//! Every event of a run moves `run_detail_runs.last_version`, and nothing in the run_detail
//! tables depends on when it was projected, so `(run, last_version)` names one exact answer: a
//! cached body is never stale, and a run that has ended is encoded once. Bounded by bytes;
//! the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::Bytes;
use runledger_contracts::ids::RunId;

/// Bytes of encoded details kept at most.
pub const DEFAULT_BUDGET: usize = 64 << 20;

pub struct DetailCache {
    budget: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_run: HashMap<RunId, (u64, Bytes)>,
    /// Insertion order, for eviction (a run may appear more than once; stale ones are skipped).
    order: VecDeque<(RunId, u64)>,
    bytes: usize,
}

impl DetailCache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// The body of `run` at exactly `version`, if cached.
    pub fn get(&self, run: RunId, version: u64) -> Option<Bytes> {
        let entries = self.inner.lock().ok()?;
        entries
            .by_run
            .get(&run)
            .filter(|(v, _)| *v == version)
            .map(|(_, b)| b.clone())
    }

    pub fn put(&self, run: RunId, version: u64, body: Bytes) {
        if self.budget == 0 || body.len() > self.budget / 4 {
            return;
        }
        let Ok(mut entries) = self.inner.lock() else {
            return;
        };
        if let Some((old_version, old)) = entries.by_run.get(&run) {
            if *old_version >= version {
                return;
            }
            let len = old.len();
            entries.bytes -= len;
        }
        entries.bytes += body.len();
        entries.by_run.insert(run, (version, body));
        entries.order.push_back((run, version));
        while entries.bytes > self.budget {
            let Some((oldest, v)) = entries.order.pop_front() else {
                break;
            };
            if entries
                .by_run
                .get(&oldest)
                .is_some_and(|(current, _)| *current == v)
                && let Some((_, b)) = entries.by_run.remove(&oldest)
            {
                entries.bytes -= b.len();
            }
        }
        // Drop order entries of replaced versions once they pile up.
        if entries.order.len() > 2 * entries.by_run.len() + 64 {
            let Entries { by_run, order, .. } = &mut *entries;
            order.retain(|(r, v)| by_run.get(r).is_some_and(|(current, _)| current == v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_version_and_stays_within_budget() {
        let cache = DetailCache::new(100);
        let (a, b) = (RunId::new_v7(), RunId::new_v7());
        cache.put(a, 1, Bytes::from(vec![1; 20]));
        assert_eq!(cache.get(a, 1).map(|b| b.len()), Some(20));
        assert!(cache.get(a, 2).is_none(), "only the exact version");
        cache.put(a, 2, Bytes::from(vec![2; 20]));
        cache.put(a, 1, Bytes::from(vec![1; 20]));
        assert!(
            cache.get(a, 1).is_none() && cache.get(a, 2).is_some(),
            "never goes back"
        );
        cache.put(b, 1, Bytes::from(vec![3; 20]));
        for i in 0..10 {
            cache.put(RunId::new_v7(), 1, Bytes::from(vec![i; 20]));
        }
        let entries = cache.inner.lock().unwrap();
        assert!(entries.bytes <= 100, "{}", entries.bytes);
        assert!(!entries.by_run.contains_key(&a), "the oldest went first");
        drop(entries);
        cache.put(b, 2, Bytes::from(vec![0; 30]));
        assert!(
            cache.get(b, 2).is_none(),
            "bodies over a quarter of the budget are not kept"
        );
    }
}
