//! The model registry: models live in the ledger, one stream per model (`model-<name>`), as
//! `ModelCreated`, `ModelUpdated` and `ModelDeleted` events.
//!
//! Why a stream per model rather than one `models` stream: the stream version *is* the model's
//! version, so `--expected-version` is the ledger's own optimistic-concurrency check and two
//! people editing different models never conflict; a request id is idempotent per stream, which
//! is per model; and reading one model reads only its own history. Listing reads every model
//! stream (`list_streams("model-")`), which is cheap for a registry of models.
//!
//! Every write validates the spec first (bad input writes nothing), then appends with an
//! expected version. Repeating a request id returns what it wrote the first time and writes
//! nothing; the same request id with other content is `request_id_reused`.

use runledger_contracts::envelope::{NewEvent, RecordedEvent};
use runledger_contracts::events::{DomainEvent, ModelCreated, ModelDeleted, ModelUpdated};
use runledger_contracts::ids::{CorrelationId, RequestId, StreamId};
use runledger_contracts::model::{
    MODEL_STREAM_PREFIX, ModelSpec, ModelSpecError, check_model_name,
};
use runledger_contracts::time::Timestamp;
use runledger_ledger::{AppendRequest, EventStore, ExpectedVersion, StoreError};

/// Events read per page of a model stream.
const PAGE: usize = 1000;

/// A model as the registry holds it now.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModel {
    pub spec: ModelSpec,
    /// The model stream's version: what `--expected-version` compares against.
    pub version: u64,
    pub updated_at: Timestamp,
}

/// Who asks for a change, and the request id that makes it idempotent.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    pub request_id: RequestId,
    pub actor: String,
}

impl ChangeRequest {
    pub fn new(request_id: RequestId, actor: impl Into<String>) -> Self {
        Self {
            request_id,
            actor: actor.into(),
        }
    }
}

/// The result of a create, update or delete.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeOutcome {
    /// The model stream's version after the change.
    pub version: u64,
    /// The request had been applied before; nothing was written now.
    pub deduplicated: bool,
    /// The event the request wrote (`ModelCreated`, `ModelUpdated`, `ModelDeleted`).
    pub event_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] ModelSpecError),
    #[error("name: model `{name}` already exists (version {version})")]
    Exists { name: String, version: u64 },
    #[error("name: model `{name}` does not exist")]
    NotFound { name: String },
    #[error("expected_version: model `{name}` is at version {actual}, not {expected}")]
    VersionConflict {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "provider: model `{name}` is bound to `{current}`; delete it and create it again to change its provider"
    )]
    ProviderChanged { name: String, current: String },
    #[error("request_id: `{request_id}` was already used for another change of model `{name}`")]
    RequestReused { name: String, request_id: String },
    #[error("the stream of model `{name}` holds events the registry cannot read: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("ledger: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Provider(String),
}

impl RegistryError {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::Invalid(e) => e.code(),
            RegistryError::Exists { .. } => "model_exists",
            RegistryError::NotFound { .. } => "model_not_found",
            RegistryError::VersionConflict { .. } => "version_conflict",
            RegistryError::ProviderChanged { .. } => "provider_immutable",
            RegistryError::RequestReused { .. } => "request_id_reused",
            RegistryError::Corrupt { .. } => "ledger_corrupt",
            RegistryError::Store(e) => e.code(),
            RegistryError::Provider(_) => "provider_client_error",
        }
    }

    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RegistryError::Invalid(e) => Some(e.field()),
            RegistryError::Exists { .. } | RegistryError::NotFound { .. } => Some("name"),
            RegistryError::VersionConflict { .. } => Some("expected_version"),
            RegistryError::ProviderChanged { .. } => Some("provider"),
            RegistryError::RequestReused { .. } => Some("request_id"),
            _ => None,
        }
    }
}

/// A model stream folded: its version and the live spec, if the model is not deleted.
#[derive(Debug, Default)]
struct StreamState {
    version: u64,
    live: Option<RegisteredModel>,
    /// Version just before the event that made the model live or deleted (the last
    /// `ModelCreated` or `ModelDeleted`): where a repeat of that request was appended.
    before_last_change: u64,
}

pub struct ModelRegistry<'a, S> {
    store: &'a S,
}

impl<'a, S: EventStore> ModelRegistry<'a, S> {
    pub fn new(store: &'a S) -> Self {
        Self { store }
    }

    /// The model named `name`, unless it does not exist or was deleted.
    pub async fn get(&self, name: &str) -> Result<Option<RegisteredModel>, RegistryError> {
        check_model_name(name)?;
        Ok(self.load(name).await?.live)
    }

    /// Every live model, ordered by name.
    pub async fn list(&self) -> Result<Vec<RegisteredModel>, RegistryError> {
        let mut models = Vec::new();
        for head in self.store.list_streams(MODEL_STREAM_PREFIX).await? {
            let name = head
                .stream_id
                .as_str()
                .trim_start_matches(MODEL_STREAM_PREFIX);
            if let Some(model) = self.load(name).await?.live {
                models.push(model);
            }
        }
        Ok(models)
    }

    /// Registers a model; the name must be free (never used, or deleted).
    pub async fn create(
        &self,
        spec: ModelSpec,
        change: ChangeRequest,
    ) -> Result<ChangeOutcome, RegistryError> {
        spec.validate()?;
        let spec = spec.normalized();
        let name = spec.name.clone();
        let state = self.load(&name).await?;
        let expected = match (&state.live, state.version) {
            (None, 0) => ExpectedVersion::NoStream,
            (None, v) => ExpectedVersion::Exact(v),
            // Live already: only a repeat of the request that created it can succeed.
            (Some(_), _) => ExpectedVersion::Exact(state.before_last_change),
        };
        let event = DomainEvent::from(ModelCreated {
            model: spec,
            actor: change.actor.clone(),
        });
        match self.append(&name, expected, &change, &event).await {
            Err(RegistryError::VersionConflict { .. }) => {
                let now = self.load(&name).await?;
                Err(RegistryError::Exists {
                    name,
                    version: now.version,
                })
            }
            other => other,
        }
    }

    /// Replaces a model's spec as a whole. `expected` is the version the caller read (absent:
    /// the current one). The name and the provider cannot change.
    pub async fn update(
        &self,
        name: &str,
        spec: ModelSpec,
        expected: Option<u64>,
        change: ChangeRequest,
    ) -> Result<ChangeOutcome, RegistryError> {
        check_model_name(name)?;
        if spec.name != name {
            return Err(ModelSpecError::Invalid {
                field: "name",
                reason: format!("cannot change (`{name}` → `{}`)", spec.name),
            }
            .into());
        }
        spec.validate()?;
        let spec = spec.normalized();
        let state = self.load(name).await?;
        let Some(current) = &state.live else {
            return Err(RegistryError::NotFound {
                name: name.to_owned(),
            });
        };
        if current.spec.provider != spec.provider {
            return Err(RegistryError::ProviderChanged {
                name: name.to_owned(),
                current: current.spec.provider.to_string(),
            });
        }
        let expected = ExpectedVersion::Exact(expected.unwrap_or(state.version));
        let event = DomainEvent::from(ModelUpdated {
            model: spec,
            actor: change.actor.clone(),
        });
        self.append(name, expected, &change, &event).await
    }

    /// Removes a model. `expected` as for [`ModelRegistry::update`].
    pub async fn delete(
        &self,
        name: &str,
        expected: Option<u64>,
        change: ChangeRequest,
    ) -> Result<ChangeOutcome, RegistryError> {
        check_model_name(name)?;
        let state = self.load(name).await?;
        let expected = match (&state.live, state.version) {
            (Some(_), v) => ExpectedVersion::Exact(expected.unwrap_or(v)),
            (None, 0) => {
                return Err(RegistryError::NotFound {
                    name: name.to_owned(),
                });
            }
            // Deleted already: only a repeat of the request that deleted it can succeed.
            (None, _) => ExpectedVersion::Exact(state.before_last_change),
        };
        let deleted = state.live.is_none();
        let event = DomainEvent::from(ModelDeleted {
            name: name.to_owned(),
            actor: change.actor.clone(),
        });
        match self.append(name, expected, &change, &event).await {
            Err(RegistryError::VersionConflict { .. }) if deleted => Err(RegistryError::NotFound {
                name: name.to_owned(),
            }),
            other => other,
        }
    }

    async fn append(
        &self,
        name: &str,
        expected: ExpectedVersion,
        change: &ChangeRequest,
        event: &DomainEvent,
    ) -> Result<ChangeOutcome, RegistryError> {
        let stream = stream_of(name)?;
        let new_event = NewEvent::from_domain(event).map_err(|e| RegistryError::Corrupt {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        // The correlation id is the request id, so a repeated request is byte-identical.
        let correlation =
            CorrelationId::new(change.request_id.as_str()).map_err(|e| RegistryError::Corrupt {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        let request = AppendRequest::new(change.request_id.clone(), correlation, vec![new_event]);
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
            Err(StoreError::Conflict { actual, .. }) => {
                let expected = match expected {
                    ExpectedVersion::Exact(v) => v,
                    _ => 0,
                };
                Err(RegistryError::VersionConflict {
                    name: name.to_owned(),
                    expected,
                    actual,
                })
            }
            Err(StoreError::RequestMismatch { request_id, .. }) => {
                Err(RegistryError::RequestReused {
                    name: name.to_owned(),
                    request_id: request_id.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads and folds a model's stream.
    async fn load(&self, name: &str) -> Result<StreamState, RegistryError> {
        let stream = stream_of(name)?;
        let mut state = StreamState::default();
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

fn stream_of(name: &str) -> Result<StreamId, RegistryError> {
    ModelSpec::stream_id(name).map_err(|e| {
        ModelSpecError::Invalid {
            field: "name",
            reason: e.to_string(),
        }
        .into()
    })
}

fn apply(state: &mut StreamState, name: &str, event: &RecordedEvent) -> Result<(), RegistryError> {
    let corrupt = |reason: String| RegistryError::Corrupt {
        name: name.to_owned(),
        reason,
    };
    let decoded = event.decode().map_err(|e| corrupt(e.to_string()))?;
    let version = event.stream_version;
    match decoded {
        DomainEvent::ModelCreated(e) => {
            state.before_last_change = version - 1;
            state.live = Some(RegisteredModel {
                spec: e.model,
                version,
                updated_at: event.recorded_at,
            });
        }
        DomainEvent::ModelUpdated(e) => {
            state.live = Some(RegisteredModel {
                spec: e.model,
                version,
                updated_at: event.recorded_at,
            });
        }
        DomainEvent::ModelDeleted(_) => {
            state.before_last_change = version - 1;
            state.live = None;
        }
        other => {
            return Err(corrupt(format!(
                "{} at version {version}",
                other.event_type()
            )));
        }
    }
    state.version = version;
    Ok(())
}

#[cfg(test)]
mod tests {
    use runledger_contracts::model::{ExecutorClass, ProviderKind};
    use runledger_ledger::testing::TestLedger;

    use super::*;

    fn spec(name: &str) -> ModelSpec {
        let mut s = ModelSpec::new(name, ProviderKind::OpenaiCompatible, "gpt-4o-mini");
        s.api_key_env = Some("OPENAI_API_KEY".into());
        s.settings.reasoning_effort = Some("low".into());
        s
    }

    fn change(id: &str) -> ChangeRequest {
        ChangeRequest::new(RequestId::new(id).unwrap(), "tester")
    }

    async fn stream_len(ledger: &TestLedger, name: &str) -> u64 {
        let stream = ModelSpec::stream_id(name).unwrap();
        ledger
            .store
            .stream_head(&stream)
            .await
            .unwrap()
            .map_or(0, |h| h.version)
    }

    #[tokio::test]
    async fn create_list_get_update_delete() {
        let ledger = TestLedger::new().await.unwrap();
        let registry = ModelRegistry::new(&ledger.store);
        assert!(registry.list().await.unwrap().is_empty());

        let created = registry.create(spec("gpt"), change("c1")).await.unwrap();
        assert_eq!(
            (
                created.version,
                created.deduplicated,
                created.event_type.as_str()
            ),
            (1, false, "ModelCreated")
        );
        registry
            .create(spec("claude-like"), change("c2"))
            .await
            .unwrap();

        let got = registry.get("gpt").await.unwrap().unwrap();
        assert_eq!(got.version, 1);
        assert_eq!(
            got.spec.executor_class,
            Some(ExecutorClass::Frontier),
            "the class is recorded explicitly"
        );
        assert_eq!(got.spec.settings.reasoning_effort.as_deref(), Some("low"));
        let names: Vec<String> = registry
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.spec.name)
            .collect();
        assert_eq!(names, ["claude-like", "gpt"]);

        let mut changed = spec("gpt");
        changed.settings.reasoning_effort = Some("high".into());
        changed.timeout_s = Some(30);
        let updated = registry
            .update("gpt", changed, Some(1), change("u1"))
            .await
            .unwrap();
        assert_eq!(updated.version, 2);
        let got = registry.get("gpt").await.unwrap().unwrap();
        assert_eq!(
            (
                got.version,
                got.spec.settings.reasoning_effort.as_deref(),
                got.spec.timeout_s
            ),
            (2, Some("high"), Some(30))
        );

        // A stale expected version is a typed conflict and writes nothing.
        let err = registry
            .update("gpt", spec("gpt"), Some(1), change("u2"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "version_conflict");
        assert!(
            matches!(
                err,
                RegistryError::VersionConflict {
                    expected: 1,
                    actual: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(stream_len(&ledger, "gpt").await, 2);

        let deleted = registry.delete("gpt", Some(2), change("d1")).await.unwrap();
        assert_eq!(
            (deleted.version, deleted.event_type.as_str()),
            (3, "ModelDeleted")
        );
        assert!(registry.get("gpt").await.unwrap().is_none());
        assert_eq!(registry.list().await.unwrap().len(), 1);
        assert_eq!(
            registry
                .delete("gpt", None, change("d2"))
                .await
                .unwrap_err()
                .code(),
            "model_not_found"
        );
        assert_eq!(
            registry
                .update("gpt", spec("gpt"), None, change("u3"))
                .await
                .unwrap_err()
                .code(),
            "model_not_found"
        );

        // A deleted name can be registered again; the stream goes on.
        let again = registry.create(spec("gpt"), change("c3")).await.unwrap();
        assert_eq!(again.version, 4);
        assert_eq!(registry.get("gpt").await.unwrap().unwrap().version, 4);
        ledger.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn duplicate_create_is_a_typed_conflict_and_repeated_requests_write_once() {
        let ledger = TestLedger::new().await.unwrap();
        let registry = ModelRegistry::new(&ledger.store);
        registry.create(spec("gpt"), change("c1")).await.unwrap();

        // The same request again: nothing written, the first outcome returned.
        let repeat = registry.create(spec("gpt"), change("c1")).await.unwrap();
        assert_eq!((repeat.version, repeat.deduplicated), (1, true));
        // Another request for the same name: a conflict naming the model.
        let err = registry
            .create(spec("gpt"), change("c2"))
            .await
            .unwrap_err();
        assert_eq!((err.code(), err.field()), ("model_exists", Some("name")));
        assert!(err.to_string().contains("`gpt` already exists"), "{err}");
        // The first request id with other content: refused.
        let mut other = spec("gpt");
        other.model_id = "gpt-4.1".into();
        assert_eq!(
            registry
                .create(other, change("c1"))
                .await
                .unwrap_err()
                .code(),
            "request_id_reused"
        );
        assert_eq!(stream_len(&ledger, "gpt").await, 1);

        // Updates and deletes repeat safely too, even without an expected version.
        let mut changed = spec("gpt");
        changed.timeout_s = Some(9);
        assert!(
            !registry
                .update("gpt", changed.clone(), None, change("u1"))
                .await
                .unwrap()
                .deduplicated
        );
        let repeat = registry
            .update("gpt", changed, None, change("u1"))
            .await
            .unwrap();
        assert_eq!((repeat.version, repeat.deduplicated), (2, true));
        registry.delete("gpt", None, change("d1")).await.unwrap();
        let repeat = registry.delete("gpt", None, change("d1")).await.unwrap();
        assert_eq!((repeat.version, repeat.deduplicated), (3, true));
        assert_eq!(stream_len(&ledger, "gpt").await, 3);
        ledger.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn invalid_specs_write_nothing() {
        let ledger = TestLedger::new().await.unwrap();
        let registry = ModelRegistry::new(&ledger.store);

        let mut bad = spec("gpt");
        bad.settings.reasoning_effort = Some("extreme".into());
        let err = registry.create(bad, change("c1")).await.unwrap_err();
        assert_eq!(
            (err.code(), err.field()),
            ("invalid_value", Some("settings.reasoning_effort"))
        );
        let mut bad = spec("gpt");
        bad.api_key_env = Some("sk-proj-123".into());
        assert_eq!(
            registry
                .create(bad, change("c2"))
                .await
                .unwrap_err()
                .field(),
            Some("api_key_env")
        );
        let err = registry
            .create(spec("scripted"), change("c3"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "reserved_name");
        assert!(
            ledger
                .store
                .list_streams(MODEL_STREAM_PREFIX)
                .await
                .unwrap()
                .is_empty(),
            "nothing was written"
        );

        registry.create(spec("gpt"), change("c4")).await.unwrap();
        let mut bad = spec("gpt");
        bad.settings.thinking_budget_tokens = Some(2048);
        let err = registry
            .update("gpt", bad, None, change("u1"))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.field()),
            (
                "setting_not_allowed",
                Some("settings.thinking_budget_tokens")
            )
        );
        let mut other_provider = ModelSpec::new("gpt", ProviderKind::Anthropic, "claude-x");
        other_provider.api_key_env = Some("ANTHROPIC_API_KEY".into());
        let err = registry
            .update("gpt", other_provider, None, change("u2"))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.field()),
            ("provider_immutable", Some("provider"))
        );
        let err = registry
            .update("gpt", spec("renamed"), None, change("u3"))
            .await
            .unwrap_err();
        assert_eq!(err.field(), Some("name"));
        assert_eq!(
            stream_len(&ledger, "gpt").await,
            1,
            "no failed update wrote anything"
        );
        ledger.drop_schema().await.unwrap();
    }
}
