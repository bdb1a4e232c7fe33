-- Environments (engine/src/store/environments.rs): a maintainer's rules for the steps of a
-- repository's runs that name `environment="..."`. The plan only names an environment;
-- everything here is the server's, so no pushed file can widen it:
-- - allowed_refs: JSON array of globs over branch names (`["main", "release/*"]`); a run
--   on another branch (a pull request: its head branch) never passes the gate;
-- - reviewers: JSON array of user names and `@group`s; when non-empty the engine makes the
--   step wait for one of them to approve, whatever the plan says;
-- - wait_timer_s: seconds between the review (or the step becoming ready) and its dispatch;
-- - prevent_self_review: the run's triggerer may not review it.
CREATE TABLE environments (
    id                  INTEGER PRIMARY KEY,
    repo_id             BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    -- lower(name): one environment per name, case-insensitively.
    name_key            TEXT NOT NULL,
    allowed_refs        TEXT NOT NULL,
    reviewers           TEXT NOT NULL,
    wait_timer_s        BIGINT NOT NULL DEFAULT 0,
    prevent_self_review BOOLEAN NOT NULL DEFAULT 1,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (repo_id, name_key)
);

-- An environment's secrets, sealed with the vault like repo_secrets. Given only to a step
-- naming the environment, after its gate, and overriding a repository secret of the name.
CREATE TABLE environment_secrets (
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    sealed         TEXT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (environment_id, name)
);

-- When the environment review of a step run passed (NULL: not reviewed in this iteration).
-- A review loop going back and a re-run (new step runs) both start without one.
ALTER TABLE step_runs ADD COLUMN review_passed_at BIGINT;

-- One row per decision on an environment review (plan approvals stay in `approvals`,
-- one per step run; a review may be taken once per review-loop iteration).
CREATE TABLE environment_reviews (
    id          INTEGER PRIMARY KEY,
    step_run_id BIGINT NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    iteration   BIGINT NOT NULL,
    environment TEXT NOT NULL,
    -- 'approved' or 'rejected'.
    decision    TEXT NOT NULL,
    decided_by  TEXT NOT NULL,
    user_id     BIGINT,
    comment     TEXT NOT NULL,
    decided_at  BIGINT NOT NULL
);
CREATE INDEX environment_reviews_run ON environment_reviews (run_id);
