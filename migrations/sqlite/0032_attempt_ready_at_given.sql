-- The claim now gives each new attempt its `ready_at` itself (the step run's, read in the
-- same statement that claims it), so the trigger of 0027 runs only for an insert that
-- gives none: it updated every new attempt's row a second time. The trigger stays, so no
-- other insert path can forget the value.
DROP TRIGGER attempts_ready_at;
CREATE TRIGGER attempts_ready_at AFTER INSERT ON attempts WHEN NEW.ready_at IS NULL BEGIN
    UPDATE attempts SET ready_at = (SELECT ready_at FROM step_runs WHERE id = NEW.step_run_id)
        WHERE id = NEW.id;
END;
