-- The run ledger: one append-only table of events, hash-chained per stream.

CREATE TABLE events (
    global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: catch-up readers order by (tx_id, global_position) and read only
    -- below the oldest running transaction, so an event that commits late is never skipped.
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    request_id      text        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    recorded_at     timestamptz NOT NULL,
    payload         jsonb       NOT NULL,
    -- Digests (hex) of blobs the event refers to; exports carry those blobs.
    blob_refs       jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(blob_refs) = 'array'),
    prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (length(hash) = 32),
    -- The optimistic-concurrency fence: one writer per stream version.
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_commit_order ON events (tx_id, global_position);

-- Idempotency: the versions a request wrote and a hash of what it asked for.
CREATE TABLE requests (
    stream_id     text   NOT NULL,
    request_id    text   NOT NULL,
    request_hash  bytea  NOT NULL,
    first_version bigint NOT NULL,
    last_version  bigint NOT NULL,
    PRIMARY KEY (stream_id, request_id)
);

-- Content-addressed large payloads; the key is blake3(data).
CREATE TABLE blobs (
    hash       bytea PRIMARY KEY CHECK (length(hash) = 32),
    media_type text  NOT NULL,
    data       bytea NOT NULL
);

-- Events are facts: the ledger never changes or removes one.
CREATE FUNCTION runledger_reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the run ledger is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION runledger_reject_mutation();
