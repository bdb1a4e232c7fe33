-- When each attempt became claimable (store/src/timeline.rs, the dashboard's timeline):
-- the step run's `ready_at` at the moment the attempt was claimed — when the step was
-- queued, or when a retry's backoff ended. `step_runs.ready_at` keeps only the latest
-- attempt's; this keeps every attempt's, so the time spent queued stays visible after
-- retries. Set by a trigger, so that no claim path (the claim statement, any later one)
-- can forget it; attempts from before stay NULL (the timeline shows no queue for them).
ALTER TABLE attempts ADD COLUMN ready_at BIGINT;
CREATE FUNCTION attempts_ready_at() RETURNS trigger AS $$
BEGIN
    IF NEW.ready_at IS NULL THEN
        NEW.ready_at := (SELECT ready_at FROM step_runs WHERE id = NEW.step_run_id);
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER attempts_ready_at BEFORE INSERT ON attempts
    FOR EACH ROW EXECUTE FUNCTION attempts_ready_at();
