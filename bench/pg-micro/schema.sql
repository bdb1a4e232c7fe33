-- The tables a transition touches, cut to what the measured statements read and write:
-- `step_runs` with its partial claim index and the change list's trigger as migration
-- 0037 left it (a `WHEN` clause), and a foreign key to `runs`.
CREATE TABLE runs (id BIGSERIAL PRIMARY KEY, status TEXT NOT NULL DEFAULT 'running',
                   advances BIGINT NOT NULL DEFAULT 0) WITH (fillfactor = 80);
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
CREATE TABLE step_changes (run_id BIGINT NOT NULL, step_run_id BIGINT NOT NULL);
CREATE FUNCTION note_step_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO step_changes (run_id, step_run_id) VALUES (NEW.run_id, NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER step_runs_finished AFTER UPDATE OF status ON step_runs
FOR EACH ROW
WHEN (NEW.status IN ('succeeded', 'failed', 'skipped', 'cancelled')
  AND OLD.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')
  AND CAST(NEW.id AS TEXT) IS DISTINCT FROM current_setting('plue.read_here', true))
EXECUTE FUNCTION note_step_finished();
INSERT INTO runs SELECT g FROM generate_series(1, 1000) g;
INSERT INTO step_runs (run_id, step_id, status)
SELECT (g - 1) / 20 + 1, 's' || g, 'pending' FROM generate_series(1, 20000) g;
