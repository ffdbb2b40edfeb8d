-- Run ownership across engine instances (crate `runledger-ledger`, `leases.rs`; docs/engine.md,
-- docs/adr/0002-run-leases.md).
--
-- `run_index` holds the runs that have not ended, kept by a trigger in the same transaction as
-- the append that starts, ends or reopens a run, so an instance finds work without reading
-- history. `run_leases` says which instance drives each run until when; `epoch` only grows (one
-- step per change of hands) and fences a takeover. `engine_instances` lists the live instances,
-- so `runledger run` can tell whether anything will drive the run it leaves behind.

CREATE TABLE run_index (
    run_id     uuid        PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE run_leases (
    run_id     uuid        PRIMARY KEY,
    -- NULL when handed back (the run ended, or its instance drained).
    owner      text,
    expires_at timestamptz NOT NULL,
    epoch      bigint      NOT NULL DEFAULT 1 CHECK (epoch > 0)
);

CREATE INDEX run_leases_owner ON run_leases (owner) WHERE owner IS NOT NULL;

CREATE TABLE engine_instances (
    instance_id text        PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    draining    boolean     NOT NULL DEFAULT false
);

-- Only the events that start, end or reopen a run reach this function (see the trigger's WHEN).
-- A new run also wakes idle instances (LISTEN runledger_runs, the schema as payload).
CREATE FUNCTION runledger_index_run() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF NEW.event_type IN ('RunStarted', 'RunResumed') THEN
        INSERT INTO run_index (run_id) VALUES (id) ON CONFLICT (run_id) DO NOTHING;
        IF FOUND THEN
            PERFORM pg_notify('runledger_runs', TG_TABLE_SCHEMA);
        END IF;
    ELSE
        DELETE FROM run_index WHERE run_id = id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER events_index_run AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.stream_id LIKE 'run-%'
          AND NEW.event_type IN ('RunStarted', 'RunResumed', 'RunCompleted', 'RunFailed', 'RunCanceled'))
    EXECUTE FUNCTION runledger_index_run();

-- Runs recorded before this migration: unfinished when their last start/end/reopen event is a
-- start or a reopen. Once, at migration time.
INSERT INTO run_index (run_id, started_at)
SELECT substring(stream_id FROM 5)::uuid, recorded_at
  FROM (
    SELECT DISTINCT ON (stream_id) stream_id, event_type, recorded_at
      FROM events
     WHERE stream_id ~* '^run-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       AND event_type IN ('RunStarted', 'RunResumed', 'RunCompleted', 'RunFailed', 'RunCanceled')
     ORDER BY stream_id, stream_version DESC
  ) last
 WHERE event_type IN ('RunStarted', 'RunResumed');

-- Recovery of unpublished dispatches belongs to each run's owner now (it re-reads its run when
-- it takes it over); the ledger-wide outbox reader and its checkpoint are gone.
DROP TABLE IF EXISTS dispatch_outbox;
