//! The model registry as a long-lived process sees it: followed, not read once at start.
//!
//! Why: `serve` and `runledger executor` run for weeks while models are registered and
//! re-pointed over the API. A copy read at start fails runs of new models with
//! `unknown_model` and keeps calling a model at its old URL.
//!
//! How: a cache of the registry's models (spec version, executor class, provider), checked
//! against the ledger by stream version. A lookup of a model the cache lacks re-reads the
//! registry at once (so a model registered a moment ago is found); a lookup of a known model
//! re-reads it when the cache is older than `max_age` (so an update reaches calls within
//! `max_age`). A re-read is one `list_streams("model-")` query, plus one read of each model
//! stream whose version changed; concurrent lookups share one re-read. An idle process does
//! nothing. The process needs to reach the ledger: executors already read the registry from
//! it at start, so this adds no new dependency (see docs/providers.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runledger_contracts::flowchart::{Node, SCRIPTED_MODEL};
use runledger_contracts::model::MODEL_STREAM_PREFIX;
use runledger_ledger::EventStore;
use runledger_orchestrator::executor::{ModelSource, Providers};
use runledger_orchestrator::provider::{BoxFuture, ModelProvider, ScriptedProvider};

use crate::dispatcher::ClassOf;
use crate::models::{ModelRegistry, RegistryError};
use crate::providers::provider_for;

/// How stale a known model may be before a lookup re-reads the registry.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Entry {
    class: String,
    provider: Arc<dyn ModelProvider>,
}

#[derive(Default)]
struct Cache {
    models: HashMap<String, Entry>,
    /// The version of every model stream as last read, deleted models included.
    versions: HashMap<String, u64>,
    /// When the registry was last re-read; `None` before the first read.
    checked: Option<Instant>,
}

/// The registry's models, followed as they change.
pub struct LiveModels<S> {
    store: S,
    scripted: ScriptedProvider,
    max_age: Duration,
    cache: Mutex<Cache>,
    /// Held during a re-read, so concurrent lookups wait for one instead of starting their own.
    rereading: tokio::sync::Mutex<()>,
}

impl<S: EventStore + 'static> LiveModels<S> {
    /// Reads the registry once (a failure here is the caller's to report) and follows it from
    /// then on.
    pub async fn load(
        store: S,
        scripted: ScriptedProvider,
        max_age: Duration,
    ) -> Result<Arc<Self>, RegistryError> {
        let models = Arc::new(Self {
            store,
            scripted,
            max_age,
            cache: Mutex::new(Cache::default()),
            rereading: tokio::sync::Mutex::new(()),
        });
        models.reread().await?;
        Ok(models)
    }

    /// What executors call: `scripted` (with its fixture) and every model of the registry.
    pub fn providers(self: &Arc<Self>) -> Providers {
        Providers::scripted(self.scripted.clone())
            .with_source(Arc::clone(self) as Arc<dyn ModelSource>)
    }

    /// The executor class of a node's work: its model's class, `frontier` for nodes without a
    /// registered model (`scripted`, `rag`).
    pub fn class_of(self: &Arc<Self>) -> ClassOf {
        let models = Arc::clone(self);
        Arc::new(move |node: &Node| {
            let (models, model) = (Arc::clone(&models), node.model.clone());
            Box::pin(async move {
                match model {
                    // The built-in model is never in the registry: no lookup (which, as a miss,
                    // would re-read the registry on every dispatch).
                    Some(model) if model == SCRIPTED_MODEL => "frontier".to_owned(),
                    Some(model) => models
                        .lookup(&model)
                        .await
                        .map_or_else(|| "frontier".to_owned(), |e| e.class),
                    None => "frontier".to_owned(),
                }
            })
        })
    }

    async fn lookup(&self, name: &str) -> Option<Entry> {
        let (hit, checked) = {
            let cache = self.cache.lock().ok()?;
            (cache.models.get(name).cloned(), cache.checked)
        };
        let fresh = checked.is_some_and(|at| at.elapsed() < self.max_age);
        if hit.is_some() && fresh {
            return hit;
        }
        self.reread_after(checked).await;
        self.cache.lock().ok()?.models.get(name).cloned()
    }

    /// Re-reads the registry unless another lookup did since `seen`.
    async fn reread_after(&self, seen: Option<Instant>) {
        let _one = self.rereading.lock().await;
        if self.cache.lock().map(|c| c.checked != seen).unwrap_or(true) {
            return;
        }
        if let Err(e) = self.reread().await {
            // Keep serving what is known; the next lookup after max_age tries again.
            tracing::warn!(error = %e, code = e.code(), "cannot re-read the model registry; using the models known");
            if let Ok(mut cache) = self.cache.lock() {
                cache.checked = Some(Instant::now());
            }
        }
    }

    /// Brings the cache to the ledger's registry: models whose stream version changed are read
    /// again (and get a new provider), deleted ones leave.
    async fn reread(&self) -> Result<(), RegistryError> {
        let heads = self.store.list_streams(MODEL_STREAM_PREFIX).await?;
        let known = self
            .cache
            .lock()
            .map(|cache| cache.versions.clone())
            .unwrap_or_default();
        let mut changed = Vec::new();
        for head in heads {
            let name = head
                .stream_id
                .as_str()
                .trim_start_matches(MODEL_STREAM_PREFIX)
                .to_owned();
            if known.get(&name) != Some(&head.version) {
                changed.push((name, head.version));
            }
        }
        let registry = ModelRegistry::new(&self.store);
        let mut fresh = Vec::with_capacity(changed.len());
        for (name, version) in changed {
            let model = registry.get(&name).await?;
            let entry = match model {
                Some(model) => match provider_for(&model.spec, &self.scripted) {
                    Ok(provider) => Some(Entry {
                        class: model.spec.effective_executor_class().as_str().to_owned(),
                        provider,
                    }),
                    Err(e) => {
                        tracing::warn!(model = %name, error = %e, "model has no usable provider; its runs fail with unknown_model");
                        None
                    }
                },
                None => None,
            };
            fresh.push((name, version, entry));
        }
        if let Ok(mut cache) = self.cache.lock() {
            for (name, version, entry) in fresh {
                cache.versions.insert(name.clone(), version);
                match entry {
                    Some(entry) => cache.models.insert(name, entry),
                    None => cache.models.remove(&name),
                };
            }
            cache.checked = Some(Instant::now());
        }
        Ok(())
    }
}

impl<S: EventStore + 'static> ModelSource for LiveModels<S> {
    fn provider<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Option<Arc<dyn ModelProvider>>> {
        Box::pin(async move { self.lookup(model).await.map(|e| e.provider) })
    }
}
