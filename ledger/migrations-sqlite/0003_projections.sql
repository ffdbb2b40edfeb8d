-- The read models on SQLite (crate `runledger-projections`; PostgreSQL's are migrations 0002 and
-- 0007). Same tables, same meaning, a portable shape: each row is the projector's row struct as
-- JSON (`doc`, written and read by serde on both sides, so the query API returns the same values
-- on either backend), beside the columns that find, filter and order rows. Every table here is
-- derived: `runledger projections rebuild` empties a projector's tables and its checkpoint and
-- replays the ledger from position zero.
--
-- Timestamps kept as columns are microseconds since the Unix epoch (as `events.recorded_at`);
-- ids are lower-case hyphenated UUID text.

-- Where each projector is in the ledger's commit order; moved in the transaction that applies
-- the batch (projectors write through the file's one writer connection, BEGIN IMMEDIATE).
CREATE TABLE projection_checkpoints (
    name            TEXT    PRIMARY KEY,
    tx_id           INTEGER NOT NULL DEFAULT 0,
    global_position INTEGER NOT NULL DEFAULT 0,
    events_applied  INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL DEFAULT 0,
    -- The event the projector could not apply, when it is stopped; NULL when healthy.
    error           TEXT
) WITHOUT ROWID;

-- ---- run_detail ---------------------------------------------------------------------------

CREATE TABLE run_detail_runs (
    run_id         TEXT    PRIMARY KEY,
    status         TEXT    NOT NULL,
    flowchart_name TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    doc            TEXT    NOT NULL
);

CREATE INDEX run_detail_runs_started ON run_detail_runs (started_at DESC, run_id DESC);
CREATE INDEX run_detail_runs_status ON run_detail_runs (status, started_at DESC, run_id DESC);
CREATE INDEX run_detail_runs_flowchart ON run_detail_runs (flowchart_name, started_at DESC, run_id DESC);

CREATE TABLE run_detail_node_runs (
    node_run_id TEXT    PRIMARY KEY,
    run_id      TEXT    NOT NULL,
    ordinal     INTEGER NOT NULL,
    doc         TEXT    NOT NULL
);

CREATE UNIQUE INDEX run_detail_node_runs_order ON run_detail_node_runs (run_id, ordinal);

CREATE TABLE run_detail_timeline (
    run_id         TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    node_run_id    TEXT,
    doc            TEXT    NOT NULL,
    PRIMARY KEY (run_id, stream_version)
) WITHOUT ROWID;

CREATE INDEX run_detail_timeline_node_run ON run_detail_timeline (node_run_id) WHERE node_run_id IS NOT NULL;

CREATE TABLE run_detail_tool_calls (
    run_id         TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    node_run_id    TEXT    NOT NULL,
    doc            TEXT    NOT NULL,
    PRIMARY KEY (run_id, stream_version)
) WITHOUT ROWID;

CREATE INDEX run_detail_tool_calls_node_run ON run_detail_tool_calls (node_run_id, stream_version);

-- ---- artifact_history ---------------------------------------------------------------------

CREATE TABLE artifact_history (
    artifact_id     TEXT    PRIMARY KEY,
    run_id          TEXT    NOT NULL,
    node_run_id     TEXT    NOT NULL,
    node_id         TEXT    NOT NULL,
    node_type       TEXT    NOT NULL,
    artifact_type   TEXT    NOT NULL,
    -- the ledger's insertion order: "newest first" and the pagination key
    global_position INTEGER NOT NULL UNIQUE,
    doc             TEXT    NOT NULL
);

CREATE INDEX artifact_history_run ON artifact_history (run_id, global_position DESC);
CREATE INDEX artifact_history_node_run ON artifact_history (node_run_id, global_position DESC);
CREATE INDEX artifact_history_node ON artifact_history (node_id, global_position DESC);
CREATE INDEX artifact_history_type ON artifact_history (artifact_type, global_position DESC);
CREATE INDEX artifact_history_node_type ON artifact_history (node_type, artifact_type, global_position DESC);

-- ---- claim_evidence -----------------------------------------------------------------------

CREATE TABLE claim_runs (
    run_id TEXT PRIMARY KEY,
    doc    TEXT NOT NULL
);

CREATE TABLE claim_node_runs (
    node_run_id TEXT    PRIMARY KEY,
    run_id      TEXT    NOT NULL,
    -- 1 while the node run has not ended (PostgreSQL: ended_status IS NULL)
    open        INTEGER NOT NULL,
    doc         TEXT    NOT NULL
);

CREATE INDEX claim_node_runs_open ON claim_node_runs (run_id) WHERE open = 1;

CREATE TABLE claim_tallies (
    run_id     TEXT    NOT NULL,
    checker    TEXT    NOT NULL,
    checked    INTEGER NOT NULL,
    violations INTEGER NOT NULL,
    doc        TEXT    NOT NULL,
    PRIMARY KEY (run_id, checker)
) WITHOUT ROWID;

CREATE TABLE claim_evidence (
    checker         TEXT    NOT NULL,
    verdict         TEXT    NOT NULL CHECK (verdict IN ('violation', 'support')),
    subject         TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    global_position INTEGER NOT NULL,
    doc             TEXT    NOT NULL,
    PRIMARY KEY (checker, verdict, subject)
) WITHOUT ROWID;

CREATE INDEX claim_evidence_run ON claim_evidence (checker, verdict, run_id, global_position);
CREATE INDEX claim_evidence_global ON claim_evidence (checker, verdict, global_position);
