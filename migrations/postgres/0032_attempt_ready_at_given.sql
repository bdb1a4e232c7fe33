-- The claim now gives each new attempt its `ready_at` itself (the step run's, read in the
-- same statement that claims it), so the trigger of 0027 runs only for an insert that
-- gives none: the function call and its read of `step_runs` were a tenth of a claim's
-- cost on PostgreSQL. The trigger stays, so no other insert path can forget the value.
DROP TRIGGER attempts_ready_at ON attempts;
CREATE TRIGGER attempts_ready_at BEFORE INSERT ON attempts
    FOR EACH ROW WHEN (NEW.ready_at IS NULL) EXECUTE FUNCTION attempts_ready_at();
