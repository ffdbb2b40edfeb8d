-- Read models built from the ledger (crate `runledger-projections`, docs/projections.md).
--
-- Every table here is derived: `runledger projections rebuild` empties a projector's tables and
-- its checkpoint in one transaction and replays the ledger from position zero. Nothing in these
-- tables depends on when it was projected (no now()), so a rebuild gives exactly the same rows.

-- Where each projector is in the ledger's commit-safe order. Moved in the same transaction as
-- the projector's tables, so a crash never applies an event twice or skips one.
CREATE TABLE projection_checkpoints (
    name            text        PRIMARY KEY,
    tx_id           xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The event the projector could not apply, when it is stopped; NULL when healthy.
    error           text
);

-- Wakes projectors (LISTEN runledger_events) after appends, with the schema as payload so
-- processes on other schemas of the database ignore it.
--
-- A committing transaction that has notified holds a database-wide lock until its commit is
-- flushed, so notifying on every append serializes concurrent appends (measured: half the
-- throughput of 16 concurrent appenders). So at most one transaction in flight notifies: the
-- one that gets the schema's advisory lock; the others rely on its notification, and on the
-- projectors' polling for one that commits after it. A wake-up may come late; no event is
-- ever missed (projectors read the ledger, not the notifications).
CREATE FUNCTION runledger_notify_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_xact_lock(hashtext('runledger_events:' || TG_TABLE_SCHEMA)) THEN
        PERFORM pg_notify('runledger_events', TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER events_notify_appended AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_notify_appended();

-- ---- run_detail ---------------------------------------------------------------------------

CREATE TABLE run_detail_runs (
    run_id             uuid        PRIMARY KEY,
    stream_id          text        NOT NULL,
    status             text        NOT NULL,
    flowchart_name     text        NOT NULL,
    flowchart_version  integer,
    definition_hash    text        NOT NULL,
    inputs             jsonb       NOT NULL,
    actor              text        NOT NULL,
    parent_run_id      uuid,
    parent_node_id     text,
    parent_node_run_id uuid,
    deadline           timestamptz,
    started_at         timestamptz NOT NULL,
    ended_at           timestamptz,
    duration_ms        bigint,
    output             jsonb,
    error              jsonb,
    node_runs          integer     NOT NULL,
    -- node run status -> count, e.g. {"succeeded": 7, "failed": 1}
    status_counts      jsonb       NOT NULL,
    warnings           jsonb       NOT NULL,
    last_version       bigint      NOT NULL,
    -- recorded_at of the last event applied to the run
    updated_at         timestamptz NOT NULL
);

-- list_runs: newest first, optionally by status or flowchart.
CREATE INDEX run_detail_runs_started ON run_detail_runs (started_at DESC, run_id DESC);
CREATE INDEX run_detail_runs_status ON run_detail_runs (status, started_at DESC, run_id DESC);
CREATE INDEX run_detail_runs_flowchart ON run_detail_runs (flowchart_name, started_at DESC, run_id DESC);

CREATE TABLE run_detail_node_runs (
    node_run_id        uuid        PRIMARY KEY,
    run_id             uuid        NOT NULL,
    -- 1, 2, 3, ... in the order the run scheduled its node runs
    ordinal            integer     NOT NULL,
    node_id            text        NOT NULL,
    node_type          text        NOT NULL,
    attempt            integer     NOT NULL,
    execution_index    integer     NOT NULL,
    retry_of           uuid,
    input_context_hash text        NOT NULL,
    consumed_tokens    jsonb       NOT NULL,
    status             text        NOT NULL,
    executor_class     text,
    executor           text,
    scheduled_at       timestamptz NOT NULL,
    dispatched_at      timestamptz,
    started_at         timestamptz,
    finished_at        timestamptz,
    duration_ms        bigint,
    output             jsonb,
    error              jsonb,
    timeout            jsonb,
    warnings           jsonb       NOT NULL,
    fallback_used      boolean     NOT NULL,
    routing            jsonb,
    artifact_ids       jsonb       NOT NULL,
    tool_calls         integer     NOT NULL,
    child_run_id       uuid,
    retry              jsonb,
    skip               jsonb,
    cancel             jsonb,
    invalidated_at_version bigint,
    ignored_results    integer     NOT NULL,
    last_version       bigint      NOT NULL
);

CREATE UNIQUE INDEX run_detail_node_runs_order ON run_detail_node_runs (run_id, ordinal);

-- Run transitions, operator actions and node runs that did not simply succeed (failures,
-- timeouts, cancels, retries, skips, rewinds, ignored results, fallbacks, warnings), in stream
-- order. Routine node transitions are the node runs' timestamps; tool calls and artifacts have
-- their own tables.
CREATE TABLE run_detail_timeline (
    run_id         uuid        NOT NULL,
    stream_version bigint      NOT NULL,
    recorded_at    timestamptz NOT NULL,
    event_type     text        NOT NULL,
    -- run | node | operator
    category       text        NOT NULL,
    node_id        text,
    node_run_id    uuid,
    attempt        integer,
    actor          text,
    reason         text,
    detail         text        NOT NULL,
    request_id     text        NOT NULL,
    correlation_id text        NOT NULL,
    PRIMARY KEY (run_id, stream_version)
);

CREATE INDEX run_detail_timeline_node_run ON run_detail_timeline (node_run_id) WHERE node_run_id IS NOT NULL;

CREATE TABLE run_detail_tool_calls (
    run_id         uuid        NOT NULL,
    stream_version bigint      NOT NULL,
    node_run_id    uuid        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    tool           text        NOT NULL,
    operation      text        NOT NULL,
    outcome        text        NOT NULL,
    duration_ms    bigint      NOT NULL,
    attempts       integer     NOT NULL,
    provider       text,
    model          text,
    latency_ms     bigint,
    input_tokens   bigint,
    output_tokens  bigint,
    error          jsonb,
    PRIMARY KEY (run_id, stream_version)
);

CREATE INDEX run_detail_tool_calls_node_run ON run_detail_tool_calls (node_run_id);

-- ---- artifact_history ---------------------------------------------------------------------

CREATE TABLE artifact_history (
    artifact_id      uuid        PRIMARY KEY,
    run_id           uuid        NOT NULL,
    node_run_id      uuid        NOT NULL,
    node_id          text        NOT NULL,
    node_type        text        NOT NULL,
    artifact_type    text        NOT NULL,
    status           text        NOT NULL,
    contract_version integer     NOT NULL,
    payload          jsonb       NOT NULL,
    content          jsonb,
    content_hash     text        NOT NULL,
    idempotency_key  text        NOT NULL,
    request_id       text        NOT NULL,
    correlation_id   text        NOT NULL,
    stream_id        text        NOT NULL,
    stream_version   bigint      NOT NULL,
    -- the ledger's insertion order: "newest first" and the pagination key
    global_position  bigint      NOT NULL UNIQUE,
    recorded_at      timestamptz NOT NULL
);

-- One index per filter, each ending in the sort key, so a filtered page is an index range scan.
CREATE INDEX artifact_history_run ON artifact_history (run_id, global_position DESC);
CREATE INDEX artifact_history_node_run ON artifact_history (node_run_id, global_position DESC);
CREATE INDEX artifact_history_node ON artifact_history (node_id, global_position DESC);
CREATE INDEX artifact_history_type ON artifact_history (artifact_type, global_position DESC);
CREATE INDEX artifact_history_node_type ON artifact_history (node_type, artifact_type, global_position DESC);

-- ---- claim_evidence -----------------------------------------------------------------------

-- Facts the checkers need between batches.
CREATE TABLE claim_runs (
    run_id           uuid   PRIMARY KEY,
    stream_id        text   NOT NULL,
    -- RunCompleted | RunFailed | RunCanceled while the run is terminal; NULL while it is open
    terminal_event   text,
    terminal_version bigint
);

CREATE TABLE claim_node_runs (
    node_run_id        uuid    PRIMARY KEY,
    run_id             uuid    NOT NULL,
    node_id            text    NOT NULL,
    stream_id          text    NOT NULL,
    scheduled_version  bigint,
    scheduled_position bigint,
    -- how the node run ended (NodeSucceeded's status, ...); NULL while it runs
    ended_status       text,
    ended_version      bigint,
    ended_position     bigint,
    ended_event        text,
    artifacts          integer NOT NULL,
    frontier           boolean NOT NULL,
    http_provider_calls     integer NOT NULL,
    scripted_provider_calls integer NOT NULL
);

CREATE INDEX claim_node_runs_open ON claim_node_runs (run_id) WHERE ended_status IS NULL;

-- Per checker and run: how many things were checked and how many violated what the checker
-- judges. Events outside run streams count under the nil run id. Keyed by checker, not claim, so
-- editing the claim registry needs no rebuild.
CREATE TABLE claim_tallies (
    checker    text   NOT NULL,
    run_id     uuid   NOT NULL,
    checked    bigint NOT NULL,
    violations bigint NOT NULL,
    samples    integer NOT NULL,
    -- run first: a batch loads the tallies of the runs it touches
    PRIMARY KEY (run_id, checker)
);

-- Evidence: every violating event, and the first few supporting events per checker and run.
CREATE TABLE claim_evidence (
    checker         text    NOT NULL,
    run_id          uuid    NOT NULL,
    verdict         text    NOT NULL CHECK (verdict IN ('violation', 'support')),
    stream_id       text    NOT NULL,
    stream_version  bigint  NOT NULL,
    global_position bigint  NOT NULL,
    event_type      text    NOT NULL,
    node_run_id     uuid,
    message         text    NOT NULL,
    -- what was judged (an event, or a node run at an event): judged once per checker
    subject         text    NOT NULL,
    PRIMARY KEY (checker, verdict, subject)
);

CREATE INDEX claim_evidence_run ON claim_evidence (checker, verdict, run_id, global_position);
CREATE INDEX claim_evidence_global ON claim_evidence (checker, verdict, global_position);
