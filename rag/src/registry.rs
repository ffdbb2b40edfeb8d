//! Collections in the ledger: one stream per collection (`rag-<name>`) holding its spec
//! (`RagCollectionCreated` / `RagCollectionDeleted`) and its index runs (`RagIndexStarted`,
//! `RagIndexCompleted`, `RagIndexFailed`). Mirrors the model registry: the stream version is
//! the collection's version, writes are idempotent by request id and fenced by an expected
//! version, and listing reads the streams with the `rag-` prefix.

use runledger_contracts::envelope::{NewEvent, RecordedEvent};
use runledger_contracts::events::{
    DomainEvent, RagCollectionCreated, RagCollectionDeleted, RagIndexCompleted, RagIndexFailed,
    RagIndexStarted,
};
use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use runledger_contracts::rag::{CollectionSpec, RAG_STREAM_PREFIX, check_name};
use runledger_contracts::time::Timestamp;
use runledger_ledger::{AppendRequest, Blob, EventStore, ExpectedVersion, StoreError};
use serde::Serialize;

use crate::error::RagError;
use crate::walk::Filter;

const PAGE: usize = 1000;

/// The last completed index run of a collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletedIndex {
    /// Stream version of its `RagIndexCompleted`: the index version hits cite.
    pub version: u64,
    pub completed_at: Timestamp,
    #[serde(flatten)]
    pub event: RagIndexCompleted,
}

/// A collection folded from its stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectionState {
    pub version: u64,
    pub spec: Option<CollectionSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    /// Version before the event that made the collection live or deleted.
    #[serde(skip)]
    pub before_last_change: u64,
    pub last_completed: Option<CompletedIndex>,
    /// An index run started after the last completed or failed one, that has not ended: in
    /// progress, or interrupted (the next run starts over).
    pub running: Option<RagIndexStarted>,
    pub last_failed: Option<RagIndexFailed>,
    /// Index runs ever started on this incarnation of the collection.
    pub index_runs: u64,
}

/// Who asks for a change, and the request id that makes it idempotent.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    pub request_id: RequestId,
    pub actor: String,
}

/// The result of a create or delete.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeOutcome {
    pub version: u64,
    pub deduplicated: bool,
    pub event_type: String,
}

pub struct Collections<'a, S> {
    store: &'a S,
}

impl<'a, S: EventStore> Collections<'a, S> {
    pub fn new(store: &'a S) -> Self {
        Self { store }
    }

    /// The collection named `name`, if it exists and is not deleted.
    pub async fn get(&self, name: &str) -> Result<Option<CollectionState>, RagError> {
        check_name("name", name)?;
        let state = self.load(name).await?;
        Ok(state.spec.is_some().then_some(state))
    }

    /// Like [`Collections::get`], but a missing collection is [`RagError::NotFound`].
    pub async fn require(&self, name: &str) -> Result<CollectionState, RagError> {
        self.get(name).await?.ok_or_else(|| RagError::NotFound {
            name: name.to_owned(),
        })
    }

    /// Every live collection, by name.
    pub async fn list(&self) -> Result<Vec<CollectionState>, RagError> {
        let mut out = Vec::new();
        for head in self.store.list_streams(RAG_STREAM_PREFIX).await? {
            let name = head
                .stream_id
                .as_str()
                .trim_start_matches(RAG_STREAM_PREFIX);
            let state = self.load(name).await?;
            if state.spec.is_some() {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// Registers a collection; its name must be free (never used, or deleted). Globs are
    /// compiled first, so a bad one writes nothing.
    pub async fn create(
        &self,
        spec: CollectionSpec,
        change: &ChangeRequest,
    ) -> Result<ChangeOutcome, RagError> {
        spec.validate()?;
        for (i, source) in spec.sources.iter().enumerate() {
            Filter::new(i, source)?;
        }
        let name = spec.name.clone();
        let state = self.load(&name).await?;
        let expected = match (&state.spec, state.version) {
            (None, 0) => ExpectedVersion::NoStream,
            (None, v) => ExpectedVersion::Exact(v),
            (Some(_), _) => ExpectedVersion::Exact(state.before_last_change),
        };
        let event = DomainEvent::from(RagCollectionCreated {
            collection: spec,
            actor: change.actor.clone(),
        });
        match self.append(&name, expected, change, event, None).await {
            Err(RagError::VersionConflict { .. }) => Err(RagError::Exists {
                name,
                version: state.version,
            }),
            other => other,
        }
    }

    /// Removes a collection (its index runs stay as history). `expected`: the version the
    /// caller read, else the current one.
    pub async fn delete(
        &self,
        name: &str,
        expected: Option<u64>,
        change: &ChangeRequest,
    ) -> Result<ChangeOutcome, RagError> {
        check_name("name", name)?;
        let state = self.load(name).await?;
        let expected_version = match (&state.spec, state.version) {
            (Some(_), v) => ExpectedVersion::Exact(expected.unwrap_or(v)),
            (None, 0) => {
                return Err(RagError::NotFound {
                    name: name.to_owned(),
                });
            }
            (None, _) => ExpectedVersion::Exact(state.before_last_change),
        };
        let deleted = state.spec.is_none();
        let event = DomainEvent::from(RagCollectionDeleted {
            name: name.to_owned(),
            actor: change.actor.clone(),
        });
        match self
            .append(name, expected_version, change, event, None)
            .await
        {
            Err(RagError::VersionConflict { .. }) if deleted => Err(RagError::NotFound {
                name: name.to_owned(),
            }),
            other => other,
        }
    }

    /// Appends one event of an index run at `expected` (with the manifest blob, for a
    /// completion). The fence: a second indexer that started from the same version loses.
    pub(crate) async fn append(
        &self,
        name: &str,
        expected: ExpectedVersion,
        change: &ChangeRequest,
        event: DomainEvent,
        blob: Option<Blob>,
    ) -> Result<ChangeOutcome, RagError> {
        let stream = stream_of(name)?;
        let corrupt = |reason: String| RagError::Corrupt {
            name: name.to_owned(),
            reason,
        };
        let mut new_event = NewEvent::from_domain(&event).map_err(|e| corrupt(e.to_string()))?;
        let correlation =
            CorrelationId::new(change.request_id.as_str()).map_err(|e| corrupt(e.to_string()))?;
        let mut request = AppendRequest::new(change.request_id.clone(), correlation, Vec::new());
        if let Some(blob) = blob {
            new_event.blob_refs.push(blob.hash());
            request.blobs.push(blob);
        }
        request.events.push(new_event);
        match self.store.append(&stream, expected, request).await {
            Ok(outcome) => Ok(ChangeOutcome {
                version: outcome.last_version(),
                deduplicated: outcome.deduplicated,
                event_type: outcome
                    .events
                    .last()
                    .map(|e| e.event_type.clone())
                    .unwrap_or_default(),
            }),
            Err(StoreError::Conflict { actual, .. }) => Err(RagError::VersionConflict {
                name: name.to_owned(),
                expected: match expected {
                    ExpectedVersion::Exact(v) => v,
                    _ => 0,
                },
                actual,
            }),
            Err(StoreError::RequestMismatch { request_id, .. }) => Err(RagError::RequestReused {
                name: name.to_owned(),
                request_id: request_id.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads and folds a collection's stream (deleted or not).
    pub async fn load(&self, name: &str) -> Result<CollectionState, RagError> {
        let stream = stream_of(name)?;
        let mut state = CollectionState::default();
        loop {
            let page = self
                .store
                .read_stream(&stream, state.version + 1, PAGE)
                .await?;
            let full = page.len() == PAGE;
            for event in &page {
                apply(&mut state, name, event)?;
            }
            if !full {
                return Ok(state);
            }
        }
    }
}

fn stream_of(name: &str) -> Result<StreamId, RagError> {
    check_name("name", name)?;
    CollectionSpec::stream_id(name).map_err(|e| {
        RagError::Invalid(runledger_contracts::rag::CollectionSpecError {
            field: "name".into(),
            reason: e.to_string(),
        })
    })
}

fn apply(state: &mut CollectionState, name: &str, event: &RecordedEvent) -> Result<(), RagError> {
    let decoded = event.decode().map_err(|e| RagError::Corrupt {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    let version = event.stream_version;
    match decoded {
        DomainEvent::RagCollectionCreated(e) => {
            *state = CollectionState {
                before_last_change: version - 1,
                spec: Some(e.collection),
                updated_at: Some(event.recorded_at),
                ..CollectionState::default()
            };
        }
        DomainEvent::RagCollectionDeleted(_) => {
            state.before_last_change = version - 1;
            state.spec = None;
            state.updated_at = Some(event.recorded_at);
        }
        DomainEvent::RagIndexStarted(e) => {
            state.running = Some(e);
            state.index_runs += 1;
        }
        DomainEvent::RagIndexCompleted(e) => {
            state.running = None;
            state.last_completed = Some(CompletedIndex {
                version,
                completed_at: event.recorded_at,
                event: e,
            });
        }
        DomainEvent::RagIndexFailed(e) => {
            state.running = None;
            state.last_failed = Some(e);
        }
        other => {
            return Err(RagError::Corrupt {
                name: name.to_owned(),
                reason: format!("{} at version {version}", other.event_type()),
            });
        }
    }
    state.version = version;
    Ok(())
}
