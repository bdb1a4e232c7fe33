-- A run's plan, context and workspace documents move out of `runs` into a table of their
-- own, as in SQLite (see migrations/sqlite/0028_run_documents.sql for why there). Here
-- large values live out of line already; the tables stay alike so that every query is the
-- same on both.
CREATE TABLE run_documents (
    run_id    BIGINT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    context   TEXT NOT NULL,
    plan      TEXT NOT NULL,
    workspace TEXT NOT NULL
);
INSERT INTO run_documents (run_id, context, plan, workspace)
    SELECT id, context, plan, workspace FROM runs;
ALTER TABLE runs DROP COLUMN context, DROP COLUMN plan, DROP COLUMN workspace;
