//! `runledger`: the one binary. Each subcommand lives in `commands/`; this file only parses
//! arguments, sets up logging and turns errors into one line on stderr (or one JSON object with
//! `--json`) and an exit code.

#[macro_use]
mod output;
mod commands;
mod failure;
mod logging;
#[cfg(feature = "otlp")]
mod otlp;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use runledger_ledger::LedgerLocation;

pub use failure::Failure;

/// An event-sourced orchestrator for LLM-agent flowcharts, with an auditable run ledger.
#[derive(Debug, Parser)]
#[command(
    name = "runledger",
    version,
    about = "An event-sourced orchestrator for LLM-agent flowcharts, with an auditable run ledger.",
    propagate_version = true,
    after_help = "Exit codes: 0 success; 1 the command failed or its answer is no (invalid flowchart, \
                  export that does not verify, unreachable service); 2 bad arguments.\n\
                  With --json, a failure is one JSON object on stdout: {\"ok\": false, \"error\": {\"code\", \"message\", ...}}.\n\
                  Logs go to stderr; RUNLEDGER_LOG sets levels, per module too \
                  (e.g. RUNLEDGER_LOG=runledger_orchestrator=debug,warn; default warn)."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the services are. Every flag also reads its environment variable.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Where the ledger is: `sqlite://PATH` (a file, created if missing) or `postgres://...`
    /// (the database is created if missing; needed by serve, executors and NATS dispatch).
    /// [default: the SQLite file ./.runledger/ledger.db]
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_DATABASE_URL",
        hide_env_values = true,
        help_heading = "Services"
    )]
    pub database_url: Option<String>,
    /// PostgreSQL schema that holds the ledger's tables (created if missing).
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_DATABASE_SCHEMA",
        default_value = "public",
        hide_env_values = true,
        help_heading = "Services"
    )]
    pub database_schema: String,
    /// NATS server with JetStream, for executor dispatch.
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true,
        help_heading = "Services"
    )]
    pub nats_url: String,
    /// Prefix of the JetStream streams, subjects and consumers, so deployments can share a
    /// NATS server (lowercase letters, digits, `_`; empty: `RUNLEDGER_*`, `runledger.*`).
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_NATS_NAMESPACE",
        default_value = "",
        hide_env_values = true,
        help_heading = "Services"
    )]
    pub nats_namespace: String,
    /// Where the derived RAG search indexes live (one directory per collection); rebuilt
    /// from the ledger and the sources when missing.
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_RAG_DATA_DIR",
        default_value = ".runledger/rag",
        hide_env_values = true,
        help_heading = "Storage"
    )]
    pub rag_data_dir: PathBuf,
}

impl GlobalArgs {
    /// Where the ledger is: the URL given, or the default SQLite file. The schema applies to
    /// PostgreSQL only.
    pub fn location(&self) -> Result<LedgerLocation, Failure> {
        let location = LedgerLocation::parse(self.database_url.as_deref())
            .map_err(|e| Failure::coded("--database-url", e).with_code("invalid_argument"))?;
        Ok(match location {
            LedgerLocation::Postgres(config) if self.database_schema != "public" => {
                LedgerLocation::Postgres(config.with_schema(&self.database_schema))
            }
            other => other,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the ledger's database migrations (idempotent).
    Migrate,
    /// Check a flowchart file and print every problem with its path.
    Validate {
        /// Flowchart file (.yaml, .yml or .json).
        flow: PathBuf,
        /// Print `{"valid": bool, "errors": [{"code", "path", "message"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Write the canonical, hash-chained JSON Lines export of runs or of the whole ledger.
    Export(commands::export::ExportArgs),
    /// Check an export offline: recompute every hash chain and name the first bad event.
    Verify {
        /// Export file, or `-` for standard input.
        file: PathBuf,
        /// Require a signature by this public key (a `keys generate` FILE.pub).
        #[arg(long, value_name = "PUBFILE")]
        key: Option<PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Re-drive the current decider over a recorded run (an export FILE, or --run ID from the
    /// ledger) and report the first event it decides differently; exit 1 on a divergence.
    Replay(commands::replay::ReplayArgs),
    /// Load verified exports into the ledger unchanged (ids, versions, hashes, times, blobs);
    /// idempotent, and a stream holding a different history is refused with nothing written.
    Import(commands::import::ImportArgs),
    /// Key pairs for signed exports.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Run a flowchart: validate it, start a run, and with --wait follow it to the end.
    Run(commands::run::RunArgs),
    /// Control runs (pause, resume, cancel; retry, skip, rewind a node) and show them.
    #[command(subcommand)]
    Runs(commands::runs::RunsCommand),
    /// Run the engine as a service: resume every unfinished run, pick up new ones.
    Serve(commands::serve::ServeArgs),
    /// One process for a laptop: drive every run of the ledger (on the SQLite file, resume
    /// the runs a killed process left, take those `run` records without --wait); Ctrl-C stops.
    Dev(commands::dev::DevArgs),
    /// Run an executor worker: take node work of one class from NATS JetStream, run it,
    /// publish the results; drains on SIGTERM.
    Executor(commands::executor::ExecutorArgs),
    /// Rebuild, catch up or inspect the read models (run detail, artifact history, claim
    /// evidence).
    #[command(subcommand)]
    Projections(commands::projections::ProjectionsCommand),
    /// Evaluate the claims (contracts/claims/) over the ledger and exit 1 when one at or above
    /// --fail-on fails: the invariant gate for CI.
    Check(commands::check::CheckArgs),
    /// Manage the model registry: the models `task` nodes name, bound to their providers.
    #[command(subcommand)]
    Models(commands::models::ModelsCommand),
    /// RAG: collections of sources, full and delta index runs, queries (docs/rag.md).
    #[command(subcommand)]
    Rag(commands::rag::RagCommand),
    /// Manage the MCP server registry: servers whose tools task nodes may call (docs/tools.md).
    Mcp(commands::mcp::McpArgs),
    /// `memory`, `plans`, `milestones`: show the tools' state (list, get), replayed from the ledger.
    #[command(flatten)]
    Tools(commands::tools::ToolsCommand),
    /// Show configuration and whether PostgreSQL and NATS JetStream are reachable.
    Status {
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Whether the command was asked for JSON output, so its failure is printed as JSON too.
    fn wants_json(&self) -> bool {
        match self {
            Command::Validate { json, .. }
            | Command::Verify { json, .. }
            | Command::Status { json } => *json,
            Command::Run(args) => args.wants_json(),
            Command::Runs(command) => command.wants_json(),
            Command::Projections(command) => command.wants_json(),
            Command::Check(args) => args.wants_json(),
            Command::Models(command) => command.wants_json(),
            Command::Rag(command) => command.wants_json(),
            Command::Tools(command) => command.wants_json(),
            Command::Mcp(args) => args.wants_json(),
            Command::Migrate
            | Command::Export(_)
            | Command::Serve(_)
            | Command::Dev(_)
            | Command::Executor(_)
            | Command::Replay(_)
            | Command::Import(_)
            | Command::Keys(_) => false,
        }
    }
}

fn main() -> ExitCode {
    let cli = parse_arguments();
    let _logging = logging::init();
    let as_json = cli.command.wants_json();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("runledger: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate => commands::migrate::run(&cli.global).await,
            Command::Validate { flow, json } => commands::validate::run(&flow, json),
            Command::Export(args) => commands::export::run(&cli.global, args).await,
            Command::Verify { file, key, json } => {
                commands::verify::run(&file, key.as_deref(), json)
            }
            Command::Keys(command) => commands::keys::run(command),
            Command::Replay(args) => commands::replay::run(&cli.global, args).await,
            Command::Import(args) => commands::import::run(&cli.global, args).await,
            Command::Run(args) => commands::run::run(&cli.global, args).await,
            Command::Runs(command) => commands::runs::run(&cli.global, command).await,
            Command::Serve(args) => commands::serve::run(&cli.global, args).await,
            Command::Dev(args) => commands::dev::run(&cli.global, args).await,
            Command::Executor(args) => commands::executor::run(&cli.global, args).await,
            Command::Projections(command) => commands::projections::run(&cli.global, command).await,
            Command::Check(args) => commands::check::run(&cli.global, args).await,
            Command::Models(command) => commands::models::run(&cli.global, command).await,
            Command::Rag(command) => commands::rag::run(&cli.global, command).await,
            Command::Tools(command) => commands::tools::run(&cli.global, command).await,
            Command::Mcp(args) => commands::mcp::run(args).await,
            Command::Status { json } => commands::status::run(&cli.global, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.is_broken_pipe() => output::exit_on_broken_pipe(),
        Err(failure) => {
            if !failure.is_silent() {
                report(&failure, as_json);
            }
            ExitCode::from(failure.exit)
        }
    }
}

/// One line on stderr, or with `--json` the error object on stdout (where the answer would be).
fn report(failure: &Failure, as_json: bool) {
    if as_json {
        match serde_json::to_string(&failure.envelope()) {
            Ok(line) => outln!("{line}"),
            Err(_) => errln!("runledger: error: {}", failure.line()),
        }
    } else {
        errln!("runledger: error: {}", failure.line());
    }
}

/// Parses the arguments, exiting 2 with clap's message when they are wrong. That message is
/// rendered as if no environment variable were set: clap counts an option given by the
/// environment as "used" and would list it in the usage line as if it were required.
fn parse_arguments() -> Cli {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => {
            if error.use_stderr()
                && let Err(plain) = without_env(Cli::command()).try_get_matches()
                && plain.kind() == error.kind()
            {
                plain.exit();
            }
            error.exit();
        }
    };
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn without_env(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| arg.env(None))
        .mut_subcommands(without_env)
}
