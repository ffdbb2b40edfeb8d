//! NATS JetStream dispatch and executor workers (see docs/ARCHITECTURE.md). Filled by the executor-gateway issue; nothing here yet.
