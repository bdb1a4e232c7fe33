-- Step outputs live apart from their step runs. A run may store tens of MiB of outputs,
-- and the executor and `plue run` read every step run's state many times a second: in a
-- row, a large value sits between the small columns (SQLite walks its overflow pages to
-- reach the columns after it). The executor reads outputs only of the steps a dispatch
-- needs. No row: the step run stored no outputs.
CREATE TABLE step_outputs (
    step_run_id BIGINT PRIMARY KEY REFERENCES step_runs (id) ON DELETE CASCADE,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- A JSON object of the step's outputs, key → value.
    outputs     TEXT NOT NULL
);
CREATE INDEX step_outputs_run ON step_outputs (run_id);

INSERT INTO step_outputs (step_run_id, run_id, outputs)
    SELECT id, run_id, outputs FROM step_runs WHERE outputs <> '{}';
ALTER TABLE step_runs DROP COLUMN outputs;
