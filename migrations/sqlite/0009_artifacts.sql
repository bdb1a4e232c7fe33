-- Step hand-off and artifacts: the tars a step attempt left in the blob store (its final
-- workspace for a later step's `workspace_from`, the files its `artifacts` globs matched),
-- and the files of each artifacts tar, for listing and download. The blob itself lives in
-- the object store under `key`; a row is deleted after its blob (retention).
CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    run_id     BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id    TEXT NOT NULL,
    attempt    BIGINT NOT NULL,
    -- 'workspace' or 'artifacts'
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    size       BIGINT NOT NULL,
    -- 'sha256:<hex>' of the tar
    digest     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (run_id, step_id, attempt, kind)
);
CREATE INDEX blobs_created ON blobs (created_at);

CREATE TABLE artifacts (
    blob_id BIGINT NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    -- the file's path relative to the workspace, '/'-separated
    name    TEXT NOT NULL,
    size    BIGINT NOT NULL,
    digest  TEXT NOT NULL,
    PRIMARY KEY (blob_id, name)
);
