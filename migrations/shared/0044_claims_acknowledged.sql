-- Claims that stick (issue 70): a step counts as taken only once its runner acknowledges
-- the claim (it accepts the assignment a poll handed it, starts it, or took it with a
-- completion's answer), and a claim not acknowledged in time goes back to the queue
-- without using a retry (store/src/claims/unacknowledged.rs).
--
-- - attempts.acked_at: when the runner acknowledged the claim (NULL: not yet). Attempts
--   claimed before this migration count as acknowledged, as they did then.
-- - step_runs.unacknowledged: claims of the step run's current review-loop iteration that
--   were returned unacknowledged; a retry counts its attempts without them.
-- - runners.host: the machine a runner said it runs on (its Kubernetes node or host name);
--   when a runner is lost, the live runners of its host become suspect.
-- - runners.suspect_since: when the runner became suspect (NULL: it is not); a suspect
--   runner claims nothing until a heartbeat or a new poll of its own clears the mark.
ALTER TABLE attempts ADD COLUMN acked_at BIGINT;
UPDATE attempts SET acked_at = claimed_at WHERE status IN ('claimed', 'running');
ALTER TABLE step_runs ADD COLUMN unacknowledged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runners ADD COLUMN host TEXT;
ALTER TABLE runners ADD COLUMN suspect_since BIGINT;
-- The claims returned unacknowledged, newest first (GET /api/pool, the runners page).
CREATE INDEX attempts_unacknowledged ON attempts (finished_at) WHERE status = 'unacknowledged';
