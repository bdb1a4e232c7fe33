//! `oidc_keys`: the keys the engine signs steps' OpenID Connect tokens with, sealed, and
//! the record of the tokens it issued (audit events `id_token.issue`).
//! A key retired in the future (`retired_at` ahead of now) still signs until then: a
//! rotation publishes its new key before it signs.
//!
//! Invariants: a key's private half is stored only as the caller sealed it (never in
//! clear when the vault has a key); keys are never deleted, only retired (`retired_at`),
//! so every replica publishes the same set; the first key is added only while no key is
//! active (two engines starting at once keep at most the keys they both publish), and a
//! rotation retires every active key in the same transaction that adds the new one.

use crate::tx::Conn;
use crate::tx::Statement;
use crate::{AuditRow, Store};

/// The audit action recording one token issued to a step.
pub const ID_TOKEN_ISSUED: &str = "id_token.issue";

/// A stored signing key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct OidcKeyRow {
    pub kid: String,
    /// The private key as the vault sealed it.
    pub sealed_key: String,
    pub created_at: i64,
    /// When a newer key replaced it (`None`: it is active).
    pub retired_at: Option<i64>,
}

impl Store {
    /// The keys to publish: every active key and those retired at `retired_since` (ms) or
    /// later, newest first (the signer is the first active one).
    pub async fn oidc_keys(&self, retired_since: i64) -> anyhow::Result<Vec<OidcKeyRow>> {
        self.rows(
            Statement::new(
                "SELECT kid, sealed_key, created_at, retired_at FROM oidc_keys \
             WHERE retired_at IS NULL OR retired_at >= $1 \
             ORDER BY created_at DESC, kid DESC",
            )
            .bind(retired_since),
        )
        .await
    }

    /// Adds key `kid` made at `at_ms` when no key is active; whether it was added.
    pub async fn add_first_oidc_key(
        &self,
        kid: &str,
        sealed_key: &str,
        at_ms: i64,
    ) -> anyhow::Result<bool> {
        let added = self
            .execute(
                Statement::new(
                    "INSERT INTO oidc_keys (kid, sealed_key, created_at) \
             SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT) \
             WHERE NOT EXISTS (SELECT 1 FROM oidc_keys WHERE retired_at IS NULL)",
                )
                .bind(kid)
                .bind(sealed_key)
                .bind(at_ms),
            )
            .await?;
        Ok(added > 0)
    }

    /// Adds key `kid` (made at `at_ms`) to take over: every active key is retired at
    /// `retire_at_ms` (now or later) in the same transaction.
    pub async fn rotate_oidc_key(
        &self,
        kid: &str,
        sealed_key: &str,
        at_ms: i64,
        retire_at_ms: i64,
    ) -> anyhow::Result<()> {
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            tx.execute(
                Statement::new("UPDATE oidc_keys SET retired_at = $1 WHERE retired_at IS NULL")
                    .bind(retire_at_ms),
            )
            .await?;
            tx.execute(
                Statement::new(
                    "INSERT INTO oidc_keys (kid, sealed_key, created_at) VALUES ($1, $2, $3)",
                )
                .bind(kid)
                .bind(sealed_key)
                .bind(at_ms),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
    }

    /// The tokens issued to the steps of run `run_id` (audit events
    /// [`ID_TOKEN_ISSUED`]), oldest first.
    pub async fn id_tokens_issued(&self, run_id: i64) -> anyhow::Result<Vec<AuditRow>> {
        self.rows(
            Statement::new(
                "SELECT id, at, user_id, actor, action, repo_id, run_id, detail FROM audit_events \
             WHERE run_id = $1 AND action = $2 ORDER BY id",
            )
            .bind(run_id)
            .bind(ID_TOKEN_ISSUED),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::{bash_run, stores};
    use crate::Audit;

    use super::ID_TOKEN_ISSUED;

    #[tokio::test]
    async fn the_first_key_is_added_once_and_a_rotation_retires_the_active_ones() {
        for (store, _dir) in stores().await {
            assert!(store.oidc_keys(0).await.unwrap().is_empty());
            assert!(store.add_first_oidc_key("a", "sealed-a", 10).await.unwrap());
            // A second engine starting at the same moment does not add its own.
            assert!(!store.add_first_oidc_key("b", "sealed-b", 11).await.unwrap());
            let keys = store.oidc_keys(0).await.unwrap();
            assert_eq!(keys.len(), 1, "{keys:?}");
            assert_eq!((keys[0].kid.as_str(), keys[0].retired_at), ("a", None));

            store
                .rotate_oidc_key("c", "sealed-c", 20, 20)
                .await
                .unwrap();
            let keys = store.oidc_keys(0).await.unwrap();
            let seen: Vec<_> = keys
                .iter()
                .map(|k| (k.kid.as_str(), k.retired_at))
                .collect();
            assert_eq!(seen, [("c", None), ("a", Some(20))]);
            // Retired before the window: no longer published.
            let keys = store.oidc_keys(21).await.unwrap();
            let seen: Vec<_> = keys.iter().map(|k| k.kid.as_str()).collect();
            assert_eq!(seen, ["c"]);
        }
    }

    #[tokio::test]
    async fn the_tokens_issued_are_read_per_run() {
        for (store, _dir) in stores().await {
            let run = bash_run(&store, "ids", &["a"]).await;
            let other = bash_run(&store, "other", &["a"]).await;
            for (run_id, action) in [
                (run, ID_TOKEN_ISSUED),
                (other, ID_TOKEN_ISSUED),
                (run, "run.cancel"),
            ] {
                let event = Audit {
                    user_id: None,
                    actor: "engine",
                    action,
                    repo_id: None,
                    run_id: Some(run_id),
                    detail: json!({"aud": "sts.amazonaws.com"}),
                };
                store.audit(&event).await.unwrap();
            }
            let issued = store.id_tokens_issued(run).await.unwrap();
            assert_eq!(issued.len(), 1, "{issued:?}");
            assert_eq!(issued[0].run_id, Some(run));
            assert_eq!(issued[0].action, ID_TOKEN_ISSUED);
        }
    }
}
