-- Debug sessions (store/src/debug_sessions.rs, `plue debug RUN STEP`): a writer's request
-- to run a failed step again on a runner that keeps it, then a shell in its workspace.
-- - id: 32 random hex characters, the session's handle (never derived from anything);
-- - creator: who may attach — `token:<id>` for a user's token, `admin` for the admin
--   token, `embedded` for an engine without users; only that credential attaches;
-- - status: queued (no runner yet) → claimed (a runner runs the step) → ready (the shell
--   is up) → ended; ended is final, and `end_reason` says why;
-- - runner_id: the one runner that claimed it; only it may feed or read the stream.
CREATE TABLE debug_sessions (
    id              TEXT PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_run_id     BIGINT NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE,
    creator         TEXT NOT NULL,
    creator_user_id BIGINT,
    term            TEXT NOT NULL,
    idle_timeout_ms BIGINT NOT NULL,
    status          TEXT NOT NULL,
    runner_id       BIGINT REFERENCES runners (id),
    created_at      BIGINT NOT NULL,
    claimed_at      BIGINT,
    ended_at        BIGINT,
    end_reason      TEXT
);
CREATE INDEX debug_sessions_queued ON debug_sessions (created_at) WHERE status = 'queued';
