-- A completion that advances its run in the same transaction (store/src/advance.rs) reads
-- the step run it made final by its id. Listing it in `step_changes` too, only for that
-- same transaction's advance to delete the row again, cost every step the trigger's insert,
-- the take's delete and the `VACUUM` of the dead row. Such a completion says so for its
-- transaction only (`set_config('plue.read_here', <step run id>, true)`, when it ends the
-- attempt), and the trigger lists every other step run that becomes final, as before.
-- Nothing is stored: whatever ends a step run in another transaction (a review loop's next
-- iteration, the sweeper, an approval) is listed.
-- PostgreSQL only: on SQLite the trigger lists every step run as before (the advance reads
-- the completion's by id all the same).
DROP TRIGGER step_runs_finished ON step_runs;
CREATE TRIGGER step_runs_finished AFTER UPDATE OF status ON step_runs
FOR EACH ROW
WHEN (NEW.status IN ('succeeded', 'failed', 'skipped', 'cancelled')
  AND OLD.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')
  AND CAST(NEW.id AS TEXT) IS DISTINCT FROM current_setting('plue.read_here', true))
EXECUTE FUNCTION note_step_finished();
