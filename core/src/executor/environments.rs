//! The environment gate, as pure functions: what happens to a ready step that names
//! `environment="prod"`, judged from the run's origin and the environment as its
//! repository defines it ([`RunEnvironments`], read by the executor before each advance).
//!
//! Invariants (server-side, never read from the plan, which only names the environment):
//! - a step of a repository run whose environment is not defined, of a pull request from
//!   a fork (an untrusted run), or on a branch the environment's `allowed_refs` do not
//!   match fails with a reason naming why, and is never queued (so never gets a secret);
//!   the one exception is an environment with `untrusted_id_tokens` and reviewers, which an
//!   untrusted run's step may use after its review — for OpenID Connect tokens marked
//!   untrusted, never for the environment's secrets (`Executor::secret_values` gives an
//!   untrusted run none);
//! - an environment with reviewers makes the step wait (`waiting`, deadline
//!   [`REVIEW_TIMEOUT_MS`]) before it is queued, whether or not the plan has an approval
//!   step; an approved review sets the step run's `review_passed_at`, and only then does
//!   the gate let it through (a new loop iteration and a re-run start without one);
//! - the wait timer delays the queued step's `ready_at` from the review (or from now);
//! - a local run (no repository) has no environments: the name is shown, nothing gated.
//!
//! [`secrets_gate`] is the same judgement again at claim time, before any of the
//! environment's secrets are opened (defence in depth).

use evaluator::plan::Plan;

use plue_store::{EnvironmentRow, RunEnvironments, RunOrigin, StepRunRow};

/// How long an environment review may wait for a decision: 30 days, after which the
/// step fails as timed out (the plan's `timeout` bounds the step's run, not its review).
pub const REVIEW_TIMEOUT_MS: i64 = 30 * 24 * 3600 * 1000;

/// A step's environment as the gate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The step may not use it: it fails with this reason.
    Refused(String),
    /// It may, after a review when `review` and `wait_ms` after that (or after now).
    Open { review: bool, wait_ms: i64 },
}

/// What to do with a step the schedule would queue now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Queue it, claimable from `ready_at`.
    Queue { ready_at: i64 },
    /// Wait for the environment's review until `deadline`.
    Review { deadline: i64 },
    /// Fail it with the reason.
    Fail(String),
}

/// The gate of each step of `plan` (by index): `None` for a step without an environment
/// and for every step of a local run.
pub fn gates(plan: &Plan, run: &RunEnvironments) -> Vec<Option<Gate>> {
    plan.steps
        .iter()
        .map(|step| {
            let name = step.environment.as_deref()?;
            let origin = run.repo.as_ref()?;
            Some(gate(name, origin, run.defined.get(name)))
        })
        .collect()
}

/// The gate of environment `name` for a run from `origin`, `defined` as its repository
/// has it (`None`: not defined).
pub fn gate(name: &str, origin: &RunOrigin, defined: Option<&EnvironmentRow>) -> Gate {
    if origin.from_fork {
        // Only for OpenID Connect tokens marked untrusted, only after a review: the
        // branch names of a fork are the fork's own, so `allowed_refs` say nothing here.
        return match defined.map(|e| &e.settings) {
            Some(settings) if settings.untrusted_id_tokens && !settings.reviewers.is_empty() => {
                Gate::Open {
                    review: true,
                    wait_ms: settings.wait_timer_s.max(0).saturating_mul(1000),
                }
            }
            _ => Gate::Refused(
                "environments are not available to pull requests from forks".to_string(),
            ),
        };
    }
    let Some(environment) = defined else {
        return Gate::Refused(format!(
            "environment '{name}' is not defined for {}",
            origin.repo_name
        ));
    };
    let settings = &environment.settings;
    if !ref_allowed(&settings.allowed_refs, origin.branch.as_deref()) {
        let allows = if settings.allowed_refs.is_empty() {
            "allows no refs".to_string()
        } else {
            format!("allows refs {}", settings.allowed_refs.join(", "))
        };
        let on = match &origin.branch {
            Some(branch) => branch.clone(),
            None => format!("{}, not a branch", origin.git_ref),
        };
        return Gate::Refused(format!(
            "environment '{}' {allows}; this run is on {on}",
            environment.name
        ));
    }
    Gate::Open {
        review: !settings.reviewers.is_empty(),
        wait_ms: settings.wait_timer_s.max(0).saturating_mul(1000),
    }
}

/// Whether `branch` matches one of the `allowed` globs (GitHub's filter syntax, as
/// triggers use: `*` stops at `/`, `**` does not). No branch (a tag, a commit) never does;
/// a glob that does not compile matches nothing.
pub fn ref_allowed(allowed: &[String], branch: Option<&str>) -> bool {
    let Some(branch) = branch else {
        return false;
    };
    allowed
        .iter()
        .any(|pattern| evaluator::glob::compile(pattern).is_ok_and(|glob| glob.is_match(branch)))
}

/// What happens to step run `row`, which the schedule would queue at `now` in review-loop
/// iteration `iteration`, under `gate`. A review passed in another iteration than the one
/// the step is about to run (a loop went back in this very advance) does not count.
pub fn admit(gate: Option<&Gate>, row: &StepRunRow, iteration: i64, now: i64) -> Admit {
    let passed = row
        .review_passed_at
        .filter(|_| row.iteration.max(1) == iteration);
    match gate {
        None => Admit::Queue { ready_at: now },
        Some(Gate::Refused(reason)) => Admit::Fail(reason.clone()),
        Some(Gate::Open { review, wait_ms }) => match (review, passed) {
            (true, None) => Admit::Review {
                deadline: now.saturating_add(REVIEW_TIMEOUT_MS),
            },
            (true, Some(passed)) => Admit::Queue {
                ready_at: passed.saturating_add(*wait_ms).max(now),
            },
            (false, _) => Admit::Queue {
                ready_at: now.saturating_add(*wait_ms),
            },
        },
    }
}

/// Why [`secrets_gate`] keeps an environment's secrets from a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateRefused {
    /// The gate would not let the step through now (ref, fork, definition): its reason.
    #[error("{0}")]
    Closed(String),
    /// The gate needs a review that the step run does not hold.
    #[error("environment '{environment}' needs a review before its secrets are given")]
    NeedsReview { environment: String },
}

/// The claim-time check before a step of environment `name` gets its secrets.
pub fn secrets_gate(
    name: &str,
    origin: &RunOrigin,
    defined: Option<&EnvironmentRow>,
    review_passed_at: Option<i64>,
) -> Result<(), GateRefused> {
    match gate(name, origin, defined) {
        Gate::Refused(reason) => Err(GateRefused::Closed(reason)),
        Gate::Open { review: true, .. } if review_passed_at.is_none() => {
            Err(GateRefused::NeedsReview {
                environment: name.to_owned(),
            })
        }
        Gate::Open { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use evaluator::plan::Step;
    use plue_store::EnvironmentSettings;

    use super::*;

    fn prod(allowed: &[&str], reviewers: &[&str], wait_timer_s: i64) -> EnvironmentRow {
        EnvironmentRow {
            id: 1,
            repo_id: 1,
            name: "prod".into(),
            settings: EnvironmentSettings {
                allowed_refs: allowed.iter().map(|s| s.to_string()).collect(),
                reviewers: reviewers.iter().map(|s| s.to_string()).collect(),
                wait_timer_s,
                prevent_self_review: true,
                untrusted_id_tokens: false,
            },
            created_at: 0,
            updated_at: 0,
        }
    }

    fn origin(branch: Option<&str>, from_fork: bool) -> RunOrigin {
        RunOrigin {
            repo_name: "octo/hello".into(),
            from_fork,
            branch: branch.map(str::to_owned),
            git_ref: branch
                .map(|b| format!("refs/heads/{b}"))
                .unwrap_or_else(|| "refs/tags/v1".into()),
        }
    }

    fn row(review_passed_at: Option<i64>) -> StepRunRow {
        StepRunRow {
            id: 7,
            run_id: 1,
            step_id: "deploy".into(),
            position: 0,
            status: plue_types::status::StepStatus::Pending,
            attempts: 0,
            exit_code: None,
            reason: None,
            outputs: String::new(),
            ready_at: None,
            started_at: None,
            finished_at: None,
            usage: None,
            iteration: 1,
            review_passed_at,
        }
    }

    #[test]
    fn an_untrusted_run_uses_only_an_environment_that_allows_its_tokens_and_only_reviewed() {
        let fork = origin(Some("main"), true);
        // A fork's branch named like an allowed ref opens nothing.
        let closed = prod(&["main"], &["alice"], 0);
        assert_eq!(
            gate("prod", &fork, Some(&closed)),
            Gate::Refused("environments are not available to pull requests from forks".into())
        );
        let mut preview = prod(&[], &["alice"], 30);
        preview.settings.untrusted_id_tokens = true;
        // Allowed refs do not apply (the fork's branch names are its own); the review does.
        assert_eq!(
            gate("prod", &fork, Some(&preview)),
            Gate::Open {
                review: true,
                wait_ms: 30_000
            }
        );
        assert_eq!(
            secrets_gate("prod", &fork, Some(&preview), None),
            Err(GateRefused::NeedsReview {
                environment: "prod".into()
            })
        );
        assert_eq!(secrets_gate("prod", &fork, Some(&preview), Some(5)), Ok(()));
        // Without reviewers (a row written around the API's check) it stays closed.
        preview.settings.reviewers.clear();
        assert!(matches!(
            gate("prod", &fork, Some(&preview)),
            Gate::Refused(_)
        ));
    }

    #[test]
    fn a_branch_outside_allowed_refs_is_refused_with_the_rule() {
        let env = prod(&["main", "release/*"], &["alice"], 0);
        assert_eq!(
            gate("prod", &origin(Some("feature-x"), false), Some(&env)),
            Gate::Refused(
                "environment 'prod' allows refs main, release/*; this run is on feature-x".into()
            )
        );
        // `*` stops at `/`.
        assert!(matches!(
            gate("prod", &origin(Some("release/1/evil"), false), Some(&env)),
            Gate::Refused(_)
        ));
        assert_eq!(
            gate("prod", &origin(Some("release/1"), false), Some(&env)),
            Gate::Open {
                review: true,
                wait_ms: 0
            }
        );
        assert_eq!(
            gate("prod", &origin(None, false), Some(&env)),
            Gate::Refused(
                "environment 'prod' allows refs main, release/*; this run is on refs/tags/v1, not a branch".into()
            )
        );
        assert_eq!(
            gate(
                "prod",
                &origin(Some("main"), false),
                Some(&prod(&[], &[], 0))
            ),
            Gate::Refused("environment 'prod' allows no refs; this run is on main".into())
        );
    }

    #[test]
    fn forks_and_undefined_environments_are_refused() {
        let env = prod(&["main"], &[], 0);
        assert_eq!(
            gate("prod", &origin(Some("main"), true), Some(&env)),
            Gate::Refused("environments are not available to pull requests from forks".into())
        );
        assert_eq!(
            gate("prod", &origin(Some("main"), false), None),
            Gate::Refused("environment 'prod' is not defined for octo/hello".into())
        );
    }

    #[test]
    fn a_review_comes_before_the_queue_and_the_wait_after_it() {
        let review = Gate::Open {
            review: true,
            wait_ms: 60_000,
        };
        assert_eq!(
            admit(Some(&review), &row(None), 1, 1_000),
            Admit::Review {
                deadline: 1_000 + REVIEW_TIMEOUT_MS
            }
        );
        assert_eq!(
            admit(Some(&review), &row(Some(500)), 1, 1_000),
            Admit::Queue { ready_at: 60_500 }
        );
        // regression: a loop going back in the same advance that queued the step reused
        // the previous iteration's review.
        assert_eq!(
            admit(Some(&review), &row(Some(500)), 2, 1_000),
            Admit::Review {
                deadline: 1_000 + REVIEW_TIMEOUT_MS
            }
        );
        let timer = Gate::Open {
            review: false,
            wait_ms: 60_000,
        };
        assert_eq!(
            admit(Some(&timer), &row(None), 1, 1_000),
            Admit::Queue { ready_at: 61_000 }
        );
        assert_eq!(
            admit(None, &row(None), 1, 1_000),
            Admit::Queue { ready_at: 1_000 }
        );
        assert_eq!(
            admit(Some(&Gate::Refused("no".into())), &row(Some(1)), 1, 1_000),
            Admit::Fail("no".into())
        );
    }

    #[test]
    fn local_runs_and_steps_without_environments_have_no_gate() {
        let mut deploy = Step::bash("deploy", "true");
        deploy.environment = Some("prod".into());
        let build = Step::bash("build", "true");
        let plan = Plan::new("p", vec![build, deploy]);
        let local = RunEnvironments {
            repo: None,
            defined: BTreeMap::new(),
        };
        assert_eq!(gates(&plan, &local), vec![None, None]);
        let repo = RunEnvironments {
            repo: Some(origin(Some("feature"), false)),
            defined: BTreeMap::from([("prod".to_string(), prod(&["main"], &["alice"], 0))]),
        };
        assert_eq!(
            gates(&plan, &repo),
            vec![
                None,
                Some(Gate::Refused(
                    "environment 'prod' allows refs main; this run is on feature".into()
                ))
            ]
        );
    }

    #[test]
    fn secrets_need_the_review_the_gate_asked_for() {
        let env = prod(&["main"], &["alice"], 0);
        let main = origin(Some("main"), false);
        assert!(secrets_gate("prod", &main, Some(&env), None).is_err());
        assert_eq!(secrets_gate("prod", &main, Some(&env), Some(5)), Ok(()));
        assert!(secrets_gate("prod", &origin(Some("dev"), false), Some(&env), Some(5)).is_err());
        assert!(secrets_gate("prod", &origin(Some("main"), true), Some(&env), Some(5)).is_err());
        assert_eq!(
            secrets_gate("prod", &main, Some(&prod(&["main"], &[], 30)), None),
            Ok(())
        );
    }
}
