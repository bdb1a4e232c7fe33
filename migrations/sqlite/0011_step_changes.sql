-- Incremental advances (engine/src/executor/state.rs). An executor keeps the step states
-- of the runs it advanced and, on the next advance, reads only what changed since:
-- - `runs.advances` counts the advances of a run (each takes the run's row lock and adds
--   one), so a copy made by an advance is current exactly while the count is the one that
--   advance wrote; any other advance (another replica) makes it stale and the next one
--   reads every step again;
-- - `step_changes` lists the step runs that became final and were not yet read by an
--   advance, written by the trigger below, so no code path that ends a step (completions,
--   the sweeper, approvals, the advance itself) can forget to. An advance deletes exactly
--   the rows it read.
ALTER TABLE runs ADD COLUMN advances BIGINT NOT NULL DEFAULT 0;
CREATE TABLE step_changes (
    id          INTEGER PRIMARY KEY,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_run_id BIGINT NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE
);
CREATE INDEX step_changes_run ON step_changes (run_id);
CREATE TRIGGER step_runs_finished AFTER UPDATE OF status ON step_runs
WHEN NEW.status IN ('succeeded', 'failed', 'skipped', 'cancelled')
 AND OLD.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')
BEGIN
    INSERT INTO step_changes (run_id, step_run_id) VALUES (NEW.run_id, NEW.id);
END;
