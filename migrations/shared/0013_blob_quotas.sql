-- Storage quotas (engine/src/artifacts/quota.rs): each blob row carries how many artifact
-- files it holds, so what a run or a repository keeps is a sum over its blob rows. Blobs
-- recorded before count their listed files.
ALTER TABLE blobs ADD COLUMN files BIGINT NOT NULL DEFAULT 0;
UPDATE blobs SET files = (SELECT COUNT(*) FROM artifacts a WHERE a.blob_id = blobs.id);
-- The quota sums read a run's blobs (the unique key's first column) and a repository's
-- runs (runs_repo); the run page and the API list a run's artifacts blob by blob.
