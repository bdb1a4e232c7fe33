//! Which cache partition a run gets, as a pure function of where it comes from
//! ([`Origin`]) and what its plan and its repository's rules add ([`PlanFacts`]):
//! [`Origin::partition`]. The partitions themselves — the ladder, what each reads, the
//! [`Trust`](plue_types::partition::Trust) their entries are written under, their labels
//! — are the shared vocabulary's ([`plue_types::partition`]), named by that path wherever
//! they are used.
//!
//! | partition           | which runs                                                         |
//! |---------------------|--------------------------------------------------------------------|
//! | `protected`         | a tag; a run with a step naming an environment whose rules admit it |
//! | `default`           | the default branch (push, schedule, manual dispatch)               |
//! | `branch:<name>`     | another branch of the repository itself                            |
//! | `pull:<number>`     | a pull request from the repository itself                          |
//! | `fork:<owner/name>` | a pull request from a fork (each fork its own)                     |
//! | `agents`            | summoned from an issue or a comment by a person the workflow       |
//! |                     | trusts, on their own words; any run whose plan gives an `llm` step |
//! |                     | tools (its secrets allowed)                                        |
//! | `agents:<login>`    | summoned (secrets allowed) on an issue `<login>` wrote, who is not |
//! |                     | the summoner nor known to be trusted: one per author               |
//! | `untrusted`         | any other run whose secrets are withheld: summoned by someone the  |
//! |                     | workflow does not trust, a push the engine itself wrote            |
//! | `local`             | `plue run` without a repository (its own scope)                    |
//!
//! **Trust** is who caused the run: the summoner or the author (a pusher, a pull request's
//! author), whether its secrets were given — and, for a summoned run, whose words it acts
//! on (the issue's author: an agent reads them, and what it writes into a cached directory
//! is theirs as much as the summoner's). Each entry records the trust it was written under
//! and who caused its run.
//!
//! Choices (Plue has no protected branches of its own; an environment's `allowed_refs` are
//! the closest): a run is `protected` for an environment only when the environment is
//! defined and its `allowed_refs` admit the run's branch (the gate's own rule) without a
//! review (decided when the run is created, before a reviewer could refuse), so naming
//! `environment="prod"` on a feature branch does not lift the run. Demotion wins over
//! everything: withheld secrets put any repository run but a fork's in `untrusted`; a
//! summons on another's words puts it in that author's `agents:<login>`; an agent with
//! tools, an issue or a comment puts any other in `agents`, whatever its branch or tag; a
//! fork's run stays in its own `fork:` partition (as isolated already). `agents`,
//! `agents:<login>` and `untrusted` never read each other: a run with secrets (a
//! maintainer's summon) never restores what an outsider's summon saved, nor what an agent
//! acting on an outsider's issue saved, and two outsiders' issues never share one. A pull
//! request is `pull:`/`fork:` even when its head branch is the default one. A run on a
//! bare commit (no branch, no tag) is `untrusted`: any commit of the mirror may be a
//! fork's. A re-run keeps the partition of the run it repeats. A run created before
//! partitions existed (migration 0033) is `untrusted`, or `local` without a repository.
//!
//! Invariant: the ladder's own ([`plue_types::partition`]): whatever partition a run
//! gets, it reads only itself and the partitions above it, of a trust it may restore.

use plue_types::partition::{Partition, UNNAMED};

/// Where a run comes from, as the engine recorded it (never as the plan says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `plue run` of a file, no repository.
    Local,
    /// A run of the repository itself on a ref.
    Ref {
        /// The branch, when the ref is one.
        branch: Option<String>,
        /// The ref is a tag.
        tag: bool,
        /// The repository's default branch, when known.
        default_branch: Option<String>,
    },
    /// A pull request from the repository itself.
    Pull { number: u64 },
    /// A pull request from a fork: its `owner/name` when known.
    Fork { number: u64, fork: Option<String> },
    /// Summoned from an issue or a comment.
    Summoned {
        /// Whose words the run acts on, when they are not the summoner's own nor a
        /// trusted person's: the issue's author.
        on_words_of: Option<String>,
    },
}

/// What a run's plan and its repository's rules add to its [`Origin`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanFacts {
    /// An `llm` step has tools.
    pub agent_tools: bool,
    /// A step names an environment the repository defines and whose rules admit the run.
    pub admitted_environment: bool,
    /// The run's secrets are withheld: a summoner the workflow does not trust, a commit
    /// the engine wrote (an agent's change it pushed).
    pub secrets_withheld: bool,
}

impl Origin {
    /// The partition of a run from this origin with `facts`.
    pub fn partition(&self, facts: PlanFacts) -> Partition {
        match self {
            Origin::Local => Partition::Local,
            Origin::Fork { number, fork } => Partition::Fork(
                fork.clone()
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| format!("pull-{number}")),
            ),
            _ if facts.secrets_withheld => Partition::Untrusted,
            Origin::Summoned {
                on_words_of: Some(author),
            } => Partition::Relayed(if author.is_empty() {
                UNNAMED.to_owned()
            } else {
                author.clone()
            }),
            _ if facts.agent_tools => Partition::Agents,
            Origin::Summoned { on_words_of: None } => Partition::Agents,
            Origin::Pull { number } => Partition::Pull(*number),
            Origin::Ref { tag: true, .. } => Partition::Protected,
            Origin::Ref {
                branch: Some(branch),
                default_branch,
                ..
            } => {
                if facts.admitted_environment {
                    Partition::Protected
                } else if default_branch.as_deref() == Some(branch.as_str()) {
                    Partition::Default
                } else {
                    Partition::Branch(branch.clone())
                }
            }
            Origin::Ref { branch: None, .. } => Partition::Untrusted,
        }
    }
}

/// The label of the partition of a run from `origin` with `facts` (for the dispatch of a
/// step's caches, which shows it in the step's log).
pub fn partition_label(origin: &Origin, facts: PlanFacts) -> String {
    origin.partition(facts).label()
}

#[cfg(test)]
mod tests {
    use plue_types::partition::Trust;

    use super::*;

    fn partition_of(origin: &Origin, facts: PlanFacts) -> Partition {
        origin.partition(facts)
    }

    fn on_branch(branch: &str) -> Origin {
        Origin::Ref {
            branch: Some(branch.into()),
            tag: false,
            default_branch: Some("main".into()),
        }
    }

    fn tools() -> PlanFacts {
        PlanFacts {
            agent_tools: true,
            ..PlanFacts::default()
        }
    }

    fn on_words_of(author: &str) -> Origin {
        Origin::Summoned {
            on_words_of: Some(author.into()),
        }
    }

    // The attack (issue 69): an outsider opens an issue whose text tells an agent to leave a
    // tool in a cached directory; a writer summons the agent on it (secrets allowed). A
    // later run a writer summons on their own issue, with secrets, must not restore it —
    // before, both were the one `agents` partition of the repository.
    #[test]
    fn a_summons_on_an_outsiders_words_never_writes_where_a_writers_summons_reads() {
        let relayed = partition_of(&on_words_of("mallory"), PlanFacts::default());
        assert_eq!(relayed, Partition::Relayed("mallory".into()));
        assert_eq!(relayed.label(), "agents:mallory");
        assert_eq!(relayed.trust(), Trust::Relayed);
        // With tools too: the words decide before the tools.
        assert_eq!(partition_of(&on_words_of("mallory"), tools()), relayed);
        let own = partition_of(&Origin::Summoned { on_words_of: None }, tools());
        assert_eq!(own, Partition::Agents);
        for trusted in [
            &own,
            &partition_of(&on_branch("main"), tools()),
            &Partition::Default,
            &Partition::Protected,
        ] {
            assert!(!trusted.may_read(&relayed), "{trusted} reads {relayed}");
        }
        // Two outsiders' issues never share a partition; the relayed run reads the
        // trusted ones above it, never `agents`.
        let other = partition_of(&on_words_of("eve"), PlanFacts::default());
        assert!(!other.may_read(&relayed) && !relayed.may_read(&other));
        assert!(relayed.may_read(&Partition::Default));
        assert!(!relayed.may_read(&own));
        // Withheld secrets still win: an outsider's own summons is `untrusted`.
        let withheld = PlanFacts {
            secrets_withheld: true,
            ..PlanFacts::default()
        };
        assert_eq!(
            partition_of(&on_words_of("mallory"), withheld),
            Partition::Untrusted
        );
        // No author named: one partition for the unnamed, never `agents`.
        assert_eq!(
            partition_of(&on_words_of(""), PlanFacts::default()).label(),
            "agents:(unnamed)"
        );
    }

    #[test]
    fn a_push_to_the_default_branch_is_default() {
        let p = partition_of(&on_branch("main"), PlanFacts::default());
        assert_eq!(p, Partition::Default);
    }

    #[test]
    fn a_push_to_another_branch_is_that_branch() {
        let p = partition_of(&on_branch("feature/x"), PlanFacts::default());
        assert_eq!(p, Partition::Branch("feature/x".into()));
        assert!(!Partition::Default.may_read(&p));
        assert!(p.may_read(&Partition::Default));
    }

    #[test]
    fn a_tag_is_protected() {
        let tag = Origin::Ref {
            branch: None,
            tag: true,
            default_branch: Some("main".into()),
        };
        assert_eq!(
            partition_of(&tag, PlanFacts::default()),
            Partition::Protected
        );
    }

    #[test]
    fn an_admitted_environment_run_is_protected_and_a_refused_one_is_not() {
        let admitted = PlanFacts {
            admitted_environment: true,
            ..PlanFacts::default()
        };
        assert_eq!(
            partition_of(&on_branch("main"), admitted),
            Partition::Protected
        );
        assert_eq!(
            partition_of(&on_branch("release/2"), admitted),
            Partition::Protected
        );
        // Naming an environment whose rules refuse the branch lifts nothing.
        assert_eq!(
            partition_of(&on_branch("feature"), PlanFacts::default()),
            Partition::Branch("feature".into())
        );
    }

    #[test]
    fn a_same_repository_pull_request_is_its_own_pull_partition() {
        let p = partition_of(&Origin::Pull { number: 7 }, PlanFacts::default());
        assert_eq!(p, Partition::Pull(7));
        assert!(p.may_read(&Partition::Default));
        assert!(!Partition::Default.may_read(&p));
        assert!(!Partition::Pull(8).may_read(&p));
    }

    #[test]
    fn a_forks_pull_request_is_its_forks_partition() {
        let fork = Origin::Fork {
            number: 3,
            fork: Some("eve/hello".into()),
        };
        let p = partition_of(&fork, PlanFacts::default());
        assert_eq!(p, Partition::Fork("eve/hello".into()));
        // A fork's run with an agent with tools stays in its fork's partition.
        assert_eq!(partition_of(&fork, tools()), p);
        // An admitted environment never lifts a fork (the gate refuses forks anyway).
        let admitted = PlanFacts {
            admitted_environment: true,
            ..PlanFacts::default()
        };
        assert_eq!(partition_of(&fork, admitted), p);
        let unnamed = Origin::Fork {
            number: 3,
            fork: None,
        };
        assert_eq!(
            partition_of(&unnamed, PlanFacts::default()),
            Partition::Fork("pull-3".into())
        );
    }

    #[test]
    fn two_forks_never_read_each_other() {
        let eve = partition_of(
            &Origin::Fork {
                number: 1,
                fork: Some("eve/hello".into()),
            },
            PlanFacts::default(),
        );
        let mallory = partition_of(
            &Origin::Fork {
                number: 2,
                fork: Some("mallory/hello".into()),
            },
            PlanFacts::default(),
        );
        assert_ne!(eve, mallory);
        assert!(!eve.may_read(&mallory));
        assert!(!mallory.may_read(&eve));
    }

    #[test]
    fn an_issue_or_comment_summon_is_agents() {
        // Issue and comment runs have the same origin: summoned.
        let p = partition_of(
            &Origin::Summoned { on_words_of: None },
            PlanFacts::default(),
        );
        assert_eq!(p, Partition::Agents);
        assert!(!Partition::Default.may_read(&p));
        assert!(!Partition::Protected.may_read(&p));
    }

    #[test]
    fn a_default_branch_run_giving_an_agent_tools_is_agents() {
        assert_eq!(partition_of(&on_branch("main"), tools()), Partition::Agents);
        let tag = Origin::Ref {
            branch: None,
            tag: true,
            default_branch: Some("main".into()),
        };
        assert_eq!(partition_of(&tag, tools()), Partition::Agents);
        let both = PlanFacts {
            agent_tools: true,
            admitted_environment: true,
            secrets_withheld: false,
        };
        assert_eq!(partition_of(&on_branch("main"), both), Partition::Agents);
        assert_eq!(
            partition_of(&Origin::Pull { number: 4 }, tools()),
            Partition::Agents
        );
    }

    #[test]
    fn an_agent_without_tools_keeps_the_runs_partition() {
        // `agent_tools` is false for an llm step with no tools (the facts say so).
        assert_eq!(
            partition_of(&on_branch("main"), PlanFacts::default()),
            Partition::Default
        );
    }

    #[test]
    fn what_the_engine_wrote_is_untrusted() {
        let written = PlanFacts {
            secrets_withheld: true,
            ..PlanFacts::default()
        };
        assert_eq!(
            partition_of(&on_branch("main"), written),
            Partition::Untrusted
        );
        // Whatever else the run is: a tag, an admitted environment, an agent with tools.
        let tag = Origin::Ref {
            branch: None,
            tag: true,
            default_branch: Some("main".into()),
        };
        let everything = PlanFacts {
            agent_tools: true,
            admitted_environment: true,
            secrets_withheld: true,
        };
        assert_eq!(partition_of(&tag, everything), Partition::Untrusted);
        assert_eq!(
            partition_of(&on_branch("main"), everything),
            Partition::Untrusted
        );
    }

    // The attack: an outsider's issue summons a workflow that lets anyone start it
    // untrusted (`others="untrusted"`, its secrets withheld) and saves a poisoned entry; a
    // maintainer's summon of the same workflow (its secrets allowed) must never restore
    // it, nor must an agent with tools on the default branch. Before, both were `agents`.
    #[test]
    fn an_outsiders_summon_never_writes_where_a_summon_with_secrets_reads() {
        let withheld = PlanFacts {
            secrets_withheld: true,
            ..PlanFacts::default()
        };
        let outsider = partition_of(&Origin::Summoned { on_words_of: None }, withheld);
        assert_eq!(outsider, Partition::Untrusted);
        let maintainer = partition_of(
            &Origin::Summoned { on_words_of: None },
            PlanFacts::default(),
        );
        let agent_on_main = partition_of(&on_branch("main"), tools());
        for trusted in [
            &maintainer,
            &agent_on_main,
            &Partition::Default,
            &Partition::Protected,
        ] {
            assert!(!trusted.may_read(&outsider), "{trusted} reads {outsider}");
        }
        // Nor the other way: what a run with secrets saved is not handed to an outsider's
        // run below `default` either.
        assert!(!outsider.may_read(&maintainer));
        assert!(outsider.may_read(&Partition::Default));
    }

    #[test]
    fn a_bare_commit_or_an_unknown_default_branch_is_never_default() {
        let commit = Origin::Ref {
            branch: None,
            tag: false,
            default_branch: Some("main".into()),
        };
        assert_eq!(
            partition_of(&commit, PlanFacts::default()),
            Partition::Untrusted
        );
        let unknown = Origin::Ref {
            branch: Some("main".into()),
            tag: false,
            default_branch: None,
        };
        assert_eq!(
            partition_of(&unknown, PlanFacts::default()),
            Partition::Branch("main".into())
        );
    }

    #[test]
    fn a_local_run_is_local() {
        assert_eq!(
            partition_of(&Origin::Local, PlanFacts::default()),
            Partition::Local
        );
        assert_eq!(partition_of(&Origin::Local, tools()), Partition::Local);
        assert_eq!(
            partition_label(&Origin::Local, PlanFacts::default()),
            "local"
        );
    }
}
