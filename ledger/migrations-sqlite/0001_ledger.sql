-- The run ledger on SQLite: the same tables and guarantees as the PostgreSQL migrations 0001,
-- 0005 and 0006, in SQLite's types. Applied by `SqliteEventStore::migrate`.

CREATE TABLE events (
    -- Handed out in commit order: SQLite has one writer at a time, and every append takes the
    -- write lock (BEGIN IMMEDIATE) before it reads or assigns anything.
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The writing transaction's number, one more than the last one's, assigned under the write
    -- lock: (tx_id, global_position) is the same commit order PostgreSQL's xid8 order gives.
    tx_id           INTEGER NOT NULL,
    event_id        BLOB    NOT NULL CHECK (length(event_id) = 16),
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version > 0),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version > 0),
    request_id      TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    causation_id    TEXT,
    -- Microseconds since the Unix epoch, UTC (the precision timestamps are hashed with).
    recorded_at     INTEGER NOT NULL,
    -- The canonical JSON (RFC 8785) the hash was computed over.
    payload         TEXT    NOT NULL,
    -- Digests (hex) of blobs the event refers to, a JSON array.
    blob_refs       TEXT    NOT NULL DEFAULT '[]',
    prev_hash       BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    -- The optimistic-concurrency fence: one writer per stream version.
    UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_commit_order ON events (tx_id, global_position);

-- Idempotency: the versions a request wrote and a hash of what it asked for.
CREATE TABLE requests (
    stream_id     TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    request_hash  BLOB    NOT NULL,
    first_version INTEGER NOT NULL,
    last_version  INTEGER NOT NULL,
    PRIMARY KEY (stream_id, request_id)
) WITHOUT ROWID;

-- Content-addressed large payloads; the key is blake3(data).
CREATE TABLE blobs (
    hash       BLOB PRIMARY KEY CHECK (length(hash) = 32),
    media_type TEXT NOT NULL,
    data       BLOB NOT NULL
) WITHOUT ROWID;

-- Events are facts: the ledger never changes or removes one. SQLite has no TRUNCATE; a
-- `DELETE FROM events` without WHERE meets this trigger too (triggers turn off the truncate
-- optimization).
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the run ledger is append-only: UPDATE on events is not allowed');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the run ledger is append-only: DELETE on events is not allowed');
END;

-- Per-stream markers of `runledger import` (see migrations/0006_import_markers.sql).
CREATE TABLE import_markers (
    stream_id   TEXT    PRIMARY KEY,
    version     INTEGER NOT NULL CHECK (version > 0),
    head_hash   BLOB    NOT NULL CHECK (length(head_hash) = 32),
    imported_at INTEGER NOT NULL
) WITHOUT ROWID;
