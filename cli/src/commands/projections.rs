//! `runledger projections rebuild|catch-up|status`: drive the read models by hand. `serve`
//! keeps them current on its own; these are for rebuilding after a change to a projector, for
//! catching up without a server, and for seeing how far behind each one is.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Subcommand;
use runledger_projections::runner::DEFAULT_BATCH_SIZE;
use runledger_projections::{Progress, Projections, Report, lag};

use crate::{Failure, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild read models from position zero: in one transaction empty a projector's tables and
    /// checkpoint, then replay the whole ledger, with progress on stderr. Readers see the tables
    /// fill up again meanwhile.
    Rebuild {
        /// One projector (run_detail, artifact_history, claim_evidence); all of them when absent.
        name: Option<String>,
        /// Events read per batch (a batch never splits one append).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH_SIZE)]
        batch_size: usize,
    },
    /// Apply every event not projected yet, then exit.
    CatchUp {
        /// One projector; all of them when absent.
        name: Option<String>,
    },
    /// Show each projector's checkpoint, how far it is behind, and why it stopped if it did.
    Status {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
}

impl ProjectionsCommand {
    pub fn wants_json(&self) -> bool {
        matches!(self, ProjectionsCommand::Status { json: true })
    }
}

pub async fn run(global: &GlobalArgs, command: ProjectionsCommand) -> Result<(), Failure> {
    // PostgreSQL or the SQLite file: the read models live beside the ledger in either.
    let store = super::open_existing(global).await?;
    let pool = runledger_projections::ReadDb::from(&store);
    match command {
        ProjectionsCommand::Rebuild { name, batch_size } => {
            if batch_size == 0 {
                return Err(Failure::usage("--batch-size: must be at least 1"));
            }
            let projections = select(pool, name.as_deref())?.with_batch_size(batch_size);
            let mut bar = ProgressLine::new("rebuilt");
            let reports = projections.rebuild(&mut |p| bar.update(p)).await;
            bar.finish();
            for report in reports.map_err(|e| Failure::coded("rebuild", e))? {
                print_report("rebuilt from position zero", &report);
            }
            Ok(())
        }
        ProjectionsCommand::CatchUp { name } => {
            let projections = select(pool, name.as_deref())?;
            for report in projections
                .catch_up()
                .await
                .map_err(|e| Failure::coded("catch-up", e))?
            {
                print_report("caught up", &report);
            }
            Ok(())
        }
        ProjectionsCommand::Status { json } => {
            let lags = lag(&pool).await.map_err(|e| {
                Failure::caused("cannot read checkpoints", e).with_code("database_error")
            })?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string(&lags)
                        .map_err(|e| Failure::caused("cannot print JSON", e))?
                );
            } else {
                outln!(
                    "{:<18} {:>13} {:>15} {:>14}  {:<22}  STATE",
                    "PROJECTOR",
                    "EVENTS BEHIND",
                    "SECONDS BEHIND",
                    "APPLIED",
                    "UPDATED"
                );
                for l in &lags {
                    let updated = l.updated_at.map_or("never".to_owned(), |t| t.to_string());
                    let state = l
                        .error
                        .as_deref()
                        .map_or("ok".to_owned(), |e| format!("STOPPED: {e}"));
                    outln!(
                        "{:<18} {:>13} {:>15.3} {:>14}  {:<22}  {state}",
                        l.name,
                        l.events_behind,
                        l.seconds_behind,
                        l.events_applied,
                        updated
                    );
                }
            }
            if lags.iter().any(|l| l.error.is_some()) {
                Err(Failure::silent())
            } else {
                Ok(())
            }
        }
    }
}

pub(super) fn select(
    pool: runledger_projections::ReadDb,
    name: Option<&str>,
) -> Result<Projections, Failure> {
    Projections::select(pool, name).map_err(|e| {
        let code = e.code();
        Failure::from(e).with_code(code).as_usage()
    })
}

/// One line per projector. The rate follows the same rule as the progress line: under a
/// tenth of a second it would be a few events over a few microseconds (an impossible figure
/// beside the elapsed time printed as `0.00s`), so it is left out.
fn print_report(what: &str, r: &Report) {
    let rate = rate(r.applied, r.elapsed).map_or(String::new(), |r| format!(" ({r:.0} events/s)"));
    outln!(
        "{}: {what}: {} event(s) in {:.2}s{rate}",
        r.projector,
        r.applied,
        r.elapsed.as_secs_f64(),
    );
}

/// Progress on stderr: one line rewritten in place on a terminal, a plain line every few
/// seconds otherwise (logs, CI). The rate is measured from the projector's first progress
/// report, whose events were applied before this clock started: counting them would divide a
/// whole batch by a few microseconds.
struct ProgressLine {
    tty: bool,
    /// When the current projector's first report came, and how many events it had applied then.
    baseline: Option<(Instant, u64)>,
    last: Option<Instant>,
    current: Option<&'static str>,
    verb: &'static str,
}

impl ProgressLine {
    fn new(verb: &'static str) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            baseline: None,
            last: None,
            current: None,
            verb,
        }
    }

    fn update(&mut self, p: Progress) {
        if self.current != Some(p.projector) {
            if self.current.is_some() && self.tty {
                errln!();
            }
            self.current = Some(p.projector);
            self.baseline = None;
            self.last = None;
        }
        let (since, applied_before) = *self.baseline.get_or_insert((Instant::now(), p.applied));
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.last.is_some_and(|l| l.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let rate = rate(p.applied.saturating_sub(applied_before), since.elapsed())
            .map_or(String::new(), |r| format!(", {r:.0} events/s"));
        let share = if p.total > 0 {
            format!(
                " ({:.0}%)",
                100.0 * p.applied.min(p.total) as f64 / p.total as f64
            )
        } else {
            String::new()
        };
        let line = format!(
            "{}: {} {} of {} events{share}{rate}",
            p.projector, self.verb, p.applied, p.total
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else {
            let _ = writeln!(err, "{line}");
        }
    }

    fn finish(&mut self) {
        if self.tty && self.current.is_some() {
            errln!();
        }
    }
}

/// Events per second over `elapsed`; none until a tenth of a second has passed, as a rate over
/// less is noise.
fn rate(events: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs >= 0.1).then(|| events as f64 / secs)
}
