//! Cache trust partitions, as pure functions: which partition a run writes its step caches
//! into, and which partitions it may restore from; and the trust of whoever caused a run
//! ([`Trust`]), which every entry records and every lookup matches.
//!
//! Every cache entry belongs to the partition of the run that saved it. A run **writes only
//! its own partition** and **reads its own, then each more trusted one**, so nothing a less
//! trusted run saves is ever restored by a more trusted one. The ladder, per repository,
//! most trusted first:
//!
//! | partition           | which runs                                                         | trust      | reads (in order)                  |
//! |---------------------|--------------------------------------------------------------------|------------|-----------------------------------|
//! | `protected`         | a tag; a run with a step naming an environment whose rules admit it | `trusted`  | `protected`                       |
//! | `default`           | the default branch (push, schedule, manual dispatch)               | `trusted`  | `default`, `protected`            |
//! | `branch:<name>`     | another branch of the repository itself                            | `trusted`  | itself, `default`, `protected`    |
//! | `pull:<number>`     | a pull request from the repository itself                          | `trusted`  | itself, `default`, `protected`    |
//! | `fork:<owner/name>` | a pull request from a fork (each fork its own)                     | `outsider` | itself, `default`, `protected`    |
//! | `agents`            | summoned from an issue or a comment by a person the workflow       | `trusted`  | `agents`, `default`, `protected`  |
//! |                     | trusts, on their own words; any run whose plan gives an `llm` step |            |                                   |
//! |                     | tools (its secrets allowed)                                        |            |                                   |
//! | `agents:<login>`    | summoned (secrets allowed) on an issue `<login>` wrote, who is not | `relayed`  | itself, `default`, `protected`    |
//! |                     | the summoner nor known to be trusted: one per author               |            |                                   |
//! | `untrusted`         | any other run whose secrets are withheld: summoned by someone the  | `outsider` | `untrusted`, `default`,           |
//! |                     | workflow does not trust, a push the engine itself wrote            |            | `protected`                       |
//! | `local`             | `plue run` without a repository (its own scope)                    | `local`    | `local`                           |
//!
//! **Trust** is who caused the run: the summoner or the author (a pusher, a pull request's
//! author), whether its secrets were given — and, for a summoned run, whose words it acts
//! on (the issue's author: an agent reads them, and what it writes into a cached directory
//! is theirs as much as the summoner's). From least to most: `outsider` (secrets withheld),
//! `relayed` (secrets given by a trusted summoner, on another's words), `trusted`
//! (secrets given, the causer's own code or words); `local` stands apart. Each entry
//! records the trust it was written under and who caused its run; a lookup matches the
//! partition **and** its trust ([`Partition::trust`]), and [`Trust::may_restore`] holds
//! for every partition a run reads: a run with secrets never restores what a run of lower
//! trust wrote.
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
//! Invariants: [`Partition::reads`] of every partition starts with itself and holds only
//! itself, `default` and `protected`; `default` and `protected` read nothing below
//! `default`; `local` reads only itself; for every partition and each it reads,
//! [`Trust::may_restore`] holds.

use std::fmt;

/// A run's cache partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partition {
    Protected,
    Default,
    Branch(String),
    Pull(u64),
    /// `owner/name` of the fork, or `pull-<number>` when the forge did not name it.
    Fork(String),
    Agents,
    /// Summoned, its secrets allowed, on the words of this forge login (the issue's author,
    /// `(unnamed)` when the forge gave none), who is not the summoner nor known to be
    /// trusted.
    Relayed(String),
    /// A run whose secrets are withheld, but a fork's.
    Untrusted,
    Local,
}

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

/// How far the engine trusts whoever caused a run, as its caches know it. Ordered from the
/// least trusted; [`Trust::Local`] stands apart from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trust {
    /// Secrets withheld: a fork's author, a summoner the workflow does not trust, the
    /// engine's own push, a bare commit, a run from before partitions.
    Outsider,
    /// Secrets given by a summoner the workflow trusts, on words someone else wrote who is
    /// not known to be trusted (an outsider's issue a writer summoned an agent on).
    Relayed,
    /// Secrets given, on the causer's own code or words: a pusher, a same-repository pull
    /// request's author, a summoner on their own issue (or a trusted person's), a user's
    /// dispatch, the schedule.
    Trusted,
    /// `plue run` without a repository: the operator's own machine.
    Local,
}

impl Trust {
    /// As stored and shown.
    pub fn label(self) -> &'static str {
        match self {
            Trust::Outsider => "outsider",
            Trust::Relayed => "relayed",
            Trust::Trusted => "trusted",
            Trust::Local => "local",
        }
    }

    /// A stored label back.
    pub fn parse(label: &str) -> Option<Trust> {
        match label {
            "outsider" => Some(Trust::Outsider),
            "relayed" => Some(Trust::Relayed),
            "trusted" => Some(Trust::Trusted),
            "local" => Some(Trust::Local),
            _ => None,
        }
    }

    /// Whether a run of this trust may restore what a run of `writer`'s trust saved: never
    /// anything of a lower trust; local only local.
    pub fn may_restore(self, writer: Trust) -> bool {
        match (self, writer) {
            (Trust::Local, writer) => writer == Trust::Local,
            (_, Trust::Local) => false,
            (reader, writer) => writer.rank() >= reader.rank(),
        }
    }

    fn rank(self) -> u8 {
        match self {
            Trust::Outsider => 0,
            Trust::Relayed => 1,
            Trust::Trusted | Trust::Local => 2,
        }
    }
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
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

impl Partition {
    /// The partition of a run from `origin` with `facts`.
    pub fn of(origin: &Origin, facts: PlanFacts) -> Partition {
        match origin {
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

    /// The least trusted partition: what a run gets when nothing better is known.
    pub fn least_trusted(has_repo: bool) -> Partition {
        if has_repo {
            Partition::Untrusted
        } else {
            Partition::Local
        }
    }

    /// The partitions this one restores from, in the order they are tried.
    pub fn reads(&self) -> Vec<Partition> {
        match self {
            Partition::Protected => vec![Partition::Protected],
            Partition::Local => vec![Partition::Local],
            Partition::Default => vec![Partition::Default, Partition::Protected],
            lower => vec![lower.clone(), Partition::Default, Partition::Protected],
        }
    }

    /// Whether a run of this partition may restore an entry `writer` saved.
    pub fn may_read(&self, writer: &Partition) -> bool {
        self.reads().contains(writer) && self.trust().may_restore(writer.trust())
    }

    /// The trust of the runs of this partition, which their entries are written under.
    pub fn trust(&self) -> Trust {
        match self {
            Partition::Protected
            | Partition::Default
            | Partition::Branch(_)
            | Partition::Pull(_)
            | Partition::Agents => Trust::Trusted,
            Partition::Relayed(_) => Trust::Relayed,
            Partition::Fork(_) | Partition::Untrusted => Trust::Outsider,
            Partition::Local => Trust::Local,
        }
    }

    /// The partition's label, as stored and shown.
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// A stored label back; `None` for text no partition writes.
    pub fn parse(label: &str) -> Option<Partition> {
        match label {
            "protected" => return Some(Partition::Protected),
            "default" => return Some(Partition::Default),
            "agents" => return Some(Partition::Agents),
            "untrusted" => return Some(Partition::Untrusted),
            "local" => return Some(Partition::Local),
            _ => {}
        }
        let (kind, rest) = label.split_once(':')?;
        if rest.is_empty() {
            return None;
        }
        match kind {
            "branch" => Some(Partition::Branch(rest.to_owned())),
            "pull" => rest.parse().ok().map(Partition::Pull),
            "fork" => Some(Partition::Fork(rest.to_owned())),
            "agents" => Some(Partition::Relayed(rest.to_owned())),
            _ => None,
        }
    }

    /// A stored label, or the least trusted partition when it is missing or unreadable
    /// (a run from before migration 0033).
    pub fn stored(label: Option<&str>, has_repo: bool) -> Partition {
        label
            .and_then(Partition::parse)
            .filter(|p| (*p == Partition::Local) != has_repo)
            .unwrap_or_else(|| Partition::least_trusted(has_repo))
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Protected => f.write_str("protected"),
            Partition::Default => f.write_str("default"),
            Partition::Branch(name) => write!(f, "branch:{name}"),
            Partition::Pull(number) => write!(f, "pull:{number}"),
            Partition::Fork(name) => write!(f, "fork:{name}"),
            Partition::Agents => f.write_str("agents"),
            Partition::Relayed(author) => write!(f, "agents:{author}"),
            Partition::Untrusted => f.write_str("untrusted"),
            Partition::Local => f.write_str("local"),
        }
    }
}

/// What a relayed partition names when the forge gave no author (no login has brackets).
pub const UNNAMED: &str = "(unnamed)";

/// The label of the partition of a run from `origin` with `facts` (for the dispatch of a
/// step's caches, which shows it in the step's log).
pub fn partition_label(origin: &Origin, facts: PlanFacts) -> String {
    Partition::of(origin, facts).label()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn every() -> Vec<Partition> {
        vec![
            Partition::Protected,
            Partition::Default,
            Partition::Branch("feature".into()),
            Partition::Branch("other".into()),
            Partition::Pull(1),
            Partition::Pull(2),
            Partition::Fork("eve/hello".into()),
            Partition::Fork("mallory/hello".into()),
            Partition::Agents,
            Partition::Relayed("mallory".into()),
            Partition::Relayed("eve".into()),
            Partition::Untrusted,
            Partition::Local,
        ]
    }

    fn on_words_of(author: &str) -> Origin {
        Origin::Summoned {
            on_words_of: Some(author.into()),
        }
    }

    /// The ladder's rule written out once more, independently: a reader reads itself, and
    /// a repository partition reads `default` and `protected` — except that `protected`
    /// reads only itself.
    fn expected(reader: &Partition, writer: &Partition) -> bool {
        use Partition::*;
        if reader == writer {
            return true;
        }
        match (reader, writer) {
            (Local, _) | (_, Local) => false,
            (Protected, _) => false,
            (_, Protected) => true,
            (Default, _) => false,
            (_, Default) => true,
            _ => false,
        }
    }

    #[test]
    fn truth_table_of_every_reader_and_writer() {
        let all = every();
        let mut checked = 0;
        for reader in &all {
            for writer in &all {
                assert_eq!(
                    reader.may_read(writer),
                    expected(reader, writer),
                    "{reader} reading {writer}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, all.len() * all.len());
        // Nothing below `default` is read by `default` or `protected`.
        for trusted in [Partition::Protected, Partition::Default] {
            for lower in all.iter().skip(2) {
                assert!(!trusted.may_read(lower), "{trusted} reads {lower}");
            }
        }
    }

    // Every partition a run reads holds entries of a trust it may restore: a run with
    // secrets never restores what a lower trust wrote, whichever partition it looks in.
    #[test]
    fn every_partition_read_is_of_a_trust_the_reader_may_restore() {
        for reader in every() {
            for read in reader.reads() {
                assert!(
                    reader.trust().may_restore(read.trust()),
                    "{reader} ({}) reads {read} ({})",
                    reader.trust(),
                    read.trust()
                );
            }
        }
        use Trust::*;
        for (reader, writer, may) in [
            (Trusted, Trusted, true),
            (Trusted, Relayed, false),
            (Trusted, Outsider, false),
            (Relayed, Trusted, true),
            (Relayed, Relayed, true),
            (Relayed, Outsider, false),
            (Outsider, Trusted, true),
            (Outsider, Outsider, true),
            (Local, Local, true),
            (Local, Trusted, false),
            (Trusted, Local, false),
        ] {
            assert_eq!(reader.may_restore(writer), may, "{reader} {writer}");
        }
        for trust in [Outsider, Relayed, Trusted, Local] {
            assert_eq!(Trust::parse(trust.label()), Some(trust));
        }
        assert_eq!(Trust::parse("writer"), None);
    }

    // The attack (issue 69): an outsider opens an issue whose text tells an agent to leave a
    // tool in a cached directory; a writer summons the agent on it (secrets allowed). A
    // later run a writer summons on their own issue, with secrets, must not restore it —
    // before, both were the one `agents` partition of the repository.
    #[test]
    fn a_summons_on_an_outsiders_words_never_writes_where_a_writers_summons_reads() {
        let relayed = Partition::of(&on_words_of("mallory"), PlanFacts::default());
        assert_eq!(relayed, Partition::Relayed("mallory".into()));
        assert_eq!(relayed.label(), "agents:mallory");
        assert_eq!(relayed.trust(), Trust::Relayed);
        // With tools too: the words decide before the tools.
        assert_eq!(Partition::of(&on_words_of("mallory"), tools()), relayed);
        let own = Partition::of(&Origin::Summoned { on_words_of: None }, tools());
        assert_eq!(own, Partition::Agents);
        for trusted in [
            &own,
            &Partition::of(&on_branch("main"), tools()),
            &Partition::Default,
            &Partition::Protected,
        ] {
            assert!(!trusted.may_read(&relayed), "{trusted} reads {relayed}");
        }
        // Two outsiders' issues never share a partition; the relayed run reads the
        // trusted ones above it, never `agents`.
        let other = Partition::of(&on_words_of("eve"), PlanFacts::default());
        assert!(!other.may_read(&relayed) && !relayed.may_read(&other));
        assert!(relayed.may_read(&Partition::Default));
        assert!(!relayed.may_read(&own));
        // Withheld secrets still win: an outsider's own summons is `untrusted`.
        let withheld = PlanFacts {
            secrets_withheld: true,
            ..PlanFacts::default()
        };
        assert_eq!(
            Partition::of(&on_words_of("mallory"), withheld),
            Partition::Untrusted
        );
        // No author named: one partition for the unnamed, never `agents`.
        assert_eq!(
            Partition::of(&on_words_of(""), PlanFacts::default()).label(),
            "agents:(unnamed)"
        );
    }

    #[test]
    fn reads_start_with_the_run_itself_then_go_up() {
        assert_eq!(Partition::Protected.reads(), vec![Partition::Protected]);
        assert_eq!(
            Partition::Default.reads(),
            vec![Partition::Default, Partition::Protected]
        );
        assert_eq!(
            Partition::Fork("eve/hello".into()).reads(),
            vec![
                Partition::Fork("eve/hello".into()),
                Partition::Default,
                Partition::Protected
            ]
        );
        assert_eq!(
            Partition::Agents.reads(),
            vec![Partition::Agents, Partition::Default, Partition::Protected]
        );
        assert_eq!(Partition::Local.reads(), vec![Partition::Local]);
    }

    #[test]
    fn labels_round_trip() {
        for partition in every() {
            assert_eq!(Partition::parse(&partition.label()), Some(partition));
        }
        assert_eq!(
            Partition::parse("branch:release/1.0:x"),
            Some(Partition::Branch("release/1.0:x".into()))
        );
        for bad in [
            "", "branch:", "pull:x", "fork:", "agents:", "trusted", "Default",
        ] {
            assert_eq!(Partition::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_run_from_before_partitions_is_least_trusted() {
        assert_eq!(Partition::stored(None, true), Partition::Untrusted);
        assert_eq!(Partition::stored(None, false), Partition::Local);
        assert_eq!(
            Partition::stored(Some("nonsense"), true),
            Partition::Untrusted
        );
        // A repository run never reads the local scope's label as its own, nor the reverse.
        assert_eq!(Partition::stored(Some("local"), true), Partition::Untrusted);
        assert_eq!(Partition::stored(Some("default"), false), Partition::Local);
        assert_eq!(Partition::stored(Some("default"), true), Partition::Default);
    }

    #[test]
    fn a_push_to_the_default_branch_is_default() {
        let p = Partition::of(&on_branch("main"), PlanFacts::default());
        assert_eq!(p, Partition::Default);
    }

    #[test]
    fn a_push_to_another_branch_is_that_branch() {
        let p = Partition::of(&on_branch("feature/x"), PlanFacts::default());
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
            Partition::of(&tag, PlanFacts::default()),
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
            Partition::of(&on_branch("main"), admitted),
            Partition::Protected
        );
        assert_eq!(
            Partition::of(&on_branch("release/2"), admitted),
            Partition::Protected
        );
        // Naming an environment whose rules refuse the branch lifts nothing.
        assert_eq!(
            Partition::of(&on_branch("feature"), PlanFacts::default()),
            Partition::Branch("feature".into())
        );
    }

    #[test]
    fn a_same_repository_pull_request_is_its_own_pull_partition() {
        let p = Partition::of(&Origin::Pull { number: 7 }, PlanFacts::default());
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
        let p = Partition::of(&fork, PlanFacts::default());
        assert_eq!(p, Partition::Fork("eve/hello".into()));
        // A fork's run with an agent with tools stays in its fork's partition.
        assert_eq!(Partition::of(&fork, tools()), p);
        // An admitted environment never lifts a fork (the gate refuses forks anyway).
        let admitted = PlanFacts {
            admitted_environment: true,
            ..PlanFacts::default()
        };
        assert_eq!(Partition::of(&fork, admitted), p);
        let unnamed = Origin::Fork {
            number: 3,
            fork: None,
        };
        assert_eq!(
            Partition::of(&unnamed, PlanFacts::default()),
            Partition::Fork("pull-3".into())
        );
    }

    #[test]
    fn two_forks_never_read_each_other() {
        let eve = Partition::of(
            &Origin::Fork {
                number: 1,
                fork: Some("eve/hello".into()),
            },
            PlanFacts::default(),
        );
        let mallory = Partition::of(
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
        let p = Partition::of(
            &Origin::Summoned { on_words_of: None },
            PlanFacts::default(),
        );
        assert_eq!(p, Partition::Agents);
        assert!(!Partition::Default.may_read(&p));
        assert!(!Partition::Protected.may_read(&p));
    }

    #[test]
    fn a_default_branch_run_giving_an_agent_tools_is_agents() {
        assert_eq!(
            Partition::of(&on_branch("main"), tools()),
            Partition::Agents
        );
        let tag = Origin::Ref {
            branch: None,
            tag: true,
            default_branch: Some("main".into()),
        };
        assert_eq!(Partition::of(&tag, tools()), Partition::Agents);
        let both = PlanFacts {
            agent_tools: true,
            admitted_environment: true,
            secrets_withheld: false,
        };
        assert_eq!(Partition::of(&on_branch("main"), both), Partition::Agents);
        assert_eq!(
            Partition::of(&Origin::Pull { number: 4 }, tools()),
            Partition::Agents
        );
    }

    #[test]
    fn an_agent_without_tools_keeps_the_runs_partition() {
        // `agent_tools` is false for an llm step with no tools (the facts say so).
        assert_eq!(
            Partition::of(&on_branch("main"), PlanFacts::default()),
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
            Partition::of(&on_branch("main"), written),
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
        assert_eq!(Partition::of(&tag, everything), Partition::Untrusted);
        assert_eq!(
            Partition::of(&on_branch("main"), everything),
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
        let outsider = Partition::of(&Origin::Summoned { on_words_of: None }, withheld);
        assert_eq!(outsider, Partition::Untrusted);
        let maintainer = Partition::of(
            &Origin::Summoned { on_words_of: None },
            PlanFacts::default(),
        );
        let agent_on_main = Partition::of(&on_branch("main"), tools());
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
            Partition::of(&commit, PlanFacts::default()),
            Partition::Untrusted
        );
        let unknown = Origin::Ref {
            branch: Some("main".into()),
            tag: false,
            default_branch: None,
        };
        assert_eq!(
            Partition::of(&unknown, PlanFacts::default()),
            Partition::Branch("main".into())
        );
    }

    #[test]
    fn a_local_run_is_local() {
        assert_eq!(
            Partition::of(&Origin::Local, PlanFacts::default()),
            Partition::Local
        );
        assert_eq!(Partition::of(&Origin::Local, tools()), Partition::Local);
        assert_eq!(
            partition_label(&Origin::Local, PlanFacts::default()),
            "local"
        );
    }
}
