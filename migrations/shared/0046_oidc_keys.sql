-- The engine's keys for the OpenID Connect tokens it signs for steps (plue_core::id_tokens):
-- each an RSA private key (PKCS#8 PEM) sealed with the vault, its key id (the RFC 7638
-- thumbprint of its public key), when it was made and when a newer key replaced it. The
-- newest key without `retired_at` signs; a retired key is still published while tokens it
-- signed may be alive.
CREATE TABLE oidc_keys (
    kid TEXT PRIMARY KEY,
    sealed_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
