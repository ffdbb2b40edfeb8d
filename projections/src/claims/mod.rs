//! `claim_evidence`: claims about the ledger (a registry under `contracts/claims/`), judged by
//! built-in checkers as the ledger is projected, each `pass`, `fail` or
//! `insufficient_evidence` with the events that prove it.

pub mod checkers;
mod projector;
pub mod query;
pub mod registry;

pub use projector::{ClaimEvidenceProjector, SAMPLES_PER_RUN};
pub use registry::{Claim, Registry, RegistryError, Severity};
