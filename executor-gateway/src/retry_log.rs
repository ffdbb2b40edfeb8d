//! How a loop that waits out a NATS outage logs. The outage itself is logged once at warn by
//! the connection's event callback ([`crate::connect`]); a loop retrying every second said so at
//! warn on every try, so a few minutes of outage were hundreds of warn lines. Here the first
//! failure of a stretch is a warn, the rest are debug, until the loop works again.

use std::fmt::Display;

#[derive(Debug, Default)]
pub struct RetryLog {
    failing: bool,
}

impl RetryLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// A try failed: a warn the first time since the last success, else a debug line. Returns
    /// whether it warned.
    pub fn failed(&mut self, what: &str, error: &dyn Display) -> bool {
        let first = !self.failing;
        self.failing = true;
        if first {
            tracing::warn!(error = %error, "{what}");
        } else {
            tracing::debug!(error = %error, "{what}");
        }
        first
    }

    /// A try worked: the next failure is news again.
    pub fn recovered(&mut self) {
        self.failing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_stretch_of_failures() {
        let mut log = RetryLog::new();
        let warned: Vec<bool> = (0..5).map(|_| log.failed("waiting", &"down")).collect();
        assert_eq!(warned, [true, false, false, false, false]);
        log.recovered();
        assert!(log.failed("waiting", &"down again"));
    }
}
