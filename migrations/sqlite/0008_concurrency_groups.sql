-- Concurrency groups (`Plan(concurrency=..., cancel_in_progress=...)`): at most one run of
-- a group is active (status 'queued' or 'running') at a time. Newer runs wait in status
-- 'pending' with no step claimable. A group is scoped to the workflow's source (the
-- repository, or 'local'), as GitHub Actions scopes groups to a repository.
--
-- Every transaction that starts, promotes or finishes a run of a group first upserts the
-- group's row here: the row lock (PostgreSQL) or the write lock (SQLite) orders them, so
-- two engine replicas never both see the group free. The unique index below makes the
-- invariant the schema's, not only the code's.
CREATE TABLE concurrency_groups (
    id    INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    name  TEXT NOT NULL,
    UNIQUE (scope, name)
);

ALTER TABLE runs ADD COLUMN concurrency_group_id BIGINT REFERENCES concurrency_groups (id);
-- The group's resolved name, shown by the API and the dashboard.
ALTER TABLE runs ADD COLUMN concurrency_group TEXT;
-- Why the run was asked to cancel when Plue itself asked (a newer run of its group);
-- NULL for a person's cancel.
ALTER TABLE runs ADD COLUMN cancel_reason TEXT;

CREATE UNIQUE INDEX runs_one_active_per_group ON runs (concurrency_group_id)
    WHERE concurrency_group_id IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX runs_pending_in_group ON runs (concurrency_group_id, id)
    WHERE status = 'pending';
