-- Who may do what: users (people and bots) with a stable id, their API tokens, groups,
-- roles per repository, dashboard sessions, forge logins linked to users, the audit trail,
-- and per-repository public reads. See engine/src/access/ for the rules.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    -- lower(name): names are unique case-insensitively.
    name_key    TEXT NOT NULL UNIQUE,
    -- 'person' or 'bot'.
    kind        TEXT NOT NULL,
    admin       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    disabled_at BIGINT
);
-- The installation's admin: PLUE_ADMIN_TOKEN signs in as this user.
INSERT INTO users (name, name_key, kind, admin, created_at) VALUES ('admin', 'admin', 'person', TRUE, 0);

-- A token belongs to a user (NULL only until start-up adopts a token made before users).
ALTER TABLE api_tokens ADD COLUMN user_id BIGINT REFERENCES users (id) ON DELETE CASCADE;
-- Narrowing, never widening: the highest role the token acts with (NULL: the user's own),
-- and the repositories it may act on (JSON array of names; NULL: all of the user's).
ALTER TABLE api_tokens ADD COLUMN max_role TEXT;
ALTER TABLE api_tokens ADD COLUMN repos TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN revoked_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE user_groups (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE group_members (
    group_id BIGINT NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

-- 'reader' < 'writer' < 'maintainer'.
CREATE TABLE repo_roles (
    repo_id    BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, user_id)
);
CREATE INDEX repo_roles_user ON repo_roles (user_id);

-- Anyone may read the repository's runs. NULL: a repository from before roles, whose
-- reads follow the engine's --private-reads until a maintainer chooses.
ALTER TABLE repositories ADD COLUMN public_read BOOLEAN;

-- Dashboard sessions: the cookie holds a random id (stored hashed), never the token. A
-- session lives while the token that opened it does (token_hash) and until expires_at.
CREATE TABLE sessions (
    id         INTEGER PRIMARY KEY,
    id_hash    TEXT NOT NULL UNIQUE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_token ON sessions (token_hash);

-- Forge logins linked to users: 'github' or 'gitea', the login as the forge spells it,
-- and lower(login) for matching.
CREATE TABLE user_forge_logins (
    user_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    forge     TEXT NOT NULL,
    login     TEXT NOT NULL,
    login_key TEXT NOT NULL,
    PRIMARY KEY (forge, login_key)
);
CREATE INDEX user_forge_logins_user ON user_forge_logins (user_id);

-- Who started a run: the user (API, dashboard) and the forge login (webhooks).
ALTER TABLE run_triggerers ADD COLUMN user_id BIGINT;
ALTER TABLE run_triggerers ADD COLUMN forge_login TEXT;

-- Every decision, dispatch, re-run, cancel, token, user, role, secret and environment
-- change, with who did it.
CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY,
    at      BIGINT NOT NULL,
    user_id BIGINT,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    repo_id BIGINT,
    run_id  BIGINT,
    detail  TEXT NOT NULL
);
CREATE INDEX audit_events_repo ON audit_events (repo_id, id);
CREATE INDEX audit_events_run ON audit_events (run_id, id);
