//! `runledger rag sources create|list|get|delete`, `rag index`, `rag status`, `rag query`:
//! RAG collections in the ledger and their derived search indexes (docs/rag.md).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use runledger_contracts::error::ErrorEnvelope;
use runledger_contracts::ids::RequestId;
use runledger_contracts::rag::{CollectionSpec, IndexMode, SourceKind, SourceSpec};
use runledger_ledger::LedgerStore;
use runledger_rag::indexer::IndexRequest;
use runledger_rag::registry::{ChangeRequest, CollectionState};
use runledger_rag::{QueryRequest, Rag, RagError};
use serde_json::{Value, json};

use crate::{Failure, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum RagCommand {
    /// Manage collections: named sets of sources (directories with include/exclude globs).
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// Index a collection: `delta` (default) reads only files new or changed since the last
    /// completed index and drops deleted ones; `full` re-reads everything.
    Index {
        collection: String,
        #[arg(long, value_enum, default_value = "delta")]
        mode: ModeArg,
        /// Who (recorded on the events).
        #[arg(long, env = "USER", default_value = "cli", hide_env_values = true)]
        actor: String,
        /// Print the completed run as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show a collection's index state from the ledger: last completed run, one in progress
    /// or interrupted, last failure.
    Status {
        collection: String,
        #[arg(long)]
        json: bool,
    },
    /// Retrieve the best chunks of a collection for a query (BM25).
    Query {
        collection: String,
        query: String,
        /// How many hits (1-100).
        #[arg(long, default_value_t = 5)]
        top_k: u32,
        /// Only this source (repeatable).
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        /// Only files whose `<source>/<path>` matches this glob.
        #[arg(long, value_name = "GLOB")]
        path_glob: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Measure retrieval: recall@k and query latency (p50/p99, in this process) over a JSON
    /// file of `[{"question", "relevant": ["<path suffix>", ...]}]`.
    Eval {
        collection: String,
        #[arg(long, value_name = "FILE")]
        questions: PathBuf,
        #[arg(long, default_value_t = 5)]
        top_k: u32,
        /// Times each question is asked; latencies skip the first (warm-up) round.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Full,
    Delta,
}

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Register a collection with one directory source (--dir), or several from a spec file.
    #[command(after_help = "Examples:\n  \
        runledger rag sources create docs --dir ./docs --include '**/*.md' --exclude 'drafts/**'\n  \
        runledger rag sources create kb --spec kb.yaml   # {name, sources: [{name, kind: directory, path, include, exclude}]}")]
    Create(CreateArgs),
    /// List the collections.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one collection: its spec and index state.
    Get {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a collection (its index runs stay in the ledger as history).
    Delete {
        name: String,
        /// Refuse unless the collection is at this version.
        #[arg(long, value_name = "N")]
        expected_version: Option<u64>,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    name: String,
    /// The directory to index (made absolute; recorded in the ledger).
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["spec", "git"],
        required_unless_present_any = ["spec", "git"]
    )]
    dir: Option<PathBuf>,
    /// A git repository to index instead of --dir: an absolute path or a URL (no password).
    #[arg(long, value_name = "REPO", conflicts_with = "spec")]
    git: Option<String>,
    /// The branch, tag or commit of --git to index (default: the repository's HEAD).
    #[arg(long = "ref", value_name = "REF", requires = "git")]
    git_ref: Option<String>,
    /// Name of the --dir source in hits and filters (default `main`).
    #[arg(long, value_name = "NAME", default_value = "main")]
    source_name: String,
    /// Glob of files to index, relative to --dir (repeatable; default every file).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Glob of files to leave out (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// A registered openai_compatible model to embed chunks and queries with: dense retrieval
    /// fused with BM25 (default: BM25 alone).
    #[arg(long, value_name = "MODEL")]
    embedding_model: Option<String>,
    /// A collection spec file (YAML or JSON) instead of --dir; its `name` must be NAME.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    #[command(flatten)]
    change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Idempotency key: the same request id applies once. Generated when absent.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Who (recorded on the event).
    #[arg(long, env = "USER", default_value = "cli", hide_env_values = true)]
    actor: String,
    #[arg(long)]
    json: bool,
}

impl RagCommand {
    pub fn wants_json(&self) -> bool {
        match self {
            RagCommand::Index { json, .. }
            | RagCommand::Status { json, .. }
            | RagCommand::Query { json, .. }
            | RagCommand::Eval { json, .. } => *json,
            RagCommand::Sources(
                SourcesCommand::List { json } | SourcesCommand::Get { json, .. },
            ) => *json,
            RagCommand::Sources(SourcesCommand::Create(args)) => args.change.json,
            RagCommand::Sources(SourcesCommand::Delete { change, .. }) => change.json,
        }
    }
}

async fn service(global: &GlobalArgs) -> Result<Rag<LedgerStore>, Failure> {
    let store = super::open(global).await?;
    Ok(Rag::new(store, global.rag_data_dir.clone()))
}

pub async fn run(global: &GlobalArgs, command: RagCommand) -> Result<(), Failure> {
    let rag = service(global).await?;
    match command {
        RagCommand::Sources(SourcesCommand::Create(args)) => create(&rag, args).await,
        RagCommand::Sources(SourcesCommand::List { json }) => {
            match rag.collections().list().await {
                Ok(list) => {
                    if json {
                        let items: Vec<Value> = list.iter().map(state_json).collect();
                        outln!("{}", json!({ "collections": items }));
                    } else if list.is_empty() {
                        outln!("no collections");
                    } else {
                        for state in &list {
                            outln!("{}", summary_line(state));
                        }
                    }
                    Ok(())
                }
                Err(e) => fail("sources list", &e, json, None),
            }
        }
        RagCommand::Sources(SourcesCommand::Get { name, json })
        | RagCommand::Status {
            collection: name,
            json,
        } => match rag.status(&name).await {
            Ok(state) => {
                if json {
                    outln!("{}", state_json(&state));
                } else {
                    print_state(&state);
                }
                Ok(())
            }
            Err(e) => fail("status", &e, json, None),
        },
        RagCommand::Sources(SourcesCommand::Delete {
            name,
            expected_version,
            change,
        }) => {
            let request_id = request_id(change.request_id.as_deref())?;
            let request = ChangeRequest {
                request_id: request_id.clone(),
                actor: change.actor.clone(),
            };
            match rag
                .collections()
                .delete(&name, expected_version, &request)
                .await
            {
                Ok(outcome) => {
                    print_change("delete", &name, &outcome, &request_id, change.json);
                    Ok(())
                }
                Err(e) => fail("sources delete", &e, change.json, Some(&request_id)),
            }
        }
        RagCommand::Index {
            collection,
            mode,
            actor,
            json,
        } => {
            let request = IndexRequest {
                collection: collection.clone(),
                mode: match mode {
                    ModeArg::Full => IndexMode::Full,
                    ModeArg::Delta => IndexMode::Delta,
                },
                actor,
                node_run_id: None,
                request_id: None,
            };
            match rag.index(&request).await {
                Ok(outcome) => {
                    if json {
                        let mut line = serde_json::to_value(&outcome).unwrap_or(Value::Null);
                        line["ok"] = Value::Bool(true);
                        outln!("{line}");
                    } else {
                        let c = &outcome.completed;
                        let f = &c.files;
                        outln!(
                            "rag index {collection} ({}): index version {}; files: {} scanned, {} read, {} added, {} changed, {} deleted, {} unchanged, {} skipped; chunks: +{} -{} = {}; {} ms",
                            c.mode,
                            outcome.index_version,
                            f.scanned,
                            f.read,
                            f.added,
                            f.changed,
                            f.deleted,
                            f.unchanged,
                            f.skipped,
                            c.chunks_added,
                            c.chunks_deleted,
                            c.chunks_total,
                            c.duration_ms
                        );
                    }
                    Ok(())
                }
                Err(e) => fail("index", &e, json, None),
            }
        }
        RagCommand::Eval {
            collection,
            questions,
            top_k,
            rounds,
            json,
        } => {
            let text = std::fs::read_to_string(&questions).map_err(|e| {
                Failure::caused(
                    format!("--questions: cannot read {}", questions.display()),
                    e,
                )
                .with_code("file_unreadable")
            })?;
            let list: Vec<runledger_rag::eval::Question> =
                serde_json::from_str(&text).map_err(|e| {
                    Failure::caused(
                        format!(
                            "--questions: {} is not a question list",
                            questions.display()
                        ),
                        e,
                    )
                    .with_code("invalid_value")
                })?;
            match runledger_rag::eval::evaluate(&rag, &collection, &list, top_k, rounds).await {
                Ok(report) => {
                    if json {
                        outln!("{}", serde_json::to_value(&report).unwrap_or(Value::Null));
                    } else {
                        outln!(
                            "recall@{}: {:.3} ({}/{}); query p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                            report.top_k,
                            report.recall,
                            report.found,
                            report.questions,
                            report.p50_ms,
                            report.p99_ms,
                            report.max_ms
                        );
                        for miss in &report.misses {
                            outln!("  miss: {} -> {:?}", miss.question, miss.got);
                        }
                    }
                    Ok(())
                }
                Err(e) => fail("eval", &e, json, None),
            }
        }
        RagCommand::Query {
            collection,
            query,
            top_k,
            sources,
            path_glob,
            json,
        } => {
            if top_k == 0 || top_k > runledger_contracts::flowchart::MAX_TOP_K {
                return Err(Failure::usage(format!(
                    "--top-k: must be 1 to {}, found {top_k}",
                    runledger_contracts::flowchart::MAX_TOP_K
                )));
            }
            let request = QueryRequest {
                collection,
                query,
                top_k,
                sources,
                path_glob,
            };
            match rag.query(&request).await {
                Ok(result) => {
                    if json {
                        outln!("{}", serde_json::to_value(&result).unwrap_or(Value::Null));
                    } else {
                        outln!(
                            "{} hit(s) from index version {}",
                            result.hits.len(),
                            result.index_version
                        );
                        for (i, hit) in result.hits.iter().enumerate() {
                            outln!(
                                "{}. {:.3} {}/{}:{}-{} {}",
                                i + 1,
                                hit.score,
                                hit.source,
                                hit.path,
                                hit.start_line,
                                hit.end_line,
                                first_line(&hit.text)
                            );
                        }
                    }
                    Ok(())
                }
                Err(e) => fail("query", &e, json, None),
            }
        }
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.chars().take(100).collect()
}

fn request_id(given: Option<&str>) -> Result<RequestId, Failure> {
    match given {
        Some(id) => RequestId::new(id).map_err(|e| Failure::usage(format!("--request-id: {e}"))),
        None => Ok(RequestId::generate()),
    }
}

fn read_spec(path: &Path) -> Result<CollectionSpec, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::caused(format!("--spec: cannot read {}", path.display()), e))?;
    serde_yaml_ng::from_str(&text).map_err(|e| {
        Failure::caused(
            format!("--spec: {} is not a collection spec", path.display()),
            e,
        )
        .with_code("invalid_value")
    })
}

async fn create(rag: &Rag<LedgerStore>, args: CreateArgs) -> Result<(), Failure> {
    let request_id = request_id(args.change.request_id.as_deref())?;
    let spec = match (&args.spec, &args.dir) {
        (None, None) if args.git.is_some() => {
            // A local repository is recorded as an absolute path, like --dir.
            let repo = args.git.clone().unwrap_or_default();
            let repo =
                if !repo.contains("://") && !repo.starts_with('/') && Path::new(&repo).exists() {
                    std::fs::canonicalize(&repo)
                        .ok()
                        .and_then(|p| p.to_str().map(str::to_owned))
                        .unwrap_or(repo)
                } else {
                    repo
                };
            CollectionSpec {
                name: args.name.clone(),
                sources: vec![SourceSpec {
                    name: args.source_name.clone(),
                    kind: SourceKind::Git,
                    path: String::new(),
                    repo: Some(repo),
                    git_ref: args.git_ref.clone(),
                    include: args.include.clone(),
                    exclude: args.exclude.clone(),
                }],
                description: args.description.clone(),
                embedding_model: args.embedding_model.clone(),
            }
        }
        (Some(file), _) => {
            let spec = read_spec(file)?;
            if spec.name != args.name {
                return Err(Failure::usage(format!(
                    "--spec: the file names collection `{}`, not `{}`",
                    spec.name, args.name
                )));
            }
            spec
        }
        (None, Some(dir)) => {
            let path = std::fs::canonicalize(dir).map_err(|e| {
                Failure::caused(format!("--dir: cannot resolve {}", dir.display()), e)
                    .with_code("invalid_argument")
            })?;
            if !path.is_dir() {
                return Err(Failure::usage(format!(
                    "--dir: {} is not a directory",
                    path.display()
                )));
            }
            let Some(path) = path.to_str().map(str::to_owned) else {
                return Err(Failure::usage("--dir: the path is not UTF-8"));
            };
            CollectionSpec {
                name: args.name.clone(),
                sources: vec![SourceSpec {
                    name: args.source_name.clone(),
                    kind: SourceKind::Directory,
                    path,
                    repo: None,
                    git_ref: None,
                    include: args.include.clone(),
                    exclude: args.exclude.clone(),
                }],
                description: args.description.clone(),
                embedding_model: args.embedding_model.clone(),
            }
        }
        (None, None) => return Err(Failure::usage("give --dir or --spec")),
    };
    let request = ChangeRequest {
        request_id: request_id.clone(),
        actor: args.change.actor.clone(),
    };
    match rag.collections().create(spec, &request).await {
        Ok(outcome) => {
            print_change(
                "create",
                &args.name,
                &outcome,
                &request_id,
                args.change.json,
            );
            Ok(())
        }
        Err(e) => fail("sources create", &e, args.change.json, Some(&request_id)),
    }
}

fn print_change(
    action: &str,
    name: &str,
    outcome: &runledger_rag::registry::ChangeOutcome,
    request_id: &RequestId,
    as_json: bool,
) {
    if as_json {
        outln!(
            "{}",
            json!({
                "ok": true, "action": action, "name": name, "version": outcome.version,
                "event_type": outcome.event_type, "deduplicated": outcome.deduplicated,
                "request_id": request_id,
            })
        );
    } else if outcome.deduplicated {
        outln!(
            "rag sources {action}: request {request_id} was already applied to collection {name}; nothing written (version {})",
            outcome.version
        );
    } else {
        outln!(
            "rag sources {action}: collection {name}: {} (version {})",
            outcome.event_type,
            outcome.version
        );
    }
}

fn state_json(state: &CollectionState) -> Value {
    let mut v = serde_json::to_value(state).unwrap_or(Value::Null);
    v["name"] = state
        .spec
        .as_ref()
        .map(|s| Value::from(s.name.clone()))
        .unwrap_or(Value::Null);
    v["index_version"] = state
        .last_completed
        .as_ref()
        .map(|c| Value::from(c.version))
        .unwrap_or(Value::Null);
    v
}

fn summary_line(state: &CollectionState) -> String {
    let name = state.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("?");
    let sources = state.spec.as_ref().map(|s| s.sources.len()).unwrap_or(0);
    match &state.last_completed {
        Some(c) => format!(
            "{name}\tversion {}\t{sources} source(s)\tindex version {} ({} files, {} chunks)",
            state.version, c.version, c.event.files.scanned, c.event.chunks_total
        ),
        None => format!(
            "{name}\tversion {}\t{sources} source(s)\tnever indexed",
            state.version
        ),
    }
}

fn print_state(state: &CollectionState) {
    outln!("{}", summary_line(state));
    if let Some(spec) = &state.spec {
        for s in &spec.sources {
            let location = match (&s.repo, &s.git_ref) {
                (Some(repo), Some(r)) => format!("git {repo} at {r}"),
                (Some(repo), None) => format!("git {repo} at HEAD"),
                _ => s.path.clone(),
            };
            outln!(
                "  source {}: {} include {:?} exclude {:?}",
                s.name,
                location,
                s.include,
                s.exclude
            );
        }
        if let Some(model) = &spec.embedding_model {
            outln!("  embedding model: {model} (BM25 and dense, fused by reciprocal rank)");
        }
    }
    if let Some(c) = &state.last_completed {
        outln!(
            "  last completed: {} ({}) at {}, manifest {}",
            c.event.index_run_id,
            c.event.mode,
            c.completed_at,
            c.event.manifest
        );
        for (source, commit) in &c.event.commits {
            outln!("  source {source} indexed at commit {commit}");
        }
    }
    if let Some(r) = &state.running {
        outln!(
            "  started and not finished (in progress or interrupted): {} ({})",
            r.index_run_id,
            r.mode
        );
    }
    if let Some(f) = &state.last_failed {
        outln!(
            "  last failed: {}: {} [{}]",
            f.index_run_id,
            f.error.message,
            f.error.code
        );
    }
}

fn fail(
    action: &str,
    e: &RagError,
    as_json: bool,
    request_id: Option<&RequestId>,
) -> Result<(), Failure> {
    let message = runledger_rag::error_chain(e);
    if as_json {
        let details = match e.field() {
            Some(field) => json!({ "field": field, "retryable": e.retryable() }),
            None => json!({ "retryable": e.retryable() }),
        };
        let envelope = ErrorEnvelope::new(e.code(), message)
            .with_details(details)
            .with_ids(request_id.map(|r| r.as_str().to_owned()), None);
        outln!("{}", serde_json::to_string(&envelope).unwrap_or_default());
        return Err(Failure::silent());
    }
    Err(Failure::new(format!("rag {action}: {message}")).with_code(e.code()))
}
