//! What runners killed mid-attempt left in a work directory: attempt directories
//! (`attempt-<attempt id>-<pid>`) and trees made ahead (`ahead-<pid>-<n>`) whose runner
//! process is gone. A runner sweeps them as it starts ([`sweep`]), before it makes any of
//! its own; a runner that lives removes its own before it reports each attempt's end.
//!
//! Invariants:
//! - Only in a base directory this process's user owns and nobody else may write to: every
//!   entry in it was made by a runner of this user, never planted by a step or another user.
//! - Only entries named as runners name them, of a process that no longer exists — or of
//!   this very process (a restarted container's runner may get its predecessor's pid, and
//!   has made nothing yet when it sweeps); a live runner sharing the base keeps its own.
//! - Only real directories, never a link; `remove_dir_all` removes links below them without
//!   following them, so nothing outside the base is touched.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{geteuid, Pid};

/// Removes the leftovers of gone runners in `base`; answers how many were removed.
/// Blocking; failures are logged, never fatal (a leftover costs disk, not correctness).
pub(crate) fn sweep(base: &Path) -> usize {
    let me = geteuid();
    let Ok(meta) = std::fs::symlink_metadata(base) else {
        return 0;
    };
    if !meta.is_dir() || meta.uid() != me.as_raw() || meta.mode() & 0o022 != 0 {
        tracing::debug!(
            base = %base.display(),
            "not sweeping a work directory this user does not own alone"
        );
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(runner_pid) else {
            continue;
        };
        if !gone(pid) {
            continue;
        }
        // Of the entry itself, never of what a link names.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        // Made by this user, or by root for a step user it handed the directory to.
        if !meta.is_dir() || (meta.uid() != me.as_raw() && !me.is_root()) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::warn!(%err, path = %path.display(), "could not remove a gone runner's directory")
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, base = %base.display(), "removed directories of gone runners");
    }
    removed
}

/// The pid of the runner that made an entry named `name`, if a runner named it.
fn runner_pid(name: &str) -> Option<i32> {
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let pid = |text: &str| {
        digits(text)
            .then(|| text.parse::<i32>().ok())
            .flatten()
            .filter(|pid| *pid > 0)
    };
    if let Some(rest) = name.strip_prefix("attempt-") {
        let (attempt, process) = rest.split_once('-')?;
        digits(attempt).then(|| pid(process))?
    } else if let Some(rest) = name.strip_prefix("ahead-") {
        let (process, counter) = rest.split_once('-')?;
        digits(counter).then(|| pid(process))?
    } else {
        None
    }
}

/// Whether process `pid` is gone (or is this one, which has made nothing yet).
fn gone(pid: i32) -> bool {
    pid == std::process::id() as i32 || kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A pid no process has: a child that has exited and been waited for.
    fn dead_pid() -> i32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        pid
    }

    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        dir
    }

    #[test]
    fn names_runners_give_are_read_and_others_are_not() {
        assert_eq!(runner_pid("attempt-17-4242"), Some(4242));
        assert_eq!(runner_pid("ahead-4242-3"), Some(4242));
        assert_eq!(runner_pid("ahead-4242-0"), Some(4242));
        for other in [
            "attempt-17",
            "attempt--4242",
            "attempt-17-0",
            "attempt-x-4242",
            "attempt-17-4242-1",
            "ahead-4242",
            "ahead-+4242-1",
            "workspace",
            "attempt-17-99999999999",
        ] {
            assert_eq!(runner_pid(other), None, "{other}");
        }
    }

    #[test]
    fn a_gone_runner_s_directories_go_and_nothing_else_does() {
        let base = base();
        let dead = dead_pid();
        // This very process's count as a predecessor's (it has made nothing yet).
        let me = std::process::id() as i32;
        let stale = [
            format!("attempt-7-{dead}"),
            format!("ahead-{dead}-0"),
            format!("attempt-8-{me}"),
        ];
        for name in &stale {
            let dir = base.path().join(name).join("workspace/deep");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("file"), "x").unwrap();
        }
        // A live runner's (pid 1 always exists) stay.
        let kept_live = base.path().join("attempt-9-1");
        std::fs::create_dir(&kept_live).unwrap();
        let kept_other = base.path().join("notes");
        std::fs::create_dir(&kept_other).unwrap();
        let kept_file = base.path().join(format!("attempt-10-{dead}"));
        std::fs::write(&kept_file, "a file, not a runner's directory").unwrap();
        // A link named like a gone runner's directory, to a directory outside: the link is
        // not a directory, and what it names is never touched.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "keep").unwrap();
        let link = base.path().join(format!("attempt-11-{dead}"));
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        // And a link inside a gone runner's directory.
        std::os::unix::fs::symlink(
            outside.path(),
            base.path().join(&stale[0]).join("workspace/out"),
        )
        .unwrap();

        let removed = sweep(base.path());
        for name in &stale {
            assert!(!base.path().join(name).exists(), "{name} stayed");
        }
        assert_eq!(removed, 3);
        assert!(kept_live.is_dir() && kept_other.is_dir() && kept_file.is_file());
        assert!(link.symlink_metadata().is_ok());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("precious")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn a_base_others_may_write_to_is_not_swept() {
        let base = base();
        let leftover = base.path().join(format!("attempt-1-{}", dead_pid()));
        std::fs::create_dir(&leftover).unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(sweep(base.path()), 0);
        assert!(leftover.is_dir());
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(sweep(base.path()), 1);
    }
}
