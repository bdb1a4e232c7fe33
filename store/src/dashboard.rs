//! Read queries for the dashboard: one page of runs, newest first, filtered and paginated by
//! keyset (`id < before`), so a store with 100,000 runs answers as fast as one with ten.
//!
//! Invariants: every filter is bound as a parameter, and an absent one is left out of the
//! statement (`filters`), so the cursor and each filter present can use their index; the
//! page walks the primary key downwards, never an `OFFSET`. The
//! repositories a caller may read filter in the query itself ([`Store::runs_page`]), so a
//! page of `limit` runs is `limit` readable runs.
//!
//! A run's status as listed is the one people read ([`SHOWN_STATUS`]): a `queued` or
//! `running` run whose only unfinished work is approvals or environment reviews (a step
//! `waiting`, none `queued`, `claimed` or `running`) is `waiting`. The status filter
//! compares the same expression, so `status=waiting` finds exactly the runs listed as
//! waiting and `status=running` none of them; `api::views::RunView::new` applies the same
//! rule to a run read with its steps.

use super::filters::{bind_conditions, Conditions};
use plue_types::status::AttemptStatus;

use super::{RunRow, Store};
use crate::tx::Statement;

/// Which runs a dashboard page shows; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// `local` or a repository's `owner/name` (the workflow's source).
    pub repository: Option<String>,
    /// The workflow's name as its plan declares it.
    pub workflow: Option<String>,
    /// A branch name (`main` also matches `refs/heads/main`) or a full ref.
    pub branch: Option<String>,
    pub event: Option<String>,
    /// A status as shown (`SHOWN_STATUS`): `waiting` included.
    pub status: Option<String>,
    /// Only runs with a smaller id (the keyset cursor of the next page).
    pub before: Option<i64>,
}

/// One attempt of a step, for the run page.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct AttemptRow {
    pub step_run_id: i64,
    pub number: i64,
    /// The review-loop iteration the attempt ran in (1 outside loops).
    pub iteration: i64,
    #[sqlx(try_from = "String")]
    pub status: AttemptStatus,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The name of the runner that took it.
    pub runner: Option<String>,
    /// An `llm` attempt's model, usage (JSON) and cost in micro-dollars (`None`: unpriced).
    pub model: Option<String>,
    pub usage: Option<String>,
    pub cost_usd_micros: Option<i64>,
}

/// The status of run `r` as people read it: `waiting` for an active run held only by
/// steps waiting for a decision, else the stored one. The stored status stays `running`
/// (the executor's and the concurrency group's rules know no `waiting`); only what is
/// shown and filtered differs.
pub(crate) const SHOWN_STATUS: &str = "(CASE WHEN r.status IN ('queued', 'running') \
     AND EXISTS (SELECT 1 FROM step_runs ws WHERE ws.run_id = r.id AND ws.status = 'waiting') \
     AND NOT EXISTS (SELECT 1 FROM step_runs bs WHERE bs.run_id = r.id \
     AND bs.status IN ('queued', 'claimed', 'running')) \
     THEN 'waiting' ELSE r.status END)";

/// The runs' columns in [`RunRow`] order (as `runs.rs` reads them), the status as shown.
pub(crate) fn shown_columns() -> String {
    format!(
        "r.id, r.workflow_id, w.name AS workflow_name, w.path AS workflow_path, \
         w.source AS workflow_source, r.event, r.ref AS git_ref, r.sha, r.plan_hash, \
         {SHOWN_STATUS} AS status, r.reason, r.cancel_requested, r.max_parallel, r.rerun_of, \
         r.repo_id, r.secrets_allowed, r.concurrency_group, r.loops_taken, r.created_at, \
         r.started_at, r.finished_at, r.cache_partition"
    )
}

impl Store {
    /// Up to `limit` runs matching `filter`, newest first.
    pub async fn dashboard_runs(
        &self,
        filter: &RunFilter,
        limit: i64,
    ) -> anyhow::Result<Vec<RunRow>> {
        self.runs_page(filter, None, limit).await
    }

    /// Up to `limit` runs matching `filter` of the repositories `repos` (`None`: every run,
    /// local ones included; `Some`: only runs of those repositories, never a local one),
    /// newest first.
    pub async fn runs_page(
        &self,
        filter: &RunFilter,
        repos: Option<&[i64]>,
        limit: i64,
    ) -> anyhow::Result<Vec<RunRow>> {
        let (sql, conditions) = self.runs_page_statement(filter, repos);
        self.rows(bind_conditions!(Statement::new(&sql), conditions).bind(limit))
            .await
    }

    /// [`Store::runs_page`]'s statement, its limit the last placeholder, and its conditions.
    fn runs_page_statement(
        &self,
        filter: &RunFilter,
        repos: Option<&[i64]>,
    ) -> (String, Conditions) {
        let mut conditions = Conditions::new(self.backend());
        conditions.text(filter.repository.as_deref(), |n| format!("w.source = {n}"));
        conditions.text(filter.workflow.as_deref(), |n| format!("w.name = {n}"));
        conditions.text(filter.branch.as_deref(), |n| {
            format!("(r.ref = {n} OR r.ref = 'refs/heads/' || {n})")
        });
        conditions.text(filter.event.as_deref(), |n| format!("r.event = {n}"));
        conditions.text(filter.status.as_deref(), |n| {
            format!("{SHOWN_STATUS} = {n}")
        });
        conditions.int(filter.before, |n| format!("r.id < {n}"));
        conditions.one_of("r.repo_id", repos);
        let sql = format!(
            "SELECT {} FROM runs r JOIN workflows w ON w.id = r.workflow_id {} \
             ORDER BY r.id DESC LIMIT {}",
            shown_columns(),
            conditions.where_clause(),
            conditions.next_placeholder()
        );
        (sql, conditions)
    }

    /// The distinct workflow sources and names that have runs (the filters' choices),
    /// sorted, at most `limit` of each.
    pub async fn dashboard_workflows(&self, limit: i64) -> anyhow::Result<Vec<(String, String)>> {
        self.rows(
            Statement::new("SELECT source, name FROM workflows ORDER BY source, name LIMIT $1")
                .bind(limit),
        )
        .await
    }

    /// What every runner is doing now: `(runner id, run id, step id)` of each attempt still
    /// claimed or running.
    pub async fn dashboard_busy_runners(&self) -> anyhow::Result<Vec<(i64, i64, String)>> {
        self.rows(Statement::new(
            "SELECT a.runner_id, s.run_id, s.step_id FROM attempts a \
             JOIN step_runs s ON s.id = a.step_run_id \
             WHERE a.status IN ('claimed', 'running') ORDER BY a.id",
        ))
        .await
    }

    /// Every attempt of the run's steps, by step and number.
    pub async fn dashboard_attempts(&self, run_id: i64) -> anyhow::Result<Vec<AttemptRow>> {
        self.rows(
            Statement::new(
                "SELECT a.step_run_id, a.number, a.iteration, a.status, a.exit_code, \
                 a.reason, a.started_at, a.finished_at, r.name AS runner, a.model, \
                 a.usage, a.cost_usd_micros \
                 FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
                 LEFT JOIN runners r ON r.id = a.runner_id \
                 WHERE s.run_id = $1 ORDER BY a.step_run_id, a.number",
            )
            .bind(run_id),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::{Plan, Step};

    use super::*;
    use crate::testing::{local_run, stores};
    use crate::NewRun;

    /// Runs `name` of `path` on `git_ref`; `failed` makes it a run that did not evaluate.
    async fn run(store: &Store, name: &str, git_ref: &str, event: &str, failed: bool) -> i64 {
        let plan = Plan::new(name, vec![Step::bash("a", "true")]);
        let json = serde_json::to_string(&plan).unwrap();
        let path = format!("/w/{name}.plue.py");
        let new = NewRun {
            workflow_path: &path,
            event,
            git_ref,
            ..local_run(&plan, &json)
        };
        if failed {
            store.create_failed_run(&new, "no").await.unwrap()
        } else {
            store.create_run(&new, 4).await.unwrap().id
        }
    }

    /// On PostgreSQL (generic plans), a page past the cursor starts at the cursor in the
    /// primary key: the filters absent are not in the statement to keep it from its index.
    #[tokio::test]
    async fn a_page_starts_at_its_cursor_in_the_index() {
        for (store, _dir) in stores().await {
            if store.backend() != "postgres" {
                continue;
            }
            let filter = RunFilter {
                before: Some(5_000),
                ..RunFilter::default()
            };
            let plan = |filter: &RunFilter, repos: Option<&[i64]>| {
                let (sql, conditions) = store.runs_page_statement(filter, repos);
                let store = &store;
                async move {
                    let explain = format!("EXPLAIN {sql}");
                    let rows: Vec<String> = store
                        .scalars(
                            bind_conditions!(Statement::new(&explain), conditions).bind(50_i64),
                        )
                        .await
                        .unwrap();
                    rows.join("\n")
                }
            };
            let cursor = plan(&filter, None).await;
            assert!(cursor.contains("Index Cond: (id < "), "{cursor}");
            // With the repositories' filter too, by the cursor or by `runs_repo`, whichever
            // the statistics favour: never the whole table.
            let repos = plan(&filter, Some(&[3, 4])).await;
            assert!(
                repos.contains("Index Cond: (id < ") || repos.contains("runs_repo"),
                "{repos}"
            );
        }
    }

    #[tokio::test]
    async fn filters_and_keyset_pages_on_both_backends() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let mut ids = Vec::new();
            for i in 0..12 {
                let (name, git_ref) = if i % 3 == 0 {
                    ("deploy", "refs/tags/v1")
                } else {
                    ("ci", "refs/heads/main")
                };
                let event = if i % 2 == 0 { "push" } else { "manual" };
                ids.push(run(&store, name, git_ref, event, i == 11).await);
            }
            let all = RunFilter::default();
            let page: Vec<i64> = store
                .dashboard_runs(&all, 5)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            let newest: Vec<i64> = ids.iter().rev().take(5).copied().collect();
            assert_eq!(page, newest, "{backend}: newest first");
            let next = RunFilter {
                before: Some(page[4]),
                ..RunFilter::default()
            };
            let second = store.dashboard_runs(&next, 100).await.unwrap();
            assert_eq!(second.len(), 7, "{backend}: the rest");
            assert!(second.iter().all(|r| r.id < page[4]));
            let count = |filter: RunFilter| {
                let store = store.clone();
                async move { store.dashboard_runs(&filter, 100).await.unwrap().len() }
            };
            let branch = |b: &str| RunFilter {
                branch: Some(b.into()),
                ..RunFilter::default()
            };
            assert_eq!(count(branch("main")).await, 8, "{backend}: a branch name");
            assert_eq!(
                count(branch("refs/tags/v1")).await,
                4,
                "{backend}: a full ref"
            );
            let workflow = RunFilter {
                workflow: Some("deploy".into()),
                event: Some("push".into()),
                ..RunFilter::default()
            };
            assert_eq!(count(workflow).await, 2, "{backend}: workflow and event");
            let failed = RunFilter {
                status: Some("failed".into()),
                repository: Some("local".into()),
                ..RunFilter::default()
            };
            assert_eq!(count(failed).await, 1, "{backend}: status and repository");
            let hostile = RunFilter {
                workflow: Some("ci' OR '1'='1".into()),
                ..RunFilter::default()
            };
            assert_eq!(count(hostile).await, 0, "{backend}: values are bound");
            let workflows = store.dashboard_workflows(10).await.unwrap();
            assert_eq!(workflows.len(), 2, "{backend}");
            assert!(store.dashboard_attempts(ids[0]).await.unwrap().is_empty());
            assert!(store.dashboard_busy_runners().await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_workflow_keeps_its_row_and_takes_its_latest_plans_name() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let create = |name: &'static str| {
                let store = store.clone();
                async move {
                    let plan = Plan::new(name, vec![Step::bash("a", "true")]);
                    let json = serde_json::to_string(&plan).unwrap();
                    let new = NewRun {
                        workflow_path: "/w/renamed.plue.py",
                        ..local_run(&plan, &json)
                    };
                    store.create_run(&new, 4).await.unwrap().id
                }
            };
            let workflow_of = |run: i64| {
                let store = store.clone();
                async move { store.run(run).await.unwrap().unwrap().workflow_id }
            };
            let first = create("before").await;
            let again = create("before").await;
            let renamed = create("after").await;
            assert_eq!(
                workflow_of(first).await,
                workflow_of(again).await,
                "{backend}"
            );
            assert_eq!(
                workflow_of(first).await,
                workflow_of(renamed).await,
                "{backend}"
            );
            let workflows = store.dashboard_workflows(10).await.unwrap();
            assert_eq!(
                workflows,
                vec![("local".to_string(), "after".to_string())],
                "{backend}: one row, the latest name"
            );
        }
    }

    /// Sets run `id`'s stored status and its one step's status, as the executor would.
    async fn set_states(store: &Store, id: i64, run: &str, step: &str) {
        for (sql, status) in [
            ("UPDATE runs SET status = $2 WHERE id = $1", run),
            ("UPDATE step_runs SET status = $2 WHERE run_id = $1", step),
        ] {
            store
                .execute(Statement::new(sql).bind(id).bind(status))
                .await
                .map(|_| ())
                .unwrap();
        }
    }

    // regression: a run held by an approval was listed as `running` and `status=waiting`
    // matched nothing.
    #[tokio::test]
    async fn a_run_held_by_an_approval_is_listed_and_filtered_as_waiting() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let waiting = run(&store, "deploy", "refs/heads/main", "push", false).await;
            let running = run(&store, "ci", "refs/heads/main", "push", false).await;
            let done = run(&store, "ci", "refs/heads/main", "push", false).await;
            set_states(&store, waiting, "running", "waiting").await;
            set_states(&store, running, "running", "running").await;
            set_states(&store, done, "succeeded", "succeeded").await;
            let statuses: Vec<(i64, String)> = store
                .dashboard_runs(&RunFilter::default(), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.id, r.status.to_string()))
                .collect();
            assert_eq!(
                statuses,
                vec![
                    (done, "succeeded".to_string()),
                    (running, "running".to_string()),
                    (waiting, "waiting".to_string()),
                ],
                "{backend}"
            );
            let with = |status: &str| RunFilter {
                status: Some(status.into()),
                ..RunFilter::default()
            };
            for (status, expected) in [("waiting", waiting), ("running", running)] {
                let ids: Vec<i64> = store
                    .dashboard_runs(&with(status), 10)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.id)
                    .collect();
                assert_eq!(ids, vec![expected], "{backend}: status={status}");
            }
            // Once the approval is decided and a step runs again, the run is running.
            set_states(&store, waiting, "running", "queued").await;
            assert!(store
                .dashboard_runs(&with("waiting"), 10)
                .await
                .unwrap()
                .is_empty());
        }
    }

    // regression: the repository page listed a run held by its approval as `running`.
    #[tokio::test]
    async fn a_repositorys_runs_show_a_run_held_by_an_approval_as_waiting() {
        for (store, _dir) in stores().await {
            let repo_id = crate::testing::create_repo(&store, "octo/hello").await;
            let plan = Plan::new("deploy", vec![Step::bash("a", "true")]);
            let json = serde_json::to_string(&plan).unwrap();
            let new = NewRun {
                workflow_source: "octo/hello",
                repo: Some(crate::RunRepo {
                    repo_id,
                    secrets_allowed: true,
                }),
                ..crate::testing::local_run(&plan, &json)
            };
            let held = store.create_run(&new, 4).await.unwrap().id;
            let busy = store.create_run(&new, 4).await.unwrap().id;
            set_states(&store, held, "running", "waiting").await;
            set_states(&store, busy, "running", "running").await;
            let shown: Vec<(i64, String)> = store
                .list_runs_of_repo("octo/hello", 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.id, r.status.to_string()))
                .collect();
            assert_eq!(
                shown,
                vec![(busy, "running".into()), (held, "waiting".into())],
                "{}",
                store.backend()
            );
        }
    }

    /// A store holding 100,000 runs answers every page in milliseconds, even a filter that
    /// matches one run (a scan of the primary key, never an `OFFSET`).
    #[tokio::test]
    async fn a_hundred_thousand_runs_stay_fast() {
        for (store, _dir) in stores().await {
            let backend = store.backend();
            let first = run(&store, "ci", "refs/heads/main", "push", false).await;
            set_states(&store, first, "running", "waiting").await;
            let workflow_id = store.run(first).await.unwrap().unwrap().workflow_id;
            store
                .execute(
                    Statement::new(
                        "WITH RECURSIVE n(i) AS \
                         (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
                         INSERT INTO runs (workflow_id, event, ref, sha, plan_hash, \
                         max_parallel, status, created_at) \
                         SELECT $1, 'push', 'refs/heads/main', 'x', 'h', 4, \
                         CASE WHEN i = 50 THEN 'failed' ELSE 'succeeded' END, i FROM n",
                    )
                    .bind(workflow_id),
                )
                .await
                .map(|_| ())
                .unwrap();
            let cases = [
                ("the newest page", RunFilter::default()),
                (
                    "a page deep down",
                    RunFilter {
                        before: Some(first + 1000),
                        ..RunFilter::default()
                    },
                ),
                (
                    "a filter matching one run",
                    RunFilter {
                        status: Some("failed".into()),
                        ..RunFilter::default()
                    },
                ),
                (
                    "the waiting runs (none but the first)",
                    RunFilter {
                        status: Some("waiting".into()),
                        ..RunFilter::default()
                    },
                ),
            ];
            for (what, filter) in cases {
                let started = std::time::Instant::now();
                let page = store.dashboard_runs(&filter, 50).await.unwrap();
                let took = started.elapsed();
                eprintln!("{backend}: {what}: {} runs in {took:?}", page.len());
                assert!(!page.is_empty(), "{backend}: {what}");
                // Generous: a debug build on a busy two-core machine.
                assert!(
                    took < std::time::Duration::from_millis(500),
                    "{backend}: {what}: {took:?}"
                );
            }
        }
    }
}
