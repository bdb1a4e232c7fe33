-- Step caches (core/src/caches/): each run's cache partition, decided by the engine when
-- the run is created (NULL for a run created before this migration, which the engine reads
-- as the least trusted partition: 'agents', or 'local' without a repository), and the
-- entries runs saved. An entry belongs to one scope ('repo-<id>' or 'local') and one
-- partition; under one key a partition keeps its first entry (never overwritten). The
-- archive lives in the blob store under blob_key (content-addressed: several entries may
-- name one object); a deleted entry leaves its key in doomed_blobs, whose sweep skips a
-- key another entry still names.
ALTER TABLE runs ADD COLUMN cache_partition TEXT;
CREATE TABLE cache_entries (
    id           INTEGER PRIMARY KEY,
    repo_id      BIGINT REFERENCES repositories (id) ON DELETE CASCADE,
    scope        TEXT NOT NULL,
    partition_name TEXT NOT NULL,
    name         TEXT NOT NULL,
    key          TEXT NOT NULL,
    -- 'sha256:<hex>' of the archive, computed by the engine as it streamed
    digest       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    blob_key     TEXT NOT NULL,
    -- the run that saved it (informative: entries outlive runs)
    run_id       BIGINT,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    UNIQUE (scope, partition_name, key)
);
CREATE INDEX cache_entries_used ON cache_entries (scope, last_used_at);
CREATE INDEX cache_entries_blob ON cache_entries (blob_key);
CREATE TRIGGER cache_entries_doomed AFTER DELETE ON cache_entries
BEGIN
    INSERT OR IGNORE INTO doomed_blobs (key) VALUES (OLD.blob_key);
END;
