-- The runs that have not ended, kept in the transaction of the append that starts, ends or
-- reopens a run (like PostgreSQL's `run_index`, migrations 0004 and 0007), so that the next
-- engine on the file finds the runs a killed process left behind without reading history
-- (`SqliteEventStore::unfinished_runs`; docs/ledger.md#two-backends). SQLite has one engine
-- per file (an OS lock on `<file>.engine.lock`), so there are no leases beside it.

CREATE TABLE run_index (
    -- The run id as its stream names it (`run-<uuid>` without the prefix).
    run_id     TEXT    PRIMARY KEY,
    -- Microseconds since the Unix epoch, UTC: when the run was (last) started or reopened.
    started_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Only the engine's run streams (`run-<uuid>`) are indexed; to the ledger any other stream is
-- opaque, whatever its name, and its appends must not fail here. A fork's stream begins with
-- `RunForked`; `RunResumed` reopens a run; the source's `RunForkedTo` is only a link.
CREATE TRIGGER events_index_run_start AFTER INSERT ON events
    WHEN NEW.event_type IN ('RunStarted', 'RunForked', 'RunResumed')
     AND NEW.stream_id GLOB 'run-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]'
BEGIN
    INSERT OR IGNORE INTO run_index (run_id, started_at)
    VALUES (lower(substr(NEW.stream_id, 5)), NEW.recorded_at);
END;

CREATE TRIGGER events_index_run_end AFTER INSERT ON events
    WHEN NEW.event_type IN ('RunCompleted', 'RunFailed', 'RunCanceled')
     AND NEW.stream_id GLOB 'run-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]'
BEGIN
    DELETE FROM run_index WHERE run_id = lower(substr(NEW.stream_id, 5));
END;

-- Runs recorded before this migration: unfinished when their last start, end or reopen event
-- is a start or a reopen. Once, at migration time.
INSERT OR IGNORE INTO run_index (run_id, started_at)
SELECT lower(substr(e.stream_id, 5)), e.recorded_at
  FROM events e
 WHERE e.stream_id GLOB 'run-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]-[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]'
   AND e.event_type IN ('RunStarted', 'RunForked', 'RunResumed')
   AND e.stream_version = (
        SELECT max(x.stream_version) FROM events x
         WHERE x.stream_id = e.stream_id
           AND x.event_type IN ('RunStarted', 'RunForked', 'RunResumed',
                                'RunCompleted', 'RunFailed', 'RunCanceled'));
