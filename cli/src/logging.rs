//! Logs on stderr. `RUNLEDGER_LOG` holds `tracing` directives: a level (`info`), or levels per
//! module with a default (`runledger_orchestrator=debug,warn`). Colours only on a terminal, so
//! files and log collectors get plain text.

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable that sets the log filter.
pub const LOG_ENV: &str = "RUNLEDGER_LOG";

/// Installs the global subscriber. A filter that does not parse is reported once and replaced by
/// the default (`warn`) rather than silently logging nothing or everything.
pub fn init() {
    let filter = match std::env::var(LOG_ENV) {
        Ok(directives) if !directives.trim().is_empty() => match directives.parse::<Targets>() {
            Ok(targets) => targets,
            Err(e) => {
                errln!(
                    "runledger: warning: {LOG_ENV}={directives:?} is not a log filter ({e}); using `warn`"
                );
                default_filter()
            }
        },
        _ => default_filter(),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init();
}

fn default_filter() -> Targets {
    Targets::new().with_default(LevelFilter::WARN)
}
