//! Finds a step's program (`bash`) on the step's own `PATH` in the runner, as the child's
//! `execvp` would, so that the child executes one path instead of trying every directory
//! of a long `PATH` after it has dropped to the step's user (each miss is a failed
//! `execve`, and a `PATH` inherited from an operator's shell can have a dozen entries that
//! a step user may not even search).
//!
//! Promises of [`resolve`]:
//! - The answer is the first `PATH` entry (empty entries mean the working directory, as
//!   for `execvp`, and are left to the child) holding a regular file named `program` that
//!   the step can execute: executable by others along its whole path when the step runs as
//!   another user (a fresh uid with no groups, see `step_user`), by anyone otherwise.
//! - Where that cannot be decided in the runner (an entry that is relative or empty comes
//!   first, nothing matches), the answer is `None` and the caller leaves the search to the
//!   child: never a different program than the child's own search would find.
//! - Answers are cached by `(PATH, program, other user)`; a cached path that has since
//!   disappeared is looked up again.
//!
//! [`git`] is the runner's own `git`, for every git the runner or a tool runs (and
//! [`grep`] its own `grep`, for the `grep` tool): found once
//! on the runner's own `PATH` (never a step's, which a step controls: a workspace
//! directory on it would run the workspace's `git`), absolute entries only, and then
//! always run by that absolute path.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::step_user;

/// At most this many answers are kept (a `PATH` per distinct step environment).
const CACHE_LIMIT: usize = 64;

type Key = (String, String, bool);

static CACHE: Mutex<Option<HashMap<Key, PathBuf>>> = Mutex::new(None);

/// The absolute path the child's `execvp(program)` would run with `path` as its `PATH`,
/// when the runner can tell (see the module doc). `other_user`: the step runs as another,
/// unprivileged user.
pub fn resolve(program: &str, path: &str, other_user: bool) -> Option<PathBuf> {
    if program.contains('/') || program.is_empty() {
        return None;
    }
    let key = (path.to_owned(), program.to_owned(), other_user);
    if let Some(found) = lock().as_ref().and_then(|cache| cache.get(&key).cloned()) {
        if found.is_file() {
            return Some(found);
        }
    }
    let found = search(program, path, other_user)?;
    let mut cache = lock();
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, found.clone());
    Some(found)
}

fn search(program: &str, path: &str, other_user: bool) -> Option<PathBuf> {
    for dir in path.split(':') {
        let dir = Path::new(dir);
        if !dir.is_absolute() {
            // The child's working directory decides: leave the whole search to it.
            return None;
        }
        let candidate = dir.join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let usable = if other_user {
            step_user::usable_by_others(&candidate)
        } else {
            meta.permissions().mode() & 0o111 != 0
        };
        if usable {
            return Some(candidate);
        }
    }
    None
}

/// The runner's own `program` is not on its `PATH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{program} is not installed: there is no '{program}' on the runner's PATH")]
pub struct NotInstalled {
    pub program: &'static str,
}

/// The runner's `git` (see the module doc): the first `git` on the runner's own `PATH`
/// (absolute entries only) that any user may execute — the tools run it as a step's
/// user — else the first the runner may. Looked up on the first call, which the runner
/// makes at start; its own `PATH` never changes after.
pub fn git() -> Result<&'static Path, NotInstalled> {
    static GIT: OnceLock<Option<PathBuf>> = OnceLock::new();
    runners_own(&GIT, "git")
}

/// The runner's `grep`, for the `llm` step's `grep` tool: found as [`git`] is, on the
/// runner's own `PATH`, never the step's (a workspace `bin/grep` on a plan's `PATH` would
/// otherwise be the program the tool runs).
pub fn grep() -> Result<&'static Path, NotInstalled> {
    static GREP: OnceLock<Option<PathBuf>> = OnceLock::new();
    runners_own(&GREP, "grep")
}

/// `program` on the runner's own `PATH`, looked up once into `cell`.
fn runners_own(
    cell: &'static OnceLock<Option<PathBuf>>,
    program: &'static str,
) -> Result<&'static Path, NotInstalled> {
    cell.get_or_init(|| {
        let path = std::env::var("PATH").unwrap_or_default();
        on_absolute_path(program, &path)
    })
    .as_deref()
    .ok_or(NotInstalled { program })
}

/// The first `program` in an absolute entry of `path` that others may execute, else the
/// first this process may; relative and empty entries are skipped.
fn on_absolute_path(program: &str, path: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = path
        .split(':')
        .map(Path::new)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .filter(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .collect();
    candidates
        .iter()
        .find(|candidate| step_user::usable_by_others(candidate))
        .or(candidates.first())
        .cloned()
}

fn lock() -> std::sync::MutexGuard<'static, Option<HashMap<Key, PathBuf>>> {
    // Each update is one insert or a clear: a panic cannot leave the map inconsistent.
    CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn the_first_executable_entry_wins_and_others_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (a, b, c) = (
            root.path().join("a"),
            root.path().join("b"),
            root.path().join("c"),
        );
        for dir in [&a, &b, &c] {
            std::fs::create_dir(dir).unwrap();
        }
        executable(&a, "prog", 0o644); // not executable
        std::fs::create_dir(b.join("prog")).unwrap(); // a directory
        let wanted = executable(&c, "prog", 0o755);
        let path = format!(
            "/nonexistent:{}:{}:{}",
            a.display(),
            b.display(),
            c.display()
        );
        assert_eq!(resolve("prog", &path, false), Some(wanted.clone()));
        // Cached, and still right.
        assert_eq!(resolve("prog", &path, false), Some(wanted));
    }

    #[test]
    fn an_entry_the_step_user_cannot_search_is_skipped_for_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let private = root.path().join("private");
        let public = root.path().join("public");
        std::fs::create_dir(&private).unwrap();
        std::fs::create_dir(&public).unwrap();
        let mine = executable(&private, "tool", 0o755);
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let theirs = executable(&public, "tool", 0o755);
        let path = format!("{}:{}", private.display(), public.display());
        assert_eq!(resolve("tool", &path, false), Some(mine));
        assert_eq!(resolve("tool", &path, true), Some(theirs));
    }

    #[test]
    fn the_runners_git_is_found_on_absolute_entries_only() {
        // A relative entry (a workspace's `bin`, as `PATH=bin:...` would name it) never
        // wins, even when it comes first.
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let work = root.path().join("work");
        let system = root.path().join("system");
        std::fs::create_dir_all(work.join("bin")).unwrap();
        std::fs::create_dir(&system).unwrap();
        executable(&work.join("bin"), "git", 0o755);
        let wanted = executable(&system, "git", 0o755);
        let path = format!("bin::.:{}", system.display());
        assert_eq!(on_absolute_path("git", &path), Some(wanted));
        assert_eq!(on_absolute_path("git", "bin:."), None);
        let git = git().unwrap();
        assert!(git.is_absolute(), "{}", git.display());
    }

    #[test]
    fn relative_entries_names_with_slashes_and_misses_are_left_to_the_child() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        executable(&bin, "x", 0o755);
        assert_eq!(resolve("x", &format!(":{}", bin.display()), false), None);
        assert_eq!(resolve("x", &format!("bin:{}", bin.display()), false), None);
        assert_eq!(resolve("./x", &bin.display().to_string(), false), None);
        assert_eq!(resolve("missing", &bin.display().to_string(), false), None);
    }
}
