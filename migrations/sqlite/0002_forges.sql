-- Repositories connected to a forge, their secrets, API tokens, webhook deliveries,
-- schedules and the commit statuses owed to the forge. Sealed values are
-- "v1:<nonce hex>:<ciphertext hex>" (ChaCha20-Poly1305 under PLUE_SECRET_KEY) or, for
-- webhook secrets and forge tokens without a key configured, "plain:<text>".

ALTER TABLE repositories ADD COLUMN webhook_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE repositories ADD COLUMN api_url TEXT;
ALTER TABLE repositories ADD COLUMN api_token TEXT;
-- Learned from webhooks (repository.default_branch) or given at registration.
ALTER TABLE repositories ADD COLUMN default_branch TEXT;

-- The repository a run belongs to (NULL for local files), and whether its steps may
-- receive the repository's secrets (false for pull requests from forks).
ALTER TABLE runs ADD COLUMN repo_id BIGINT REFERENCES repositories (id) ON DELETE CASCADE;
ALTER TABLE runs ADD COLUMN secrets_allowed BOOLEAN NOT NULL DEFAULT TRUE;
CREATE INDEX runs_repo ON runs (repo_id, id);

CREATE TABLE repo_secrets (
    repo_id    BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name)
);

CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- One row per (forge, delivery id): a repeated delivery finds its row and starts nothing.
CREATE TABLE webhook_deliveries (
    forge       TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    repo_id     BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    event       TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    -- JSON array of the run ids the delivery started.
    runs        TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (forge, delivery_id)
);

-- Cron triggers of the workflow files on a repository's default branch. An engine fires a
-- tick by moving next_fire_at forward with a compare-and-set, so one engine wins each tick.
CREATE TABLE schedules (
    id            INTEGER PRIMARY KEY,
    repo_id       BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    workflow_path TEXT NOT NULL,
    cron          TEXT NOT NULL,
    -- The default branch's commit the schedule was read from (runs check it out).
    sha           TEXT NOT NULL,
    branch        TEXT NOT NULL,
    next_fire_at  BIGINT NOT NULL,
    last_fired_at BIGINT,
    UNIQUE (repo_id, workflow_path, cron)
);
CREATE INDEX schedules_due ON schedules (next_fire_at);

-- Commit statuses owed to the forge, delivered in id order per run, retried with backoff.
CREATE TABLE status_reports (
    id              INTEGER PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    state           TEXT NOT NULL,
    description     TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    -- Set when the report was given up (4xx from the forge, or too many attempts).
    abandoned       TEXT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX status_reports_due ON status_reports (next_attempt_at)
    WHERE delivered_at IS NULL AND abandoned IS NULL;
