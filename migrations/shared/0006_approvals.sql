-- Approval steps: a step run in status 'waiting' holds no runner and waits for a person;
-- its `ready_at` is the deadline after which it fails. One row per decision taken: who
-- decided (the API token's name, 'admin' for the admin token), when and why.
CREATE TABLE approvals (
    step_run_id BIGINT PRIMARY KEY REFERENCES step_runs (id) ON DELETE CASCADE,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- 'approved' or 'rejected'.
    decision    TEXT NOT NULL,
    decided_by  TEXT NOT NULL,
    comment     TEXT NOT NULL,
    decided_at  BIGINT NOT NULL
);
CREATE INDEX approvals_run ON approvals (run_id);
CREATE INDEX step_runs_waiting ON step_runs (ready_at) WHERE status = 'waiting';
