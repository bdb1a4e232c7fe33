-- Signing people in with their forge account or an OpenID Connect provider
-- (plue_server::sign_in, plue_store::sign_in).
--
-- A sign-in under way: the browser holds the random id (only its SHA-256 is here) in a
-- short-lived cookie; `state`, the PKCE verifier and the nonce are checked when the
-- provider sends the browser back, and the row is deleted by that one check. The `cli_*`
-- columns are set when `plue login` started it: its loopback redirect, its state and its
-- PKCE challenge.
CREATE TABLE sign_in_attempts (
    id_hash       TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    state         TEXT NOT NULL,
    verifier      TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    next_path     TEXT NOT NULL,
    cli_redirect  TEXT,
    cli_state     TEXT,
    cli_challenge TEXT,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sign_in_attempts_expiry ON sign_in_attempts (expires_at);

-- The OpenID Connect subject (`iss` + `sub`, compared exactly) a user signs in as.
CREATE TABLE sign_in_subjects (
    issuer  TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX sign_in_subjects_user ON sign_in_subjects (user_id);

-- The group memberships a sign-in's groups claim gave: the next sign-in removes those the
-- claim no longer names. A membership an admin gave by hand has no row here and is never
-- removed by a sign-in.
CREATE TABLE sign_in_group_grants (
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);

-- `plue login`'s one-time codes: handed to its loopback redirect, exchanged once (with the
-- PKCE verifier of `challenge`) for an API token of the user. Only the code's SHA-256.
CREATE TABLE sign_in_cli_codes (
    code_hash  TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    challenge  TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sign_in_cli_codes_expiry ON sign_in_cli_codes (expires_at);
