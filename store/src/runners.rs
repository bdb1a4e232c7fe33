//! Runners: registration, session-token lookup, heartbeats, suspicion and the lost-runner
//! verdict.
//!
//! Invariants: session tokens are stored only as SHA-256 hashes; a runner found `lost` or
//! `gone` never becomes live again (it must register anew), so a runner that was declared
//! lost cannot report on an attempt the engine already failed. Names of live runners are
//! unique (a partial unique index): registering under a live runner's name is refused, so
//! nobody can stand in for another runner by name. A registration redeems its token (one
//! use of a one-time token) in the same transaction that inserts the runner.
//!
//! Only the runner's own requests prove it alive: a heartbeat, or a poll as it arrives
//! ([`Store::heartbeat`], which also clears a suspect mark). The engine never writes a
//! heartbeat for a runner on its own (a long-poll it holds proves nothing: the runner may
//! have hung since it sent it). A runner declared lost makes the live runners of its host
//! (`runners.host`) suspect in the same transaction ([`Store::mark_lost`]), so none of them
//! claims the lost runner's step before it proves alive.

use std::collections::BTreeMap;

use anyhow::Context;
use plue_types::status::RunnerState;

use super::tx::{Arg, Conn, Statement};
use super::{is_unique_violation, Store};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
pub struct RunnerRow {
    pub id: i64,
    pub name: String,
    /// JSON object of labels.
    pub labels: String,
    pub ephemeral: bool,
    #[sqlx(try_from = "String")]
    pub state: RunnerState,
    pub registered_at: i64,
    pub last_heartbeat: i64,
    pub state_since: i64,
    /// The registration token it used (`None`: the shared token).
    pub token_id: Option<i64>,
    /// Whether it may be handed steps that name secrets (its token's scope).
    pub secrets: bool,
    /// Whether it may claim steps of runs of pull requests from forks.
    pub accept_forks: bool,
    /// The machine it said it runs on (its Kubernetes node or host name), if it said.
    pub host: Option<String>,
    /// Since when it is suspect (a claim of it went unacknowledged, or a runner of its host
    /// was lost): it claims nothing until it proves alive. `None`: it is not.
    pub suspect_since: Option<i64>,
}

const COLUMNS: &str = "id, name, labels, ephemeral, state, registered_at, last_heartbeat, \
     state_since, token_id, secrets, accept_forks, host, suspect_since";

/// What a held poll reads of its runner before it claims ([`Store::runner_liveness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct Liveness {
    /// The runner's last proof of life (its heartbeat, or a poll as it arrived).
    pub last_heartbeat: i64,
    /// Whether it is suspect (it claims nothing until it proves alive).
    pub suspect: bool,
}

/// A runner to register.
#[derive(Debug, Clone)]
pub struct NewRunner<'a> {
    pub name: &'a str,
    /// JSON object of its labels (already checked against its token's scope).
    pub labels_json: &'a str,
    pub session_hash: &'a str,
    pub ephemeral: bool,
    /// The stored registration token it presents (`None`: the shared token).
    pub token: Option<RedeemedToken>,
    pub secrets: bool,
    /// Whether it may claim steps of fork runs (`plue_pool::scope::Scope::accepts_forks`).
    pub accept_forks: bool,
    /// The machine it runs on, as it said (already checked).
    pub host: Option<&'a str>,
    pub now: i64,
}

/// A stored registration token being used, as [`Store::register`] redeems it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedeemedToken {
    pub id: i64,
    /// One use only, before it expires.
    pub once: bool,
}

/// What became of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registered(i64),
    /// A live runner already has this name.
    NameTaken,
    /// The token was revoked, or (one-time) already used or expired, meanwhile.
    TokenSpent,
}

impl Store {
    /// Registers a runner: redeems its token and inserts it, in one transaction.
    pub async fn register(&self, new: &NewRunner<'_>) -> anyhow::Result<Registration> {
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            if let Some(token) = new.token {
                let redeemed = tx
                    .execute(
                        Statement::new(
                            "UPDATE runner_tokens SET used_at = $2 WHERE id = $1 \
                             AND revoked_at IS NULL AND (kind = 'scoped' OR (used_at IS NULL \
                             AND expires_at >= $2))",
                        )
                        .bind(token.id)
                        .bind(new.now),
                    )
                    .await?;
                if redeemed != 1 {
                    tx.rollback().await?;
                    return Ok(Registration::TokenSpent);
                }
            }
            let inserted = tx
                .scalar::<i64>(
                    Statement::new(
                        "INSERT INTO runners (name, token_hash, labels, ephemeral, state, \
                         registered_at, last_heartbeat, state_since, token_id, secrets, \
                         accept_forks, host) \
                         VALUES ($1, $2, $3, $4, 'idle', $5, $5, $5, $6, $7, $8, $9) RETURNING id",
                    )
                    .bind(new.name)
                    .bind(new.session_hash)
                    .bind(new.labels_json)
                    .bind(new.ephemeral)
                    .bind(new.now)
                    .bind(new.token.map(|t| t.id))
                    .bind(new.secrets)
                    .bind(new.accept_forks)
                    .bind(new.host),
                )
                .await;
            let runner_id: i64 = match inserted {
                Ok(id) => id.context("INSERT INTO runners: no row returned")?,
                Err(e) if is_unique_violation(&e) => {
                    tx.rollback().await?;
                    return Ok(Registration::NameTaken);
                }
                Err(e) => return Err(e),
            };
            if let Some(token) = new.token.filter(|t| t.once) {
                tx.execute(
                    Statement::new("UPDATE runner_tokens SET runner_id = $2 WHERE id = $1")
                        .bind(token.id)
                        .bind(runner_id),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Registration::Registered(runner_id))
        }
    }

    /// Registers a runner of the shared token (secrets allowed; forks accepted when it has
    /// no labels, the shared token's rule) that outlives its steps; tests and tools use it.
    pub async fn register_runner(
        &self,
        name: &str,
        labels_json: &str,
        token_hash: &str,
        now: i64,
    ) -> anyhow::Result<i64> {
        self.register_shared(name, labels_json, token_hash, false, now)
            .await
    }

    /// [`Store::register_runner`] for an ephemeral runner (one step, then it leaves), as a
    /// warm pool's are.
    pub async fn register_ephemeral_runner(
        &self,
        name: &str,
        labels_json: &str,
        token_hash: &str,
        now: i64,
    ) -> anyhow::Result<i64> {
        self.register_shared(name, labels_json, token_hash, true, now)
            .await
    }

    async fn register_shared(
        &self,
        name: &str,
        labels_json: &str,
        token_hash: &str,
        ephemeral: bool,
        now: i64,
    ) -> anyhow::Result<i64> {
        let registration = self
            .register(&NewRunner {
                name,
                labels_json,
                session_hash: token_hash,
                ephemeral,
                token: None,
                secrets: true,
                accept_forks: labels_json == "{}",
                host: None,
                now,
            })
            .await?;
        match registration {
            Registration::Registered(id) => Ok(id),
            other => anyhow::bail!("registering runner '{name}': {other:?}"),
        }
    }

    /// The runner holding the session token with this hash, whatever its state.
    pub async fn runner_by_token(&self, token_hash: &str) -> anyhow::Result<Option<RunnerRow>> {
        let sql = format!("SELECT {COLUMNS} FROM runners WHERE token_hash = $1");
        self.row(Statement::new(&sql).bind(token_hash)).await
    }

    /// Records a proof of life of the runner's own (a heartbeat, or a poll as it arrives),
    /// which also clears a suspect mark; false when the runner is no longer live.
    pub async fn heartbeat(&self, runner_id: i64, now: i64) -> anyhow::Result<bool> {
        let n = self
            .execute(
                Statement::new(
                    "UPDATE runners SET last_heartbeat = $2, suspect_since = NULL WHERE id = $1 \
                     AND state IN ('idle', 'busy')",
                )
                .bind(runner_id)
                .bind(now),
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks a runner gone (it left, or the pool stopped it).
    pub async fn runner_gone(&self, runner_id: i64, now: i64) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "UPDATE runners SET state = 'gone', state_since = $2 WHERE id = $1 \
                 AND state IN ('idle', 'busy')",
            )
            .bind(runner_id)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    /// Retires runner `runner_id` if it is idle, so it claims nothing more (the pool is
    /// about to stop it); false when it is not idle any more (it just claimed a step).
    pub async fn retire_idle_runner(&self, runner_id: i64, now: i64) -> anyhow::Result<bool> {
        let retired = self
            .execute(
                Statement::new(
                    "UPDATE runners SET state = 'gone', state_since = $2 WHERE id = $1 \
                     AND state = 'idle'",
                )
                .bind(runner_id)
                .bind(now),
            )
            .await?;
        Ok(retired == 1)
    }

    /// Whether runner `runner_id` is live, with its last proof of life and whether it is
    /// suspect; `None` once it is lost or gone. Reads only: a poll the engine holds
    /// proves nothing of its runner.
    pub async fn runner_liveness(&self, runner_id: i64) -> anyhow::Result<Option<Liveness>> {
        self.row(
            Statement::new(
                "SELECT last_heartbeat, suspect_since IS NOT NULL AS suspect FROM runners \
                 WHERE id = $1 AND state IN ('idle', 'busy')",
            )
            .bind(runner_id),
        )
        .await
    }

    /// Declares every live runner silent since before `silent_since` lost, and makes the
    /// live runners of their hosts suspect (a hung node stops them all: none may claim the
    /// lost runner's step before it proves alive), in one transaction; returns the lost.
    pub async fn mark_lost(&self, silent_since: i64, now: i64) -> anyhow::Result<Vec<i64>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.begin().await?;
        let lost: Vec<(i64, Option<String>)> = tx
            .rows(
                Statement::new(
                    "UPDATE runners SET state = 'lost', state_since = $2 \
                     WHERE state IN ('idle', 'busy') AND last_heartbeat < $1 RETURNING id, host",
                )
                .bind(silent_since)
                .bind(now),
            )
            .await?;
        let mut hosts: Vec<&str> = lost.iter().filter_map(|(_, h)| h.as_deref()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        for host in hosts {
            tx.execute(
                Statement::new(
                    "UPDATE runners SET suspect_since = $2 \
                     WHERE state IN ('idle', 'busy') AND host = $1 AND suspect_since IS NULL",
                )
                .bind(host)
                .bind(now),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(lost.into_iter().map(|(id, _)| id).collect())
    }

    /// The live runners marked suspect, longest suspect first, at most `limit`.
    pub async fn suspect_runners(&self, limit: i64) -> anyhow::Result<Vec<RunnerRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM runners WHERE state IN ('idle', 'busy') \
             AND suspect_since IS NOT NULL ORDER BY suspect_since, id LIMIT $1"
        );
        self.rows(Statement::new(&sql).bind(limit)).await
    }

    /// Every runner, lost and gone ones too, newest first, at most `limit`.
    pub async fn list_runners(&self, limit: i64) -> anyhow::Result<Vec<RunnerRow>> {
        let sql = format!("SELECT {COLUMNS} FROM runners ORDER BY id DESC LIMIT $1");
        self.rows(Statement::new(&sql).bind(limit)).await
    }

    /// The live runners (idle or busy), newest first, at most `limit`.
    pub async fn live_runners(&self, limit: i64) -> anyhow::Result<Vec<RunnerRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM runners WHERE state IN ('idle', 'busy') \
             ORDER BY id DESC LIMIT $1"
        );
        self.rows(Statement::new(&sql).bind(limit)).await
    }

    /// The states of the runners with these names (the pool's view of its own runners).
    pub async fn runner_states_by_name(
        &self,
        names: &[String],
    ) -> anyhow::Result<Vec<(String, String, i64)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        self.rows(
            Statement::per_backend(
                "SELECT name, state, state_since FROM runners \
                 WHERE name IN (SELECT value FROM json_each($1))",
                "SELECT name, state, state_since FROM runners WHERE name = ANY($1)",
            )
            .bind(Arg::TextSet(names)),
        )
        .await
    }

    /// Step runs still queued whose `ready_at` fell in `(after, upto]`: work that became
    /// claimable in that window (a retry's backoff or a wait timer ran out, or another
    /// replica queued it). One range scan of the `step_runs_claim` index.
    pub async fn became_ready(&self, after: i64, upto: i64) -> anyhow::Result<i64> {
        self.one_scalar(
            Statement::new(
                "SELECT COUNT(*) FROM step_runs WHERE status = 'queued' AND ready_at > $1 \
                 AND ready_at <= $2",
            )
            .bind(after)
            .bind(upto),
        )
        .await
    }

    /// Step runs ready to claim now, and debug sessions waiting for a runner (the pool's
    /// measure of demand).
    pub async fn queued_ready(&self, now: i64) -> anyhow::Result<i64> {
        self.one_scalar(
            Statement::new(
                "SELECT (SELECT COUNT(*) FROM step_runs WHERE status = 'queued' \
                 AND ready_at <= $1) + (SELECT COUNT(*) FROM debug_sessions \
                 WHERE status = 'queued')",
            )
            .bind(now),
        )
        .await
    }
}

impl Store {
    /// Ready step runs per label set (parsed from the stored canonical form) and whether
    /// they are of forks' runs (which only runners accepting forks claim): the demand each
    /// runner class of the pool counts.
    pub async fn queued_ready_by_labels(
        &self,
        now: i64,
    ) -> anyhow::Result<Vec<(BTreeMap<String, String>, bool, i64)>> {
        // A debug session waiting for a runner (`debug_sessions`) asks for its step's.
        let rows: Vec<(String, bool, i64)> = self
            .rows(
                Statement::new(
                    "SELECT labels, fork, CAST(SUM(n) AS BIGINT) FROM ( \
                     SELECT s.labels AS labels, NOT r.secrets_allowed AS fork, COUNT(*) AS n \
                     FROM step_runs s JOIN runs r ON r.id = s.run_id WHERE s.status = 'queued' \
                     AND s.ready_at <= $1 GROUP BY s.labels, r.secrets_allowed UNION ALL \
                     SELECT s.labels, NOT r.secrets_allowed, COUNT(*) FROM debug_sessions d \
                     JOIN step_runs s ON s.id = d.step_run_id JOIN runs r ON r.id = s.run_id \
                     WHERE d.status = 'queued' GROUP BY s.labels, r.secrets_allowed ) AS waiting \
                     GROUP BY labels, fork",
                )
                .bind(now),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(labels, fork, n)| (parse_label_set(&labels), fork, n))
            .collect())
    }
}

impl Store {
    /// The label sets of ready step runs of forks' runs (`secrets_allowed` false), parsed.
    pub async fn queued_ready_fork_labels(
        &self,
        now: i64,
    ) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
        let rows: Vec<String> = self
            .scalars(
                Statement::new(
                    "SELECT DISTINCT s.labels FROM step_runs s JOIN runs r ON r.id = s.run_id \
                     WHERE s.status = 'queued' AND s.ready_at <= $1 AND NOT r.secrets_allowed",
                )
                .bind(now),
            )
            .await?;
        Ok(rows.iter().map(|labels| parse_label_set(labels)).collect())
    }

    /// The labels of runners that accept forks and are live or were heard from since
    /// `since` (an ephemeral runner between two registrations still counts), but for those
    /// whose names start with `holders` (the engine's own, which take steps only to fail
    /// them; a prefix without `%` or `_`).
    pub async fn fork_runner_labels(
        &self,
        since: i64,
        holders: &str,
    ) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
        let rows: Vec<String> = self
            .scalars(
                Statement::new(
                    "SELECT DISTINCT labels FROM runners WHERE accept_forks \
                     AND (state IN ('idle', 'busy') OR last_heartbeat >= $1) AND name NOT LIKE $2",
                )
                .bind(since)
                .bind(format!("{holders}%")),
            )
            .await?;
        rows.iter()
            .map(|labels| {
                serde_json::from_str(labels)
                    .map_err(|e| anyhow::anyhow!("stored labels of a runner: {e}"))
            })
            .collect()
    }
}

/// A step run's stored canonical label set (`k=v,k2=v2`), parsed.
fn parse_label_set(labels: &str) -> BTreeMap<String, String> {
    labels
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use evaluator::plan::{Plan, Step};

    use crate::testing::{local_run, queue_run_ready_at, stores};

    #[tokio::test]
    async fn became_ready_counts_queued_steps_whose_time_fell_in_the_window() {
        for (store, _dir) in stores().await {
            let plan = Plan::new("p", vec![Step::bash("a", "true"), Step::bash("b", "true")]);
            let json = serde_json::to_string(&plan).unwrap();
            queue_run_ready_at(&store, &local_run(&plan, &json), 1_000).await;
            // The window is half-open: (after, upto].
            assert_eq!(store.became_ready(0, 999).await.unwrap(), 0);
            assert_eq!(store.became_ready(0, 1_000).await.unwrap(), 2);
            assert_eq!(store.became_ready(1_000, 2_000).await.unwrap(), 0);
            // A claimed step is no longer waiting for anyone.
            let runner = store.register_runner("r", "{}", "r", 0).await.unwrap();
            store
                .claim(runner, &[String::new()], 1_500)
                .await
                .unwrap()
                .expect("a ready step");
            assert_eq!(store.became_ready(999, 1_000).await.unwrap(), 1);
        }
    }
}
