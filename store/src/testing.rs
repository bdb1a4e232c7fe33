//! Set-up shared by every store-level test: the store's own unit tests, the engine's unit
//! tests and its integration tests (which enable the `testing` feature). One place, so no
//! test file copies how a store is opened, a repository registered or a run described.
//!
//! Invariants:
//! - [`stores`] gives a fresh SQLite store and, when a PostgreSQL server can be started
//!   (`testkit`), a fresh database on it; with `PLUE_REQUIRE_POSTGRES=1` a missing server
//!   fails the test instead of skipping the backend.
//! - Nothing here is compiled into a release build: the module exists under `cfg(test)`
//!   or the `testing` feature, which only dev-dependencies enable.

use evaluator::plan::{Plan, Step};
use plue_types::protocol::WorkspaceSource;
use plue_types::status::StepStatus;

use crate::{NewRepo, NewRun, Store};

/// How many connections a test's PostgreSQL store keeps: fewer than an engine's, as tests
/// run side by side against one server (each store opens its whole pool at once).
pub const TEST_POOL_CONNECTIONS: u32 = 4;

fn test_pool() -> crate::PostgresConnections {
    crate::PostgresConnections::new(TEST_POOL_CONNECTIONS).expect("a valid pool size")
}

/// The shared PostgreSQL server and a fresh database on it (its URL), or `None` when no
/// server can be started and `PLUE_REQUIRE_POSTGRES=1` does not ask for one.
pub fn postgres_database() -> Option<(&'static testkit::TempPostgres, String)> {
    let server =
        testkit::shared_postgres().expect("PostgreSQL is required (PLUE_REQUIRE_POSTGRES=1)")?;
    let url = server.new_database().expect("a PostgreSQL database");
    Some((server, url))
}

/// One store per available backend, each on a fresh database; the temporary directory
/// lives as long as its store.
pub async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let mut stores = vec![sqlite().await];
    if let Some((_, url)) = postgres_database() {
        let store = Store::connect_with(&url, test_pool())
            .await
            .expect("open the PostgreSQL store");
        stores.push((store, None));
    }
    stores
}

/// Stores written by an older engine and then opened by this one: on each available
/// backend, the schema up to migration `through`, then `rows` (SQL of that schema), then
/// [`Store::connect`] applying the migrations after it.
pub async fn upgraded_stores(
    through: i64,
    rows: &[&str],
) -> Vec<(Store, Option<tempfile::TempDir>)> {
    use crate::migrations::{migrator, Dialect};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("old.db");
    let mut old = rusqlite::Connection::open(&path).expect("open the old SQLite database");
    crate::migrations::apply_sqlite_through(&mut old, Some(through))
        .expect("the old SQLite schema");
    for sql in rows {
        old.execute_batch(sql).expect("an old row");
    }
    drop(old);
    let sqlite = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("upgrade the SQLite store");
    let mut stores = vec![(sqlite, Some(dir))];
    if let Some((_, url)) = postgres_database() {
        let pool = sqlx::PgPool::connect(&url)
            .await
            .expect("open the old PostgreSQL database");
        let old = migrator(Dialect::Postgres, Some(through))
            .await
            .expect("old migrations");
        old.run(&pool).await.expect("the old PostgreSQL schema");
        for sql in rows {
            sqlx::query(sql).execute(&pool).await.expect("an old row");
        }
        pool.close().await;
        let store = Store::connect_with(&url, test_pool())
            .await
            .expect("upgrade the PostgreSQL store");
        stores.push((store, None));
    }
    stores
}

/// A fresh SQLite store in a temporary directory (kept alive by the second half).
pub async fn sqlite() -> (Store, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open_data_dir(dir.path())
        .await
        .expect("open the SQLite store");
    (store, Some(dir))
}

const EMPTY: WorkspaceSource = WorkspaceSource::Empty;

/// A manual run of the local file `/w.plue.py` at no commit, with an empty workspace and
/// the plan hash `h`. Change what a test needs with struct update syntax:
/// `NewRun { event: "push", ..local_run(&plan, &json) }`.
pub fn local_run<'a>(plan: &'a Plan, plan_json: &'a str) -> NewRun<'a> {
    NewRun {
        workflow_source: "local",
        workflow_path: "/w.plue.py",
        event: "manual",
        git_ref: "refs/heads/main",
        sha: "0",
        context_json: "{}",
        plan,
        plan_json,
        plan_hash: "h",
        workspace: &EMPTY,
        rerun_of: None,
        repo: None,
    }
}

/// A manual run ([`local_run`], at most 4 steps at once) of `bash` steps named `steps`,
/// each running `true` with no dependencies: its id.
pub async fn bash_run(store: &Store, name: &str, steps: &[&str]) -> i64 {
    let plan = Plan::new(
        name,
        steps.iter().map(|id| Step::bash(*id, "true")).collect(),
    );
    let json = serde_json::to_string(&plan).unwrap();
    store
        .create_run(&local_run(&plan, &json), 4)
        .await
        .unwrap()
        .id
}

/// Repository `name` of a `gitea` forge whose clone URL leads nowhere, with the webhook
/// secret `s` (unsealed) and the default branch `main`.
pub fn repo(name: &str) -> NewRepo<'_> {
    NewRepo {
        name,
        clone_url: "https://forge.example/none.git",
        forge: "gitea",
        webhook_secret_sealed: "plain:s",
        api_url: None,
        api_token_sealed: None,
        default_branch: Some("main"),
        forge_repo_id: None,
    }
}

/// Registers [`repo`]`(name)` in `store`; its id. New repositories are private.
pub async fn create_repo(store: &Store, name: &str) -> i64 {
    store
        .create_repo(&repo(name))
        .await
        .expect("create a repository")
        .expect("a new repository")
        .id
}

/// Stores `run` and queues every one of its steps at once, claimable now, with an empty
/// dispatch document: what the engine's executor does for a plan of independent steps,
/// for tests below the executor (the pools') that need queued work. Returns the run's id.
pub async fn queue_run(store: &Store, run: &NewRun<'_>) -> i64 {
    queue_run_ready_at(store, run, crate::now_ms()).await
}

/// [`queue_run`], its steps claimable from `ready_at` (a retry's backoff, a wait timer).
pub async fn queue_run_ready_at(store: &Store, run: &NewRun<'_>, ready_at: i64) -> i64 {
    let run_id = store
        .create_run(run, 100)
        .await
        .expect("storing the run")
        .id;
    advance_with(store, crate::RunToAdvance::ungrouped(run_id), |snapshot| {
        snapshot
            .steps
            .iter()
            .filter(|step| step.status == StepStatus::Pending)
            .map(|step| crate::StepChange::Queue {
                step_run_id: step.id,
                dispatch: "{}".into(),
                ready_at,
                timeout_ms: 60_000,
            })
            .collect()
    })
    .await
    .expect("queueing the run's steps");
    run_id
}

/// Queues the first step of run `run_id` (claimable from 0) and claims it at 1 for a new
/// runner `name` of the shared token, without labels: the claim, the runner's id, and the
/// copy of the run the queueing advance left ([`crate::Advanced::known`]).
pub async fn claim_first_step(
    store: &Store,
    run_id: i64,
    name: &str,
) -> (crate::Claimed, i64, Option<crate::KnownSteps>) {
    let advanced = advance_with(store, crate::RunToAdvance::ungrouped(run_id), |snapshot| {
        vec![crate::StepChange::Queue {
            step_run_id: snapshot.steps[0].id,
            dispatch: "{}".into(),
            ready_at: 0,
            timeout_ms: 60_000,
        }]
    })
    .await
    .expect("queueing the first step");
    let runner = store
        .register_runner(name, "{}", name, 0)
        .await
        .expect("registering the runner");
    let claimed = store
        .claim(runner, &[String::new()], 1)
        .await
        .expect("claiming")
        .expect("the first step is queued");
    (claimed, runner, advanced.known)
}

/// A statement a test runs on a store's database, to set up or check rows no method of the
/// store reaches: SQL with `$N` placeholders and the values they bind, run through the
/// store's own statements (the same binders and decoders as every method).
#[derive(Debug, Clone)]
pub struct Sql {
    sql: String,
    values: Vec<SqlValue>,
}

/// A value a [`Sql`] binds.
#[derive(Debug, Clone)]
pub enum SqlValue {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Int(Some(value))
    }
}

impl From<Option<i64>> for SqlValue {
    fn from(value: Option<i64>) -> Self {
        SqlValue::Int(value)
    }
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(Some(value.to_string()))
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(Some(value))
    }
}

impl From<&String> for SqlValue {
    fn from(value: &String) -> Self {
        SqlValue::Text(Some(value.clone()))
    }
}

impl Sql {
    pub fn new(sql: impl Into<String>) -> Sql {
        Sql {
            sql: sql.into(),
            values: Vec::new(),
        }
    }

    /// Binds the next `$N`.
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Sql {
        self.values.push(value.into());
        self
    }

    fn statement(&self) -> crate::tx::Statement<'_> {
        self.values.iter().fold(
            crate::tx::Statement::new(&self.sql),
            |s, value| match value {
                SqlValue::Int(v) => s.bind(*v),
                SqlValue::Text(v) => s.bind(v),
            },
        )
    }

    /// Runs it: how many rows it changed (panics, naming the SQL, when it fails).
    pub async fn execute(&self, store: &Store) -> u64 {
        store
            .execute(self.statement())
            .await
            .unwrap_or_else(|e| panic!("{} on {}: {e:#}", self.sql, store.backend()))
    }

    /// The integer its one row's first column holds (panics when there is none).
    pub async fn one_int(&self, store: &Store) -> i64 {
        store
            .one_scalar(self.statement())
            .await
            .unwrap_or_else(|e| panic!("{} on {}: {e:#}", self.sql, store.backend()))
    }

    /// The text its one row's first column holds (panics when there is none).
    pub async fn one_text(&self, store: &Store) -> String {
        store
            .one_scalar(self.statement())
            .await
            .unwrap_or_else(|e| panic!("{} on {}: {e:#}", self.sql, store.backend()))
    }
}

/// Runs `sqlite` or `postgres` (SQL text, statements separated by `;`, nothing bound) on
/// `store`'s database, whichever it is: for a test that changes the schema under the
/// engine (a trigger that makes a statement fail).
pub async fn execute(store: &Store, sqlite: &str, postgres: &str) {
    match &store.db {
        crate::Db::Sqlite(db) => db.execute_script(sqlite).await,
        crate::Db::Postgres(pool) => sqlx::raw_sql(postgres)
            .execute(pool)
            .await
            .map(drop)
            .map_err(anyhow::Error::from),
    }
    .unwrap_or_else(|e| panic!("{} failed: {e:#}", store.backend()));
}

/// Returns once a backend of `pool`'s database waits for a lock: a statement under test is
/// blocked behind a transaction the test holds (PostgreSQL; panics after ≈ 5 s).
pub async fn a_backend_waits_for_a_lock(pool: &sqlx::PgPool) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no statement waited for a lock");
}

/// An idle runner's retirement (`gone`), written and holding the runner's row but not
/// committed: a claim racing it waits for the row ([`a_backend_waits_for_a_lock`]) until
/// the test commits it (PostgreSQL).
pub async fn retirement_held(
    pool: &sqlx::PgPool,
    runner_id: i64,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut retirement = pool.begin().await.expect("BEGIN");
    sqlx::query(
        "UPDATE runners SET state = 'gone', state_since = 2 WHERE id = $1 AND state = 'idle'",
    )
    .bind(runner_id)
    .execute(&mut *retirement)
    .await
    .expect("the retirement");
    retirement
}

/// Advances run `run` in one transition with the changes `decide` makes of its steps (no
/// outputs loaded): what the advance did ([`crate::Advanced::default`] when the run is not
/// advanced).
pub async fn advance_with(
    store: &Store,
    run: crate::RunToAdvance,
    decide: impl FnOnce(&crate::RunSnapshot) -> Vec<crate::StepChange>,
) -> anyhow::Result<crate::Advanced> {
    let mut conn = store.transition_conn().await?;
    let mut transition = store.lock_run(&mut conn, run).await?;
    if let Some(snapshot) = transition.steps().await? {
        let changes = decide(&snapshot);
        transition.apply(snapshot, changes).await?;
    }
    let committed = transition.commit().await?;
    conn.release(store).await;
    Ok(committed.advanced)
}
