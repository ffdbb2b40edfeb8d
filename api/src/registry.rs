//! The flowchart registry, kept in the ledger: stream `flowchart-<name>` holds one
//! `FlowchartVersionCreated` per version, so a stream version is a flowchart version and a
//! version, once written, never changes. Runs started by name and version execute exactly the
//! stored definition.
//!
//! [`LedgerFlowcharts`] is also a [`FlowchartSource`], so an engine can resolve the sub-flows
//! of `flowchart` nodes (`flowchart: NAME`, optional `version`) from the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use runledger_contracts::canonical;
use runledger_contracts::digest::Digest;
use runledger_contracts::envelope::{NewEvent, RecordedEvent};
use runledger_contracts::events::{DomainEvent, FlowchartVersionCreated};
use runledger_contracts::flowchart::{Flowchart, FlowchartDoc, validate};
use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use runledger_contracts::time::Timestamp;
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion, PgEventStore, StoreError};
use runledger_orchestrator::FlowchartSource;
use runledger_orchestrator::engine::ResolveError;
use serde_json::Value;
use sqlx::PgPool;

/// Stream id prefix of the registry.
pub const STREAM_PREFIX: &str = "flowchart-";
/// Longest flowchart name the registry stores.
pub const MAX_NAME_LEN: usize = 128;
/// Compiled flowcharts kept in memory before the cache is emptied.
const CACHE_LIMIT: usize = 1024;
/// Times a create is re-tried after another writer added a version first.
const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("flowchart name `{0}` cannot be stored: use 1 to 128 characters of A-Z a-z 0-9 _ - .")]
    InvalidName(String),
    #[error("flowchart `{name}` has no version {version}")]
    NoSuchVersion { name: String, version: u32 },
    #[error("no flowchart named `{0}` is stored")]
    NoSuchFlowchart(String),
    #[error("request `{0}` already created a different version of this flowchart")]
    RequestReused(String),
    #[error("the stored flowchart `{name}` v{version} cannot be read: {message}")]
    Corrupt {
        name: String,
        version: u64,
        message: String,
        /// The decoder's or encoder's error, when one said it.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("gave up after {0} attempts: other writers kept adding versions")]
    Contended(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::InvalidName(_) => "invalid_flowchart_name",
            RegistryError::NoSuchVersion { .. } => "flowchart_version_not_found",
            RegistryError::NoSuchFlowchart(_) => "flowchart_not_found",
            RegistryError::RequestReused(_) => "request_id_reused",
            RegistryError::Corrupt { .. } => "ledger_corrupt",
            RegistryError::Contended(_) => "contended",
            RegistryError::Store(e) => e.code(),
        }
    }
}

/// One stored version, with its compiled flowchart.
#[derive(Debug, Clone)]
pub struct StoredFlowchart {
    pub name: String,
    pub version: u32,
    pub definition: Value,
    pub definition_hash: Digest,
    pub actor: String,
    pub created_at: Timestamp,
    pub request_id: RequestId,
    pub correlation_id: CorrelationId,
    pub flowchart: Arc<Flowchart>,
}

/// The outcome of a create.
#[derive(Debug, Clone)]
pub struct Created {
    pub stored: StoredFlowchart,
    /// False when the definition equals the latest version's: nothing was written.
    pub created: bool,
}

/// Whether a name can be stored (it becomes part of a stream id).
pub fn check_name(name: &str) -> Result<StreamId, RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(RegistryError::InvalidName(truncate(name)));
    }
    StreamId::new(format!("{STREAM_PREFIX}{name}"))
        .map_err(|_| RegistryError::InvalidName(truncate(name)))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Why a flowchart's definition could not be written down as runs record it (a bug: a
/// validated flowchart always serializes).
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("the definition does not serialize")]
    Serialize(#[source] serde_json::Error),
    #[error("the definition has no canonical form")]
    Canonical(#[source] runledger_contracts::canonical::CanonicalError),
}

/// The definition of a flowchart as runs record it, and its digest.
pub fn definition_of(flowchart: &Flowchart) -> Result<(Value, Digest), DefinitionError> {
    let definition = serde_json::to_value(flowchart.doc()).map_err(DefinitionError::Serialize)?;
    let hash = canonical::to_canonical_vec(&definition)
        .map(|b| Digest::of(&b))
        .map_err(DefinitionError::Canonical)?;
    Ok((definition, hash))
}

/// The registry on the ledger, with a cache of compiled versions (versions never change).
/// On any [`EventStore`]; PostgreSQL unless said otherwise.
pub struct LedgerFlowcharts<S = PgEventStore> {
    store: S,
    cache: Mutex<HashMap<(String, u32), StoredFlowchart>>,
}

impl LedgerFlowcharts {
    pub fn new(pool: PgPool) -> Self {
        Self::on_store(PgEventStore::from_pool(pool))
    }
}

impl<S: EventStore> LedgerFlowcharts<S> {
    /// The registry on `store` (a handle of its own: e.g. a shared SQLite store).
    pub fn on_store(store: S) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, name: &str, version: u32) -> Option<StoredFlowchart> {
        self.cache
            .lock()
            .ok()?
            .get(&(name.to_owned(), version))
            .cloned()
    }

    fn remember(&self, stored: &StoredFlowchart) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert((stored.name.clone(), stored.version), stored.clone());
        }
    }

    /// Stores `flowchart` as the next version of its name, unless the latest version has the
    /// same definition (then that version is returned and nothing is written).
    pub async fn create(
        &self,
        flowchart: Flowchart,
        actor: &str,
        request_id: RequestId,
        correlation_id: CorrelationId,
    ) -> Result<Created, RegistryError> {
        let name = flowchart.name().to_owned();
        let stream = check_name(&name)?;
        let (definition, definition_hash) =
            definition_of(&flowchart).map_err(|e| RegistryError::Corrupt {
                name: name.clone(),
                version: 0,
                message: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        let flowchart = Arc::new(flowchart);
        for _ in 0..MAX_ATTEMPTS {
            let head = self.store.stream_head(&stream).await?;
            let latest = head.as_ref().map_or(0, |h| h.version);
            if latest > 0 {
                let current = self.read_version(&name, &stream, latest).await?;
                if current.definition_hash == definition_hash {
                    return Ok(Created {
                        stored: current,
                        created: false,
                    });
                }
            }
            let version = u32::try_from(latest + 1).map_err(|_| RegistryError::Corrupt {
                name: name.clone(),
                version: latest,
                message: "too many versions".into(),
                source: None,
            })?;
            let event = DomainEvent::FlowchartVersionCreated(FlowchartVersionCreated {
                name: name.clone(),
                version,
                definition: definition.clone(),
                definition_hash,
                actor: actor.to_owned(),
            });
            let new = NewEvent::from_domain(&event).map_err(|e| RegistryError::Corrupt {
                name: name.clone(),
                version: latest + 1,
                message: "the event does not encode".into(),
                source: Some(Box::new(e)),
            })?;
            let request = AppendRequest::new(request_id.clone(), correlation_id.clone(), vec![new]);
            let expected = if latest == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(latest)
            };
            match self.store.append(&stream, expected, request).await {
                Ok(outcome) => {
                    let recorded = outcome.events.into_iter().next().ok_or_else(|| {
                        RegistryError::Corrupt {
                            name: name.clone(),
                            version: latest + 1,
                            message: "the append returned no event".into(),
                            source: None,
                        }
                    })?;
                    let stored = stored_from(&recorded, Some(Arc::clone(&flowchart)))?;
                    self.remember(&stored);
                    return Ok(Created {
                        stored,
                        created: !outcome.deduplicated,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::RequestMismatch { .. }) => {
                    return Err(RegistryError::RequestReused(request_id.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Contended(MAX_ATTEMPTS))
    }

    /// A version of `name`, or its latest version.
    pub async fn get(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<StoredFlowchart, RegistryError> {
        let stream = check_name(name)?;
        let version = match version {
            Some(v) => {
                if let Some(hit) = self.cached(name, v) {
                    return Ok(hit);
                }
                u64::from(v)
            }
            None => match self.store.stream_head(&stream).await? {
                Some(head) => head.version,
                None => return Err(RegistryError::NoSuchFlowchart(name.to_owned())),
            },
        };
        if let Some(hit) = u32::try_from(version)
            .ok()
            .and_then(|v| self.cached(name, v))
        {
            return Ok(hit);
        }
        self.read_version(name, &stream, version).await
    }

    async fn read_version(
        &self,
        name: &str,
        stream: &StreamId,
        version: u64,
    ) -> Result<StoredFlowchart, RegistryError> {
        if let Some(hit) = u32::try_from(version)
            .ok()
            .and_then(|v| self.cached(name, v))
        {
            return Ok(hit);
        }
        let page = self.store.read_stream(stream, version, 1).await?;
        match page
            .into_iter()
            .next()
            .filter(|e| e.stream_version == version)
        {
            Some(recorded) => {
                let stored = stored_from(&recorded, None)?;
                self.remember(&stored);
                Ok(stored)
            }
            None if self.store.stream_head(stream).await?.is_none() => {
                Err(RegistryError::NoSuchFlowchart(name.to_owned()))
            }
            None => Err(RegistryError::NoSuchVersion {
                name: name.to_owned(),
                version: version.min(u64::from(u32::MAX)) as u32,
            }),
        }
    }

    /// Every version of `name`, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<StoredFlowchart>, RegistryError> {
        let stream = check_name(name)?;
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            let page = self.store.read_stream(&stream, next, 500).await?;
            let done = page.len() < 500;
            for recorded in &page {
                let version = u32::try_from(recorded.stream_version).ok();
                let stored = match version.and_then(|v| self.cached(name, v)) {
                    Some(hit) => hit,
                    None => stored_from(recorded, None)?,
                };
                next = recorded.stream_version + 1;
                out.push(stored);
            }
            if done {
                break;
            }
        }
        if out.is_empty() {
            return Err(RegistryError::NoSuchFlowchart(name.to_owned()));
        }
        Ok(out)
    }

    /// The latest version of each stored flowchart with a name after `after`, by name, at most
    /// `limit`.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredFlowchart>, RegistryError> {
        let heads = self.store.list_streams(STREAM_PREFIX).await?;
        let mut out = Vec::new();
        for head in heads {
            let Some(name) = head.stream_id.as_str().strip_prefix(STREAM_PREFIX) else {
                continue;
            };
            if after.is_some_and(|a| name <= a) {
                continue;
            }
            out.push(
                self.read_version(name, &head.stream_id, head.version)
                    .await?,
            );
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

fn stored_from(
    recorded: &RecordedEvent,
    compiled: Option<Arc<Flowchart>>,
) -> Result<StoredFlowchart, RegistryError> {
    let corrupt = |message: String| RegistryError::Corrupt {
        name: recorded
            .stream_id
            .as_str()
            .trim_start_matches(STREAM_PREFIX)
            .to_owned(),
        version: recorded.stream_version,
        message,
        source: None,
    };
    let created = match recorded.decode().map_err(|e| corrupt(e.to_string()))? {
        DomainEvent::FlowchartVersionCreated(created) => created,
        other => {
            return Err(corrupt(format!(
                "{} is not a flowchart version",
                other.event_type()
            )));
        }
    };
    let flowchart = match compiled {
        Some(f) => f,
        None => {
            let doc: FlowchartDoc = serde_json::from_value(created.definition.clone())
                .map_err(|e| corrupt(format!("definition does not parse: {e}")))?;
            let flowchart = validate(doc).map_err(|errors| {
                corrupt(format!(
                    "definition is not valid: {}",
                    errors.first().map(|e| e.to_string()).unwrap_or_default()
                ))
            })?;
            Arc::new(flowchart)
        }
    };
    Ok(StoredFlowchart {
        name: created.name,
        version: created.version,
        definition: created.definition,
        definition_hash: created.definition_hash,
        actor: created.actor,
        created_at: recorded.recorded_at,
        request_id: recorded.request_id.clone(),
        correlation_id: recorded.correlation_id.clone(),
        flowchart,
    })
}

impl<S: EventStore + 'static> FlowchartSource for LedgerFlowcharts<S> {
    /// Resolves from the cache when it can (a pinned version), else reads the ledger. The trait
    /// is synchronous, so the read blocks this worker thread (`block_in_place`), which needs
    /// the multi-threaded runtime `runledger serve` runs on; elsewhere only cached pinned
    /// versions resolve.
    fn resolve(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(Arc<Flowchart>, Option<u32>), ResolveError> {
        if let Some(v) = version
            && let Some(hit) = self.cached(name, v)
        {
            return Ok((hit.flowchart, Some(v)));
        }
        let handle = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .ok_or_else(|| ResolveError::NotConfigured {
                name: name.to_owned(),
                what: "the registry can only be read on the multi-threaded runtime",
            })?;
        let stored = tokio::task::block_in_place(|| handle.block_on(self.get(name, version)))
            .map_err(|e| match e {
                RegistryError::NoSuchFlowchart(_) | RegistryError::NoSuchVersion { .. } => {
                    ResolveError::NotFound {
                        name: name.to_owned(),
                        what: e.to_string(),
                    }
                }
                other => ResolveError::Registry {
                    name: name.to_owned(),
                    source: Box::new(other),
                },
            })?;
        Ok((stored.flowchart, Some(stored.version)))
    }
}
