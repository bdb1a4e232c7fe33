//! `run_held_secrets`: every secret value a run was handed — each value a step of it (or a
//! debug session in a step's room) received — sealed by the vault, so the run's outbound
//! wall and its log masking still know a value rotated or deleted while the run goes on
//! (`plue_core::outbound_wall`).
//!
//! Invariants: a row holds a value only sealed (the caller seals it, or copies the sealed
//! text of the secret it opened), never in clear; rows are only added while the run lives
//! and go with the run's rows (`ON DELETE CASCADE`), so a run's texts written after it
//! ended (answers, the outbox) still meet every value it held.

use crate::tx::Statement;
use crate::Store;

impl Store {
    /// Every sealed value run `run_id` was handed, as `(name, sealed)`, oldest first.
    pub async fn held_secrets(&self, run_id: i64) -> anyhow::Result<Vec<(String, String)>> {
        self.rows(
            Statement::new(
                "SELECT name, sealed FROM run_held_secrets WHERE run_id = $1 ORDER BY held_at",
            )
            .bind(run_id),
        )
        .await
    }

    /// How many values run `run_id` holds: it only grows, so a copy of the run's wall
    /// made when it held this many still knows every value while the count is the same.
    pub async fn held_secrets_count(&self, run_id: i64) -> anyhow::Result<i64> {
        self.one_scalar(
            Statement::new("SELECT COUNT(*) FROM run_held_secrets WHERE run_id = $1").bind(run_id),
        )
        .await
    }

    /// Records that run `run_id` was handed the values sealed in `held` (`(name, sealed)`)
    /// at `at_ms`. The caller leaves out what it holds already; one held twice (two claims
    /// at once) is harmless.
    pub async fn hold_secrets(
        &self,
        run_id: i64,
        held: &[(String, String)],
        at_ms: i64,
    ) -> anyhow::Result<()> {
        for (name, sealed) in held {
            self.execute(
                Statement::new(
                    "INSERT INTO run_held_secrets (run_id, name, sealed, held_at) \
                 VALUES ($1, $2, $3, $4)",
                )
                .bind(run_id)
                .bind(name)
                .bind(sealed)
                .bind(at_ms),
            )
            .await
            .map(|_| ())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{bash_run, stores};
    use crate::tx::Statement;

    #[tokio::test]
    async fn a_run_keeps_what_it_was_handed_until_its_rows_go() {
        for (store, _dir) in stores().await {
            let run = bash_run(&store, "held", &["a"]).await;
            let other = bash_run(&store, "other", &["a"]).await;
            assert!(store.held_secrets(run).await.unwrap().is_empty());
            assert_eq!(store.held_secrets_count(run).await.unwrap(), 0);
            let held = |name: &str, sealed: &str| (name.to_owned(), sealed.to_owned());
            store
                .hold_secrets(run, &[held("TOKEN", "v1:aa:01")], 10)
                .await
                .unwrap();
            // Rotated while the run goes on: the new value is held beside the old one.
            store
                .hold_secrets(run, &[held("TOKEN", "v1:bb:02")], 20)
                .await
                .unwrap();
            store
                .hold_secrets(other, &[held("TOKEN", "v1:cc:03")], 15)
                .await
                .unwrap();
            assert_eq!(
                store.held_secrets(run).await.unwrap(),
                [held("TOKEN", "v1:aa:01"), held("TOKEN", "v1:bb:02")]
            );
            assert_eq!(store.held_secrets_count(run).await.unwrap(), 2);
            // They go with the run.
            store
                .execute(Statement::new("DELETE FROM runs WHERE id = $1").bind(run))
                .await
                .map(drop)
                .unwrap();
            assert!(store.held_secrets(run).await.unwrap().is_empty());
            assert_eq!(store.held_secrets(other).await.unwrap().len(), 1);
        }
    }
}
