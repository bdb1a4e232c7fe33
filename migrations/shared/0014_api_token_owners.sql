-- Who an API token belongs to, as live-stream caps count it: the SHA-256 of the token
-- whose holder minted it (through POST /api/tokens with a non-admin token) or, when NULL,
-- the token itself (made by the admin; every token made before this column).
ALTER TABLE api_tokens ADD COLUMN owner_hash TEXT;
