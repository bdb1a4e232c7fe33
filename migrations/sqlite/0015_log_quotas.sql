-- Log quotas (engine/src/store/logs/quota.rs): bytes of line text each attempt and each
-- run has stored, kept up to date with every log batch (so the quota check reads two rows,
-- never the lines), the highest seq of the attempt's stored lines (a batch sent again
-- counts nothing twice), and whether the attempt's log was cut at its quota (its marker
-- line is stored; later lines are dropped). Logs stored before count from now on.
ALTER TABLE attempts ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN log_last_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN log_truncated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE runs ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
-- SQLite keeps the figures with a trigger, so that storing a chunk stays one statement:
-- each chunk carries the bytes of text it holds.
ALTER TABLE log_chunks ADD COLUMN text_bytes BIGINT NOT NULL DEFAULT 0;
CREATE TRIGGER log_chunks_count AFTER INSERT ON log_chunks BEGIN
    UPDATE attempts SET log_bytes = log_bytes + NEW.text_bytes,
        log_last_seq = MAX(log_last_seq, NEW.last_seq)
        WHERE step_run_id = NEW.step_run_id AND number = NEW.attempt;
    UPDATE runs SET log_bytes = log_bytes + NEW.text_bytes
        WHERE id = (SELECT run_id FROM step_runs WHERE id = NEW.step_run_id);
END;
