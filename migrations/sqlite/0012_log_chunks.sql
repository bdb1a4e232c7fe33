-- Log lines on SQLite are stored a chunk at a time (engine/src/store/logs/sqlite_chunks.rs):
-- a row holds up to 512 consecutive lines of one attempt as a JSON array of
-- `[seq, stream, text, ts]`, keyed by its last seq. A row per line made each line six
-- bound values and a b-tree insert of its own, which a step printing a lot waited for.
-- PostgreSQL keeps a row per line. Lines stored before become chunks of one line.
CREATE TABLE log_chunks (
    step_run_id BIGINT NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL,
    line_count  BIGINT NOT NULL,
    lines       TEXT NOT NULL,
    PRIMARY KEY (step_run_id, attempt, last_seq)
);
INSERT INTO log_chunks (step_run_id, attempt, last_seq, line_count, lines)
SELECT step_run_id, attempt, seq, 1, json_array(json_array(seq, stream, text, ts))
FROM log_lines;
DROP TABLE log_lines;
