-- The role each user holds on each repository because of their permission on its forge
-- (plue_core::forge_roles): learnt for the forge logins linked to the user, refreshed every
-- few minutes. A grant of Plue's own (`repo_roles`) overrides it; a row not confirmed for
-- too long is dropped, so access lost on the forge is lost here.
CREATE TABLE forge_roles (
    repo_id    BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    -- The forge's word for it (`admin`, `maintain`, `write`, `triage`/`read`), for people.
    permission TEXT NOT NULL,
    checked_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, user_id)
);
CREATE INDEX forge_roles_user ON forge_roles (user_id);
