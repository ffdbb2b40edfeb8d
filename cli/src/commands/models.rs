//! `runledger models create|list|get|update|delete`: the model registry (docs/providers.md).

use clap::{Args, Subcommand, ValueEnum};
use runledger_contracts::error::ErrorEnvelope;
use runledger_contracts::ids::RequestId;
use runledger_contracts::model::{ExecutorClass, ModelSpec, ProviderKind, VertexSettings};
use runledger_executor_gateway::models::{
    ChangeOutcome, ChangeRequest, ModelRegistry, RegisteredModel, RegistryError,
};
use serde_json::{Value, json};

use crate::{Failure, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Register a model: a name bound to one provider, its model id there, and settings.
    #[command(after_help = "Examples:\n  \
        runledger models create gpt --provider openai_compatible --model-id gpt-4o --api-key-env OPENAI_API_KEY --reasoning-effort low\n  \
        runledger models create llama --provider openai_compatible --model-id meta-llama/Llama-3.1-8B-Instruct --base-url http://vllm:8000/v1 --executor-class vllm\n  \
        runledger models create claude --provider anthropic --model-id claude-sonnet-4-5 --api-key-env ANTHROPIC_API_KEY --max-tokens 8000\n  \
        runledger models create gem --provider gemini --model-id gemini-2.5-pro --api-key-env VERTEX_TOKEN --vertex-project my-proj --vertex-location us-central1")]
    Create(CreateArgs),
    /// List the registered models.
    List {
        /// Print `{"models": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Show one model.
    Get {
        /// The model's name.
        name: String,
        /// Print the model as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Change settings of a model (its name and provider stay). Flags not given keep their value.
    Update(UpdateArgs),
    /// Remove a model; task nodes that name it fail with `unknown_model`.
    Delete(DeleteArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ProviderArg {
    /// OpenAI chat completions: OpenAI, vLLM and compatible servers.
    OpenaiCompatible,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini (Developer API; Vertex AI with --vertex-project/--vertex-location).
    Gemini,
    /// The built-in offline model (answers from `scripted` lists or --script).
    Scripted,
}

impl ProviderArg {
    fn kind(self) -> ProviderKind {
        match self {
            ProviderArg::OpenaiCompatible => ProviderKind::OpenaiCompatible,
            ProviderArg::Anthropic => ProviderKind::Anthropic,
            ProviderArg::Gemini => ProviderKind::Gemini,
            ProviderArg::Scripted => ProviderKind::Scripted,
        }
    }
}

impl ModelsCommand {
    pub fn wants_json(&self) -> bool {
        match self {
            ModelsCommand::List { json } | ModelsCommand::Get { json, .. } => *json,
            ModelsCommand::Create(args) => args.change.json,
            ModelsCommand::Update(args) => args.change.json,
            ModelsCommand::Delete(args) => args.change.json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassArg {
    /// Hosted providers, taken by `runledger executor --class frontier`.
    Frontier,
    /// Local OpenAI-compatible servers, taken by `runledger executor --class vllm`.
    Vllm,
}

/// Spec fields; on `update`, the ones given replace the current values.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The model's id at the provider (e.g. gpt-4o, claude-sonnet-4-5, gemini-2.5-pro).
    #[arg(long, value_name = "ID", help_heading = "Model")]
    model_id: Option<String>,
    /// The provider API's URL (default per provider; required for --executor-class vllm).
    #[arg(long, value_name = "URL", help_heading = "Model")]
    base_url: Option<String>,
    /// NAME of the environment variable holding the API key (Vertex AI: an access token);
    /// read by executors at call time. Never the key itself.
    #[arg(long, value_name = "VAR", help_heading = "Model")]
    api_key_env: Option<String>,
    /// Which executors run the model (default frontier).
    #[arg(long, value_enum, help_heading = "Model")]
    executor_class: Option<ClassArg>,
    /// Per-request timeout, 1-3600 seconds (default 120).
    #[arg(long, value_name = "SECONDS", help_heading = "Model")]
    timeout_s: Option<u64>,
    /// Free text shown by `get`.
    #[arg(long, value_name = "TEXT", help_heading = "Model")]
    description: Option<String>,
    /// Sampling temperature (0-2; Anthropic 0-1).
    #[arg(long, value_name = "T", help_heading = "Settings")]
    temperature: Option<f64>,
    /// Most tokens per answer.
    #[arg(long, value_name = "N", help_heading = "Settings")]
    max_tokens: Option<u32>,
    /// openai_compatible only: none, minimal, low, medium, high, xhigh.
    #[arg(long, value_name = "EFFORT", help_heading = "Settings")]
    reasoning_effort: Option<String>,
    /// anthropic (>= 1024, below max tokens) or gemini (0-32768) thinking budget.
    #[arg(long, value_name = "N", help_heading = "Settings")]
    thinking_budget_tokens: Option<u32>,
    /// gemini only: Vertex AI project (with --vertex-location).
    #[arg(long, value_name = "PROJECT", help_heading = "Settings")]
    vertex_project: Option<String>,
    /// gemini only: Vertex AI location, e.g. us-central1 or global (with --vertex-project).
    #[arg(long, value_name = "LOCATION", help_heading = "Settings")]
    vertex_location: Option<String>,
}

/// Who changes the registry, and the key that makes the change idempotent.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Idempotency key: the same request id applies once. Generated when absent.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Who (recorded on the event).
    #[arg(long, env = "USER", default_value = "cli", hide_env_values = true)]
    actor: String,
    /// Print the result as one JSON object (errors as the API error envelope).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The name task nodes use (`model: NAME`): A-Z a-z 0-9 - _ . (not `scripted`).
    name: String,
    /// Which API the model is called through.
    #[arg(long, value_enum)]
    provider: ProviderArg,
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    change: ChangeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Clearable {
    BaseUrl,
    ApiKeyEnv,
    ExecutorClass,
    TimeoutS,
    Description,
    Temperature,
    MaxTokens,
    ReasoningEffort,
    ThinkingBudgetTokens,
    Vertex,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The model's name.
    name: String,
    #[command(flatten)]
    spec: SpecArgs,
    /// Remove a field (back to its default); repeatable. Applied before the flags above.
    #[arg(long, value_enum, value_name = "FIELD")]
    unset: Vec<Clearable>,
    /// Fail with `version_conflict` unless the model is at this version (as `get` shows it).
    #[arg(long, value_name = "N")]
    expected_version: Option<u64>,
    #[command(flatten)]
    change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The model's name.
    name: String,
    /// Fail with `version_conflict` unless the model is at this version.
    #[arg(long, value_name = "N")]
    expected_version: Option<u64>,
    #[command(flatten)]
    change: ChangeArgs,
}

pub async fn run(global: &GlobalArgs, command: ModelsCommand) -> Result<(), Failure> {
    match command {
        ModelsCommand::Create(args) => {
            let mut spec = ModelSpec::new(
                &args.name,
                args.provider.kind(),
                args.spec.model_id.clone().unwrap_or_default(),
            );
            apply(&mut spec, &args.spec);
            change(global, &args.name, args.change, Change::Create(spec)).await
        }
        ModelsCommand::Update(args) => {
            let op = Change::Update {
                flags: args.spec,
                unset: args.unset,
                expected: args.expected_version,
            };
            change(global, &args.name, args.change, op).await
        }
        ModelsCommand::Delete(args) => {
            change(
                global,
                &args.name,
                args.change,
                Change::Delete {
                    expected: args.expected_version,
                },
            )
            .await
        }
        ModelsCommand::Get { name, json } => {
            let store = super::open_existing(global).await?;
            match ModelRegistry::new(&store).get(&name).await {
                Ok(Some(model)) => {
                    print_model(&model, json);
                    Ok(())
                }
                Ok(None) => fail("get", &RegistryError::NotFound { name }, json, None),
                Err(e) => fail("get", &e, json, None),
            }
        }
        ModelsCommand::List { json } => {
            let store = super::open_existing(global).await?;
            match ModelRegistry::new(&store).list().await {
                Ok(models) => {
                    print_list(&models, json);
                    Ok(())
                }
                Err(e) => fail("list", &e, json, None),
            }
        }
    }
}

/// A change of the registry, as the flags describe it.
enum Change {
    Create(ModelSpec),
    /// The current spec, minus `unset`, plus `flags`.
    Update {
        flags: SpecArgs,
        unset: Vec<Clearable>,
        expected: Option<u64>,
    },
    Delete {
        expected: Option<u64>,
    },
}

impl Change {
    fn action(&self) -> &'static str {
        match self {
            Change::Create(_) => "create",
            Change::Update { .. } => "update",
            Change::Delete { .. } => "delete",
        }
    }
}

/// Runs one registry change and prints its outcome (or its error, in one line).
async fn change(
    global: &GlobalArgs,
    name: &str,
    args: ChangeArgs,
    op: Change,
) -> Result<(), Failure> {
    let action = op.action();
    let request_id = match args.request_id {
        Some(id) => RequestId::new(id).map_err(|e| Failure::usage(format!("--request-id: {e}")))?,
        None => RequestId::generate(),
    };
    let store = super::open(global).await?;
    let registry = ModelRegistry::new(&store);
    let request = ChangeRequest::new(request_id.clone(), args.actor);
    let outcome = match op {
        Change::Create(spec) => registry.create(spec, request).await,
        Change::Update {
            flags,
            unset,
            expected,
        } => match registry.get(name).await {
            Ok(Some(current)) => {
                let mut spec = current.spec;
                for field in unset {
                    clear(&mut spec, field);
                }
                apply(&mut spec, &flags);
                registry.update(name, spec, expected, request).await
            }
            Ok(None) => Err(RegistryError::NotFound {
                name: name.to_owned(),
            }),
            Err(e) => Err(e),
        },
        Change::Delete { expected } => registry.delete(name, expected, request).await,
    };
    let outcome: ChangeOutcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return fail(action, &e, args.json, Some(&request_id)),
    };
    let model = if action == "delete" {
        None
    } else {
        registry.get(name).await.ok().flatten()
    };
    if args.json {
        let mut line = json!({
            "ok": true,
            "action": action,
            "name": name,
            "version": outcome.version,
            "event_type": outcome.event_type,
            "deduplicated": outcome.deduplicated,
            "request_id": request_id,
        });
        if let Some(model) = model {
            line["model"] = serde_json::to_value(&model.spec).unwrap_or(Value::Null);
        }
        outln!("{line}");
    } else if outcome.deduplicated {
        outln!(
            "models {action}: request {request_id} was already applied to model {name}; nothing written (version {})",
            outcome.version
        );
    } else {
        outln!(
            "models {action}: model {name}: {} (version {})",
            outcome.event_type,
            outcome.version
        );
    }
    Ok(())
}

/// One line naming the field (`models create: settings.reasoning_effort: ... [invalid_value]`),
/// or with `--json` the error envelope on stdout.
fn fail(
    action: &str,
    e: &RegistryError,
    as_json: bool,
    request_id: Option<&RequestId>,
) -> Result<(), Failure> {
    if as_json {
        let details = match e.field() {
            Some(field) => json!({ "field": field }),
            None => Value::Null,
        };
        let envelope = ErrorEnvelope::new(e.code(), e.to_string())
            .with_details(details)
            .with_ids(request_id.map(|r| r.as_str().to_owned()), None);
        outln!("{}", serde_json::to_string(&envelope).unwrap_or_default());
        return Err(Failure::silent());
    }
    Err(Failure::new(format!("models {action}: {e}")).with_code(e.code()))
}

/// Writes the given flags into the spec.
fn apply(spec: &mut ModelSpec, args: &SpecArgs) {
    if let Some(v) = &args.model_id {
        spec.model_id = v.clone();
    }
    if let Some(v) = &args.base_url {
        spec.base_url = Some(v.clone());
    }
    if let Some(v) = &args.api_key_env {
        spec.api_key_env = Some(v.clone());
    }
    if let Some(v) = args.executor_class {
        spec.executor_class = Some(match v {
            ClassArg::Frontier => ExecutorClass::Frontier,
            ClassArg::Vllm => ExecutorClass::Vllm,
        });
    }
    if let Some(v) = args.timeout_s {
        spec.timeout_s = Some(v);
    }
    if let Some(v) = &args.description {
        spec.description = Some(v.clone());
    }
    let s = &mut spec.settings;
    if let Some(v) = args.temperature {
        s.temperature = Some(v);
    }
    if let Some(v) = args.max_tokens {
        s.max_tokens = Some(v);
    }
    if let Some(v) = &args.reasoning_effort {
        s.reasoning_effort = Some(v.clone());
    }
    if let Some(v) = args.thinking_budget_tokens {
        s.thinking_budget_tokens = Some(v);
    }
    if args.vertex_project.is_some() || args.vertex_location.is_some() {
        let current = s.vertex.take();
        let project = args
            .vertex_project
            .clone()
            .or_else(|| current.as_ref().map(|v| v.project.clone()))
            .unwrap_or_default();
        let location = args
            .vertex_location
            .clone()
            .or_else(|| current.as_ref().map(|v| v.location.clone()))
            .unwrap_or_default();
        s.vertex = Some(VertexSettings { project, location });
    }
}

fn clear(spec: &mut ModelSpec, field: Clearable) {
    match field {
        Clearable::BaseUrl => spec.base_url = None,
        Clearable::ApiKeyEnv => spec.api_key_env = None,
        Clearable::ExecutorClass => spec.executor_class = None,
        Clearable::TimeoutS => spec.timeout_s = None,
        Clearable::Description => spec.description = None,
        Clearable::Temperature => spec.settings.temperature = None,
        Clearable::MaxTokens => spec.settings.max_tokens = None,
        Clearable::ReasoningEffort => spec.settings.reasoning_effort = None,
        Clearable::ThinkingBudgetTokens => spec.settings.thinking_budget_tokens = None,
        Clearable::Vertex => spec.settings.vertex = None,
    }
}

fn model_json(model: &RegisteredModel) -> Value {
    json!({
        "name": model.spec.name,
        "version": model.version,
        "updated_at": model.updated_at,
        "model": model.spec,
    })
}

fn print_model(model: &RegisteredModel, as_json: bool) {
    if as_json {
        outln!("{}", model_json(model));
        return;
    }
    let s = &model.spec;
    let mut rows: Vec<(&str, String)> = vec![
        ("name", s.name.clone()),
        ("version", model.version.to_string()),
        ("updated_at", model.updated_at.to_string()),
        ("provider", s.provider.to_string()),
        ("model_id", s.model_id.clone()),
        ("base_url", s.effective_base_url()),
        (
            "api_key_env",
            s.api_key_env.clone().unwrap_or_else(|| "(none)".into()),
        ),
        ("executor_class", s.effective_executor_class().to_string()),
        ("timeout_s", s.effective_timeout_s().to_string()),
    ];
    if let Some(d) = &s.description {
        rows.push(("description", d.clone()));
    }
    if !s.settings.is_empty() {
        rows.push((
            "settings",
            serde_json::to_string(&s.settings).unwrap_or_default(),
        ));
    }
    for (key, value) in rows {
        outln!("{key:<15} {value}");
    }
}

fn print_list(models: &[RegisteredModel], as_json: bool) {
    if as_json {
        let list: Vec<Value> = models.iter().map(model_json).collect();
        outln!("{}", json!({ "models": list }));
        return;
    }
    if models.is_empty() {
        outln!("no models registered (the built-in `scripted` model is always there)");
        return;
    }
    outln!(
        "{:<24} {:<18} {:<36} {:<9} VERSION",
        "NAME",
        "PROVIDER",
        "MODEL_ID",
        "CLASS"
    );
    for m in models {
        let s = &m.spec;
        outln!(
            "{:<24} {:<18} {:<36} {:<9} {}",
            s.name,
            s.provider.as_str(),
            s.model_id,
            s.effective_executor_class().as_str(),
            m.version
        );
    }
}
