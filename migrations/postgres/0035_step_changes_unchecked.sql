-- `step_changes` is a queue that lives inside a run's transitions: the trigger of
-- migration 0011 adds a row in the transaction that ends a step run, and the run's next
-- advance deletes it, usually in that same transaction. Its foreign keys made every one of
-- those inserts run two referential checks (each a query that locks the run's and the step
-- run's row) and its `id` a sequence draw: the step run's final `UPDATE`, whose trigger
-- makes the insert, took 297 µs with them and 166 µs without (bench/README.md, replicas).
-- Nothing reads `id`; runs and step runs are never deleted, so the keys guarded nothing,
-- and a row left behind would never be read (an advance takes only its own run's rows).
-- Without a key, logical replication names a deleted row by all of it (REPLICA IDENTITY
-- FULL, below): two numbers.
-- PostgreSQL only: SQLite checks keys in-process, at no cost a benchmark shows.
ALTER TABLE step_changes
    DROP CONSTRAINT step_changes_run_id_fkey,
    DROP CONSTRAINT step_changes_step_run_id_fkey,
    DROP COLUMN id;
ALTER TABLE step_changes REPLICA IDENTITY FULL;
