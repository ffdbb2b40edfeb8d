//! How a command fails: one line on stderr with the whole cause chain, like ripgrep
//! (`runledger: error: cannot open the ledger at URL: error communicating with database:
//! Connection refused (os error 111) [database_unavailable]`), or with `--json` one error object
//! on stdout, and an exit code. The cause chain is kept as typed errors (`source()`), not
//! flattened into strings, so nothing a lower layer said is lost.

use std::error::Error;

use runledger_contracts::error::ErrorEnvelope;
use serde_json::json;

/// Exit code of a command whose arguments are wrong (clap uses it too).
pub const USAGE_EXIT: u8 = 2;

/// A failure worth one line on stderr (or one JSON object), and the exit code to leave with.
#[derive(Debug)]
pub struct Failure {
    /// What the command was doing, e.g. "cannot read flow.yaml"; absent when the source says it.
    context: Option<String>,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
    /// A stable snake_case code scripts branch on (the API's codes where they exist).
    code: Option<&'static str>,
    /// The process exit code.
    pub exit: u8,
    /// The answer was already printed (an invalid flowchart, a failed run): nothing more to say.
    silent: bool,
}

/// Errors of the crates below that carry a stable code.
pub trait Coded {
    fn code(&self) -> &'static str;
}

macro_rules! coded {
    ($($ty:ty),* $(,)?) => {
        $(impl Coded for $ty {
            fn code(&self) -> &'static str {
                <$ty>::code(self)
            }
        })*
    };
}

coded!(
    runledger_ledger::StoreError,
    runledger_orchestrator::engine::EngineError,
    runledger_orchestrator::tools::ToolError,
    runledger_orchestrator::agent::RegistryError,
    runledger_executor_gateway::GatewayError,
    runledger_executor_gateway::models::RegistryError,
    runledger_executor_gateway::kube::ConnectError,
    runledger_executor_gateway::kube::SettingsError,
    runledger_projections::ProjectionError,
    runledger_projections::QueryError,
    runledger_projections::claims::registry::RegistryError,
);

impl Coded for runledger_ledger::export::ExportError {
    fn code(&self) -> &'static str {
        use runledger_ledger::export::ExportError;
        match self {
            ExportError::NoSuchStream(_) => "stream_not_found",
            ExportError::Store(e) => e.code(),
            ExportError::Io(_) => "io_error",
            ExportError::Canonical { .. } => "invalid_event",
        }
    }
}

impl Failure {
    /// A failure described by a message alone.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            context: Some(message.into()),
            source: None,
            code: None,
            exit: 1,
            silent: false,
        }
    }

    /// What the command was doing, and the error that stopped it (kept as the cause).
    pub fn caused(context: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        Self {
            source: Some(Box::new(source)),
            ..Self::new(context)
        }
    }

    /// [`Failure::caused`] with the error's own stable code.
    pub fn coded(
        context: impl Into<String>,
        source: impl Coded + Error + Send + Sync + 'static,
    ) -> Self {
        let code = source.code();
        Self::caused(context, source).with_code(code)
    }

    /// An error that says all there is to say, with its stable code.
    pub fn from_coded(source: impl Coded + Error + Send + Sync + 'static) -> Self {
        let code = source.code();
        Self::from(source).with_code(code)
    }

    /// Bad arguments that clap cannot check: exit 2, code `invalid_argument`.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: USAGE_EXIT,
            ..Self::new(message).with_code("invalid_argument")
        }
    }

    /// The command ran and the answer is "no" (invalid flowchart, bad export, failed run):
    /// output already said why, so nothing more is printed.
    pub fn silent() -> Self {
        Self {
            context: None,
            source: None,
            code: None,
            exit: 1,
            silent: true,
        }
    }

    /// The same failure, as a usage error (exit 2).
    pub fn as_usage(mut self) -> Self {
        self.exit = USAGE_EXIT;
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The code scripts see; `failed` when nothing more precise is known.
    pub fn code(&self) -> &'static str {
        self.code.unwrap_or("failed")
    }

    /// The context and every cause, outermost first. A cause whose text the previous one
    /// already quotes (a `#[error("...: {0}")]` wrapper) is left out, so nothing is said twice.
    pub fn chain(&self) -> Vec<String> {
        let mut parts: Vec<String> = self.context.iter().cloned().collect();
        let mut next: Option<&(dyn Error + 'static)> =
            self.source.as_deref().map(|e| e as &(dyn Error + 'static));
        while let Some(error) = next {
            let text = error.to_string();
            if !text.is_empty()
                && !parts
                    .last()
                    .is_some_and(|previous| previous.contains(&text))
            {
                parts.push(text);
            }
            next = error.source();
        }
        parts
    }

    /// The one line printed on stderr (without the `runledger: error: ` prefix).
    pub fn line(&self) -> String {
        let mut line = self.chain().join(": ");
        if let Some(code) = self.code {
            line.push_str(&format!(" [{code}]"));
        }
        line
    }

    /// The API's error envelope: `{"ok": false, "error": {"code", "message", "details":
    /// {"causes": [...]}}}`, where `message` is the whole chain on one line.
    pub fn envelope(&self) -> ErrorEnvelope {
        let chain = self.chain();
        let mut envelope = ErrorEnvelope::new(self.code(), chain.join(": "));
        envelope.error.details = json!({ "causes": chain.get(1..).unwrap_or_default() });
        envelope
    }

    /// True when some cause is stdout's reader going away (`runledger export --all | head`).
    pub fn is_broken_pipe(&self) -> bool {
        let mut next: Option<&(dyn Error + 'static)> =
            self.source.as_deref().map(|e| e as &(dyn Error + 'static));
        while let Some(error) = next {
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return true;
            }
            next = error.source();
        }
        false
    }

    pub fn is_silent(&self) -> bool {
        self.silent
    }
}

/// `?` on any error: its text and causes, no context.
impl<E: Error + Send + Sync + 'static> From<E> for Failure {
    fn from(e: E) -> Self {
        Self {
            context: None,
            source: Some(Box::new(e)),
            code: None,
            exit: 1,
            silent: false,
        }
    }
}
