-- The GitHub App's side of the forge (issue 50).
--
-- A run's check run on each commit it reports to (the commit it ran at, the head of each
-- pull request it opened): GitHub's id, remembered once GitHub gave it, so a retry or a
-- restart completes the same check run instead of creating another.
CREATE TABLE check_runs (
    run_id       BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    head_sha     TEXT NOT NULL,
    check_run_id BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (run_id, head_sha)
);

-- The App's installations as its `installation` webhooks told them: GitHub's installation
-- id, the account it is installed on, whether it is suspended or was deleted, and the
-- permissions and events it was granted (JSON, as GitHub sent them).
CREATE TABLE github_installations (
    id           BIGINT PRIMARY KEY,
    account      TEXT NOT NULL,
    account_type TEXT NOT NULL,
    state        TEXT NOT NULL,
    permissions  TEXT NOT NULL,
    events       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- The repositories an installation may reach (`installation` created,
-- `installation_repositories` added/removed). Registering them is an admin's choice.
CREATE TABLE github_installation_repos (
    installation_id BIGINT NOT NULL REFERENCES github_installations (id) ON DELETE CASCADE,
    full_name       TEXT NOT NULL,
    added_at        BIGINT NOT NULL,
    PRIMARY KEY (installation_id, full_name)
);
