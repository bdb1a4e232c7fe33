-- The change list's trigger (migrations 0011 and 0037) decided in a `WHEN` clause whether a
-- status update lists its step run. PostgreSQL keeps a trigger's `WHEN` as a stored
-- expression and reads it back into a tree (`stringToNode`) and compiles it once per
-- statement that updates the table, whatever the update; three of every step's statements
-- update `step_runs.status` (queued, claimed, final), and that reading cost each of them
-- ≈ 20 µs of the server's CPU, ≈ 6 % of a step's (bench/README.md, replicas). The same test,
-- written in the trigger's function, is compiled once per connection: the function is
-- called for every status update and lists the same step runs as before.
CREATE OR REPLACE FUNCTION note_step_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('succeeded', 'failed', 'skipped', 'cancelled')
       AND OLD.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')
       AND CAST(NEW.id AS TEXT) IS DISTINCT FROM current_setting('plue.read_here', true) THEN
        INSERT INTO step_changes (run_id, step_run_id) VALUES (NEW.run_id, NEW.id);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER step_runs_finished ON step_runs;
CREATE TRIGGER step_runs_finished AFTER UPDATE OF status ON step_runs
FOR EACH ROW
EXECUTE FUNCTION note_step_finished();
