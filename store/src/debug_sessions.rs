//! Debug sessions in the store (`plue debug RUN STEP`, migration 0024): a writer's request
//! to run a failed step again on a runner that keeps it, then a shell in its workspace.
//!
//! Invariants:
//! - A session moves only forward: `queued` → `claimed` → `ready` → `ended` (any state may
//!   end; `ended` is final). Every update names the states it may leave, so repeated or
//!   late reports are no-ops.
//! - A session is claimed by exactly one runner, under the step claim's own rule, the same
//!   SQL ([`claimable_by_runner!`]): the step run's labels among the runner's, a step that
//!   needs secrets only by a runner allowed them, a fork run's step only by a runner that
//!   accepts forks, only by a live runner. The claim and the runner's busy mark are one
//!   transaction, and the mark is written only while the runner is live
//!   ([`runner_busy!`]): a runner retired or lost meanwhile gets no session and stays as
//!   it was. The claiming runner is recorded and is the only one the stream accepts.
//! - A queued session older than its idle timeout is never claimed: it ends instead, so a
//!   session nobody served leaves nothing to start later.

use anyhow::Context;
use plue_types::status::DebugSessionStatus;

use super::claims::statements::{claimable_by_runner, runner_busy, RUNNER_BUSY};
use super::claims::ClaimFor;
use super::tx::{Conn, NamedSql, Statement};
use super::Store;

/// A session to record.
#[derive(Debug, Clone)]
pub struct NewDebugSession<'a> {
    /// 32 random hex characters.
    pub id: &'a str,
    pub run_id: i64,
    pub step_run_id: i64,
    /// Who may attach: `token:<id>`, `admin` or `embedded`.
    pub creator: &'a str,
    pub creator_user_id: Option<i64>,
    /// The `TERM` the shell gets.
    pub term: &'a str,
    pub idle_timeout_ms: i64,
    pub now: i64,
}

/// A recorded session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct DebugSessionRow {
    pub id: String,
    pub run_id: i64,
    pub step_run_id: i64,
    pub creator: String,
    pub creator_user_id: Option<i64>,
    pub term: String,
    pub idle_timeout_ms: i64,
    #[sqlx(try_from = "String")]
    pub status: DebugSessionStatus,
    pub runner_id: Option<i64>,
    pub created_at: i64,
    pub claimed_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

/// A session a runner just claimed, with what it needs to run the step again.
#[derive(Debug, Clone, PartialEq)]
pub struct DebugClaim {
    pub session: DebugSessionRow,
    pub step_id: String,
    /// The step run's dispatch document, as its attempts were given it.
    pub dispatch: String,
    /// The run's workspace document.
    pub workspace: String,
    /// How many attempts the step run had (the debug attempt says which it repeats).
    pub attempts: i64,
}

/// Session `$1`.
const SESSION: &str = "SELECT id, run_id, step_run_id, creator, creator_user_id, term, \
    idle_timeout_ms, status, runner_id, created_at, claimed_at, ended_at, end_reason \
    FROM debug_sessions WHERE id = $1";

/// The oldest queued session runner `:runner` may serve: its step run's under the step
/// claim's own rule ([`claimable_by_runner!`], with `:forks_only` false: a debug session
/// takes any step).
macro_rules! claimable_session {
    ($backend:ident) => {
        concat!(
            "SELECT d.id FROM debug_sessions d JOIN step_runs ON step_runs.id = d.step_run_id
             WHERE d.status = 'queued' AND ",
            claimable_by_runner!($backend),
            "
             ORDER BY d.created_at, d.id LIMIT 1"
        )
    };
}

/// PostgreSQL, one statement: picks the session, marks the runner busy ([`runner_busy!`])
/// and, only with that mark, claims the session — as a polling runner's step claim does.
static PG_CLAIM: NamedSql = NamedSql::new(concat!(
    "WITH picked AS (",
    claimable_session!(postgres),
    "
         FOR UPDATE OF d SKIP LOCKED),
     busy AS (",
    runner_busy!(),
    "
         AND EXISTS (SELECT 1 FROM picked)
         RETURNING id)
     UPDATE debug_sessions d SET status = 'claimed', runner_id = :runner, claimed_at = :now
     FROM picked WHERE d.id = picked.id AND d.status = 'queued'
       AND EXISTS (SELECT 1 FROM busy)
     RETURNING d.id"
));

/// SQLite claims the session here; the runner's busy mark follows in the same transaction
/// ([`RUNNER_BUSY`]).
static SQLITE_CLAIM: NamedSql = NamedSql::new(concat!(
    "UPDATE debug_sessions SET status = 'claimed', runner_id = :runner, claimed_at = :now
     WHERE status = 'queued' AND id = (",
    claimable_session!(sqlite),
    ")
     RETURNING id"
));

impl Store {
    /// Records a new `queued` session.
    pub async fn create_debug_session(&self, new: &NewDebugSession<'_>) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO debug_sessions (id, run_id, step_run_id, creator, creator_user_id, \
             term, idle_timeout_ms, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8)",
            )
            .bind(new.id)
            .bind(new.run_id)
            .bind(new.step_run_id)
            .bind(new.creator)
            .bind(new.creator_user_id)
            .bind(new.term)
            .bind(new.idle_timeout_ms)
            .bind(new.now),
        )
        .await
        .map(drop)?;
        Ok(())
    }

    /// Session `id`, or `None`.
    pub async fn debug_session(&self, id: &str) -> anyhow::Result<Option<DebugSessionRow>> {
        self.row::<DebugSessionRow>(Statement::new(SESSION).bind(id))
            .await
    }

    /// Whether step run `step_run_id` still holds the dispatch document its attempts ran
    /// with (a failed step run keeps it; one that failed before any dispatch has none).
    pub async fn step_run_dispatched(&self, step_run_id: i64) -> anyhow::Result<bool> {
        Ok(self
            .scalar::<bool>(
                Statement::new("SELECT action IS NOT NULL FROM step_runs WHERE id = $1")
                    .bind(step_run_id),
            )
            .await?
            .unwrap_or(false))
    }

    /// Whether step run `step_run_id` has a session that has not ended.
    pub async fn live_debug_session_of(&self, step_run_id: i64) -> anyhow::Result<Option<String>> {
        self.scalar::<String>(
            Statement::new(
                "SELECT id FROM debug_sessions \
                 WHERE step_run_id = $1 AND status <> 'ended' LIMIT 1",
            )
            .bind(step_run_id),
        )
        .await
    }

    /// Ends every queued session older than its idle timeout (nobody took it), with the
    /// reason, each in the audit trail (`debug.end`, as every other end: the engine's
    /// watchdog that would have ended it first may be gone with a restart); how many ended.
    pub async fn expire_debug_sessions(&self, now: i64) -> anyhow::Result<u64> {
        const REASON: &str = "no runner took the session within its idle timeout";
        let ended: Vec<(String, i64)> = self
            .rows(
                Statement::new(
                    "UPDATE debug_sessions SET status = 'ended', ended_at = $1, end_reason = $2 \
             WHERE status = 'queued' AND created_at + idle_timeout_ms <= $1 \
             RETURNING id, run_id",
                )
                .bind(now)
                .bind(REASON),
            )
            .await?;
        for (id, run_id) in &ended {
            let repo_id = self.run(*run_id).await?.and_then(|run| run.repo_id);
            self.audit(&super::Audit {
                user_id: None,
                actor: "engine",
                action: "debug.end",
                repo_id,
                run_id: Some(*run_id),
                detail: serde_json::json!({
                    "session": id.get(..8).unwrap_or(id),
                    "reason": REASON,
                }),
            })
            .await?;
        }
        Ok(ended.len() as u64)
    }

    /// Claims the oldest queued session runner `runner_id` may serve (see the module
    /// invariants), marking the runner busy; `None` when there is none.
    pub async fn claim_debug_session(
        &self,
        runner_id: i64,
        label_sets: &[String],
        now: i64,
    ) -> anyhow::Result<Option<DebugClaim>> {
        self.expire_debug_sessions(now).await?;
        let claim = ClaimFor::polling(runner_id, label_sets, now);
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        let claimed: Option<String> = tx
            .scalar(claim.values(Statement::named_per_backend(&SQLITE_CLAIM, &PG_CLAIM)))
            .await?;
        let Some(id) = claimed else {
            return Ok(None);
        };
        if !tx.is_postgres() {
            // SQLite's one connection: the claim just read the runner live and nothing
            // wrote since, so the mark lands.
            let marked = tx
                .execute(claim.values(Statement::named(&RUNNER_BUSY)))
                .await?;
            anyhow::ensure!(marked == 1, "runner {runner_id} left while claiming");
        }
        let session: DebugSessionRow = tx
            .row(Statement::new(SESSION).bind(id.as_str()))
            .await?
            .with_context(|| format!("debug session {id} after its claim"))?;
        let (step_id, dispatch, attempts, workspace): (String, Option<String>, i64, String) = tx
            .row(
                Statement::new(
                    "SELECT s.step_id, s.action, s.attempts, d.workspace FROM step_runs s \
                     JOIN run_documents d ON d.run_id = s.run_id WHERE s.id = $1",
                )
                .bind(session.step_run_id),
            )
            .await?
            .with_context(|| format!("step run {} of debug session {id}", session.step_run_id))?;
        tx.commit().await?;
        Ok(Some(DebugClaim {
            step_id,
            dispatch: dispatch.unwrap_or_default(),
            workspace,
            attempts,
            session,
        }))
    }

    /// `claimed` → `ready` (the shell is up), for the runner that claimed it only.
    pub async fn debug_session_ready(&self, id: &str, runner_id: i64) -> anyhow::Result<bool> {
        Ok(self
            .execute(
                Statement::new(
                    "UPDATE debug_sessions SET status = 'ready' \
             WHERE id = $1 AND runner_id = $2 AND status = 'claimed'",
                )
                .bind(id)
                .bind(runner_id),
            )
            .await?
            == 1)
    }

    /// Ends session `id` with `reason` unless it has ended already; whether this ended it.
    pub async fn end_debug_session(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> anyhow::Result<bool> {
        Ok(self
            .execute(
                Statement::new(
                    "UPDATE debug_sessions SET status = 'ended', ended_at = $3, end_reason = $2 \
             WHERE id = $1 AND status <> 'ended'",
                )
                .bind(id)
                .bind(reason)
                .bind(now),
            )
            .await?
            == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{local_run, stores};

    /// A local run of one step `build`, a runner: (run, step run, runner).
    async fn world(store: &Store) -> (i64, i64, i64) {
        use evaluator::plan::{Plan, Step};
        let plan = Plan::new("ci", vec![Step::bash("build", "false")]);
        let json = serde_json::to_string(&plan).unwrap();
        let new = crate::NewRun {
            workflow_path: "/w/ci.plue.py",
            ..local_run(&plan, &json)
        };
        let run_id = store.create_run(&new, 4).await.unwrap().id;
        let step_run_id = store.step_runs(run_id).await.unwrap()[0].id;
        let runner_id = store
            .register_runner("r", "{}", "hash-of-r", 1)
            .await
            .unwrap();
        (run_id, step_run_id, runner_id)
    }

    fn new<'a>(id: &'a str, run_id: i64, step_run_id: i64, now: i64) -> NewDebugSession<'a> {
        NewDebugSession {
            id,
            run_id,
            step_run_id,
            creator: "token:1",
            creator_user_id: Some(1),
            term: "xterm",
            idle_timeout_ms: 60_000,
            now,
        }
    }

    // A session is claimed once, moves only forward, and an old queued one is never
    // claimed but ended.
    #[tokio::test]
    async fn a_session_is_claimed_once_and_moves_only_forward() {
        for (store, _dir) in stores().await {
            one_store(&store).await;
        }
    }

    async fn one_store(store: &Store) {
        let (run_id, step_run_id, runner_id) = world(store).await;
        let sets = vec![String::new()];
        let demand = |store: &Store| {
            let store = store.clone();
            async move {
                let by_labels: i64 = store
                    .queued_ready_by_labels(0)
                    .await
                    .unwrap()
                    .iter()
                    .map(|(_, _, n)| n)
                    .sum();
                (store.queued_ready(0).await.unwrap(), by_labels)
            }
        };
        let before = demand(store).await;
        store
            .create_debug_session(&new("a1", run_id, step_run_id, 1_000))
            .await
            .unwrap();
        // A session waiting for a runner is demand: a pool starts one for it.
        assert_eq!(demand(store).await, (before.0 + 1, before.1 + 1));
        let claim = store
            .claim_debug_session(runner_id, &sets, 2_000)
            .await
            .unwrap()
            .expect("the session is claimed");
        assert_eq!(claim.session.runner_id, Some(runner_id));
        assert_eq!(claim.step_id, "build");
        assert_eq!(demand(store).await, before);
        assert!(store
            .claim_debug_session(runner_id, &sets, 2_000)
            .await
            .unwrap()
            .is_none());
        assert!(!store
            .debug_session_ready("a1", runner_id + 1)
            .await
            .unwrap());
        assert!(store.debug_session_ready("a1", runner_id).await.unwrap());
        assert!(store.end_debug_session("a1", "exit", 3_000).await.unwrap());
        assert!(!store.end_debug_session("a1", "again", 3_000).await.unwrap());
        assert!(!store.debug_session_ready("a1", runner_id).await.unwrap());
        let row = store.debug_session("a1").await.unwrap().unwrap();
        assert_eq!(
            (row.status, row.end_reason.as_deref()),
            (DebugSessionStatus::Ended, Some("exit"))
        );

        store
            .create_debug_session(&new("b2", run_id, step_run_id, 1_000))
            .await
            .unwrap();
        assert!(store
            .claim_debug_session(runner_id, &sets, 70_000)
            .await
            .unwrap()
            .is_none());
        let row = store.debug_session("b2").await.unwrap().unwrap();
        assert_eq!(row.status, DebugSessionStatus::Ended);
        // Red team: an end nobody's watchdog saw is audited too (it was not: the expiry
        // was a bare UPDATE).
        let trail = store
            .audit_events(&crate::AuditFilter {
                run_id: Some(run_id),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            trail
                .iter()
                .any(|e| e.action == "debug.end" && e.detail.contains("\"b2\"")),
            "{trail:?}"
        );
    }

    /// Red team: the claim used to mark its runner busy in a statement of its own, after
    /// the claim and naming no state it left: a runner retired between the two came back
    /// `busy` with a session. A retirement committed while the claim waits for the
    /// runner's row now leaves both as they were. PostgreSQL only: SQLite's one connection
    /// serializes the two.
    #[tokio::test]
    async fn a_claim_racing_the_runners_retirement_writes_nothing() {
        for (store, _dir) in stores().await {
            let crate::Db::Postgres(pool) = &store.db else {
                continue;
            };
            let (run_id, step_run_id, runner_id) = world(&store).await;
            store
                .create_debug_session(&new("c3", run_id, step_run_id, 1_000))
                .await
                .unwrap();
            let retirement = crate::testing::retirement_held(pool, runner_id).await;
            let claiming = tokio::spawn({
                let store = store.clone();
                async move {
                    store
                        .claim_debug_session(runner_id, &[String::new()], 2_000)
                        .await
                }
            });
            crate::testing::a_backend_waits_for_a_lock(pool).await;
            retirement.commit().await.unwrap();
            assert_eq!(claiming.await.unwrap().unwrap(), None);
            let row = store.debug_session("c3").await.unwrap().unwrap();
            assert_eq!(
                (row.status, row.runner_id),
                (DebugSessionStatus::Queued, None)
            );
            let state: String = store
                .one_scalar(
                    Statement::new("SELECT state FROM runners WHERE id = $1").bind(runner_id),
                )
                .await
                .unwrap();
            assert_eq!(state, "gone", "a retired runner is never made busy again");
            // A live runner takes the session, and is busy with it.
            let other = store
                .register_runner("s", "{}", "hash-of-s", 1)
                .await
                .unwrap();
            let claim = store
                .claim_debug_session(other, &[String::new()], 2_100)
                .await
                .unwrap()
                .expect("a live runner claims the session");
            assert_eq!(claim.session.runner_id, Some(other));
            let state: String = store
                .one_scalar(Statement::new("SELECT state FROM runners WHERE id = $1").bind(other))
                .await
                .unwrap();
            assert_eq!(state, "busy");
        }
    }
}
