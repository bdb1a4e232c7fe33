//! A runner's work directory in memory: a `tmpfs` mounted on it in a mount namespace of
//! the runner's own, so its attempts' trees (`workspace/`, `home/`, `tmp/`, `output`, and
//! what a step writes there) cost no disk inodes.
//!
//! Why: every attempt creates a tree and removes it at its end. On ext4 without a journal
//! (common on cloud VMs) each new inode is found by a scan that skips every inode freed in
//! the last 30-odd seconds (`recently_deleted`), so a runner taking step after step pays
//! more for each directory the more it removed just before: `perf` of a 200-step chain put
//! about a fifth of all CPU in that scan. A `tmpfs` has no such scan.
//!
//! [`mount`] is the one entry point; `plue runner --work-dir-in-memory` calls it while the
//! process is still single-threaded (a mount namespace cannot be unshared later), before
//! the runner makes anything in the directory.
//!
//! Invariants:
//! - Only under root, only on a real directory (never a link: it is opened `O_NOFOLLOW`
//!   and mounted on through that descriptor) that root owns and nobody else may write to,
//!   so the mount never lands where another user pointed it.
//! - The mount is the runner's alone: its namespace is unshared and its mounts made
//!   slaves of the host's first, so nothing propagates back to the host; other processes
//!   (the engine, other runners sharing the path) keep seeing the directory on disk, and
//!   the `tmpfs` — with every attempt left in it — is gone with the runner's last process
//!   (its steps' namespaces are copies of the runner's). Nothing is left mounted on the
//!   host, whatever way the runner ends.
//! - `nosuid,nodev`, mode 0711 like the directory the pool makes; at most half the
//!   machine's memory. A step's own writes there are charged to its memory cgroup.
//! - Anything refused (not root, a container without `CAP_SYS_ADMIN`, a threaded caller,
//!   a directory that fails the checks) is an `Err` with the reason, and the runner keeps
//!   its work directory on disk, as without the flag; nothing is changed by a refusal
//!   before the namespace is unshared.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context};
use nix::fcntl::{open, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

/// The `tmpfs` options: what the pool's work directory has (0711: each step user reaches
/// its own attempt directory, lists none), and a bound on memory.
const OPTIONS: &str = "mode=0711,size=50%";

/// Mounts a `tmpfs` on `work_dir` (an existing directory) in a new mount namespace of this
/// process; see the module doc. Must be called before the process starts a thread.
pub fn mount(work_dir: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the runner does not run as root");
    }
    let checked = checked_dir(work_dir)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("unsharing the mount namespace")?;
    // From here on the namespace is the runner's own: its mounts must not reach the host.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making the runner's mounts slaves of the host's")?;
    // Mounted on through a descriptor of the new namespace (one opened before the unshare
    // names the host's mount, which `mount` refuses), of the very directory checked above.
    let (dir, again) = opened(work_dir)?;
    if (again.dev(), again.ino()) != (checked.dev(), checked.ino()) {
        bail!("{} changed while it was checked", work_dir.display());
    }
    let target = format!("/proc/self/fd/{}", dir.as_raw_fd());
    nix::mount::mount(
        Some("plue-work"),
        target.as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(OPTIONS),
    )
    .with_context(|| format!("mounting a tmpfs on {}", work_dir.display()))?;
    Ok(())
}

/// `work_dir`'s metadata once it is known to be a real directory root owns alone.
fn checked_dir(work_dir: &Path) -> anyhow::Result<std::fs::Metadata> {
    let (_dir, meta) = opened(work_dir)?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        bail!(
            "{} is not root's alone (owner {}, mode {:o})",
            work_dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(meta)
}

/// `work_dir` opened as a real directory (never through a link), and its metadata.
fn opened(work_dir: &Path) -> anyhow::Result<(std::os::fd::OwnedFd, std::fs::Metadata)> {
    let dir = open(
        work_dir,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {} (a real directory)", work_dir.display()))?;
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .with_context(|| format!("reading {}", work_dir.display()))?;
    Ok((dir, meta))
}

/// Whether `path` is on a `tmpfs` (what [`mount`] made of a work directory).
pub fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The checks run before anything changes: a refused directory leaves this (threaded)
    /// test process in its namespace, its directory on disk.
    #[test]
    fn a_link_or_a_directory_others_may_write_is_refused_before_anything_changes() {
        if !nix::unistd::geteuid().is_root() {
            let dir = tempfile::tempdir().unwrap();
            let err = mount(dir.path()).unwrap_err();
            assert!(format!("{err:#}").contains("root"), "{err:#}");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o711)).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = mount(&link).unwrap_err();
        assert!(format!("{err:#}").contains("a real directory"), "{err:#}");

        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = mount(&real).unwrap_err();
        assert!(format!("{err:#}").contains("not root's alone"), "{err:#}");

        let file = base.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(mount(&file).is_err());
        assert!(mount(&base.path().join("missing")).is_err());
        assert!(!is_tmpfs(&real), "nothing was mounted");
    }
}
