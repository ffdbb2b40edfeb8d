//! Tool state folded from the ledger, cached per stream with the version it was built at.
//!
//! A driver keeps one [`ToolCache`]. Bringing a cached stream up to date is one read of the
//! events after its version (nothing, usually), so a run that calls the same memory scope a
//! thousand times folds each event once. The cache is only a shortcut: what is appended is
//! checked against the stream's real version by the ledger.

use std::any::Any;
use std::collections::HashMap;

use runledger_contracts::ids::StreamId;
use runledger_ledger::EventStore;
use serde_json::Value;

use super::{Tool, ToolError, event_idempotency_key};

/// Events read per page when a tool stream is folded.
const PAGE: usize = 1_000;
/// Streams kept before the cache starts over; bounds a long-lived driver's memory.
const MAX_CACHED_STREAMS: usize = 256;

struct Entry {
    version: u64,
    state: Box<dyn Any + Send + Sync>,
    /// Idempotency key of each write in the stream → the version of its last event.
    applied: HashMap<String, u64>,
}

#[derive(Default)]
pub struct ToolCache {
    streams: HashMap<StreamId, Entry>,
}

impl ToolCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Catches the cached state of `stream` up with the ledger (folding it from the start the
    /// first time). A stream that does not exist is the tool's empty state at version 0.
    pub async fn refresh<T: Tool, S: EventStore>(
        &mut self,
        store: &S,
        stream: &StreamId,
    ) -> Result<(), ToolError> {
        if self.streams.len() >= MAX_CACHED_STREAMS && !self.streams.contains_key(stream) {
            self.streams.clear();
        }
        self.refresh_kept::<T, S>(store, stream).await
    }

    async fn refresh_kept<T: Tool, S: EventStore>(
        &mut self,
        store: &S,
        stream: &StreamId,
    ) -> Result<(), ToolError> {
        let entry = self.streams.entry(stream.clone()).or_insert_with(|| Entry {
            version: 0,
            state: Box::new(T::State::default()),
            applied: HashMap::new(),
        });
        let result = fold_into::<T, S>(store, stream, entry).await;
        if result.is_err() {
            self.streams.remove(stream);
        }
        result
    }

    /// Refreshes every stream of the tool; returns their ids in stream-id order.
    pub async fn refresh_all<T: Tool, S: EventStore>(
        &mut self,
        store: &S,
    ) -> Result<Vec<StreamId>, ToolError> {
        let heads = store
            .list_streams(T::KIND.stream_prefix())
            .await
            .map_err(unavailable)?;
        // Every listed stream must stay cached until the caller has read them all.
        if self.streams.len() + heads.len() > MAX_CACHED_STREAMS {
            self.streams.clear();
        }
        let mut ids = Vec::with_capacity(heads.len());
        for head in heads {
            let current = self
                .streams
                .get(&head.stream_id)
                .is_some_and(|e| e.version == head.version);
            if !current {
                self.refresh_kept::<T, S>(store, &head.stream_id).await?;
            }
            ids.push(head.stream_id);
        }
        Ok(ids)
    }

    /// The cached state of `stream` and its version.
    pub fn state<T: Tool>(&self, stream: &StreamId) -> Option<(u64, &T::State)> {
        let entry = self.streams.get(stream)?;
        entry
            .state
            .downcast_ref::<T::State>()
            .map(|s| (entry.version, s))
    }

    /// The version of the last event a write with this idempotency key appended to `stream`.
    pub fn applied_at(&self, stream: &StreamId, idempotency_key: &str) -> Option<u64> {
        self.streams
            .get(stream)?
            .applied
            .get(idempotency_key)
            .copied()
    }
}

async fn fold_into<T: Tool, S: EventStore>(
    store: &S,
    stream: &StreamId,
    entry: &mut Entry,
) -> Result<(), ToolError> {
    let Some(state) = entry.state.downcast_mut::<T::State>() else {
        return Err(ToolError::Corrupt(format!(
            "stream `{stream}` is not a {} stream",
            T::KIND.name()
        )));
    };
    loop {
        let page = store
            .read_stream(stream, entry.version + 1, PAGE)
            .await
            .map_err(unavailable)?;
        let done = page.len() < PAGE;
        for recorded in page {
            let at = format!("{stream}#{}", recorded.stream_version);
            let event = recorded
                .decode()
                .map_err(|e| ToolError::Corrupt(format!("{at}: {e}")))?;
            T::evolve(state, &event).map_err(|source| ToolError::StateCorrupt { at, source })?;
            if let Some(key) = event_idempotency_key(&event) {
                entry
                    .applied
                    .insert(key.to_owned(), recorded.stream_version);
            }
            entry.version = recorded.stream_version;
        }
        if done {
            return Ok(());
        }
    }
}

/// The output a write had, found again: the stream folded up to the write's last event.
pub async fn output_at<T: Tool, S: EventStore>(
    store: &S,
    stream: &StreamId,
    version: u64,
) -> Result<Value, ToolError> {
    let events = store
        .read_stream(stream, 1, usize::try_from(version).unwrap_or(usize::MAX))
        .await
        .map_err(unavailable)?;
    let mut state = T::State::default();
    let mut output = Value::Null;
    for recorded in events {
        let event = recorded
            .decode()
            .map_err(|e| ToolError::Corrupt(e.to_string()))?;
        T::evolve(&mut state, &event).map_err(|source| ToolError::StateCorrupt {
            at: format!("{stream}#{}", recorded.stream_version),
            source,
        })?;
        output = T::output_after(&state, &event);
    }
    Ok(output)
}

/// Folds one stream with a fresh cache: what the CLI shows.
pub async fn load<T: Tool, S: EventStore>(
    store: &S,
    stream: &StreamId,
) -> Result<(u64, T::State), ToolError> {
    let mut cache = ToolCache::new();
    cache.refresh::<T, S>(store, stream).await?;
    Ok(cache
        .state::<T>(stream)
        .map(|(v, s)| (v, s.clone()))
        .unwrap_or_default())
}

/// Folds every stream of the tool: what the CLI lists.
pub async fn load_all<T: Tool, S: EventStore>(
    store: &S,
) -> Result<Vec<(StreamId, T::State)>, ToolError> {
    let mut cache = ToolCache::new();
    let ids = cache.refresh_all::<T, S>(store).await?;
    Ok(ids
        .into_iter()
        .filter_map(|id| {
            let state = cache.state::<T>(&id).map(|(_, s)| s.clone())?;
            Some((id, state))
        })
        .collect())
}

fn unavailable(e: runledger_ledger::StoreError) -> ToolError {
    ToolError::Unavailable(format!("the tool state could not be read: {e}"))
}
