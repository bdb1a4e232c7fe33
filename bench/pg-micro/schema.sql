-- The tables a transition touches, cut to what the measured statements read and write:
-- `step_runs` with its partial claim index and a foreign key to `runs`. run.sh then
-- applies the migrations of the change list (0011, 0035, 0037: its trigger with a `WHEN`
-- clause), and 0038 for the second case.
CREATE TABLE runs (id BIGSERIAL PRIMARY KEY, status TEXT NOT NULL DEFAULT 'running')
    WITH (fillfactor = 80);
CREATE TABLE step_runs (
    id          BIGSERIAL PRIMARY KEY,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    status      TEXT NOT NULL,
    finished_at BIGINT,
    ready_at    BIGINT NOT NULL DEFAULT 0,
    attempts    BIGINT NOT NULL DEFAULT 0,
    UNIQUE (run_id, step_id)
);
CREATE INDEX step_runs_claim ON step_runs (ready_at, id) WHERE status = 'queued';
INSERT INTO runs SELECT g FROM generate_series(1, 1000) g;
INSERT INTO step_runs (run_id, step_id, status)
SELECT (g - 1) / 20 + 1, 's' || g, 'pending' FROM generate_series(1, 20000) g;
