-- Plue schema (SQLite). Times are milliseconds since the Unix epoch (BIGINT) so the
-- same queries run unchanged on SQLite; JSON documents are TEXT for the same reason.

CREATE TABLE repositories (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    clone_url  TEXT NOT NULL,
    forge      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE workflows (
    id         INTEGER PRIMARY KEY,
    -- 'local' for files run from a path, else the repository's name.
    source     TEXT NOT NULL,
    path       TEXT NOT NULL,
    name       TEXT NOT NULL,
    repo_id    BIGINT REFERENCES repositories (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    UNIQUE (source, path)
);

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY,
    workflow_id      BIGINT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    event            TEXT NOT NULL,
    ref              TEXT NOT NULL,
    sha              TEXT NOT NULL,
    context          TEXT NOT NULL,
    plan             TEXT NOT NULL,
    plan_hash        TEXT NOT NULL,
    workspace        TEXT NOT NULL,
    max_parallel     BIGINT NOT NULL,
    status           TEXT NOT NULL,
    reason           TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    rerun_of         BIGINT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX runs_active ON runs (status) WHERE status IN ('queued', 'running');

CREATE TABLE step_runs (
    id          INTEGER PRIMARY KEY,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    position    BIGINT NOT NULL,
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    -- Required runner labels, canonical "k=v,k2=v2" (sorted), '' for any runner.
    labels      TEXT NOT NULL,
    -- The rendered action (runner protocol JSON), set when queued.
    action      TEXT,
    ready_at    BIGINT,
    timeout_ms  BIGINT,
    exit_code   BIGINT,
    reason      TEXT,
    outputs     TEXT NOT NULL DEFAULT '{}',
    started_at  BIGINT,
    finished_at BIGINT,
    UNIQUE (run_id, step_id)
);
CREATE INDEX step_runs_claim ON step_runs (ready_at, id) WHERE status = 'queued';

CREATE TABLE runners (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    labels         TEXT NOT NULL,
    ephemeral      BOOLEAN NOT NULL,
    state          TEXT NOT NULL,
    registered_at  BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    state_since    BIGINT NOT NULL
);
CREATE INDEX runners_live ON runners (state) WHERE state IN ('idle', 'busy');

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    step_run_id BIGINT NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    runner_id   BIGINT NOT NULL REFERENCES runners (id),
    status      TEXT NOT NULL,
    exit_code   BIGINT,
    reason      TEXT,
    claimed_at  BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    timeout_ms  BIGINT NOT NULL,
    UNIQUE (step_run_id, number)
);
CREATE INDEX attempts_active ON attempts (runner_id) WHERE status IN ('claimed', 'running');

CREATE TABLE log_lines (
    step_run_id BIGINT NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    stream      TEXT NOT NULL,
    text        TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    PRIMARY KEY (step_run_id, attempt, seq)
) WITHOUT ROWID;
