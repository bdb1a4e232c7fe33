//! Provenance in the store (`provenance`, `provenance_keys`, migration 0030): the signed
//! statement of each applied proposal, and the public keys the engine has signed with.
//!
//! Invariants: a proposal has at most one statement — the first recorded is kept
//! ([`Store::record_statement`] inserts nothing when one is there, and returns the kept
//! one), so a retried apply links to what was signed first; the envelope is stored as the
//! text that was signed around, never re-serialised; a key, once listed, stays listed.

use super::{now_ms, on_db, Store};

/// A stored statement.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StatementRow {
    pub proposal_id: i64,
    pub run_id: i64,
    pub key_id: String,
    /// The DSSE envelope (JSON).
    pub envelope: String,
    pub created_at: i64,
}

/// A public key the engine signs or signed with.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub key_id: String,
    /// The raw ed25519 key, hex.
    pub public_key: String,
    pub first_seen: i64,
}

const COLUMNS: &str = "proposal_id, run_id, key_id, envelope, created_at";

impl Store {
    /// Records the statement of proposal `proposal_id` of run `run_id` unless one is there;
    /// the envelope kept (this one, or the one recorded first).
    pub async fn record_statement(
        &self,
        proposal_id: i64,
        run_id: i64,
        key_id: &str,
        envelope: &str,
    ) -> anyhow::Result<String> {
        on_db!(self, pool => {
            sqlx::query(
                "INSERT INTO provenance (proposal_id, run_id, key_id, envelope, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (proposal_id) DO NOTHING",
            )
            .bind(proposal_id)
            .bind(run_id)
            .bind(key_id)
            .bind(envelope)
            .bind(now_ms())
            .execute(pool)
            .await?;
            Ok(sqlx::query_scalar("SELECT envelope FROM provenance WHERE proposal_id = $1")
                .bind(proposal_id)
                .fetch_one(pool)
                .await?)
        })
    }

    /// The statement of proposal `proposal_id` of run `run_id`.
    pub async fn statement(
        &self,
        run_id: i64,
        proposal_id: i64,
    ) -> anyhow::Result<Option<StatementRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM provenance WHERE run_id = $1 AND proposal_id = $2");
        Ok(on_db!(self, pool => sqlx::query_as(&sql)
            .bind(run_id)
            .bind(proposal_id)
            .fetch_optional(pool)
            .await?))
    }

    /// Every statement of run `run_id`, by proposal.
    pub async fn statements_of_run(&self, run_id: i64) -> anyhow::Result<Vec<StatementRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM provenance WHERE run_id = $1 ORDER BY proposal_id");
        Ok(on_db!(self, pool => sqlx::query_as(&sql).bind(run_id).fetch_all(pool).await?))
    }

    /// Lists public key `key_id` (`public_key` in hex) unless it is listed.
    pub async fn record_signing_key(&self, key_id: &str, public_key: &str) -> anyhow::Result<()> {
        on_db!(self, pool => {
            sqlx::query(
                "INSERT INTO provenance_keys (key_id, public_key, first_seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(key_id)
            .bind(public_key)
            .bind(now_ms())
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Every listed key, newest first.
    pub async fn signing_keys(&self) -> anyhow::Result<Vec<SigningKeyRow>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT key_id, public_key, first_seen FROM provenance_keys \
             ORDER BY first_seen DESC, key_id",
        )
        .fetch_all(pool)
        .await?))
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::Plan;

    #[tokio::test]
    async fn the_first_statement_of_a_proposal_is_kept_and_keys_stay_listed() {
        for (store, _dir) in crate::testing::stores().await {
            let plan = Plan::new("ci", Vec::new());
            let json = serde_json::to_string(&plan).unwrap();
            let run = store
                .create_run(&crate::testing::local_run(&plan, &json), 4)
                .await
                .unwrap()
                .id;
            let kept = store
                .record_statement(5, run, "k1", "{\"a\":1}")
                .await
                .unwrap();
            assert_eq!(kept, "{\"a\":1}");
            // A retry signed again: the first stays.
            let again = store
                .record_statement(5, run, "k1", "{\"a\":2}")
                .await
                .unwrap();
            assert_eq!(again, "{\"a\":1}");
            store
                .record_statement(6, run, "k2", "{\"b\":1}")
                .await
                .unwrap();
            let all = store.statements_of_run(run).await.unwrap();
            assert_eq!(
                all.iter().map(|s| s.proposal_id).collect::<Vec<_>>(),
                [5, 6]
            );
            assert_eq!(store.statement(run, 6).await.unwrap().unwrap().key_id, "k2");
            // Another run's id does not reach it.
            assert_eq!(store.statement(run + 1, 6).await.unwrap(), None);
            store.record_signing_key("k1", "aa").await.unwrap();
            store.record_signing_key("k2", "bb").await.unwrap();
            store.record_signing_key("k1", "cc").await.unwrap();
            let keys = store.signing_keys().await.unwrap();
            assert_eq!(keys.len(), 2);
            assert_eq!(
                keys.iter().find(|k| k.key_id == "k1").unwrap().public_key,
                "aa"
            );
        }
    }
}
