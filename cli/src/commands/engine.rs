//! Building the run engine the way `run` and `serve` use it: the PostgreSQL ledger (migrated),
//! the in-process executor pool with the `scripted` model, and sub-flows from a directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runledger_contracts::flowchart::{Flowchart, SourceFormat, load};
use runledger_ledger::PgEventStore;
use runledger_orchestrator::engine::{Engine, EngineConfig, FlowchartSource};
use runledger_orchestrator::executor::{InProcessPool, Providers};
use runledger_orchestrator::provider::{Script, ScriptedProvider};

use crate::{Failure, GlobalArgs};

/// Options shared by the commands that execute node runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Scripted-model fixture (YAML or JSON: node id -> list of responses); overrides the
    /// flowchart's `scripted` lists for the nodes it names.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// How many node runs the in-process executor runs at once.
    #[arg(long, value_name = "N", default_value_t = InProcessPool::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// How often an idle run checks the ledger for controls written by other processes.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub poll_ms: u64,
}

/// Connects, applies pending migrations, and builds the engine.
pub async fn build(global: &GlobalArgs, exec: &ExecArgs, flowcharts: Option<PathBuf>) -> Result<Engine<PgEventStore>, Failure> {
    let store = super::connect(global).await?;
    store.migrate().await.map_err(|e| Failure::new(format!("cannot migrate the ledger: {e}")))?;
    let script = match &exec.script {
        Some(path) => read_script(path)?,
        None => Script::new(),
    };
    let providers = Providers::scripted(ScriptedProvider::with_fixture(script));
    let pool = InProcessPool::new(providers, exec.concurrency);
    let source: Arc<dyn FlowchartSource> = Arc::new(DirSource { dir: flowcharts });
    let config = EngineConfig { poll_interval: Duration::from_millis(exec.poll_ms.max(10)), ..EngineConfig::default() };
    Ok(Engine::new(store, Arc::new(pool), source, config))
}

fn read_script(path: &Path) -> Result<Script, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
    ScriptedProvider::parse_fixture(&text).map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

/// Sub-flow `flowchart: NAME` nodes load `NAME.yaml`, `NAME.yml` or `NAME.json` from a directory.
pub struct DirSource {
    pub dir: Option<PathBuf>,
}

impl FlowchartSource for DirSource {
    fn resolve(&self, name: &str, version: Option<u32>) -> Result<(Arc<Flowchart>, Option<u32>), String> {
        let Some(dir) = &self.dir else {
            return Err(format!("sub-flow `{name}`: no flowchart directory is configured (--flowcharts)"));
        };
        if version.is_some() {
            return Err(format!("sub-flow `{name}`: pinned versions need the flowchart registry; files have none"));
        }
        for ext in ["yaml", "yml", "json"] {
            let path = dir.join(format!("{name}.{ext}"));
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let flowchart = load(&text, SourceFormat::from_file_name(&path.to_string_lossy()))
                .map_err(|errors| {
                    let first = errors.first().map(|e| format!("{}: {}", e.path, e.message)).unwrap_or_default();
                    format!("{}: not a valid flowchart ({first})", path.display())
                })?;
            if flowchart.name() != name {
                return Err(format!("{}: its name is `{}`, not `{name}`", path.display(), flowchart.name()));
            }
            return Ok((Arc::new(flowchart), None));
        }
        Err(format!("sub-flow `{name}`: no {name}.yaml, .yml or .json in {}", dir.display()))
    }
}
