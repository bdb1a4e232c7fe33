//! A new run's cache partition from what the engine recorded about it: its stored context
//! (event, ref, branch, pull request, the issue a summons acts on), who started it and
//! whether its secrets are withheld, its repository's default branch and environments, and
//! its plan (an `llm` step with tools, a step naming an environment). The rules themselves
//! are [`super::partition`]'s; whose words a summons acts on, [`super::causer`]'s.
//!
//! Invariants: nothing here is taken from the plan but two facts the plan cannot lie
//! about in the run's favour (tools demote, and an environment lifts only where the
//! repository's own rules admit the run's branch, as the environment gate the caller
//! passes judges it, and without a review: the partition is decided when the run is
//! created, before any reviewer could refuse it, and the run's other steps save at once); a context that does not parse gives the least trusted partition; a
//! re-run keeps the partition of the run it repeats.

use evaluator::plan::{Action, Plan};
use evaluator::{EvalContext, Event};
use plue_store::{EnvironmentRow, NewRun, RunOrigin, Store, Triggerer};
use plue_types::partition::Partition;

use super::causer;
use super::partition::{Origin, PlanFacts};

/// Whether a step of `plan` gives an agent tools (which demotes the run's caches). Every
/// kind answers here, so a new one cannot keep a run's caches trusted by being forgotten.
pub fn gives_agent_tools(plan: &Plan) -> bool {
    plan.steps.iter().any(|step| match &step.action {
        Action::Llm(llm) => !llm.tools.is_empty(),
        // The plan's own code, or a person's decision: no agent acts.
        Action::Bash { .. } | Action::Python { .. } | Action::Approval(_) => false,
    })
}

/// Where a repository run comes from, as recorded: its context, whether its secrets are
/// allowed, its repository's default branch, the fork a pull request comes from (when the
/// forge named it), and whose words a summoned run acts on (when not its summoner's own
/// nor a trusted person's: [`causer::words_of`]).
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub ctx: &'a EvalContext,
    pub secrets_allowed: bool,
    pub default_branch: Option<&'a str>,
    pub fork: Option<&'a str>,
    pub on_words_of: Option<&'a str>,
}

/// The origin of a repository run as `recorded`.
pub fn origin_of(recorded: Recorded<'_>) -> Origin {
    let Recorded {
        ctx,
        secrets_allowed,
        default_branch,
        fork,
        on_words_of,
    } = recorded;
    match (ctx.event, &ctx.pr) {
        (Event::Issue | Event::Comment, _) => Origin::Summoned {
            on_words_of: on_words_of.map(str::to_owned),
        },
        (_, Some(pr)) if !secrets_allowed => Origin::Fork {
            number: pr.number,
            fork: fork.map(str::to_owned),
        },
        (_, Some(pr)) => Origin::Pull { number: pr.number },
        (_, None) => Origin::Ref {
            branch: ctx.branch.clone(),
            tag: ctx.git_ref.starts_with("refs/tags/"),
            default_branch: default_branch.map(str::to_owned),
        },
    }
}

/// The partition of `new` about to be stored, started by `triggerer`; `fork` as in
/// [`Recorded`]; `admits`: whether the environment gate lets a run from an origin use an
/// environment (name, the run's origin, the environment as its repository defines it).
pub async fn partition_of(
    store: &Store,
    new: &NewRun<'_>,
    fork: Option<&str>,
    triggerer: Option<&Triggerer>,
    admits: impl Fn(&str, &RunOrigin, Option<&EnvironmentRow>) -> bool,
) -> anyhow::Result<Partition> {
    let Some(repo) = new.repo else {
        return Ok(Partition::Local);
    };
    if let Some(repeated) = new.rerun_of {
        let stored = store.run_cache_partition(repeated).await?;
        return Ok(match stored {
            Some((partition, _)) => partition,
            None => Partition::least_trusted(true),
        });
    }
    let Ok(ctx) = serde_json::from_str::<EvalContext>(new.context_json) else {
        return Ok(Partition::least_trusted(true));
    };
    let row = store.repo_by_id(repo.repo_id).await?;
    let default_branch = row.as_ref().and_then(|r| r.default_branch.as_deref());
    let on_words_of = match &row {
        Some(row) => causer::words_of(store, row, &ctx, triggerer).await?,
        // A repository gone meanwhile: nobody's words are known to be trusted.
        None => causer::foreign_author(&ctx, None),
    };
    let origin = origin_of(Recorded {
        ctx: &ctx,
        secrets_allowed: repo.secrets_allowed,
        default_branch,
        fork,
        on_words_of: on_words_of.as_deref(),
    });
    let mut facts = PlanFacts {
        agent_tools: gives_agent_tools(new.plan),
        admitted_environment: false,
        secrets_withheld: !repo.secrets_allowed,
    };
    if let (Origin::Ref { .. }, Some(row)) = (&origin, &row) {
        let run_origin = RunOrigin {
            repo_name: row.name.clone(),
            from_fork: false,
            branch: ctx.branch.clone(),
            git_ref: ctx.git_ref.clone(),
        };
        for name in new
            .plan
            .steps
            .iter()
            .filter_map(|s| s.environment.as_deref())
        {
            let defined = store.environment(repo.repo_id, name).await?;
            let reviewed = defined
                .as_ref()
                .is_some_and(|e| !e.settings.reviewers.is_empty());
            if !reviewed && admits(name, &run_origin, defined.as_ref()) {
                facts.admitted_environment = true;
                break;
            }
        }
    }
    Ok(origin.partition(facts))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use evaluator::context::Issue;
    use evaluator::plan::{LlmAction, Step};
    use evaluator::PullRequest;

    use super::*;

    fn ctx(event: Event, git_ref: &str, branch: Option<&str>, pr: Option<u64>) -> EvalContext {
        EvalContext {
            event,
            repo: "octo/hello".into(),
            git_ref: git_ref.into(),
            branch: branch.map(str::to_owned),
            sha: "0".repeat(40),
            pr: pr.map(|number| PullRequest {
                number,
                base: "main".into(),
                head: "feature".into(),
                action: "opened".into(),
            }),
            changed_files: Vec::new(),
            inputs: BTreeMap::new(),
            // A summons acts on an issue its summoner wrote, unless a test says otherwise.
            issue: matches!(event, Event::Issue | Event::Comment).then(|| Issue {
                number: 3,
                title: "the build is slow".into(),
                body: "please look".into(),
                labels: Vec::new(),
                author: SUMMONER.into(),
                url: String::new(),
            }),
            comment: None,
        }
    }

    /// Who starts every run of these tests.
    const SUMMONER: &str = "alice";

    fn summoner() -> Triggerer {
        Triggerer {
            name: SUMMONER.into(),
            user_id: None,
            forge_login: Some(format!("github:{SUMMONER}")),
        }
    }

    fn llm(tools: &[&str]) -> Plan {
        Plan::new(
            "agent",
            vec![Step::new(
                "fix",
                Action::Llm(LlmAction {
                    prompt: Some("fix it".into()),
                    tools: tools.iter().map(|t| t.to_string()).collect(),
                    ..LlmAction::default()
                }),
            )],
        )
    }

    #[test]
    fn an_agent_with_tools_demotes_and_one_without_does_not() {
        assert!(gives_agent_tools(&llm(&["bash"])));
        assert!(!gives_agent_tools(&llm(&[])));
        assert!(!gives_agent_tools(&Plan::new(
            "ci",
            vec![Step::bash("test", "true")]
        )));
    }

    /// The partition `partition_of` decides for a run of `plan` under `ctx`.
    async fn decided(ctx: &EvalContext, plan: &Plan, secrets_allowed: bool) -> Partition {
        decided_with(ctx, plan, secrets_allowed, &[]).await
    }

    /// [`decided`] in a repository defining `environments`, judged by the real gate.
    async fn decided_with(
        ctx: &EvalContext,
        plan: &Plan,
        secrets_allowed: bool,
        environments: &[(&str, plue_store::EnvironmentSettings)],
    ) -> Partition {
        let (store, _dir) = plue_store::testing::sqlite().await;
        let repo_id = store
            .create_repo(&plue_store::testing::repo("acme/app"))
            .await
            .unwrap()
            .unwrap()
            .id;
        store.set_default_branch(repo_id, "main").await.unwrap();
        for (name, settings) in environments {
            store
                .put_environment(repo_id, name, settings)
                .await
                .unwrap();
        }
        let json = serde_json::to_string(plan).unwrap();
        let ctx_json = serde_json::to_string(ctx).unwrap();
        let new = NewRun {
            context_json: &ctx_json,
            repo: Some(plue_store::RunRepo {
                repo_id,
                secrets_allowed,
            }),
            ..plue_store::testing::local_run(plan, &json)
        };
        // With environments defined, the gate's own rule admits the run; without, every
        // environment the plan names counts as admitting it.
        let gated = !environments.is_empty();
        partition_of(&store, &new, None, Some(&summoner()), |n, o, d| {
            !gated
                || matches!(
                    crate::executor::environments::gate(n, o, d),
                    crate::executor::environments::Gate::Open { .. }
                )
        })
        .await
        .unwrap()
    }

    // The attack: an outsider summons a workflow that admits untrusted authors, on the
    // default branch, with an agent with tools and an environment its rules admit; or
    // the engine's own push (an agent's change) does. None of it lands where a run with
    // secrets reads.
    #[tokio::test]
    async fn a_run_with_secrets_withheld_is_untrusted_whatever_else_it_is() {
        let ci = Plan::new("ci", vec![Step::bash("build", "true")]);
        let mut in_prod = ci.clone();
        in_prod.steps[0].environment = Some("prod".into());
        let main = Some("main");
        for (event, plan) in [
            (Event::Issue, &ci),
            (Event::Comment, &ci),
            (Event::Issue, &llm(&["bash"])),
            (Event::Push, &ci),
            (Event::Push, &in_prod),
            (Event::Manual, &llm(&["bash"])),
        ] {
            let ctx = ctx(event, "refs/heads/main", main, None);
            assert_eq!(
                decided(&ctx, plan, false).await,
                Partition::Untrusted,
                "{event:?}"
            );
        }
        // The same summons with secrets allowed are `agents`; the push is `default`.
        let issue = ctx(Event::Issue, "refs/heads/main", main, None);
        assert_eq!(decided(&issue, &ci, true).await, Partition::Agents);
        // On an outsider's issue it is that outsider's own `agents:` partition.
        let mut theirs = issue.clone();
        theirs.issue.as_mut().unwrap().author = "mallory".into();
        for plan in [&ci, &llm(&["bash"])] {
            assert_eq!(
                decided(&theirs, plan, true).await,
                Partition::Relayed("mallory".into())
            );
        }
        let mut comment = ctx(Event::Comment, "refs/heads/main", main, None);
        comment.issue.as_mut().unwrap().author = "mallory".into();
        assert_eq!(
            decided(&comment, &ci, true).await,
            Partition::Relayed("mallory".into())
        );
        let push = ctx(Event::Push, "refs/heads/main", main, None);
        assert_eq!(decided(&push, &ci, true).await, Partition::Default);
        // A fork's pull request stays its own, never shared with other untrusted runs.
        let pr = ctx(Event::PullRequest, "refs/pull/9/head", main, Some(9));
        assert_eq!(
            decided(&pr, &ci, false).await,
            Partition::Fork("pull-9".into())
        );
    }

    // A branch name spelling a partition lifts nothing: it is only ever `branch:<name>`,
    // and a pull request whose head is the default branch is its own.
    #[tokio::test]
    async fn a_branch_spelling_a_partition_is_that_branch() {
        let ci = Plan::new("ci", vec![Step::bash("build", "true")]);
        for name in [
            "default",
            "protected",
            "agents",
            "branch:main",
            "fork:a/b",
            "main/x",
        ] {
            let ctx = ctx(Event::Push, &format!("refs/heads/{name}"), Some(name), None);
            let p = decided(&ctx, &ci, true).await;
            assert_eq!(p, Partition::Branch(name.into()));
            assert_eq!(Partition::parse(&p.label()), Some(p.clone()));
            assert!(!Partition::Default.may_read(&p), "{p}");
        }
        let pr = ctx(
            Event::PullRequest,
            "refs/pull/5/head",
            Some("main"),
            Some(5),
        );
        assert_eq!(decided(&pr, &ci, true).await, Partition::Pull(5));
        // A tag a run names by its context but no `refs/tags/` ref is no tag.
        let fake = ctx(Event::Push, "refs/heads/v1", Some("refs/tags/v1"), None);
        assert_eq!(
            decided(&fake, &ci, true).await,
            Partition::Branch("refs/tags/v1".into())
        );
    }

    // The attack: a writer pushes a feature branch whose step names `environment="prod"`,
    // which admits every branch but only after a reviewer approves. The run is created
    // (and its partition decided) before any review; its other steps run and save at
    // once. It must not save into `protected`, which tags and releases read.
    #[tokio::test]
    async fn an_environment_awaiting_review_lifts_nothing() {
        use plue_store::EnvironmentSettings;
        let mut plan = Plan::new(
            "deploy",
            vec![Step::bash("build", "true"), Step::bash("ship", "true")],
        );
        plan.steps[1].environment = Some("prod".into());
        let reviewed = EnvironmentSettings {
            allowed_refs: vec!["*".into()],
            reviewers: vec!["alice".into()],
            ..EnvironmentSettings::default()
        };
        let open = EnvironmentSettings {
            allowed_refs: vec!["main".into()],
            ..EnvironmentSettings::default()
        };
        let feature = ctx(Event::Push, "refs/heads/feature", Some("feature"), None);
        assert_eq!(
            decided_with(&feature, &plan, true, &[("prod", reviewed.clone())]).await,
            Partition::Branch("feature".into())
        );
        let main = ctx(Event::Push, "refs/heads/main", Some("main"), None);
        assert_eq!(
            decided_with(&main, &plan, true, &[("prod", reviewed)]).await,
            Partition::Default
        );
        // An environment that admits the branch with no review does lift it; one whose
        // rules refuse the branch does not.
        assert_eq!(
            decided_with(&main, &plan, true, &[("prod", open.clone())]).await,
            Partition::Protected
        );
        assert_eq!(
            decided_with(&feature, &plan, true, &[("prod", open)]).await,
            Partition::Branch("feature".into())
        );
    }

    fn recorded<'a>(
        ctx: &'a EvalContext,
        secrets_allowed: bool,
        default_branch: Option<&'a str>,
        fork: Option<&'a str>,
    ) -> Recorded<'a> {
        Recorded {
            ctx,
            secrets_allowed,
            default_branch,
            fork,
            on_words_of: None,
        }
    }

    #[test]
    fn origins_of_each_kind_of_run() {
        let main = Some("main");
        let push = ctx(Event::Push, "refs/heads/main", Some("main"), None);
        assert_eq!(
            origin_of(recorded(&push, true, main, None)),
            Origin::Ref {
                branch: Some("main".into()),
                tag: false,
                default_branch: Some("main".into())
            }
        );
        let tag = ctx(Event::Push, "refs/tags/v1", None, None);
        assert!(matches!(
            origin_of(recorded(&tag, true, main, None)),
            Origin::Ref { tag: true, .. }
        ));
        let pr = ctx(
            Event::PullRequest,
            "refs/pull/4/head",
            Some("feature"),
            Some(4),
        );
        assert_eq!(
            origin_of(recorded(&pr, true, main, None)),
            Origin::Pull { number: 4 }
        );
        assert_eq!(
            origin_of(recorded(&pr, false, main, Some("eve/hello"))),
            Origin::Fork {
                number: 4,
                fork: Some("eve/hello".into())
            }
        );
        let issue = ctx(Event::Issue, "refs/heads/main", Some("main"), None);
        let own = Origin::Summoned { on_words_of: None };
        assert_eq!(origin_of(recorded(&issue, true, main, None)), own);
        let comment = ctx(Event::Comment, "refs/heads/main", Some("main"), Some(4));
        assert_eq!(origin_of(recorded(&comment, true, main, None)), own);
        let theirs = Recorded {
            on_words_of: Some("mallory"),
            ..recorded(&comment, true, main, None)
        };
        assert_eq!(
            origin_of(theirs),
            Origin::Summoned {
                on_words_of: Some("mallory".into())
            }
        );
        let schedule = ctx(Event::Schedule, "refs/heads/main", Some("main"), None);
        assert_eq!(
            origin_of(recorded(&schedule, true, main, None)).partition(PlanFacts::default()),
            Partition::Default
        );
    }
}
