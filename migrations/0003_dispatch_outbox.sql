-- The dispatch outbox's place in the ledger's commit-safe order (crate
-- `runledger-executor-gateway`, docs/gateway.md). `pending` holds the remote node runs it has
-- seen scheduled but not yet dispatched, so a restart resumes with them instead of re-reading
-- the ledger from the start.
CREATE TABLE dispatch_outbox (
    name            text        PRIMARY KEY,
    tx_id           xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    pending         jsonb       NOT NULL DEFAULT '[]',
    updated_at      timestamptz NOT NULL DEFAULT now()
);
