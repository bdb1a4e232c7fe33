-- Step caches keyed by trust (issue 69; core/src/caches/partition.rs): each entry records
-- who caused the run that saved it (the run's triggerer as recorded: a forge login such as
-- 'github:alice', a user's name, 'schedule'; NULL when nobody was recorded) and the trust
-- it was written under ('trusted', 'relayed', 'outsider', 'local'). A lookup matches an
-- entry's partition and its trust together.
--
-- Entries saved before: their trust follows from their partition, but those of 'agents'
-- are dropped (their objects go with the sweep of doomed blobs): any of them may have been
-- saved by a run a writer summoned on an outsider's issue, which now has a partition of
-- its own, and no run with secrets may restore what such a run wrote.
ALTER TABLE cache_entries ADD COLUMN causer TEXT;
ALTER TABLE cache_entries ADD COLUMN trust TEXT NOT NULL DEFAULT 'outsider';
DELETE FROM cache_entries WHERE partition_name = 'agents';
UPDATE cache_entries SET trust = 'local' WHERE partition_name = 'local';
UPDATE cache_entries SET trust = 'trusted'
    WHERE partition_name IN ('protected', 'default')
       OR substr(partition_name, 1, 7) = 'branch:'
       OR substr(partition_name, 1, 5) = 'pull:';
