-- Log quotas (engine/src/store/logs/quota.rs): bytes of line text each attempt and each
-- run has stored, kept up to date with every log batch (so the quota check reads two rows,
-- never the lines), the highest seq of the attempt's stored lines (a batch sent again
-- counts nothing twice), and whether the attempt's log was cut at its quota (its marker
-- line is stored; later lines are dropped). Logs stored before count from now on.
ALTER TABLE attempts ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN log_last_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN log_truncated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE runs ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
