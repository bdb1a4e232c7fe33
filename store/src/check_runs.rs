//! `check_runs`: the GitHub check run of a run on each commit it reports to (the commit it
//! ran at, the head of each pull request it opened), by GitHub's id.
//!
//! Invariants: one id per run and commit, the first one remembered stays (a second engine
//! that created one concurrently keeps the first: both were found by their `external_id`
//! anyway); it goes with its run (`ON DELETE CASCADE`).

use crate::tx::Statement;
use crate::{now_ms, Store};

impl Store {
    /// The id of run `run_id`'s check run on `sha`, when one was remembered.
    pub async fn check_run_id(&self, run_id: i64, sha: &str) -> anyhow::Result<Option<i64>> {
        let found: Option<(i64,)> = self
            .row(
                Statement::new(
                    "SELECT check_run_id FROM check_runs WHERE run_id = $1 AND head_sha = $2",
                )
                .bind(run_id)
                .bind(sha),
            )
            .await?;
        Ok(found.map(|(id,)| id))
    }

    /// Remembers `check_run_id` as run `run_id`'s check run on `sha` (unless one is).
    pub async fn remember_check_run(
        &self,
        run_id: i64,
        sha: &str,
        check_run_id: i64,
    ) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO check_runs (run_id, head_sha, check_run_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, head_sha) DO NOTHING",
            )
            .bind(run_id)
            .bind(sha)
            .bind(check_run_id)
            .bind(now_ms()),
        )
        .await
        .map(|_| ())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{bash_run, stores};

    #[tokio::test]
    async fn a_check_run_id_is_remembered_once_per_run_and_commit() {
        for (store, _dir) in stores().await {
            let run = bash_run(&store, "ci", &[]).await;
            assert_eq!(store.check_run_id(run, "a").await.unwrap(), None);
            store.remember_check_run(run, "a", 11).await.unwrap();
            store.remember_check_run(run, "a", 12).await.unwrap();
            store.remember_check_run(run, "b", 13).await.unwrap();
            assert_eq!(store.check_run_id(run, "a").await.unwrap(), Some(11));
            assert_eq!(store.check_run_id(run, "b").await.unwrap(), Some(13));
        }
    }
}
