//! `run_titles`: the title of what a run is about when its run's `ctx` does not hold one —
//! a pull request's, from the webhook delivery that started the run (an issue's or a
//! comment's run has its issue's title in `ctx.issue`). The run page shows it.
//!
//! Invariants: one title per run, written once when the run is created (written again, the
//! last one stays); it goes with its run (`ON DELETE CASCADE`). The text is whatever the
//! pull request's author wrote: data, shown escaped.

use crate::tx::Statement;
use crate::Store;

impl Store {
    /// Records the title of what run `run_id` is about.
    pub async fn set_run_title(&self, run_id: i64, title: &str) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO run_titles (run_id, title) VALUES ($1, $2) \
             ON CONFLICT (run_id) DO UPDATE SET title = excluded.title",
            )
            .bind(run_id)
            .bind(title),
        )
        .await
        .map(|_| ())?;
        Ok(())
    }

    /// The title of what run `run_id` is about, when one was recorded.
    pub async fn run_title(&self, run_id: i64) -> anyhow::Result<Option<String>> {
        let title: Option<(String,)> = self
            .row(Statement::new("SELECT title FROM run_titles WHERE run_id = $1").bind(run_id))
            .await?;
        Ok(title.map(|(title,)| title))
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::Plan;

    #[tokio::test]
    async fn a_run_keeps_the_last_title_written() {
        for (store, _dir) in crate::testing::stores().await {
            let plan = Plan::new("ci", Vec::new());
            let json = serde_json::to_string(&plan).unwrap();
            let run = store
                .create_run(&crate::testing::local_run(&plan, &json), 4)
                .await
                .unwrap()
                .id;
            assert_eq!(store.run_title(run).await.unwrap(), None);
            store.set_run_title(run, "Fix <b>it</b>").await.unwrap();
            store.set_run_title(run, "Fix it, again").await.unwrap();
            assert_eq!(
                store.run_title(run).await.unwrap().as_deref(),
                Some("Fix it, again")
            );
            assert_eq!(store.run_title(run + 1).await.unwrap(), None);
        }
    }
}
