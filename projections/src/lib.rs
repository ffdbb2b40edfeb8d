//! Checkpointed projectors: run_detail, artifact_history, claim_evidence (see docs/ARCHITECTURE.md). Filled by the projections issue; nothing here yet.
