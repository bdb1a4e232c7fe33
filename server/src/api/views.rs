//! The JSON shapes of most `/api/...` responses: runs, steps, log lines, runners, the pool,
//! repositories, tokens, approvals, artifacts, errors. Some route families keep their own
//! shapes beside their handlers (`people.rs`, `environments.rs`, `provenance.rs`,
//! `record.rs`, ...). Every shape, here or there, derives `Serialize` and `ToSchema`
//! together, so `/api/openapi.json` ([`super::openapi`]) describes exactly what is
//! serialized. An `Option` field that is always sent (as `null` when empty) is marked
//! `required`; one that is left out when empty (`skip_serializing_if`) is not.
//!
//! Why one file past ~600 lines: these shapes reference each other (a run view holds its
//! step views, a step view its costs and loops), and kept together a change to that part
//! of the wire format shows as one diff.

use std::collections::BTreeMap;

use evaluator::loops::Loops;
use evaluator::plan::{Action, Plan};
use plue_types::status::{CommitState, DebugSessionStatus, RunState, RunnerState, StepStatus};
use serde::Serialize;
use utoipa::ToSchema;

use plue_pool::kubernetes::ClassStatus;
use plue_pool::PoolStatus;
use plue_store::{
    ApprovalRow, AttemptRow, RunRow, RunnerRow, RunnerTokenRow, StepRunRow, StoredLine,
    UnacknowledgedRow,
};

/// Micro-dollars as USD for a view.
fn usd(micros: i64) -> f64 {
    plue_core::pricing::usd(u64::try_from(micros).unwrap_or(0))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: i64,
    /// `owner/name` for runs of a registered repository.
    #[schema(required = true)]
    pub repository: Option<String>,
    pub workflow: String,
    pub workflow_path: String,
    pub event: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub plan_hash: String,
    /// `pending` while the run waits for its concurrency group (`reason` says for which
    /// run), then as its steps go; `waiting` while its only unfinished work is approvals
    /// or environment reviews (in lists and the detail view alike).
    #[schema(value_type = RunStatus)]
    pub status: RunState,
    #[schema(required = true)]
    pub reason: Option<String>,
    pub cancel_requested: bool,
    /// The resolved `Plan(concurrency=...)` group, when the plan names one; `fork:` and
    /// the name for a run of a pull request from a fork, whose group is kept apart.
    #[schema(required = true)]
    pub concurrency_group: Option<String>,
    /// How many times the run's review loops went back, in all (0 without loops).
    pub loops_taken: i64,
    #[schema(required = true)]
    pub rerun_of: Option<i64>,
    /// False when the steps get no secrets (a pull request from a fork).
    pub secrets_allowed: bool,
    /// The trust partition of the run's step caches, decided when the run was created:
    /// `protected`, `default`, `branch:<name>`, `pull:<number>`, `fork:<owner/name>`,
    /// `agents`, `untrusted` or `local`. The run saves only into it and restores only from
    /// it and the more trusted ones.
    pub cache_partition: String,
    pub created_at: i64,
    #[schema(required = true)]
    pub started_at: Option<i64>,
    #[schema(required = true)]
    pub finished_at: Option<i64>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    /// The plan's review loops and where each stands (detail view, plans with loops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loops: Option<Vec<LoopView>>,
    /// Commit statuses owed to the forge, oldest first (repository runs, detail view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_statuses: Option<Vec<CommitStatusView>>,
    /// What the run's `llm` steps cost together, in USD (detail view; absent when no
    /// attempt was priced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommitStatusView {
    #[schema(value_type = String)]
    pub state: CommitState,
    pub delivered: bool,
    pub attempts: i64,
    #[schema(required = true)]
    pub last_error: Option<String>,
}

impl RunView {
    pub fn new(run: RunRow, steps: Option<Vec<StepRunRow>>) -> RunView {
        // An active run whose only unfinished work is approvals shows as `waiting`: here
        // from its steps, in lists from the store's same rule (`plue_store`'s
        // `SHOWN_STATUS`, which lists and filters read).
        let waiting = steps.as_ref().is_some_and(|steps| {
            steps.iter().any(|s| s.status == StepStatus::Waiting)
                && !steps.iter().any(|s| {
                    matches!(
                        s.status,
                        StepStatus::Queued | StepStatus::Claimed | StepStatus::Running
                    )
                })
        });
        let status = if waiting && matches!(run.status, RunState::Queued | RunState::Running) {
            RunState::Waiting
        } else {
            run.status
        };
        let cache_partition = run.partition().label();
        RunView {
            cache_partition,
            duration_ms: run.duration_ms(),
            repository: run.repo_id.map(|_| run.workflow_source.clone()),
            secrets_allowed: run.secrets_allowed,
            commit_statuses: None,
            id: run.id,
            workflow: run.workflow_name,
            workflow_path: run.workflow_path,
            event: run.event,
            git_ref: run.git_ref,
            sha: run.sha,
            plan_hash: run.plan_hash,
            status,
            reason: run.reason,
            cancel_requested: run.cancel_requested,
            concurrency_group: run.concurrency_group,
            loops_taken: run.loops_taken,
            rerun_of: run.rerun_of,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            steps: steps.map(|steps| steps.into_iter().map(StepView::new).collect()),
            loops: None,
            cost_usd: None,
        }
    }

    /// Adds what each `llm` attempt used and cost to a view with steps, and the step and
    /// run totals (sums in micro-dollars of the priced attempts).
    pub fn with_costs(mut self, step_run_ids: &[i64], attempts: &[AttemptRow]) -> RunView {
        let Some(steps) = self.steps.as_mut() else {
            return self;
        };
        let mut run_total = None::<i64>;
        for (step, id) in steps.iter_mut().zip(step_run_ids) {
            if let Some(total) = step.add_costs(*id, attempts) {
                run_total = Some(run_total.unwrap_or(0).saturating_add(total));
            }
        }
        self.cost_usd = run_total.map(usd);
        self
    }

    /// Adds each step's current (latest) attempt's start and end to a view with steps, from
    /// `(step run id, attempt number, started_at, finished_at)` of the run's attempts.
    pub fn with_attempts(
        mut self,
        step_run_ids: &[i64],
        attempts: &[(i64, i64, Option<i64>, Option<i64>)],
    ) -> RunView {
        let Some(steps) = self.steps.as_mut() else {
            return self;
        };
        for (step, id) in steps.iter_mut().zip(step_run_ids) {
            if let Some((_, _, started, finished)) = attempts
                .iter()
                .filter(|(of, ..)| of == id)
                .max_by_key(|(_, number, ..)| *number)
            {
                step.attempt_started_at = *started;
                step.attempt_finished_at = *finished;
            }
        }
        self
    }

    /// Adds what the plan says of each step to a view with steps: its environment, an
    /// approval step's question (message, approvers, deadline), and the plan's review loops (`loop_to`): each loop's iteration, and for each step the
    /// loop it belongs to.
    pub fn with_loops(mut self, plan: Option<&Plan>) -> RunView {
        let (Some(plan), Some(steps)) = (plan, self.steps.as_mut()) else {
            return self;
        };
        if steps.len() == plan.steps.len() {
            for (step, planned) in steps.iter_mut().zip(&plan.steps) {
                step.environment.clone_from(&planned.environment);
                if let Action::Approval(approval) = &planned.action {
                    step.approval = Some(ApprovalRequestView {
                        message: approval.message.clone(),
                        approvers: approval.approvers.clone(),
                        exclude_triggerer: approval.exclude_triggerer,
                        deadline: (step.status == StepStatus::Waiting)
                            .then_some(step.ready_at)
                            .flatten(),
                    });
                }
            }
        }
        let loops = Loops::of(plan);
        if loops.loops.is_empty() || steps.len() != plan.steps.len() {
            return self;
        }
        let views: Vec<LoopView> = loops
            .loops
            .iter()
            .map(|l| {
                let iteration = steps[l.source].iteration;
                LoopView {
                    source: plan.steps[l.source].id.clone(),
                    target: plan.steps[l.target].id.clone(),
                    max_loops: l.max_loops,
                    iteration,
                    loops_taken: iteration - 1,
                    steps: l.region.iter().map(|&m| plan.steps[m].id.clone()).collect(),
                    label: format!("iteration {iteration} of {}", plan.steps[l.source].id),
                }
            })
            .collect();
        for (i, step) in steps.iter_mut().enumerate() {
            step.in_loop_of = loops.loop_of(i).map(|l| plan.steps[l.source].id.clone());
        }
        self.loops = Some(views);
        self
    }
}

/// A review loop of the run's plan (`loop_to`, `max_loops` on its source step).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoopView {
    /// The step whose failure sends the run back.
    pub source: String,
    /// The ancestor that runs again first.
    pub target: String,
    pub max_loops: u32,
    /// The loop's current iteration (1 until it first goes back).
    pub iteration: i64,
    /// How many times it went back so far (at most `max_loops`).
    pub loops_taken: i64,
    /// The steps that repeat: the target, the steps between, the source.
    pub steps: Vec<String>,
    /// "iteration 2 of review".
    pub label: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    pub id: String,
    #[schema(value_type = String)]
    pub status: StepStatus,
    pub attempts: i64,
    /// The review-loop iteration the step run is in (1 outside loops); attempts of
    /// earlier iterations keep their numbers, so their logs stay readable.
    pub iteration: i64,
    /// The source step of the review loop this step repeats in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_loop_of: Option<String>,
    /// The repository environment the step runs under (`environment="prod"`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// An approval step's question: what it asks, who may decide, until when (the run's
    /// detail view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRequestView>,
    #[schema(required = true)]
    pub exit_code: Option<i64>,
    #[schema(required = true)]
    pub reason: Option<String>,
    /// The `key=value` lines the step wrote to `$PLUE_OUTPUT`.
    #[schema(value_type = BTreeMap<String, String>)]
    pub outputs: serde_json::Value,
    /// When the step's current attempt became claimable (ms since the epoch): queued, or a
    /// retry's backoff over; a step waiting for an approval holds its deadline here.
    #[schema(required = true)]
    pub ready_at: Option<i64>,
    /// When the step's first attempt started (with `finished_at`: the step's `duration_ms`).
    #[schema(required = true)]
    pub started_at: Option<i64>,
    #[schema(required = true)]
    pub finished_at: Option<i64>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    /// When the current (latest) attempt started and ended: `attempt_started_at -
    /// ready_at` is how long the step waited for a runner (the run's detail view only).
    #[schema(required = true)]
    pub attempt_started_at: Option<i64>,
    #[schema(required = true)]
    pub attempt_finished_at: Option<i64>,
    /// Tokens an `llm` step used over all its attempts: `input_tokens`, `output_tokens`,
    /// `cache_creation_input_tokens`, `cache_read_input_tokens`. Absent for other steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    pub usage: Option<serde_json::Value>,
    /// What an `llm` step cost over all its attempts, in USD by the engine's price table
    /// (usage × price, summed in micro-dollars). Absent for other steps and when no
    /// attempt's model is priced (the run's detail view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Each `llm` attempt's model, usage and cost (the run's detail view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_costs: Option<Vec<AttemptCostView>>,
}

/// What one `llm` attempt used and cost.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptCostView {
    pub attempt: i64,
    #[schema(required = true)]
    pub model: Option<String>,
    /// `input_tokens`, `output_tokens`, `cache_creation_input_tokens`,
    /// `cache_read_input_tokens`; every request counted, a cut one's too.
    #[schema(value_type = Option<BTreeMap<String, i64>>, required = true)]
    pub usage: Option<serde_json::Value>,
    /// USD; `null` when its model has no price (unknown, not free).
    #[schema(required = true)]
    pub cost_usd: Option<f64>,
}

impl StepView {
    /// Adds what each `llm` attempt of step run `step_run_id` (among `attempts`) used and
    /// cost, and the step's total; returns the total in micro-dollars (`None`: unpriced).
    pub fn add_costs(&mut self, step_run_id: i64, attempts: &[AttemptRow]) -> Option<i64> {
        let mine: Vec<&AttemptRow> = attempts
            .iter()
            .filter(|a| a.step_run_id == step_run_id && (a.model.is_some() || a.usage.is_some()))
            .collect();
        if mine.is_empty() {
            return None;
        }
        let total = mine
            .iter()
            .filter_map(|a| a.cost_usd_micros)
            .reduce(|a, b| a.saturating_add(b));
        self.cost_usd = total.map(usd);
        self.attempt_costs = Some(
            mine.iter()
                .map(|a| AttemptCostView {
                    attempt: a.number,
                    model: a.model.clone(),
                    usage: a
                        .usage
                        .as_deref()
                        .and_then(|u| serde_json::from_str(u).ok()),
                    cost_usd: a.cost_usd_micros.map(usd),
                })
                .collect(),
        );
        total
    }

    pub fn new(step: StepRunRow) -> StepView {
        StepView {
            duration_ms: step.duration_ms(),
            outputs: serde_json::from_str(&step.outputs).unwrap_or_default(),
            usage: step
                .usage
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            id: step.step_id,
            status: step.status,
            attempts: step.attempts,
            iteration: step.iteration,
            in_loop_of: None,
            environment: None,
            approval: None,
            exit_code: step.exit_code,
            reason: step.reason,
            ready_at: step.ready_at,
            started_at: step.started_at,
            finished_at: step.finished_at,
            attempt_started_at: None,
            attempt_finished_at: None,
            cost_usd: None,
            attempt_costs: None,
        }
    }
}

/// One stored log line: a JSON line of `application/x-ndjson`, the data of an SSE `line`
/// event.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineView<'a> {
    pub attempt: i64,
    pub seq: i64,
    /// `stdout`, `stderr`, or an `llm` step's event stream.
    pub stream: &'a str,
    pub text: &'a str,
    pub ts: i64,
}

impl<'a> LineView<'a> {
    pub fn new(line: &'a StoredLine) -> LineView<'a> {
        LineView {
            attempt: line.attempt,
            seq: line.seq,
            stream: &line.stream,
            text: &line.text,
            ts: line.ts,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerView {
    pub id: i64,
    pub name: String,
    /// The labels it announced (steps select runners by them).
    #[schema(value_type = BTreeMap<String, String>)]
    pub labels: serde_json::Value,
    pub ephemeral: bool,
    #[schema(value_type = String)]
    pub state: RunnerState,
    pub registered_at: i64,
    /// Its last proof of life: a heartbeat, or a poll as it arrived (never a poll the
    /// engine held, nor a claim).
    pub last_heartbeat: i64,
    /// Whether it takes steps of runs of pull requests from forks.
    pub accept_forks: bool,
    /// The machine it said it runs on: its Kubernetes node or host name.
    #[schema(required = true)]
    pub host: Option<String>,
    /// Since when it is suspect (ms): a claim of it went unacknowledged, or a runner of its
    /// host was lost. A suspect runner claims nothing until a heartbeat or a new poll of
    /// its own. `null`: it is not.
    #[schema(required = true)]
    pub suspect_since: Option<i64>,
}

impl RunnerView {
    pub fn new(row: RunnerRow) -> RunnerView {
        RunnerView {
            labels: serde_json::from_str(&row.labels).unwrap_or_default(),
            id: row.id,
            name: row.name,
            ephemeral: row.ephemeral,
            state: row.state,
            registered_at: row.registered_at,
            last_heartbeat: row.last_heartbeat,
            accept_forks: row.accept_forks,
            host: row.host,
            suspect_since: row.suspect_since,
        }
    }
}

/// A claim that went back to the queue because its runner never acknowledged it (no
/// retry was used; the runner became suspect).
#[derive(Debug, Serialize, ToSchema)]
pub struct UnacknowledgedClaimView {
    pub attempt_id: i64,
    pub run_id: i64,
    pub step_id: String,
    /// The attempt's number.
    pub attempt: i64,
    pub runner_id: i64,
    pub runner: String,
    pub claimed_at: i64,
    /// When it went back to the queue.
    pub returned_at: i64,
}

impl From<UnacknowledgedRow> for UnacknowledgedClaimView {
    fn from(row: UnacknowledgedRow) -> UnacknowledgedClaimView {
        UnacknowledgedClaimView {
            attempt_id: row.attempt_id,
            run_id: row.run_id,
            step_id: row.step_id,
            attempt: row.number,
            runner_id: row.runner_id,
            runner: row.runner_name,
            claimed_at: row.claimed_at,
            returned_at: row.returned_at,
        }
    }
}

/// The runner pools' counts: at the top level the sums over the local pool and every
/// Kubernetes class ([`PoolView::of`]), each class's own in `classes`.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct PoolView {
    pub warm: usize,
    pub busy: usize,
    pub starting: usize,
    pub lost: usize,
    pub min_warm: usize,
    pub max_runners: usize,
    pub queued: i64,
    /// The local pool waits before starting runners: several in a row ended before they
    /// registered (each class says its own in `classes`).
    pub backing_off: bool,
    /// How the local pool's last runner that ended before registering ended (`exit code
    /// 1`, `signal 9`).
    #[schema(required = true)]
    pub last_failure: Option<String>,
    /// The Kubernetes pool's classes (absent without one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassView>,
    /// Live runners (of any pool, or started by hand) marked suspect: they claim nothing
    /// until they prove alive ([`PoolView::with_claims`]).
    pub suspect_runners: Vec<RunnerView>,
    /// The claims most recently returned to the queue unacknowledged, newest first.
    pub unacknowledged_claims: Vec<UnacknowledgedClaimView>,
}

/// One Kubernetes runner class: counts while this engine leads (`leader`), failures.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub leader: bool,
    pub warm: usize,
    pub busy: usize,
    pub starting: usize,
    pub min_warm: usize,
    pub max_runners: usize,
    pub queued: i64,
    /// Pods that failed or were lost since this engine started.
    pub failures: usize,
    /// The last one: `pod <name>: <reason>`.
    #[schema(required = true)]
    pub last_failure: Option<String>,
    /// New pods wait for a backoff after pods that could not start.
    pub backing_off: bool,
}

impl From<&ClassStatus> for ClassView {
    fn from(c: &ClassStatus) -> ClassView {
        let pool = c.pool.unwrap_or_default();
        ClassView {
            name: c.class.clone(),
            labels: c.labels.clone(),
            leader: c.pool.is_some(),
            warm: pool.warm,
            busy: pool.busy,
            starting: pool.starting,
            min_warm: pool.min_warm,
            max_runners: pool.max_runners,
            queued: pool.queued,
            failures: c.failures.total,
            last_failure: c.failures.last.clone(),
            backing_off: c.failures.backing_off,
        }
    }
}

impl PoolView {
    /// The engine's whole fleet: the top-level counts are the sums of the local pool's (when
    /// it runs) and every class's (a follower's classes count 0), so totals never read 0
    /// while classes hold pods; each ready step is counted by exactly one pool, so `queued`
    /// sums too.
    pub fn of(local: Option<PoolStatus>, classes: &[ClassStatus]) -> PoolView {
        let mut view = local.map(PoolView::from).unwrap_or_default();
        for class in classes {
            let pool = class.pool.unwrap_or_default();
            view.warm += pool.warm;
            view.busy += pool.busy;
            view.starting += pool.starting;
            view.lost += pool.lost;
            view.min_warm += pool.min_warm;
            view.max_runners += pool.max_runners;
            view.queued += pool.queued;
            view.classes.push(ClassView::from(class));
        }
        view
    }
}

/// How many suspect runners and returned claims the pool's view lists at most.
pub const CLAIMS_LISTED: i64 = 20;

impl PoolView {
    /// The view with the suspect runners and the claims returned unacknowledged, read from
    /// the store (shared by every replica); of the claims only those of runs the caller may
    /// read (`readable`), as a step is named nowhere else to one who may not read its run.
    pub async fn with_claims(
        mut self,
        store: &plue_store::Store,
        readable: &crate::access::Readable,
    ) -> anyhow::Result<PoolView> {
        self.suspect_runners = store
            .suspect_runners(CLAIMS_LISTED)
            .await?
            .into_iter()
            .map(RunnerView::new)
            .collect();
        self.unacknowledged_claims = store
            .unacknowledged_claims(CLAIMS_LISTED)
            .await?
            .into_iter()
            .filter(|row| readable.allows(row.repo_id))
            .map(UnacknowledgedClaimView::from)
            .collect();
        Ok(self)
    }
}

impl From<PoolStatus> for PoolView {
    fn from(s: PoolStatus) -> PoolView {
        PoolView {
            warm: s.warm,
            busy: s.busy,
            starting: s.starting,
            lost: s.lost,
            min_warm: s.min_warm,
            max_runners: s.max_runners,
            queued: s.queued,
            backing_off: s.backing_off,
            last_failure: s
                .last_start_failure
                .map(|e| format!("a runner ended before registering: {e}")),
            classes: Vec::new(),
            suspect_runners: Vec::new(),
            unacknowledged_claims: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub run_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RepoView {
    pub name: String,
    pub clone_url: String,
    pub forge: String,
    #[schema(required = true)]
    pub api_url: Option<String>,
    pub has_api_token: bool,
    #[schema(required = true)]
    pub default_branch: Option<String>,
    pub created_at: i64,
    /// Anyone, signed in or not, may read its runs (a maintainer's choice; new
    /// repositories are private).
    pub public_read: bool,
    /// What its runs' `llm` steps cost in all, in USD (the repository's own view; absent
    /// when none was priced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl RepoView {
    /// Never shows the webhook secret, the API token or credentials in the clone URL.
    pub fn new(repo: &plue_store::RepoRow) -> RepoView {
        RepoView {
            name: repo.name.clone(),
            clone_url: plue_forge::without_credentials(&repo.clone_url),
            forge: repo.forge.clone(),
            api_url: repo.api_url.as_deref().map(plue_forge::without_credentials),
            has_api_token: repo.api_token.is_some(),
            default_branch: repo.default_branch.clone(),
            created_at: repo.created_at,
            public_read: repo.public_read.unwrap_or(false),
            cost_usd: None,
        }
    }
}

/// Who the engine is on one repository's forge (`GET /api/forges`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ForgeIdentityView {
    /// The repository, `owner/name`.
    pub repository: String,
    pub forge: String,
    #[schema(required = true)]
    pub api_url: Option<String>,
    /// `known`: the forge named the account the repository's `api_token` writes as
    /// (`GET /user`); what that account pushes, opens, comments or labels is the engine's
    /// own writing (runs without secrets, summons nothing). `no_token`: the engine writes
    /// nothing to this forge. `unknown`: the forge could not say (`reason`), so every push
    /// and pull request of the repository runs like a fork's (no secrets, no environment)
    /// and no issue or comment summons a run, until it can.
    #[schema(value_type = EngineIdentityState)]
    pub identity: &'static str,
    /// The login, when known.
    #[schema(required = true)]
    pub login: Option<String>,
    /// Why the forge could not say, when unknown.
    #[schema(required = true)]
    pub reason: Option<String>,
}

/// Whether the engine knows which forge account it writes as.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // only a schema: the view carries the state's name
pub enum EngineIdentityState {
    Known,
    NoToken,
    Unknown,
}

impl ForgeIdentityView {
    pub fn new(
        repo: &plue_store::RepoRow,
        identity: &plue_forge::permission::EngineIdentity,
    ) -> ForgeIdentityView {
        ForgeIdentityView {
            repository: repo.name.clone(),
            forge: repo.forge.clone(),
            api_url: repo.api_url.as_deref().map(plue_forge::without_credentials),
            identity: identity.state(),
            login: identity.login().map(str::to_string),
            reason: identity.reason().map(str::to_string),
        }
    }
}

/// A user's role on a repository.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user: String,
    pub role: crate::access::Role,
    pub granted_at: i64,
}

impl MemberView {
    /// `None` for a stored role this engine does not know (it grants nothing).
    pub fn new(row: plue_store::MemberRow) -> Option<MemberView> {
        Some(MemberView {
            role: crate::access::Role::parse(&row.role)?,
            user: row.user_name,
            granted_at: row.granted_at,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    pub name: String,
    pub updated_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub repository: String,
    pub workflow_path: String,
    pub cron: String,
    pub branch: String,
    pub sha: String,
    pub next_fire_at: i64,
    /// `next_fire_at` as RFC 3339 (UTC).
    pub next_fire_time: String,
    #[schema(required = true)]
    pub last_fired_at: Option<i64>,
}

impl ScheduleView {
    pub fn new(repository: &str, row: plue_store::ScheduleRow) -> ScheduleView {
        let next_fire_time =
            chrono::DateTime::<chrono::Utc>::from_timestamp_millis(row.next_fire_at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
        ScheduleView {
            repository: repository.to_string(),
            workflow_path: row.workflow_path,
            cron: row.cron,
            branch: row.branch,
            sha: row.sha,
            next_fire_at: row.next_fire_at,
            next_fire_time,
            last_fired_at: row.last_fired_at,
        }
    }
}

/// A scoped registration token as listed (never the token).
#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerTokenView {
    pub id: i64,
    pub name: String,
    /// The labels its runners may announce.
    #[schema(value_type = BTreeMap<String, String>)]
    pub labels: serde_json::Value,
    /// Whether its runners may receive steps that name secrets.
    pub secrets: bool,
    /// Whether its runners may claim steps of runs of pull requests from forks.
    pub accept_forks: bool,
    pub created_at: i64,
    /// Its last registration.
    #[schema(required = true)]
    pub used_at: Option<i64>,
    #[schema(required = true)]
    pub revoked_at: Option<i64>,
}

impl RunnerTokenView {
    pub fn new(row: RunnerTokenRow) -> RunnerTokenView {
        RunnerTokenView {
            labels: serde_json::from_str(&row.labels).unwrap_or_default(),
            id: row.id,
            name: row.name,
            secrets: row.secrets,
            accept_forks: row.accept_forks,
            created_at: row.created_at,
            used_at: row.used_at,
            revoked_at: row.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerTokenCreated {
    pub id: i64,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub secrets: bool,
    /// Whether its runners may claim steps of runs of pull requests from forks.
    pub accept_forks: bool,
    /// Shown once; only its hash is stored.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerTokenRevoked {
    pub id: i64,
    /// Live runners registered with it, now retired.
    pub runners_stopped: usize,
}

/// A decision on an approval step.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    pub step_id: String,
    /// `approved` or `rejected`.
    pub decision: String,
    /// The name the decider's bearer token names (`admin` for the admin token).
    pub decided_by: String,
    pub comment: String,
    pub decided_at: i64,
    /// For the review of a step's environment (inserted by the engine), the environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// For an environment review, the environment's reviewers now (user names and
    /// `@group`s).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<String>,
}

impl From<ApprovalRow> for ApprovalView {
    fn from(row: ApprovalRow) -> ApprovalView {
        ApprovalView {
            step_id: row.step_id,
            decision: row.decision,
            decided_by: row.decided_by,
            comment: row.comment,
            decided_at: row.decided_at,
            environment: row.environment,
            reviewers: Vec::new(),
        }
    }
}

/// What an approval step asks, as its plan says (`approval(message=..., approvers=...,
/// exclude_triggerer=...)`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovalRequestView {
    /// The question put to the deciders, if the plan gives one.
    #[schema(required = true)]
    pub message: Option<String>,
    /// Who may decide: user names and `@group`s; empty, any writer of the repository.
    pub approvers: Vec<String>,
    /// Whoever started the run may not decide it.
    pub exclude_triggerer: bool,
    /// While the step waits: when it fails undecided (ms since the epoch).
    #[schema(required = true)]
    pub deadline: Option<i64>,
}

/// A run's status as listed and filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for its concurrency group.
    Pending,
    Queued,
    Running,
    /// Held only by approval steps or environment reviews waiting for a person.
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// One page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunsPageView {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One artifact file of a run (`GET /api/runs/{id}/artifacts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ArtifactView {
    pub step: String,
    pub attempt: i64,
    /// The file's path in the step's workspace.
    pub name: String,
    pub size: i64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Where to download it (`GET`).
    pub url: String,
}

impl ArtifactView {
    pub fn new(run_id: i64, row: plue_store::ArtifactRow) -> ArtifactView {
        let path: String = row
            .name
            .split('/')
            .map(crate::percent::encode)
            .collect::<Vec<_>>()
            .join("/");
        ArtifactView {
            url: format!("/api/runs/{run_id}/steps/{}/artifacts/{path}", row.step_id),
            step: row.step_id,
            attempt: row.attempt,
            name: row.name,
            size: row.size,
            digest: row.digest,
        }
    }
}

/// A debug session of a failed step (`plue debug RUN STEP`, `api::debug`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DebugSession)]
pub struct DebugSessionView {
    /// The session's handle (32 hex characters); only its creator's token attaches.
    pub id: String,
    pub run_id: i64,
    pub step_id: String,
    /// `queued` (no runner yet), `claimed` (the step runs again), `ready` (the shell is
    /// up) or `ended`.
    #[schema(value_type = String)]
    pub status: DebugSessionStatus,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// It ends after this long without a byte either way, or without an attached terminal.
    pub idle_timeout_secs: u64,
    /// When it was made (ms since the Unix epoch).
    pub created_at: i64,
}

/// The body of every error answer (see `crate::http_error`). Only a schema: what is sent
/// is `plue_types::protocol::ErrorBody`, whose one field this mirrors (a test holds them equal).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorView {
    /// What was wrong with the request; `internal error` for every 5xx.
    pub error: String,
}
