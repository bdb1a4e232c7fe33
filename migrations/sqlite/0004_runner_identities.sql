-- Registration tokens other than the shared one, each bound to what its runners may do.
-- 'scoped': made by an operator (plue runner-token create), reusable until revoked.
-- 'once': minted by the engine's pool for one runner name; redeemable once, until
-- expires_at; runner_id records the runner that redeemed it (the pool's handle on it).
-- Tokens are stored as SHA-256 hashes only.
CREATE TABLE runner_tokens (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,
    -- What the token is for; for 'once', the only runner name it registers.
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    -- JSON object: the labels its runners may announce (and so the steps they may claim).
    labels     TEXT NOT NULL,
    -- Whether its runners may be handed steps that name secrets.
    secrets    BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    used_at    BIGINT,
    runner_id  BIGINT,
    revoked_at BIGINT
);

-- The token a runner registered with (NULL: the shared token) and whether it may receive
-- secrets, copied from that token at registration.
ALTER TABLE runners ADD COLUMN token_id BIGINT;
ALTER TABLE runners ADD COLUMN secrets BOOLEAN NOT NULL DEFAULT TRUE;

-- Whether a step run needs a runner that may receive secrets (it names secrets and its run
-- may have them). Rows from before this migration are assumed to.
ALTER TABLE step_runs ADD COLUMN needs_secrets BOOLEAN NOT NULL DEFAULT TRUE;

-- Names of live runners are unique. Older duplicates (allowed before) leave first.
UPDATE runners SET state = 'gone'
WHERE state IN ('idle', 'busy')
  AND id NOT IN (SELECT MAX(id) FROM runners WHERE state IN ('idle', 'busy') GROUP BY name);
CREATE UNIQUE INDEX runners_live_name ON runners (name) WHERE state IN ('idle', 'busy');
