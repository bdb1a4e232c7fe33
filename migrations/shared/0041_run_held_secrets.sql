-- Every secret value a run was handed (the outbound wall, round two): each value a step of
-- the run received at its claim (or a debug session in its room), sealed by the vault as
-- repository secrets are, never in clear. A run's wall and log masking take these besides
-- the current values, so a secret rotated or deleted while the run goes on is still
-- refused and masked in what the run writes. Kept as long as the run's rows.
CREATE TABLE run_held_secrets (
    run_id  BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- The secret's name when it was handed (for error messages; never read as a key).
    name    TEXT NOT NULL,
    sealed  TEXT NOT NULL,
    held_at BIGINT NOT NULL
);
CREATE INDEX run_held_secrets_run ON run_held_secrets (run_id);
