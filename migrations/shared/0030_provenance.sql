-- Provenance (issue 50): the signed statement of every change the safe-output outbox
-- applied (core/src/safe_outputs/attest.rs), one per proposal, kept as the DSSE envelope's
-- JSON exactly as signed; and every public key this engine has signed with, so statements
-- signed before a key rotation still verify (`GET /api/provenance/keys`).
CREATE TABLE provenance (
    proposal_id BIGINT PRIMARY KEY,
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX provenance_run ON provenance (run_id, proposal_id);

CREATE TABLE provenance_keys (
    key_id      TEXT PRIMARY KEY,
    -- The raw ed25519 public key, hex.
    public_key  TEXT NOT NULL,
    first_seen  BIGINT NOT NULL
);
