//! Storage quotas: how many bytes and artifact files a run, a run of a pull request from a
//! fork, a repository and a repository's fork runs together may keep in the blob store.
//!
//! Invariants:
//! - A blob's bytes are the bytes stored (the tar as uploaded), so a sparse file counts at
//!   its full size: the runner archives its content, holes and all, and the engine never
//!   accepts a sparse tar entry.
//! - A file is an entry of an artifacts tar (the runner puts only regular files in one):
//!   what becomes a row, a line of a listing and a link. A workspace tar (a hand-off) is
//!   one row whatever it holds, so it counts against the byte quotas only; its entries are
//!   bounded per tar by the unpacker's own limit.
//! - Fork runs get the smaller `fork_run` quota and, within their repository, share
//!   `repository_forks`, so pull requests from forks cannot fill the repository's quota
//!   for its own runs.
//! - The figures are checked twice: while the body streams, against what was stored when
//!   the upload began ([`Allowance`]) plus what the run's other uploads in this engine
//!   have streamed so far ([`super::Streaming`]), to stop early; then again, authoritatively, in the
//!   transaction that records the blob with the scope's rows locked
//!   ([`plue_store::Store::record_blob`]), so two uploads racing one quota cannot both
//!   pass it. Retention deletes blob rows, which frees quota.

use plue_store::{BlobUsage, Usage};

/// One quota: the most bytes and artifact files a scope keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub bytes: u64,
    pub files: u64,
}

/// Every quota the engine applies (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Everything one run keeps: its workspaces and artifacts, every attempt's.
    pub run: Quota,
    /// The same for a run of a pull request from a fork (instead of `run`).
    pub fork_run: Quota,
    /// Everything the kept runs of one repository hold together.
    pub repository: Quota,
    /// The part of `repository` its fork runs may hold together.
    pub repository_forks: Quota,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            run: Quota {
                bytes: 2 << 30,
                files: 10_000,
            },
            fork_run: Quota {
                bytes: 256 << 20,
                files: 2_000,
            },
            repository: Quota {
                bytes: 20 << 30,
                files: 200_000,
            },
            repository_forks: Quota {
                bytes: 4 << 30,
                files: 40_000,
            },
        }
    }
}

/// Which scope a quota is of, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Run,
    ForkRun,
    Repository,
    RepositoryForks,
}

impl Scope {
    /// The quota's name (`storage` or `file`) and who keeps what it counts.
    fn describe(self, noun: &str) -> (String, &'static str) {
        match self {
            Scope::Run => (format!("the run's {noun} quota"), "the run"),
            Scope::ForkRun => (
                format!("the {noun} quota of a run of a pull request from a fork"),
                "the run",
            ),
            Scope::Repository => (format!("the repository's {noun} quota"), "the repository"),
            Scope::RepositoryForks => (
                format!("the {noun} quota of the repository's runs of forks"),
                "its runs of forks",
            ),
        }
    }

    fn flag(self, files: bool) -> &'static str {
        match (self, files) {
            (Scope::Run, false) => "--quota-run-bytes",
            (Scope::Run, true) => "--quota-run-files",
            (Scope::ForkRun, false) => "--quota-fork-run-bytes",
            (Scope::ForkRun, true) => "--quota-fork-run-files",
            (Scope::Repository, false) => "--quota-repo-bytes",
            (Scope::Repository, true) => "--quota-repo-files",
            (Scope::RepositoryForks, false) => "--quota-repo-fork-bytes",
            (Scope::RepositoryForks, true) => "--quota-repo-fork-files",
        }
    }
}

/// An upload that would pass a quota: which, and the figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct OverQuota {
    pub scope: Scope,
    /// Files, not bytes.
    pub files: bool,
    /// What the scope already keeps.
    pub used: u64,
    /// What this upload adds (so far, when it was stopped while streaming).
    pub adding: u64,
    pub limit: u64,
    /// The upload was stopped before its end: it adds at least `adding`.
    pub partial: bool,
}

impl OverQuota {
    fn message(&self) -> String {
        let total = self.used.saturating_add(self.adding);
        let count = |n: u64| {
            if self.files {
                format!("{n} file{}", if n == 1 { "" } else { "s" })
            } else {
                figure(n)
            }
        };
        let (quota, holder) = self
            .scope
            .describe(if self.files { "file" } else { "storage" });
        let at_least = if self.partial { "at least " } else { "" };
        let adds = if self.used == 0 {
            format!("this upload adds {at_least}{}", count(self.adding))
        } else {
            format!(
                "{holder} keeps {} and this upload adds {at_least}{}, {} in all",
                count(self.used),
                count(self.adding),
                count(total)
            )
        };
        format!(
            "{quota}: {adds}, past the quota of {} (plue serve {})",
            count(self.limit),
            self.flag()
        )
    }

    fn flag(&self) -> &'static str {
        self.scope.flag(self.files)
    }
}

/// `bytes` exactly and, past a KiB, roughly in a larger unit.
fn figure(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size {
            return format!("{bytes} bytes ({:.1} {unit})", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} bytes")
}

/// The quotas that apply to one run, with what each scope already keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// (scope, quota, used) for each scope the run is in.
    scopes: Vec<(Scope, Quota, Usage)>,
}

impl Allowance {
    /// The scopes of a run with `usage` (from [`plue_store::Store::blob_usage`]).
    pub fn new(quotas: &Quotas, usage: &BlobUsage) -> Allowance {
        let mut scopes = Vec::with_capacity(3);
        let (scope, quota) = if usage.fork {
            (Scope::ForkRun, quotas.fork_run)
        } else {
            (Scope::Run, quotas.run)
        };
        scopes.push((scope, quota, usage.run));
        if let Some(repository) = usage.repository {
            scopes.push((Scope::Repository, quotas.repository, repository));
        }
        if let Some(forks) = usage.forks {
            scopes.push((Scope::RepositoryForks, quotas.repository_forks, forks));
        }
        Allowance { scopes }
    }

    /// Whether `bytes` and `files` more fit every scope; the error names the first that
    /// they would pass.
    pub fn check(&self, bytes: u64, files: u64) -> Result<(), OverQuota> {
        self.check_upload(bytes, files, false)
    }

    /// [`Allowance::check`] of an upload stopped before its end (`partial`) or whole.
    pub fn check_upload(&self, bytes: u64, files: u64, partial: bool) -> Result<(), OverQuota> {
        for &(scope, quota, used) in &self.scopes {
            let used_bytes = u64::try_from(used.bytes).unwrap_or(0);
            let used_files = u64::try_from(used.files).unwrap_or(0);
            if used_bytes.saturating_add(bytes) > quota.bytes {
                return Err(OverQuota {
                    scope,
                    files: false,
                    used: used_bytes,
                    adding: bytes,
                    limit: quota.bytes,
                    partial,
                });
            }
            if used_files.saturating_add(files) > quota.files {
                return Err(OverQuota {
                    scope,
                    files: true,
                    used: used_files,
                    adding: files,
                    limit: quota.files,
                    partial,
                });
            }
        }
        Ok(())
    }

    /// The most artifact files one more upload may hold.
    pub fn files_left(&self) -> u64 {
        self.scopes
            .iter()
            .map(|(_, quota, used)| {
                quota
                    .files
                    .saturating_sub(u64::try_from(used.files).unwrap_or(0))
            })
            .min()
            .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(bytes: i64, files: i64) -> Usage {
        Usage { bytes, files }
    }

    fn quotas() -> Quotas {
        Quotas {
            run: Quota {
                bytes: 1000,
                files: 10,
            },
            fork_run: Quota {
                bytes: 100,
                files: 2,
            },
            repository: Quota {
                bytes: 5000,
                files: 50,
            },
            repository_forks: Quota {
                bytes: 300,
                files: 5,
            },
        }
    }

    #[test]
    fn a_local_run_has_only_the_run_quota() {
        let allowance = Allowance::new(
            &quotas(),
            &BlobUsage {
                run: usage(900, 9),
                repository: None,
                forks: None,
                fork: false,
            },
        );
        assert_eq!(allowance.check(100, 1), Ok(()));
        let over = allowance.check(101, 0).unwrap_err();
        assert_eq!(
            (over.scope, over.files, over.used, over.limit),
            (Scope::Run, false, 900, 1000)
        );
        let text = over.to_string();
        assert!(
            text.contains("the run's storage quota")
                && text.contains("900 bytes")
                && text.contains("1001 bytes")
                && text.contains("1000 bytes")
                && text.contains("--quota-run-bytes"),
            "{text}"
        );
        let over = allowance.check(0, 2).unwrap_err();
        assert!(over.files && over.to_string().contains("past the quota of 10 files"));
        assert_eq!(allowance.files_left(), 1);
    }

    #[test]
    fn a_fork_run_has_the_smaller_quota_and_the_forks_share() {
        let fork = BlobUsage {
            run: usage(0, 0),
            repository: Some(usage(4000, 10)),
            forks: Some(usage(250, 4)),
            fork: true,
        };
        let allowance = Allowance::new(&quotas(), &fork);
        // Within the repository's quota, but past the fork run's 100 bytes.
        let over = allowance.check(101, 0).unwrap_err();
        assert_eq!(over.scope, Scope::ForkRun);
        assert!(over.to_string().contains("a pull request from a fork"));
        // Within the fork run's quota, but the forks of the repository hold 250 of 300.
        let over = allowance.check(60, 0).unwrap_err();
        assert_eq!(over.scope, Scope::RepositoryForks);
        assert!(over.to_string().contains("--quota-repo-fork-bytes"));
        assert_eq!(allowance.files_left(), 1);
        // The same figures in a trusted run of the repository pass.
        let trusted = Allowance::new(
            &quotas(),
            &BlobUsage {
                repository: Some(usage(4500, 10)),
                forks: None,
                fork: false,
                ..fork
            },
        );
        assert_eq!(trusted.check(500, 5), Ok(()));
        let over = trusted.check(600, 0).unwrap_err();
        assert_eq!(over.scope, Scope::Repository);
    }
}
