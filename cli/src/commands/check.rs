//! `runledger check`: the invariant gate for CI. Catches up the claim_evidence projection,
//! evaluates every claim of the registry (globally or for one run), prints a table or JSON, and
//! exits 1 when a claim at or above the `--fail-on` severity fails.

use std::path::PathBuf;

use clap::Args;
use runledger_contracts::ids::RunId;
use runledger_projections::Projections;
use runledger_projections::claims::query::run_known;
use runledger_projections::claims::{Registry, Severity};
use runledger_projections::query::{ClaimResult, ClaimStatus, claims_with};
use serde_json::json;

use crate::{Failure, GlobalArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 no claim at or above --fail-on fails; 1 one does, or the ledger cannot be \
                        read (one line on stderr); 2 a bad flag (one line naming it).\n\
                        The claim_evidence projection is brought up to the ledger's end first, so the \
                        answer covers every event committed before the command started."
)]
pub struct CheckArgs {
    /// Judge one run (a run id) instead of the whole ledger.
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Exit 1 when a claim of this severity or above fails: a list of critical, high, medium,
    /// low (its lowest counts), or `none` to only report.
    #[arg(long, value_name = "SEVERITIES", default_value = "critical,high")]
    fail_on: String,
    /// Print one JSON object: `{scope, fail_on, ok, claims: [...]}`.
    #[arg(long)]
    json: bool,
    /// Read the claims from the *.yaml files of DIR instead of the built-in registry
    /// (contracts/claims/, embedded in the binary); they must name built-in checkers.
    #[arg(long, value_name = "DIR")]
    claims: Option<PathBuf>,
}

impl CheckArgs {
    pub fn wants_json(&self) -> bool {
        self.json
    }
}

/// `--fail-on`: the lowest severity that fails the check, or `None` for `none`.
fn threshold(text: &str) -> Result<Option<Severity>, Failure> {
    let usage = |message: String| Failure::usage(format!("--fail-on: {message}"));
    let names: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names == ["none"] {
        return Ok(None);
    }
    if names.is_empty() {
        return Err(usage(
            "give at least one of critical, high, medium, low, or none".into(),
        ));
    }
    let mut lowest = Severity::Critical;
    for name in names {
        let severity = Severity::parse(name).ok_or_else(|| {
            usage(format!(
                "`{name}` is not a severity (critical, high, medium, low, or none alone)"
            ))
        })?;
        lowest = lowest.min(severity);
    }
    Ok(Some(lowest))
}

pub async fn run(global: &GlobalArgs, args: CheckArgs) -> Result<(), Failure> {
    let threshold = threshold(&args.fail_on)?;
    let run = match &args.run {
        Some(text) => Some(
            text.parse::<RunId>()
                .map_err(|_| Failure::usage(format!("--run: `{text}` is not a run id (a UUID)")))?,
        ),
        None => None,
    };
    let registry = match &args.claims {
        Some(dir) => Registry::from_dir(dir).map_err(|e| {
            let code = e.code();
            Failure::caused("--claims", e).with_code(code).as_usage()
        })?,
        None => Registry::builtin().map_err(|e| Failure::coded("built-in claims", e))?,
    };
    // PostgreSQL or the SQLite file: the claims are read from the projections of either.
    let store = super::open_existing(global).await?;
    let pool = runledger_projections::ReadDb::from(&store);
    Projections::select(pool.clone(), Some("claim_evidence"))
        .map_err(|e| Failure::coded("claim_evidence", e))?
        .catch_up()
        .await
        .map_err(|e| Failure::coded("cannot bring claim evidence up to date", e))?;
    if let Some(run) = run
        && !run_known(&pool, run)
            .await
            .map_err(|e| Failure::coded("cannot look the run up", e))?
    {
        return Err(
            Failure::new(format!("--run: no run {run} in the ledger")).with_code("run_not_found")
        );
    }
    let results = claims_with(&pool, &registry, run)
        .await
        .map_err(|e| Failure::coded("cannot evaluate the claims", e))?;
    let failing: Vec<&ClaimResult> = results
        .iter()
        .filter(|c| c.status == ClaimStatus::Fail && threshold.is_some_and(|t| c.severity >= t))
        .collect();
    let fail_on = threshold.map_or("none", |t| t.as_str());
    if args.json {
        let scope = run.map_or("all".to_owned(), |r| r.to_string());
        let out = json!({ "scope": scope, "fail_on": fail_on, "ok": failing.is_empty(), "claims": results });
        outln!("{out}");
    } else {
        print_table(&results);
        let count = |s: ClaimStatus| results.iter().filter(|c| c.status == s).count();
        let scope = run.map_or("the ledger".to_owned(), |r| format!("run {r}"));
        outln!(
            "{} claim(s) over {scope}: {} pass, {} fail, {} insufficient evidence; failing at or above {fail_on}: {}",
            results.len(),
            count(ClaimStatus::Pass),
            count(ClaimStatus::Fail),
            count(ClaimStatus::InsufficientEvidence),
            if failing.is_empty() {
                "none".to_owned()
            } else {
                failing
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    if failing.is_empty() {
        Ok(())
    } else {
        Err(Failure::silent())
    }
}

fn print_table(results: &[ClaimResult]) {
    let width = results.iter().map(|c| c.id.len()).max().unwrap_or(5).max(5);
    outln!(
        "{:<width$}  {:<8}  {:<21}  {:>9}  {:>10}  FIRST EVIDENCE",
        "CLAIM",
        "SEVERITY",
        "STATUS",
        "CHECKED",
        "VIOLATIONS"
    );
    for c in results {
        let first = c
            .evidence
            .violating
            .first()
            .or_else(|| c.evidence.supporting.first())
            .map(|e| {
                format!(
                    "{}#{} {}: {}",
                    e.stream_id, e.stream_version, e.event_type, e.message
                )
            })
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:<width$}  {:<8}  {:<21}  {:>9}  {:>10}  {first}",
            c.id,
            c.severity.as_str(),
            c.status.as_str(),
            c.checked,
            c.violations
        );
    }
}
