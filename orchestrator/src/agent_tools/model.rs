//! `provider_list`, `provider_get`, `model_list`, `model_get`, `model_validate_provider_settings`:
//! the model registry (`model-<name>` streams) and the providers it binds models to. Read-only.
//!
//! Secrets never appear: a spec holds only the *name* of the environment variable with the key
//! (`api_key_env`, checked to be a name, never a key) and a `base_url` without credentials
//! (both enforced by `ModelSpec::validate` before a spec is recorded); this domain returns
//! that name and never reads the environment. Validation errors name the field, never echo a
//! value.
//!
//! The registry's streams are folded here from their events (`ModelCreated`/`ModelUpdated` make
//! a model live with their spec, `ModelDeleted` removes it), as the executor-gateway's
//! `ModelRegistry` reads them; that crate sits above this one, so its reader cannot be called.

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_contracts::events::DomainEvent;
use runledger_contracts::flowchart::SCRIPTED_MODEL;
use runledger_contracts::model::{MODEL_STREAM_PREFIX, ModelSpec, ProviderKind, check_model_name};
use runledger_ledger::EventStore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{any, limit, object, one_of, spec, string};
use super::{invalid, not_found, parse, unavailable, unknown_tool};

/// Most models one `model_list` returns.
pub const MAX_MODELS: usize = 1000;
/// Events read per page of a model stream.
const PAGE: usize = 1000;

pub struct ModelDomain<S> {
    store: Arc<S>,
}

impl<S> ModelDomain<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }
}

/// A live model: its spec and the model stream's version.
struct Registered {
    spec: ModelSpec,
    version: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderArgs {
    provider: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelListArgs {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelArgs {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateArgs {
    spec: Value,
}

fn provider_names() -> Vec<&'static str> {
    ProviderKind::ALL.iter().map(|k| k.as_str()).collect()
}

fn provider_of(name: &str) -> Result<ProviderKind, ToolCallError> {
    ProviderKind::parse(name).ok_or_else(|| {
        not_found(format!(
            "there is no provider `{name}` (providers: {})",
            provider_names().join(", ")
        ))
    })
}

/// What a provider accepts, as `ModelSpec::validate` checks it.
fn provider_json(kind: ProviderKind, models: &[&Registered]) -> Value {
    let (settings, needs_key): (&[&str], bool) = match kind {
        ProviderKind::OpenaiCompatible => {
            (&["temperature", "max_tokens", "reasoning_effort"], false)
        }
        ProviderKind::Anthropic => (
            &["temperature", "max_tokens", "thinking_budget_tokens"],
            true,
        ),
        ProviderKind::Gemini => (
            &[
                "temperature",
                "max_tokens",
                "thinking_budget_tokens",
                "vertex",
            ],
            true,
        ),
        ProviderKind::Scripted => (&[], false),
    };
    let example = ModelSpec::new("x", kind, "x");
    let names: Vec<&str> = models
        .iter()
        .filter(|m| m.spec.provider == kind)
        .map(|m| m.spec.name.as_str())
        .collect();
    json!({
        "provider": kind.as_str(),
        "default_base_url": match kind {
            ProviderKind::Scripted => Value::Null,
            _ => json!(example.effective_base_url()),
        },
        "requires_api_key_env": needs_key,
        "settings": settings,
        "executor_classes": match kind {
            ProviderKind::OpenaiCompatible => json!(["frontier", "vllm"]),
            ProviderKind::Scripted => json!([]),
            _ => json!(["frontier"]),
        },
        "models": names,
    })
}

/// A model as a caller sees it: the spec's fields with defaults made explicit. `api_key_env`
/// is the variable's name (the key itself is never in the ledger).
fn model_json(m: &Registered) -> Value {
    let s = &m.spec;
    json!({
        "name": s.name,
        "provider": s.provider.as_str(),
        "model_id": s.model_id,
        "base_url": match s.provider {
            ProviderKind::Scripted => Value::Null,
            _ => json!(s.effective_base_url()),
        },
        "api_key_env": s.api_key_env,
        "executor_class": s.effective_executor_class().as_str(),
        "timeout_s": s.effective_timeout_s(),
        "description": s.description,
        "settings": s.settings,
        "version": m.version,
    })
}

fn builtin_scripted() -> Value {
    json!({
        "name": SCRIPTED_MODEL,
        "provider": "scripted",
        "builtin": true,
        "description": "The built-in offline model: answers from the node's `scripted` list.",
    })
}

impl<S: EventStore> ModelDomain<S> {
    /// The live model in one model stream, if any.
    async fn load(&self, name: &str) -> Result<Option<Registered>, ToolCallError> {
        let stream = ModelSpec::stream_id(name).map_err(|e| invalid(format!("name: {e}")))?;
        let mut live = None;
        let mut version = 0;
        loop {
            let page = self
                .store
                .read_stream(&stream, version + 1, PAGE)
                .await
                .map_err(unavailable)?;
            let done = page.len() < PAGE;
            for recorded in &page {
                version = recorded.stream_version;
                let event = recorded.decode().map_err(|e| ToolCallError::Failed {
                    code: "state_corrupt",
                    message: format!("{stream}#{version}: {e}"),
                    source: Some(Box::new(e)),
                })?;
                match event {
                    DomainEvent::ModelCreated(e) => live = Some(e.model),
                    DomainEvent::ModelUpdated(e) => live = Some(e.model),
                    DomainEvent::ModelDeleted(_) => live = None,
                    other => {
                        return Err(ToolCallError::Failed {
                            code: "state_corrupt",
                            message: format!(
                                "{stream}#{version}: {} in a model stream",
                                other.event_type()
                            ),
                            source: None,
                        });
                    }
                }
            }
            if done {
                break;
            }
        }
        Ok(live.map(|spec| Registered { spec, version }))
    }

    /// Every live model, by name.
    async fn all(&self) -> Result<Vec<Registered>, ToolCallError> {
        let heads = self
            .store
            .list_streams(MODEL_STREAM_PREFIX)
            .await
            .map_err(unavailable)?;
        let mut models = Vec::new();
        for head in heads {
            let name = head
                .stream_id
                .as_str()
                .trim_start_matches(MODEL_STREAM_PREFIX);
            if let Some(m) = self.load(name).await? {
                models.push(m);
            }
        }
        Ok(models)
    }

    async fn serve(&self, name: &str, arguments: Value) -> Result<Value, ToolCallError> {
        match name {
            "provider_list" => {
                let _: Empty = parse(arguments)?;
                let models = self.all().await?;
                let refs: Vec<&Registered> = models.iter().collect();
                let providers: Vec<Value> = ProviderKind::ALL
                    .iter()
                    .map(|k| provider_json(*k, &refs))
                    .collect();
                Ok(json!({ "providers": providers }))
            }
            "provider_get" => {
                let args: ProviderArgs = parse(arguments)?;
                let kind = provider_of(&args.provider)?;
                let models = self.all().await?;
                let refs: Vec<&Registered> = models.iter().collect();
                Ok(provider_json(kind, &refs))
            }
            "model_list" => {
                let args: ModelListArgs = parse(arguments)?;
                let kind = args.provider.as_deref().map(provider_of).transpose()?;
                let limit = match args.limit {
                    None => 100,
                    Some(n) if (1..=MAX_MODELS).contains(&n) => n,
                    Some(n) => {
                        return Err(invalid(format!(
                            "limit: {n} is out of range 1 to {MAX_MODELS}"
                        )));
                    }
                };
                let models = self.all().await?;
                let mut shown: Vec<Value> = Vec::new();
                if kind.is_none_or(|k| k == ProviderKind::Scripted) {
                    shown.push(builtin_scripted());
                }
                shown.extend(
                    models
                        .iter()
                        .filter(|m| kind.is_none_or(|k| m.spec.provider == k))
                        .map(model_json),
                );
                let total = shown.len();
                shown.truncate(limit);
                Ok(json!({ "models": shown, "total": total }))
            }
            "model_get" => {
                let args: ModelArgs = parse(arguments)?;
                if args.name == SCRIPTED_MODEL {
                    return Ok(builtin_scripted());
                }
                check_model_name(&args.name).map_err(|e| invalid(e.to_string()))?;
                let model = self
                    .load(&args.name)
                    .await?
                    .ok_or_else(|| not_found(format!("there is no model `{}`", args.name)))?;
                Ok(model_json(&model))
            }
            "model_validate_provider_settings" => {
                let args: ValidateArgs = parse(arguments)?;
                Ok(validate_spec(args.spec))
            }
            other => Err(unknown_tool("model", other)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Checks a model spec as `runledger models create` would, without recording it. The answer
/// names the offending field and its code; it never repeats a value (which could be a key
/// pasted in the wrong place).
fn validate_spec(spec: Value) -> Value {
    let parsed: Result<ModelSpec, _> = serde_path_to_error::deserialize(spec);
    match parsed {
        Err(e) => {
            let path = e.path().to_string();
            json!({
                "valid": false,
                "error": {
                    "field": if path == "." { String::new() } else { path },
                    "code": "invalid_spec",
                    "message": "the spec does not have the shape of a model spec (unknown key or wrong type)",
                },
            })
        }
        Ok(spec) => match spec.validate() {
            Ok(()) => json!({
                "valid": true,
                "provider": spec.provider.as_str(),
                "executor_class": spec.effective_executor_class().as_str(),
            }),
            Err(e) => json!({
                "valid": false,
                "error": { "field": e.field(), "code": e.code(), "message": e.to_string() },
            }),
        },
    }
}

impl<S: EventStore + 'static> ToolDomain for ModelDomain<S> {
    fn domain(&self) -> &str {
        "model"
    }

    fn specs(&self) -> Vec<ToolSpec> {
        let providers = provider_names();
        vec![
            spec(
                "provider_list",
                "The providers models can be bound to: default endpoint, whether a key variable is required, accepted settings, registered models.",
                object(json!({}), &[]),
                false,
            ),
            spec(
                "provider_get",
                "One provider: default endpoint, key requirement, accepted settings, registered models.",
                object(
                    json!({ "provider": one_of(&providers, "The provider.") }),
                    &["provider"],
                ),
                false,
            ),
            spec(
                "model_list",
                "The models of the registry (and the built-in `scripted`), optionally of one provider. Keys are never shown: only the name of the variable that holds one.",
                object(
                    json!({
                        "provider": one_of(&providers, "Only models of this provider."),
                        "limit": limit(MAX_MODELS, "Most models returned (default 100)."),
                    }),
                    &[],
                ),
                false,
            ),
            spec(
                "model_get",
                "One model of the registry: provider, model id, endpoint, executor class, timeout, settings, version.",
                object(
                    json!({ "name": string("The model's name, as task nodes write it.") }),
                    &["name"],
                ),
                false,
            ),
            spec(
                "model_validate_provider_settings",
                "Check a model spec (provider, model_id, base_url, api_key_env, settings, ...) against its provider's rules without registering it.",
                object(
                    json!({ "spec": any("A model spec, as `runledger models create` takes it.") }),
                    &["spec"],
                ),
                false,
            ),
        ]
    }

    fn call<'a>(
        &'a self,
        _ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(self.serve(name, arguments))
    }
}
