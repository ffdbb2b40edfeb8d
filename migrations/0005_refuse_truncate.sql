-- TRUNCATE bypasses row triggers, so the append-only rule of 0001 did not cover it: refuse it
-- with a statement trigger too. What no trigger can stop: a superuser (or the table owner) can
-- disable triggers, run with `session_replication_role = replica` (which skips ordinary
-- triggers), or drop the table. Against that the answer is outside the database: a signed
-- export whose head hashes are kept elsewhere (docs/ledger.md).
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_reject_mutation();
