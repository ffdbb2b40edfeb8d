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

pub async fn run(global: &GlobalArgs, command: ProjectionsCommand) -> Result<(), Failure> {
    let store = super::connect(global).await?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::new(format!("cannot migrate the ledger: {e}")))?;
    let pool = store.pool().clone();
    match command {
        ProjectionsCommand::Rebuild { name, batch_size } => {
            if batch_size == 0 {
                return Err(Failure {
                    message: "--batch-size: must be at least 1".into(),
                    code: 2,
                });
            }
            let projections = select(pool, name.as_deref())?.with_batch_size(batch_size);
            let mut bar = ProgressLine::new("rebuilt");
            let reports = projections.rebuild(&mut |p| bar.update(p)).await;
            bar.finish();
            for report in reports.map_err(|e| Failure::new(e.to_string()))? {
                print_report("rebuilt from position zero", &report);
            }
            Ok(())
        }
        ProjectionsCommand::CatchUp { name } => {
            let projections = select(pool, name.as_deref())?;
            for report in projections
                .catch_up()
                .await
                .map_err(|e| Failure::new(e.to_string()))?
            {
                print_report("caught up", &report);
            }
            Ok(())
        }
        ProjectionsCommand::Status { json } => {
            let lags = lag(&pool)
                .await
                .map_err(|e| Failure::new(format!("cannot read checkpoints: {e}")))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&lags).map_err(|e| Failure::new(e.to_string()))?
                );
            } else {
                println!(
                    "{:<18} {:>13} {:>15} {:>14}  {:<22}  STATE",
                    "PROJECTOR", "EVENTS BEHIND", "SECONDS BEHIND", "APPLIED", "UPDATED"
                );
                for l in &lags {
                    let updated = l.updated_at.map_or("never".to_owned(), |t| t.to_string());
                    let state = l
                        .error
                        .as_deref()
                        .map_or("ok".to_owned(), |e| format!("STOPPED: {e}"));
                    println!(
                        "{:<18} {:>13} {:>15.3} {:>14}  {:<22}  {state}",
                        l.name, l.events_behind, l.seconds_behind, l.events_applied, updated
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

pub(super) fn select(pool: sqlx::PgPool, name: Option<&str>) -> Result<Projections, Failure> {
    Projections::select(pool, name).map_err(|e| Failure {
        message: e.to_string(),
        code: 2,
    })
}

fn print_report(what: &str, r: &Report) {
    println!(
        "{}: {what}: {} event(s) in {:.2}s ({:.0} events/s)",
        r.projector,
        r.applied,
        r.elapsed.as_secs_f64(),
        r.events_per_second()
    );
}

/// Progress on stderr: one line rewritten in place on a terminal, a plain line every few
/// seconds otherwise (logs, CI).
struct ProgressLine {
    tty: bool,
    started: Instant,
    last: Option<Instant>,
    current: Option<&'static str>,
    verb: &'static str,
}

impl ProgressLine {
    fn new(verb: &'static str) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            current: None,
            verb,
        }
    }

    fn update(&mut self, p: Progress) {
        if self.current != Some(p.projector) {
            if self.current.is_some() && self.tty {
                eprintln!();
            }
            self.current = Some(p.projector);
            self.started = Instant::now();
            self.last = None;
        }
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.last.is_some_and(|l| l.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            p.applied as f64 / secs
        } else {
            0.0
        };
        let share = if p.total > 0 {
            format!(
                " ({:.0}%)",
                100.0 * p.applied.min(p.total) as f64 / p.total as f64
            )
        } else {
            String::new()
        };
        let line = format!(
            "{}: {} {} of {} events{share}, {rate:.0} events/s",
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
            eprintln!();
        }
    }
}
