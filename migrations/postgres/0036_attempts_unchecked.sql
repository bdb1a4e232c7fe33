-- An attempt is inserted by one statement only, the claim, which takes its step run and
-- runner from rows it has just read in that same statement (the step run locked). Its two foreign
-- keys made every claim run two referential checks more, each a query that share-locks
-- the step run's and the runner's row (the runner's, shared with its heartbeats, then
-- needs a multi-transaction lock record). Runs, step runs and runners are never deleted,
-- so the keys guarded no deletion either. PostgreSQL only, as 0035.
ALTER TABLE attempts
    DROP CONSTRAINT attempts_step_run_id_fkey,
    DROP CONSTRAINT attempts_runner_id_fkey;
