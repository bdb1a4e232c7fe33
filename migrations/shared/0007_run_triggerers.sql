-- Who started a run through the API (the token's name, 'admin' for the admin token), for
-- approval steps that the run's own triggerer may not decide. No row: started some other
-- way (a webhook, a schedule, `plue run`).
CREATE TABLE run_triggerers (
    run_id       BIGINT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    triggered_by TEXT NOT NULL
);
