//! Runs and step runs: their rows and reading them back; the types the executor's advance
//! works with ([`RunSnapshot`], [`StepChange`], [`Advanced`]), which `advance` applies
//! under the run's lock. Creating a run with all its steps is [`create`].
//!
//! Invariant: a step run only moves forward (`pending → queued → claimed → running →
//! final`); every update names the states it may leave, so a repeated or late change is a
//! no-op rather than a step going back. The one exception is a review loop
//! ([`StepChange::Loop`]): final → pending in the next iteration, naming the iteration it
//! leaves, so it too applies at most once.

use std::collections::BTreeMap;

use plue_types::partition::Partition;
use plue_types::status::{RunState, RunStatus, StepStatus};

use super::tx::{Conn, Statement, Tx};
use super::{KnownSteps, Store};

pub(crate) mod create;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
pub struct RunRow {
    pub id: i64,
    pub workflow_id: i64,
    pub workflow_name: String,
    pub workflow_path: String,
    pub workflow_source: String,
    pub event: String,
    pub git_ref: String,
    pub sha: String,
    pub plan_hash: String,
    #[sqlx(try_from = "String")]
    pub status: RunState,
    pub reason: Option<String>,
    pub cancel_requested: bool,
    pub max_parallel: i64,
    pub rerun_of: Option<i64>,
    pub repo_id: Option<i64>,
    pub secrets_allowed: bool,
    /// The resolved concurrency group, when the plan names one.
    pub concurrency_group: Option<String>,
    /// How many times the run's review loops went back, in all.
    pub loops_taken: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The trust partition of the run's step caches, as the engine decided it when it
    /// created the run (`None`: a run from before partitions, read as the least trusted),
    /// as stored: [`RunRow::partition`] reads it.
    pub cache_partition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
pub struct StepRunRow {
    pub id: i64,
    pub run_id: i64,
    pub step_id: String,
    pub position: i64,
    #[sqlx(try_from = "String")]
    pub status: StepStatus,
    pub attempts: i64,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub outputs: String,
    pub ready_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Token usage of an `llm` step, summed over its attempts (JSON), else `None`.
    pub usage: Option<String>,
    /// 1, or the iteration of the review loop the step run is in (see [`StepChange::Loop`]).
    pub iteration: i64,
    /// When the environment review of the step (`environment=` with reviewers) passed in
    /// this iteration; `None` until then (see `plue_core::executor::environments`).
    pub review_passed_at: Option<i64>,
}

impl RunRow {
    /// From the first claim to the end, once the run has both.
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at? - self.started_at?)
    }

    /// The run's cache partition ([`Partition::stored`]: the least trusted for a run from
    /// before partitions or a label no partition has).
    pub fn partition(&self) -> Partition {
        Partition::stored(self.cache_partition.as_deref(), self.repo_id.is_some())
    }
}

impl StepRunRow {
    /// From the first attempt's start to the end, once the step has both.
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at? - self.started_at?)
    }
}

/// One decision of the executor about a run, applied in its run's transition
/// ([`crate::RunTransition::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StepChange {
    /// Pending → queued with its dispatch document, claimable from `ready_at`.
    Queue {
        step_run_id: i64,
        dispatch: String,
        ready_at: i64,
        timeout_ms: i64,
    },
    /// Pending → skipped.
    Skip { step_run_id: i64, reason: String },
    /// Pending → failed without an attempt (e.g. a template referring to a missing output).
    Fail { step_run_id: i64, reason: String },
    /// Pending or queued (or waiting) → cancelled.
    Cancel { step_run_id: i64 },
    /// Pending → waiting (an approval step, or a step waiting for its environment's
    /// review): no runner, failed at `deadline` undecided. An approved environment review
    /// puts the step back to pending with `review_passed_at` set
    /// ([`Store::decide_approval`]), the one other way back besides a loop.
    Wait { step_run_id: i64, deadline: i64 },
    /// A review loop goes back: the loop's region, every step run final in iteration
    /// `iteration - 1`, becomes pending in `iteration` with `reason`. The one change that
    /// moves step runs backwards; it names the iteration it leaves, so it applies once.
    Loop {
        step_run_ids: Vec<i64>,
        iteration: i64,
        reason: String,
    },
    /// The run is over.
    FinishRun {
        status: RunStatus,
        reason: Option<String>,
    },
}

/// What a run's transition shows the executor ([`crate::RunTransition::steps`]).
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    pub run_id: i64,
    pub cancel_requested: bool,
    /// Why Plue asked the run to cancel (a newer run of its concurrency group); `None`
    /// for a person's cancel.
    pub cancel_reason: Option<String>,
    pub max_parallel: i64,
    /// The step runs in plan order, **without their outputs** (`outputs` is empty): a run's
    /// outputs may be tens of MiB, and an advance needs few of them.
    pub steps: Vec<StepRunRow>,
    /// The stored outputs (JSON) of the step runs the executor asked for, by step run id
    /// and iteration.
    pub outputs: BTreeMap<(i64, i64), String>,
}

/// What a run's advance did ([`crate::RunTransition::apply`]).
#[derive(Debug, Clone, Default)]
pub struct Advanced {
    pub queued: usize,
    pub finished: bool,
    /// A review loop went back (some step run became pending in a new iteration).
    pub looped: bool,
    /// The waiting run of the same concurrency group that the finished run let start
    /// (now `queued`); the caller advances it.
    pub promoted: Option<i64>,
    /// The run's steps as this advance left them, for the caller to hand to the next
    /// advance of the run (see [`KnownSteps`]); `None` when the run ended or a change did
    /// not apply as decided.
    pub known: Option<KnownSteps>,
    /// How many step rows the advance read (every step, or only those that changed).
    pub steps_read: usize,
    /// The step runs whose state the advance changed (queued, skipped, failed, cancelled,
    /// waiting, or sent back by a review loop; a loop's whole region even where it went back
    /// only in part): what a reader of the run's states re-reads
    /// ([`crate::events::Events::steps_moved`]).
    pub moved: Vec<i64>,
}

const RUN_COLUMNS: &str = "r.id, r.workflow_id, w.name AS workflow_name, w.path AS workflow_path, \
     w.source AS workflow_source, \
     r.event, r.ref AS git_ref, r.sha, r.plan_hash, r.status, r.reason, r.cancel_requested, \
     r.max_parallel, r.rerun_of, r.repo_id, r.secrets_allowed, r.concurrency_group, r.loops_taken, \
     r.created_at, \
     r.started_at, r.finished_at, r.cache_partition";

/// The columns of a [`StepRunRow`] (queried `FROM step_runs`, unaliased): outputs live in
/// `step_outputs`, `{}` when a step run stored none.
const STEP_COLUMNS: &str = "id, run_id, step_id, position, status, attempts, exit_code, reason, \
     COALESCE((SELECT o.outputs FROM step_outputs o WHERE o.step_run_id = step_runs.id \
     AND o.iteration = step_runs.iteration), '{}') \
     AS outputs, ready_at, started_at, finished_at, usage, iteration, review_passed_at";

/// [`STEP_COLUMNS`] with an empty `outputs`, for readers that do not show them.
pub(crate) const STEP_STATE_COLUMNS: &str =
    "id, run_id, step_id, position, status, attempts, exit_code, \
     reason, '' AS outputs, ready_at, started_at, finished_at, usage, iteration, review_passed_at";

/// The step runs `ids` of run `run_id` as [`STEP_STATE_COLUMNS`] reads them, 256 ids to a
/// statement, in the order the database gives them.
pub(crate) async fn step_states_by_id(
    tx: &mut Tx<'_>,
    run_id: i64,
    ids: &[i64],
) -> anyhow::Result<Vec<StepRunRow>> {
    let mut rows: Vec<StepRunRow> = Vec::with_capacity(ids.len());
    for ids in ids.chunks(256) {
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {STEP_STATE_COLUMNS} FROM step_runs WHERE run_id = $1 AND id IN ({})",
            placeholders.join(", ")
        );
        let statement = ids
            .iter()
            .fold(Statement::new(&sql).bind(run_id), |s, id| s.bind(*id));
        rows.extend(tx.rows::<StepRunRow>(statement).await?);
    }
    Ok(rows)
}

impl Store {
    /// Run `run_id`'s cache partition and its repository; `None` when there is no such
    /// run. A run stored without a partition (from before partitions, or by a function
    /// that records none) or with a label no partition has gets its least trusted one
    /// ([`Partition::stored`]).
    pub async fn run_cache_partition(
        &self,
        run_id: i64,
    ) -> anyhow::Result<Option<(Partition, Option<i64>)>> {
        let row: Option<(Option<String>, Option<i64>)> = self
            .row(
                Statement::new("SELECT cache_partition, repo_id FROM runs WHERE id = $1")
                    .bind(run_id),
            )
            .await?;
        Ok(row.map(|(label, repo_id)| {
            (
                Partition::stored(label.as_deref(), repo_id.is_some()),
                repo_id,
            )
        }))
    }

    pub async fn run(&self, run_id: i64) -> anyhow::Result<Option<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN workflows w ON w.id = r.workflow_id \
             WHERE r.id = $1"
        );
        self.row(Statement::new(&sql).bind(run_id)).await
    }

    /// The newest runs first.
    pub async fn list_runs(&self, limit: i64) -> anyhow::Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN workflows w ON w.id = r.workflow_id \
             ORDER BY r.id DESC LIMIT $1"
        );
        self.rows(Statement::new(&sql).bind(limit)).await
    }

    /// The newest runs of a repository first, each with its status as shown (a run held
    /// only by approvals is `waiting`, as in every list: `crate::dashboard`).
    pub async fn list_runs_of_repo(&self, repo: &str, limit: i64) -> anyhow::Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {} FROM runs r JOIN workflows w ON w.id = r.workflow_id \
             WHERE r.repo_id IS NOT NULL AND w.source = $1 ORDER BY r.id DESC LIMIT $2",
            crate::dashboard::shown_columns()
        );
        self.rows(Statement::new(&sql).bind(repo).bind(limit)).await
    }

    /// The run's plan, context and workspace documents (JSON), as stored.
    pub async fn run_documents(&self, run_id: i64) -> anyhow::Result<Option<RunDocuments>> {
        self.row(
            Statement::new("SELECT plan, context, workspace FROM run_documents WHERE run_id = $1")
                .bind(run_id),
        )
        .await
    }

    /// The stored context (JSON) of run `run_id` when an issue or a comment started it
    /// (`None` for every other run): what its steps get as `PLUE_ISSUE_*` variables.
    pub async fn summoned_context(&self, run_id: i64) -> anyhow::Result<Option<String>> {
        self.scalar(
            Statement::new(
                "SELECT d.context FROM runs r JOIN run_documents d ON d.run_id = r.id \
             WHERE r.id = $1 AND r.event IN ('issue', 'comment')",
            )
            .bind(run_id),
        )
        .await
    }

    /// Step runs in plan order.
    pub async fn step_runs(&self, run_id: i64) -> anyhow::Result<Vec<StepRunRow>> {
        let sql =
            format!("SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = $1 ORDER BY position");
        self.rows(Statement::new(&sql).bind(run_id)).await
    }

    /// Step runs in plan order without their outputs (`outputs` is empty): for readers that
    /// poll states, such as `plue run`'s printer.
    pub async fn step_states(&self, run_id: i64) -> anyhow::Result<Vec<StepRunRow>> {
        let sql = format!(
            "SELECT {STEP_STATE_COLUMNS} FROM step_runs WHERE run_id = $1 ORDER BY position"
        );
        self.rows(Statement::new(&sql).bind(run_id)).await
    }

    /// The step runs `ids` of run `run_id` as [`Store::step_states`] reads them, in plan
    /// order (ids of other runs are left out): what a reader that keeps a copy of the
    /// states re-reads of what moved.
    pub async fn step_states_of(
        &self,
        run_id: i64,
        ids: &[i64],
    ) -> anyhow::Result<Vec<StepRunRow>> {
        let mut conn = Conn::acquire(self).await?;
        let mut tx = conn.autocommit().await?;
        let mut rows = step_states_by_id(&mut tx, run_id, ids).await?;
        rows.sort_by_key(|row| row.position);
        Ok(rows)
    }

    pub async fn step_run(&self, run_id: i64, step_id: &str) -> anyhow::Result<Option<StepRunRow>> {
        let sql =
            format!("SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = $1 AND step_id = $2");
        self.row(Statement::new(&sql).bind(run_id).bind(step_id))
            .await
    }

    pub async fn step_run_by_id(&self, step_run_id: i64) -> anyhow::Result<Option<StepRunRow>> {
        let sql = format!("SELECT {STEP_COLUMNS} FROM step_runs WHERE id = $1");
        self.row(Statement::new(&sql).bind(step_run_id)).await
    }

    /// Runs not yet final, oldest first (the executor resumes them after a restart),
    /// waiting ones included: a superseded one is finished by its next advance.
    pub async fn active_runs(&self) -> anyhow::Result<Vec<i64>> {
        self.scalars(Statement::new(
            "SELECT id FROM runs WHERE status IN ('pending', 'queued', 'running') ORDER BY id",
        ))
        .await
    }

    /// Marks the run for cancellation; false when it does not exist or is already final.
    pub async fn request_cancel(&self, run_id: i64) -> anyhow::Result<bool> {
        let done = self
            .execute(
                Statement::new(
                    "UPDATE runs SET cancel_requested = TRUE \
             WHERE id = $1 AND status IN ('pending', 'queued', 'running')",
                )
                .bind(run_id),
            )
            .await?;
        Ok(done == 1)
    }
}

/// A step run's stored plan, context and workspace (JSON text).
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct RunDocuments {
    pub plan: String,
    pub context: String,
    pub workspace: String,
}

/// Runner labels as stored and matched: `k=v` pairs in key order, joined by `,` (the same
/// order `internal_api::label_subsets` produces).
pub fn canonical_labels<'a>(labels: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let sorted: std::collections::BTreeMap<&String, &String> = labels.collect();
    let pairs: Vec<String> = sorted
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.join(",")
}
