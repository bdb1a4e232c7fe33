-- `step_changes` is a queue that lives inside a run's transitions: the trigger of
-- migration 0011 adds a row in the transaction that ends a step run, and the run's next
-- advance deletes it, usually in that same transaction. Its foreign keys made every one of
-- those inserts run two referential checks (each a query that locks the run's and the step
-- run's row) and its `id` a sequence draw, ≈ a sixth of PostgreSQL's work for a step.
-- Nothing reads `id`; runs and step runs are never deleted, so the keys guarded nothing,
-- and a row left behind would never be read (an advance takes only its own run's rows).
-- Without a key, a delete is replicated (logical replication) by the whole row: two numbers.
-- PostgreSQL only: SQLite checks keys in-process, at no cost a benchmark shows.
ALTER TABLE step_changes
    DROP CONSTRAINT step_changes_run_id_fkey,
    DROP CONSTRAINT step_changes_step_run_id_fkey,
    DROP COLUMN id;
ALTER TABLE step_changes REPLICA IDENTITY FULL;
