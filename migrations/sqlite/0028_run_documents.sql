-- A run's plan, context and workspace documents move out of `runs` into a table of their
-- own. They are written once, when the run is created, and read rarely (a cache miss of
-- the executor's plans, a run's first claim), while the rest of the `runs` row is read and
-- updated at every advance, completion and log batch. SQLite stores a row whole: a
-- 10,000-step plan (1.6 MB) made every one of those statements walk, and every update copy
-- and compare, hundreds of overflow pages, so a step's cost grew with its run's size.
CREATE TABLE run_documents (
    run_id    INTEGER PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    context   TEXT NOT NULL,
    plan      TEXT NOT NULL,
    workspace TEXT NOT NULL
);
INSERT INTO run_documents (run_id, context, plan, workspace)
    SELECT id, context, plan, workspace FROM runs;
ALTER TABLE runs DROP COLUMN context;
ALTER TABLE runs DROP COLUMN plan;
ALTER TABLE runs DROP COLUMN workspace;
