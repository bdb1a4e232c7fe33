-- Objects whose blob row is gone (engine/src/artifacts/retention.rs): a row deleted in any
-- way — a repository or a run deleted (ON DELETE CASCADE), a retried upload's record
-- replaced, retention — leaves its key here in the same transaction, and the sweeper
-- deletes the object, then the key. So no object outlives its row for longer than a sweep,
-- even across a crash, and deleting a repository frees its disk, not only its quota.
CREATE TABLE doomed_blobs (
    key TEXT PRIMARY KEY
);
CREATE TRIGGER blobs_doomed AFTER DELETE ON blobs
BEGIN
    INSERT OR IGNORE INTO doomed_blobs (key) VALUES (OLD.key);
END;
