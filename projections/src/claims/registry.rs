//! The claim registry: files under `contracts/claims/`, one claim each (id, statement,
//! severity, checker). The files are embedded into the binary at build time, so `check` needs
//! no source tree; `Registry::from_dir` reads another directory instead (claims of your own,
//! over the built-in checkers).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::checkers::CHECKERS;

/// How bad a failing claim is; `check --fail-on` fails on claims at or above a severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One claim as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Stable id, `a-z 0-9 -` (the file is named after it).
    pub id: String,
    /// What must hold, for people.
    pub statement: String,
    pub severity: Severity,
    /// A built-in checker (see `checkers::CHECKERS`).
    pub checker: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: claim id `{id}` is already used by {other}")]
    DuplicateId {
        file: String,
        id: String,
        other: String,
    },
    #[error("{file}: unknown checker `{checker}` (known: {known})")]
    UnknownChecker {
        file: String,
        checker: String,
        known: String,
    },
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: no claim files (*.yaml) in it")]
    Empty { path: String },
}

impl RegistryError {
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::Invalid { .. } => "invalid_claim",
            RegistryError::DuplicateId { .. } => "duplicate_claim",
            RegistryError::UnknownChecker { .. } => "unknown_checker",
            RegistryError::Io { .. } => "io",
            RegistryError::Empty { .. } => "no_claims",
        }
    }
}

/// The claims `check` evaluates, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    claims: Vec<Claim>,
}

macro_rules! embedded {
    ($($file:literal),+ $(,)?) => {
        &[$(($file, include_str!(concat!("../../../contracts/claims/", $file)))),+]
    };
}

/// `contracts/claims/*.yaml`, embedded. A test fails when a file there is missing here.
pub(crate) const EMBEDDED: &[(&str, &str)] = embedded![
    "artifact-payload-matches-contract.yaml",
    "events-carry-request-and-correlation-ids.yaml",
    "fan-in-satisfied-before-scheduling.yaml",
    "frontier-runs-use-http-provider.yaml",
    "node-run-has-one-artifact.yaml",
    "nothing-scheduled-after-run-end.yaml",
    "routing-names-only-node-connectors.yaml",
];

impl Registry {
    /// The claims shipped with runledger (`contracts/claims/`).
    pub fn builtin() -> Result<Registry, RegistryError> {
        Registry::parse(
            EMBEDDED
                .iter()
                .map(|(name, text)| ((*name).to_owned(), (*text).to_owned())),
        )
    }

    /// Every `*.yaml` file of a directory.
    pub fn from_dir(dir: &Path) -> Result<Registry, RegistryError> {
        let io = |e: std::io::Error| RegistryError::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).map_err(|e| RegistryError::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                files.push((path.display().to_string(), text));
            }
        }
        if files.is_empty() {
            return Err(RegistryError::Empty {
                path: dir.display().to_string(),
            });
        }
        Registry::parse(files)
    }

    /// Claims from `(file name, YAML text)` pairs. Every problem names its file.
    pub fn parse(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Registry, RegistryError> {
        let mut claims: Vec<(String, Claim)> = Vec::new();
        for (file, text) in files {
            let claim: Claim =
                serde_yaml_ng::from_str(&text).map_err(|e| RegistryError::Invalid {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
            let id_ok = !claim.id.is_empty()
                && claim.id.len() <= 100
                && claim
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return Err(RegistryError::Invalid {
                    file,
                    message: format!("id `{}` must be 1 to 100 characters of a-z 0-9 -", claim.id),
                });
            }
            if claim.statement.trim().is_empty() {
                return Err(RegistryError::Invalid {
                    file,
                    message: "statement is empty".into(),
                });
            }
            if !CHECKERS.contains(&claim.checker.as_str()) {
                return Err(RegistryError::UnknownChecker {
                    file,
                    checker: claim.checker,
                    known: CHECKERS.join(", "),
                });
            }
            if let Some((other, _)) = claims.iter().find(|(_, c)| c.id == claim.id) {
                return Err(RegistryError::DuplicateId {
                    file,
                    id: claim.id,
                    other: other.clone(),
                });
            }
            claims.push((file, claim));
        }
        let mut claims: Vec<Claim> = claims.into_iter().map(|(_, c)| c).collect();
        claims.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Registry { claims })
    }

    pub fn claims(&self) -> &[Claim] {
        &self.claims
    }

    /// The checkers the claims use, each once.
    pub fn checkers(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.claims
            .iter()
            .map(|c| c.checker.as_str())
            .filter(|c| seen.insert(*c))
            .collect()
    }
}
