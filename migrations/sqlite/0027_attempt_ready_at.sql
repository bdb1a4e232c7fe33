-- When each attempt became claimable (store/src/timeline.rs, the dashboard's timeline):
-- the step run's `ready_at` at the moment the attempt was claimed — when the step was
-- queued, or when a retry's backoff ended. `step_runs.ready_at` keeps only the latest
-- attempt's; this keeps every attempt's, so the time spent queued stays visible after
-- retries. Set by a trigger, so that no claim path (the claim statement, any later one)
-- can forget it; attempts from before stay NULL (the timeline shows no queue for them).
ALTER TABLE attempts ADD COLUMN ready_at BIGINT;
CREATE TRIGGER attempts_ready_at AFTER INSERT ON attempts BEGIN
    UPDATE attempts SET ready_at = (SELECT ready_at FROM step_runs WHERE id = NEW.step_run_id)
        WHERE id = NEW.id;
END;
