//! Debug sessions in the store (`plue debug RUN STEP`, migration 0024): a writer's request
//! to run a failed step again on a runner that keeps it, then a shell in its workspace.
//!
//! Invariants:
//! - A session moves only forward: `queued` → `claimed` → `ready` → `ended` (any state may
//!   end; `ended` is final). Every update names the states it may leave, so repeated or
//!   late reports are no-ops.
//! - A session is claimed by exactly one runner, under the same rules as the step itself
//!   ([`Store::claim`]): the step run's labels among the runner's, a step that needs
//!   secrets only by a runner allowed them, a fork run's step only by a runner that accepts
//!   forks. The claiming runner is recorded and is the only one the stream accepts.
//! - A queued session older than its idle timeout is never claimed: it ends instead, so a
//!   session nobody served leaves nothing to start later.

use super::{on_db, Db, Store};

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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DebugSessionRow {
    pub id: String,
    pub run_id: i64,
    pub step_run_id: i64,
    pub creator: String,
    pub creator_user_id: Option<i64>,
    pub term: String,
    pub idle_timeout_ms: i64,
    pub status: String,
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

const COLUMNS: &str = "id, run_id, step_run_id, creator, creator_user_id, term, \
    idle_timeout_ms, status, runner_id, created_at, claimed_at, ended_at, end_reason";

const PG_CLAIM: &str = "\
    WITH picked AS ( \
        SELECT d.id FROM debug_sessions d JOIN step_runs s ON s.id = d.step_run_id \
        WHERE d.status = 'queued' AND s.labels = ANY($2) \
          AND (NOT s.needs_secrets OR EXISTS (SELECT 1 FROM runners WHERE id = $3 AND secrets)) \
          AND (EXISTS (SELECT 1 FROM runners WHERE id = $3 AND accept_forks) \
               OR EXISTS (SELECT 1 FROM runs WHERE runs.id = s.run_id AND runs.secrets_allowed)) \
          AND EXISTS (SELECT 1 FROM runners WHERE id = $3 AND state IN ('idle', 'busy')) \
        ORDER BY d.created_at, d.id LIMIT 1 FOR UPDATE OF d SKIP LOCKED) \
    UPDATE debug_sessions d SET status = 'claimed', runner_id = $3, claimed_at = $1 \
    FROM picked WHERE d.id = picked.id AND d.status = 'queued' \
    RETURNING d.id";

const SQLITE_CLAIM: &str = "\
    UPDATE debug_sessions SET status = 'claimed', runner_id = $3, claimed_at = $1 \
    WHERE status = 'queued' AND id = ( \
        SELECT d.id FROM debug_sessions d JOIN step_runs s ON s.id = d.step_run_id \
        WHERE d.status = 'queued' AND s.labels IN (SELECT value FROM json_each($2)) \
          AND (NOT s.needs_secrets OR EXISTS (SELECT 1 FROM runners WHERE id = $3 AND secrets)) \
          AND (EXISTS (SELECT 1 FROM runners WHERE id = $3 AND accept_forks) \
               OR EXISTS (SELECT 1 FROM runs WHERE runs.id = s.run_id AND runs.secrets_allowed)) \
          AND EXISTS (SELECT 1 FROM runners WHERE id = $3 AND state IN ('idle', 'busy')) \
        ORDER BY d.created_at, d.id LIMIT 1) \
    RETURNING id";

impl Store {
    /// Records a new `queued` session.
    pub async fn create_debug_session(&self, new: &NewDebugSession<'_>) -> anyhow::Result<()> {
        on_db!(self, pool => sqlx::query(
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
        .bind(new.now)
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Session `id`, or `None`.
    pub async fn debug_session(&self, id: &str) -> anyhow::Result<Option<DebugSessionRow>> {
        let sql = format!("SELECT {COLUMNS} FROM debug_sessions WHERE id = $1");
        Ok(
            on_db!(self, pool => sqlx::query_as::<_, DebugSessionRow>(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await?),
        )
    }

    /// Whether step run `step_run_id` still holds the dispatch document its attempts ran
    /// with (a failed step run keeps it; one that failed before any dispatch has none).
    pub async fn step_run_dispatched(&self, step_run_id: i64) -> anyhow::Result<bool> {
        Ok(on_db!(self, pool => sqlx::query_scalar::<_, bool>(
            "SELECT action IS NOT NULL FROM step_runs WHERE id = $1",
        )
        .bind(step_run_id)
        .fetch_optional(pool)
        .await?)
        .unwrap_or(false))
    }

    /// Whether step run `step_run_id` has a session that has not ended.
    pub async fn live_debug_session_of(&self, step_run_id: i64) -> anyhow::Result<Option<String>> {
        Ok(on_db!(self, pool => sqlx::query_scalar::<_, String>(
            "SELECT id FROM debug_sessions WHERE step_run_id = $1 AND status <> 'ended' LIMIT 1",
        )
        .bind(step_run_id)
        .fetch_optional(pool)
        .await?))
    }

    /// Ends every queued session older than its idle timeout (nobody took it), with the
    /// reason, each in the audit trail (`debug.end`, as every other end: the engine's
    /// watchdog that would have ended it first may be gone with a restart); how many ended.
    pub async fn expire_debug_sessions(&self, now: i64) -> anyhow::Result<u64> {
        const REASON: &str = "no runner took the session within its idle timeout";
        let ended: Vec<(String, i64)> = on_db!(self, pool => sqlx::query_as(
            "UPDATE debug_sessions SET status = 'ended', ended_at = $1, end_reason = $2 \
             WHERE status = 'queued' AND created_at + idle_timeout_ms <= $1 \
             RETURNING id, run_id",
        )
        .bind(now)
        .bind(REASON)
        .fetch_all(pool)
        .await?);
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
        let id: Option<String> = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar(PG_CLAIM)
                    .bind(now)
                    .bind(label_sets)
                    .bind(runner_id)
                    .fetch_optional(pool)
                    .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar(SQLITE_CLAIM)
                    .bind(now)
                    .bind(serde_json::to_string(label_sets)?)
                    .bind(runner_id)
                    .fetch_optional(pool)
                    .await?
            }
        };
        let Some(id) = id else {
            return Ok(None);
        };
        on_db!(self, pool => sqlx::query(
            "UPDATE runners SET state = 'busy', state_since = $2 WHERE id = $1",
        )
        .bind(runner_id)
        .bind(now)
        .execute(pool)
        .await
        .map(drop)?);
        let session = self
            .debug_session(&id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("debug session {id} vanished after its claim"))?;
        let (step_id, dispatch, attempts, workspace) = on_db!(self, pool => sqlx::query_as::<
            _,
            (String, Option<String>, i64, String),
        >(
            "SELECT s.step_id, s.action, s.attempts, d.workspace FROM step_runs s \
             JOIN run_documents d ON d.run_id = s.run_id WHERE s.id = $1",
        )
        .bind(session.step_run_id)
        .fetch_one(pool)
        .await?);
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
        Ok(on_db!(self, pool => sqlx::query(
            "UPDATE debug_sessions SET status = 'ready' \
             WHERE id = $1 AND runner_id = $2 AND status = 'claimed'",
        )
        .bind(id)
        .bind(runner_id)
        .execute(pool)
        .await?
        .rows_affected())
            == 1)
    }

    /// Ends session `id` with `reason` unless it has ended already; whether this ended it.
    pub async fn end_debug_session(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> anyhow::Result<bool> {
        Ok(on_db!(self, pool => sqlx::query(
            "UPDATE debug_sessions SET status = 'ended', ended_at = $3, end_reason = $2 \
             WHERE id = $1 AND status <> 'ended'",
        )
        .bind(id)
        .bind(reason)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected())
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
            .register_runner("r", "{}", "hash-of-r", false, 1)
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
            (row.status.as_str(), row.end_reason.as_deref()),
            ("ended", Some("exit"))
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
        assert_eq!(row.status, "ended");
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
}
