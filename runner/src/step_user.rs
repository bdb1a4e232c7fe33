//! Which user a step runs as, and handing the attempt's files to that user.
//!
//! A runner agent that runs as root never runs step code as root: each attempt gets an
//! unprivileged uid (and a gid of the same number) from a configured range, picked from the
//! attempt id, so two steps running at once on one machine are two different users. They
//! cannot read each other's `/proc/<pid>/environ`, `mem` or `fd`, signal each other, or
//! enter each other's attempt directory (mode 0700, owned by its step's user), and they
//! cannot read the agent's memory (it is root and undumpable).
//!
//! Invariants: the uid range never includes 0; an attempt's directory and everything the
//! runner put in it are owned by the attempt's user before the step starts; a runner that is
//! not root runs steps as itself (it cannot switch users) and says so at start.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The default range of step uids (and gids) for a root runner: far above the ids of real
/// accounts and of the usual container subordinate ranges.
pub const DEFAULT_RANGE: (u32, u32) = (3_000_000, 3_065_535);

/// A uid and gid a step process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUser {
    pub uid: u32,
    pub gid: u32,
}

/// Who runs steps: this process's own user, or a user from a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepUsers {
    /// Steps run as the runner's own user (a runner that is not root).
    Same,
    /// Steps run as `first + attempt_id mod count` (a root runner).
    Range { first: u32, count: u32 },
}

impl StepUsers {
    /// A range `first..=last`; refuses one that contains root or is empty.
    pub fn range(first: u32, last: u32) -> anyhow::Result<StepUsers> {
        if first == 0 || last < first {
            bail!("step users {first}-{last}: need 0 < first <= last");
        }
        Ok(StepUsers::Range {
            first,
            count: last - first + 1,
        })
    }

    /// The default: the default range when this process is root, else itself.
    pub fn default_for_this_process() -> StepUsers {
        if nix::unistd::geteuid().is_root() {
            StepUsers::Range {
                first: DEFAULT_RANGE.0,
                count: DEFAULT_RANGE.1 - DEFAULT_RANGE.0 + 1,
            }
        } else {
            StepUsers::Same
        }
    }

    /// The user of one attempt, or `None` to run it as this process's user.
    pub fn for_attempt(&self, attempt_id: i64) -> Option<StepUser> {
        match *self {
            StepUsers::Same => None,
            StepUsers::Range { first, count } => {
                let offset = attempt_id.rem_euclid(i64::from(count)) as u32;
                let id = first + offset;
                Some(StepUser { uid: id, gid: id })
            }
        }
    }
}

/// Makes `path` and everything below it (symlinks themselves, never their targets) owned by
/// `user`. Blocking.
pub fn hand_over(path: &Path, user: StepUser) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(path).follow_links(false) {
        let entry = entry.with_context(|| format!("walking {}", path.display()))?;
        std::os::unix::fs::lchown(entry.path(), Some(user.uid), Some(user.gid))
            .with_context(|| format!("handing {} to uid {}", entry.path().display(), user.uid))?;
    }
    Ok(())
}

/// Whether a user other than the file's owner and group can execute `path` (and reach it):
/// every directory on the way is searchable by others and the file executable by others.
pub fn usable_by_others(path: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let mut current = PathBuf::new();
    for component in real.components() {
        current.push(component);
        let Ok(meta) = std::fs::metadata(&current) else {
            return false;
        };
        if meta.mode() & 0o001 == 0 {
            return false;
        }
    }
    true
}

/// The first of `candidates` a step user can execute.
pub fn first_usable(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| usable_by_others(p)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_never_contains_root_and_spreads_attempts() {
        assert!(StepUsers::range(0, 10).is_err());
        assert!(StepUsers::range(10, 9).is_err());
        let users = StepUsers::range(5000, 5009).unwrap();
        assert_eq!(
            users.for_attempt(3),
            Some(StepUser {
                uid: 5003,
                gid: 5003
            })
        );
        assert_eq!(
            users.for_attempt(13),
            Some(StepUser {
                uid: 5003,
                gid: 5003
            })
        );
        assert_eq!(
            users.for_attempt(-1),
            Some(StepUser {
                uid: 5009,
                gid: 5009
            })
        );
        // Concurrent attempts (consecutive ids) are different users.
        assert_ne!(users.for_attempt(4), users.for_attempt(5));
        assert_eq!(StepUsers::Same.for_attempt(3), None);
    }

    #[test]
    fn usable_by_others_follows_every_directory() {
        assert!(usable_by_others(Path::new("/bin/sh")));
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!usable_by_others(&tool), "a 0700 directory hides it");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(usable_by_others(&tool));
    }
}
