//! Where the flowcharts of sub-flow (`flowchart: NAME`) nodes come from, and why one could not
//! be had. The error is typed, with the lower layer's error kept as its `source`, so the node's
//! `subflow_unavailable` message and a CLI line carry the whole cause, and a caller can tell a
//! missing flowchart from a registry it could not read.

use std::path::PathBuf;
use std::sync::Arc;

use runledger_contracts::flowchart::Flowchart;

/// Where the flowcharts of sub-flow nodes come from.
pub trait FlowchartSource: Send + Sync + 'static {
    /// The flowchart `name` (at `version`, when given) and the version it is.
    fn resolve(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(Arc<Flowchart>, Option<u32>), ResolveError>;
}

/// Why a sub-flow's flowchart could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Nothing is configured to look flowcharts up (no directory, no registry).
    #[error("sub-flow `{name}`: {what}")]
    NotConfigured { name: String, what: &'static str },
    /// The source has no flowchart of that name (or version).
    #[error("sub-flow `{name}`: {what}")]
    NotFound { name: String, what: String },
    /// A file was found but could not be read.
    #[error("{}: cannot be read", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was found but is not a valid flowchart of that name.
    #[error("{}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
    /// The registry could not answer (the database, a corrupt stored version).
    #[error("sub-flow `{name}`: the registry could not be read")]
    Registry {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Neither the directory nor the registry had it: both answers, the registry's as cause.
    #[error("{from_dir}; registry")]
    Neither {
        from_dir: Box<ResolveError>,
        #[source]
        from_registry: Box<ResolveError>,
    },
}

impl ResolveError {
    /// The whole cause chain on one line, for the node's `subflow_unavailable` message.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            let part = cause.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            next = cause.source();
        }
        text
    }
}

/// No sub-flows available: every `flowchart` node fails with `subflow_unavailable`.
pub struct NoFlowcharts;

impl FlowchartSource for NoFlowcharts {
    fn resolve(
        &self,
        name: &str,
        _: Option<u32>,
    ) -> Result<(Arc<Flowchart>, Option<u32>), ResolveError> {
        Err(ResolveError::NotConfigured {
            name: name.to_owned(),
            what: "no flowchart source is configured",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_keeps_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = ResolveError::Neither {
            from_dir: Box::new(ResolveError::NotFound {
                name: "child".into(),
                what: "no child.yaml, .yml or .json in flows".into(),
            }),
            from_registry: Box::new(ResolveError::Registry {
                name: "child".into(),
                source: Box::new(io),
            }),
        };
        assert_eq!(
            e.chain(),
            "sub-flow `child`: no child.yaml, .yml or .json in flows; registry: sub-flow `child`: the registry could not be read: denied"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
