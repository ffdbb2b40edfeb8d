-- Forks (docs/replay.md#fork): a fork's stream begins with `RunForked` instead of `RunStarted`,
-- so the run index must take it as a start; the source's `RunForkedTo` is only a link and
-- leaves the index alone (a finished source stays out of it). Run detail shows the link both
-- ways.

CREATE OR REPLACE FUNCTION runledger_index_run() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    suffix text := substring(NEW.stream_id FROM 5);
    id uuid;
BEGIN
    -- Only the engine's run streams (`run-<uuid>`) are indexed; to the ledger any other stream
    -- is opaque, whatever its name, and its appends must not fail here.
    IF suffix !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN NULL;
    END IF;
    id := suffix::uuid;
    IF NEW.event_type IN ('RunStarted', 'RunForked', 'RunResumed') THEN
        INSERT INTO run_index (run_id) VALUES (id) ON CONFLICT (run_id) DO NOTHING;
        IF FOUND THEN
            PERFORM pg_notify('runledger_runs', TG_TABLE_SCHEMA);
        END IF;
    ELSE
        DELETE FROM run_index WHERE run_id = id;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER events_index_run ON events;
CREATE TRIGGER events_index_run AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.stream_id LIKE 'run-%'
          AND NEW.event_type IN ('RunStarted', 'RunForked', 'RunResumed', 'RunCompleted', 'RunFailed', 'RunCanceled'))
    EXECUTE FUNCTION runledger_index_run();

-- {run_id, stream_version, head_hash, from_node} of the source, on a fork.
ALTER TABLE run_detail_runs ADD COLUMN forked_from jsonb;
-- [{run_id, from_node, stream_version}] of the forks of a run, oldest first.
ALTER TABLE run_detail_runs ADD COLUMN forks jsonb NOT NULL DEFAULT '[]';
