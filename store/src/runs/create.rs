//! Creating a run: its row, its documents, its steps (`pending`), its first commit status
//! owed to the forge and its place in its concurrency group, in one transaction
//! ([`Store::create_run`] and the variants that record a triggerer, a cache partition or
//! the steps a re-run carries over; `insert_run` is the one that writes).
//!
//! Invariant: whatever a run's creator knows about it — who started it, the steps it
//! carries over (`crate::reruns`), its cache partition — is written in the transaction
//! that creates it, so no advance ever sees the run without it.

use anyhow::Context;
use evaluator::plan::Plan;
use plue_types::partition::Partition;
use plue_types::status::{CommitState, RunState};

use super::canonical_labels;
use crate::groups::{self, active_run, lock_group};
use crate::tx::{Conn, Statement};
use crate::{now_ms, Store, Triggerer};

/// A run to start (what `Executor::start_run` takes and the store keeps).
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// `local` for a file run from a path, else the repository's name.
    pub workflow_source: &'a str,
    pub workflow_path: &'a str,
    pub event: &'a str,
    pub git_ref: &'a str,
    pub sha: &'a str,
    pub context_json: &'a str,
    pub plan: &'a Plan,
    pub plan_json: &'a str,
    pub plan_hash: &'a str,
    pub workspace: &'a plue_types::protocol::WorkspaceSource,
    pub rerun_of: Option<i64>,
    /// The repository the run belongs to; `None` for local files.
    pub repo: Option<RunRepo>,
}

/// A run's repository and whether its steps may receive the repository's secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRepo {
    pub repo_id: i64,
    /// False for pull requests from forks.
    pub secrets_allowed: bool,
}

/// How a new run starts, as its creator says ([`Store::insert_run`] decides the rest).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RunStart<'a> {
    /// Its workflow file did not evaluate: stored final at once, failed for `reason`, in no
    /// concurrency group, with no triggerer, carried step or cache partition.
    FailedToEvaluate { reason: &'a str },
    /// To run: queued, or pending while its concurrency group has an active run.
    ToRun {
        /// Who started it, recorded in the same transaction.
        triggerer: Option<&'a Triggerer>,
        /// Steps of the run `new` repeats, stored final as they were there
        /// ([`super::reruns`]).
        carry: &'a [String],
        /// The run's cache partition (`None`: the least trusted, as for a run from before
        /// partitions).
        partition: Option<&'a Partition>,
    },
}

impl<'a> RunStart<'a> {
    /// [`RunStart::ToRun`].
    pub(crate) fn to_run(
        triggerer: Option<&'a Triggerer>,
        carry: &'a [String],
        partition: Option<&'a Partition>,
    ) -> RunStart<'a> {
        RunStart::ToRun {
            triggerer,
            carry,
            partition,
        }
    }
}

/// Where a new run enters its life: its first status, its reason, and the commit status
/// its forge is told.
enum Entry {
    /// Its workflow file did not evaluate (the reason): `failed` at once.
    Failed(String),
    /// Its concurrency group has an active run: `pending`, the reason saying for which.
    Waiting(String),
    Queued,
}

impl Entry {
    fn state(&self) -> RunState {
        match self {
            Entry::Failed(_) => RunState::Failed,
            Entry::Waiting(_) => RunState::Pending,
            Entry::Queued => RunState::Queued,
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Entry::Failed(reason) | Entry::Waiting(reason) => Some(reason),
            Entry::Queued => None,
        }
    }

    /// The run's first commit status: an `error` for a file that did not evaluate (its
    /// run never ran), else `pending`.
    fn commit_status(&self) -> (CommitState, String) {
        match self {
            Entry::Failed(reason) => (
                CommitState::Error,
                format!("workflow file failed to evaluate: {reason}"),
            ),
            Entry::Waiting(waiting) => (CommitState::Pending, format!("Plue run {waiting}")),
            Entry::Queued => (CommitState::Pending, "Plue run queued".to_string()),
        }
    }
}

/// What [`Store::create_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRun {
    pub id: i64,
    /// `Pending` (waiting for its concurrency group) or `Queued`.
    pub status: RunState,
    /// Runs of its concurrency group asked to cancel for it: older waiting runs it
    /// supersedes, and with `cancel_in_progress` the active one. The caller advances them.
    pub cancelled: Vec<i64>,
}

/// Step rows one `INSERT` stores (four values each, and the run id: within SQLite's and
/// PostgreSQL's bounds on a statement's parameters).
const STEP_ROWS_PER_INSERT: usize = 500;

impl Store {
    /// Stores a run with every step `pending`: `queued`, or `pending` when its plan's
    /// concurrency group has an active run (see `groups`).
    pub async fn create_run(
        &self,
        new: &NewRun<'_>,
        max_parallel: i64,
    ) -> anyhow::Result<CreatedRun> {
        self.insert_run(new, max_parallel, RunStart::to_run(None, &[], None))
            .await
    }

    /// [`Store::create_run`] that records `triggerer` as who started the run in the same
    /// transaction: no advance (and so no gate waiting for a decision) can see the run
    /// before it knows whom `exclude_triggerer` and `prevent_self_review` exclude.
    pub async fn create_run_by(
        &self,
        new: &NewRun<'_>,
        max_parallel: i64,
        triggerer: &Triggerer,
    ) -> anyhow::Result<CreatedRun> {
        self.insert_run(
            new,
            max_parallel,
            RunStart::to_run(Some(triggerer), &[], None),
        )
        .await
    }

    /// Stores a run (a re-run carrying the steps `carry` over when `carry` is not empty, as
    /// [`Store::create_rerun_by`]) recording `triggerer` and the run's cache partition
    /// `partition`, as the engine decided it (`core::caches`), in the same transaction. A
    /// run stored by any other function has none, which is read as the least trusted.
    pub async fn create_run_in_partition(
        &self,
        new: &NewRun<'_>,
        max_parallel: i64,
        triggerer: Option<&Triggerer>,
        carry: &[String],
        partition: &Partition,
    ) -> anyhow::Result<CreatedRun> {
        anyhow::ensure!(
            carry.is_empty() || new.rerun_of.is_some(),
            "steps can only be carried over from the run a re-run repeats"
        );
        self.insert_run(
            new,
            max_parallel,
            RunStart::to_run(triggerer, carry, Some(partition)),
        )
        .await
    }

    /// Stores a run that failed before it started (its workflow file did not evaluate):
    /// final at once with `reason`, no steps, and an `error` status owed to the forge.
    /// A failed run joins no concurrency group.
    pub async fn create_failed_run(&self, new: &NewRun<'_>, reason: &str) -> anyhow::Result<i64> {
        Ok(self
            .insert_run(new, 1, RunStart::FailedToEvaluate { reason })
            .await?
            .id)
    }

    /// Stores run `new` as `start` says: its row, its documents, its steps (`pending`), its
    /// first commit status owed to the forge, and its place in its concurrency group.
    pub(crate) async fn insert_run(
        &self,
        new: &NewRun<'_>,
        max_parallel: i64,
        start: RunStart<'_>,
    ) -> anyhow::Result<CreatedRun> {
        let workspace_json = serde_json::to_string(new.workspace)?;
        let now = now_ms();
        let (group, triggerer, carry, partition) = match start {
            RunStart::FailedToEvaluate { .. } => (None, None, &[][..], None),
            RunStart::ToRun {
                triggerer,
                carry,
                partition,
            } => (
                groups::group_of(new.plan, new.context_json)?,
                triggerer,
                carry,
                partition,
            ),
        };
        let group_name = group.as_ref().map(|g| g.name.as_str());
        let repo_id = new.repo.map(|r| r.repo_id);
        let secrets_allowed = new.repo.is_none_or(|r| r.secrets_allowed);
        // The name the run shows: a fork's group is kept apart, and says so.
        let shown_group = group_name.map(|name| groups::shown(name, secrets_allowed));
        // A step that holds secrets, or takes the files of one that did: runners allowed
        // secrets only (the claim's rule).
        let needs_secrets = crate::secret_holders::needs_secrets_runner(new.plan, secrets_allowed);
        // Read before the transaction: an upsert locks the workflow's row until the
        // transaction commits, so every run of one workflow created at the same time would
        // wait for the one before it; only a new workflow, or a new name, is written.
        // (Outside it, as a SQLite transaction must open with a write.)
        let mut conn = Conn::acquire(self).await?;
        let known: Option<(i64, String)> = conn
            .autocommit()
            .await?
            .row(
                Statement::new("SELECT id, name FROM workflows WHERE source = $1 AND path = $2")
                    .bind(new.workflow_source)
                    .bind(new.workflow_path),
            )
            .await?;
        let mut tx = conn.begin().await?;
        let workflow_id: i64 = match known {
            Some((id, name)) if name == new.plan.name => id,
            _ => tx
                .scalar(
                    Statement::new(
                        "INSERT INTO workflows (source, path, name, repo_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (source, path) DO UPDATE SET name = excluded.name \
                         RETURNING id",
                    )
                    .bind(new.workflow_source)
                    .bind(new.workflow_path)
                    .bind(&new.plan.name)
                    .bind(repo_id)
                    .bind(now),
                )
                .await?
                .context("the workflow's row")?,
        };
        let group_id = match group_name {
            Some(name) => {
                let scope = groups::scope(new.workflow_source, secrets_allowed);
                Some(lock_group(&mut tx, &scope, name).await?)
            }
            None => None,
        };
        let active = match group_id {
            Some(group_id) => active_run(&mut tx, group_id).await?,
            None => None,
        };
        let entry = match (start, active, shown_group.as_deref()) {
            (RunStart::FailedToEvaluate { reason }, _, _) => Entry::Failed(reason.to_owned()),
            (RunStart::ToRun { .. }, Some(active), Some(name)) => {
                Entry::Waiting(groups::waiting(active, name))
            }
            (RunStart::ToRun { .. }, _, _) => Entry::Queued,
        };
        let status = entry.state();
        let finished_at = status.is_final().then_some(now);
        let run_id: i64 = tx
            .scalar(
                Statement::new(
                    "INSERT INTO runs (workflow_id, event, ref, sha, plan_hash, \
                     max_parallel, status, reason, rerun_of, repo_id, secrets_allowed, \
                     created_at, started_at, finished_at, concurrency_group_id, concurrency_group, \
                     cache_partition) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, \
                     $14, $15, $16) RETURNING id",
                )
                .bind(workflow_id)
                .bind(new.event)
                .bind(new.git_ref)
                .bind(new.sha)
                .bind(new.plan_hash)
                .bind(max_parallel)
                .bind(status)
                .bind(entry.reason())
                .bind(new.rerun_of)
                .bind(repo_id)
                .bind(secrets_allowed)
                .bind(now)
                .bind(finished_at)
                .bind(group_id)
                .bind(shown_group.as_deref())
                .bind(partition.map(Partition::label)),
            )
            .await?
            .context("the run's id")?;
        // Apart from the row every advance reads and updates (migration 0028).
        tx.execute(
            Statement::new(
                "INSERT INTO run_documents (run_id, context, plan, workspace) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(run_id)
            .bind(new.context_json)
            .bind(new.plan_json)
            .bind(&workspace_json),
        )
        .await?;
        let mut cancelled: Vec<i64> = Vec::new();
        if let (Some(group_id), Some(group), Some(shown)) = (group_id, &group, &shown_group) {
            let why = groups::superseded(run_id, shown);
            cancelled = tx
                .scalars(
                    Statement::new(
                        "UPDATE runs SET cancel_requested = TRUE, cancel_reason = $3 \
                         WHERE concurrency_group_id = $1 AND status = 'pending' AND id <> $2 \
                         AND cancel_requested = FALSE RETURNING id",
                    )
                    .bind(group_id)
                    .bind(run_id)
                    .bind(&why),
                )
                .await?;
            if let (Some(active), true) = (active, group.cancel_in_progress) {
                let asked = tx
                    .execute(
                        Statement::new(
                            "UPDATE runs SET cancel_requested = TRUE, cancel_reason = $2 \
                             WHERE id = $1 AND status IN ('queued', 'running') \
                             AND cancel_requested = FALSE",
                        )
                        .bind(active)
                        .bind(&why),
                    )
                    .await?;
                if asked == 1 {
                    cancelled.push(active);
                }
            }
        }
        if repo_id.is_some() {
            let (state, description) = entry.commit_status();
            tx.execute(
                Statement::new(
                    "INSERT INTO status_reports \
                     (run_id, state, description, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, $4)",
                )
                .bind(run_id)
                .bind(state)
                .bind(&description)
                .bind(now),
            )
            .await?;
        }
        // Many rows a statement: one statement a step made storing a 10,000-step run take
        // most of a second (each a trip to SQLite's worker thread).
        let labels: Vec<String> = new
            .plan
            .steps
            .iter()
            .map(|step| canonical_labels(step.runner.iter()))
            .collect();
        let steps: Vec<_> = new.plan.steps.iter().enumerate().collect();
        for chunk in steps.chunks(STEP_ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = 1 + i * 4;
                    format!(
                        "($1, ${}, ${}, 'pending', ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO step_runs (run_id, step_id, position, status, labels, needs_secrets) \
                 VALUES {}",
                rows.join(", ")
            );
            let insert = chunk.iter().fold(
                Statement::new(&sql).bind(run_id),
                |insert, &(position, step)| {
                    insert
                        .bind(&step.id)
                        .bind(position as i64)
                        .bind(&labels[position])
                        .bind(needs_secrets[position])
                },
            );
            tx.execute(insert).await?;
        }
        if let (Some(from), false) = (new.rerun_of, carry.is_empty()) {
            crate::reruns::carry_steps(&mut tx, run_id, from, carry).await?;
        }
        if let Some(who) = triggerer {
            tx.execute(
                Statement::new(
                    "INSERT INTO run_triggerers (run_id, triggered_by, user_id, forge_login) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(run_id)
                .bind(&who.name)
                .bind(who.user_id)
                .bind(&who.forge_login),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(CreatedRun {
            id: run_id,
            status,
            cancelled,
        })
    }

    /// [`Store::create_run_by`] (or [`Store::create_run`] without `triggerer`) for a re-run
    /// of `new.rerun_of` that carries the steps `carry` (their ids) over from it, final as
    /// they were there (see the invariants of `reruns.rs`). Fails, storing nothing, when
    /// `new` names no run it repeats or a step of `carry` is not final there as succeeded
    /// or skipped.
    pub async fn create_rerun_by(
        &self,
        new: &NewRun<'_>,
        max_parallel: i64,
        triggerer: Option<&Triggerer>,
        carry: &[String],
    ) -> anyhow::Result<CreatedRun> {
        anyhow::ensure!(
            carry.is_empty() || new.rerun_of.is_some(),
            "steps can only be carried over from the run a re-run repeats"
        );
        self.insert_run(new, max_parallel, RunStart::to_run(triggerer, carry, None))
            .await
    }
}
