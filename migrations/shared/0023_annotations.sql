-- Annotations (engine/src/annotations.rs): a step's `::error file=F,line=L::message`,
-- `::warning …` and `::notice …` log lines (GitHub's workflow-command format), read when
-- the runner's batch is stored. A row per annotation, keyed like its log line, so storing
-- a batch again adds nothing; the run page and `GET /api/runs/{id}/annotations` read them
-- by run. At most a few dozen are kept per attempt (a step may print millions of lines):
-- the attempt counts the rest, and remembers the last log line it read for them so a
-- batch sent again is not counted twice.
CREATE TABLE annotations (
    step_run_id BIGINT NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- 'error', 'warning' or 'notice'
    level       TEXT NOT NULL,
    file        TEXT,
    line        BIGINT,
    end_line    BIGINT,
    col         BIGINT,
    end_col     BIGINT,
    title       TEXT,
    message     TEXT NOT NULL,
    PRIMARY KEY (step_run_id, attempt, seq)
);
CREATE INDEX annotations_run ON annotations (run_id);
ALTER TABLE attempts ADD COLUMN annotations_dropped BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN annotations_seen_seq BIGINT NOT NULL DEFAULT 0;
