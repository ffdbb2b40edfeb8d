-- Per-stream markers of `runledger import`: the head (version, hash) an import brought the
-- stream to. A backfill of many files that crashes is resumed by running it again: a file
-- whose marker matches the stream is skipped, and a marker whose stream no longer holds that
-- head (the stream was removed with its schema, or rebuilt) is stale and the file is imported
-- again.
CREATE TABLE import_markers (
    stream_id   text        PRIMARY KEY,
    version     bigint      NOT NULL CHECK (version > 0),
    head_hash   bytea       NOT NULL CHECK (length(head_hash) = 32),
    imported_at timestamptz NOT NULL DEFAULT now()
);
