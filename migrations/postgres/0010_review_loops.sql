-- Review loops (`Step.*(loop_to=..., max_loops=...)`): when a loop's source step fails,
-- its region (the target, the steps between, the source) goes back to 'pending' as a new
-- iteration. A step run keeps one row; its iteration is counted here, and nothing of an
-- earlier iteration is overwritten:
-- - attempts keep their numbers across iterations (`step_runs.attempts` only grows), so
--   logs, keyed by (step run, attempt), stay readable; each attempt records its iteration;
-- - `iteration_base` is how many attempts the step run had before its current iteration,
--   so retries count attempts within the iteration;
-- - outputs are stored per (step run, iteration): the loop's target reads the failed
--   iteration's outputs of the steps after it.
ALTER TABLE step_runs ADD COLUMN iteration BIGINT NOT NULL DEFAULT 1;
ALTER TABLE step_runs ADD COLUMN iteration_base BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN iteration BIGINT NOT NULL DEFAULT 1;
ALTER TABLE step_outputs ADD COLUMN iteration BIGINT NOT NULL DEFAULT 1;
ALTER TABLE step_outputs DROP CONSTRAINT step_outputs_pkey;
ALTER TABLE step_outputs ADD PRIMARY KEY (step_run_id, iteration);
-- How many times the run's review loops went back, in all (run lists show it).
ALTER TABLE runs ADD COLUMN loops_taken BIGINT NOT NULL DEFAULT 0;
