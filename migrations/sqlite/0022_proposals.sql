-- Safe outputs (engine/src/safe_outputs/): what an `llm` step proposed to the forge, stored
-- with its attempt, validated by the engine on the attempt's completion and applied by the
-- engine's outbox (never by the step). One row per proposal, `position` its order in the
-- attempt. States: refused (validation failed: reason) | waiting (a person must approve) |
-- rejected (a person said no) | ready (to apply) | applying | applied (applied_url) |
-- failed (reason; retried from retry_at when set).
CREATE TABLE proposals (
    id           INTEGER PRIMARY KEY,
    run_id       BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_run_id  BIGINT NOT NULL,
    attempt_id   BIGINT NOT NULL,
    position     BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT,
    decided_by   TEXT,
    decided_at   BIGINT,
    applied_url  TEXT,
    applied_at   BIGINT,
    retry_at     BIGINT,
    created_at   BIGINT NOT NULL,
    UNIQUE (attempt_id, position)
);
CREATE INDEX proposals_run ON proposals (run_id, id);
CREATE INDEX proposals_ready ON proposals (state, id);
