//! Step caches' trust partitions, as words: each [`Partition`] of the ladder, the partitions
//! it reads, and the [`Trust`] its entries are written under. The store's rows carry
//! their labels (`runs.cache_partition`, `cache_entries.partition_name` and `trust`); which
//! partition a run gets is the engine's decision (`plue_core::caches::partition`).
//!
//! Every cache entry belongs to the partition of the run that saved it. A run **writes only
//! its own partition** and **reads its own, then each more trusted one**, so nothing a less
//! trusted run saves is ever restored by a more trusted one. The ladder, per repository,
//! most trusted first:
//!
//! | partition           | trust      | reads (in order)                  |
//! |---------------------|------------|-----------------------------------|
//! | `protected`         | `trusted`  | `protected`                       |
//! | `default`           | `trusted`  | `default`, `protected`            |
//! | `branch:<name>`     | `trusted`  | itself, `default`, `protected`    |
//! | `pull:<number>`     | `trusted`  | itself, `default`, `protected`    |
//! | `fork:<owner/name>` | `outsider` | itself, `default`, `protected`    |
//! | `agents`            | `trusted`  | `agents`, `default`, `protected`  |
//! | `agents:<login>`    | `relayed`  | itself, `default`, `protected`    |
//! | `untrusted`         | `outsider` | `untrusted`, `default`, `protected` |
//! | `local`             | `local`    | `local`                           |
//!
//! **Trust** is who caused the run. From least to most: `outsider` (secrets withheld),
//! `relayed` (secrets given by a trusted summoner, on another's words), `trusted`
//! (secrets given, the causer's own code or words); `local` stands apart. Each entry
//! records the trust it was written under; a lookup matches the partition **and** its
//! trust ([`Partition::trust`]), and [`Trust::may_restore`] holds for every partition a
//! run reads: a run with secrets never restores what a run of lower trust wrote.
//!
//! Invariants: [`Partition::reads`] of every partition starts with itself and holds only
//! itself, `default` and `protected`; `default` and `protected` read nothing below
//! `default`; `local` reads only itself; for every partition and each it reads,
//! [`Trust::may_restore`] holds. A label ([`Partition::label`], [`Trust::label`]) parses
//! back to what wrote it; text no partition writes parses to nothing, and a run's stored
//! label that is missing or unreadable is its least trusted partition
//! ([`Partition::stored`]).

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
    /// Summoned, its secrets allowed, on the words of this forge login (the author,
    /// [`UNNAMED`] when the forge gave none), who is not the summoner nor known to be
    /// trusted.
    Relayed(String),
    /// A run whose secrets are withheld, but a fork's.
    Untrusted,
    Local,
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

/// What a relayed partition names when the forge gave no author (no login has brackets).
pub const UNNAMED: &str = "(unnamed)";

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

impl Partition {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            Partition::Relayed(UNNAMED.into()).label(),
            "agents:(unnamed)"
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
}
