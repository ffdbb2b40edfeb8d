//! Logs on stderr. `RUNLEDGER_LOG` holds `tracing` directives: a level (`info`), or levels per
//! module with a default (`runledger_orchestrator=debug,warn`). Colours only on a terminal, so
//! files and log collectors get plain text.

use std::io::IsTerminal;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable that sets the log filter.
pub const LOG_ENV: &str = "RUNLEDGER_LOG";

/// What keeps the log and trace outputs working until `main` returns: dropping it flushes the
/// spans still queued for OTLP.
pub struct Logging {
    #[cfg(feature = "otlp")]
    _exporting: Option<crate::otlp::Exporting>,
}

/// Installs the global subscriber. A filter that does not parse is reported once and replaced by
/// the default (`warn`) rather than silently logging nothing or everything.
pub fn init() -> Logging {
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
        .with_target(true)
        .with_filter(filter);
    #[cfg(feature = "otlp")]
    {
        let (otlp, exporting) = crate::otlp::layer().unzip();
        let _ = tracing_subscriber::registry()
            .with(fmt)
            .with(otlp)
            .try_init();
        Logging {
            _exporting: exporting,
        }
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        Logging {}
    }
}

fn default_filter() -> Targets {
    Targets::new().with_default(LevelFilter::WARN)
}
