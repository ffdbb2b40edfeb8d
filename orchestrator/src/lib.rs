//! The run engine (see docs/ARCHITECTURE.md). Filled by the run-engine issue; nothing here yet.
