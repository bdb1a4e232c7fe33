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
//!   machine's memory and `OPTIONS`' inodes. A step's own writes there are charged to its
//!   memory cgroup.
//! - Anything refused before the namespace is unshared (not root, a container without
//!   `CAP_SYS_ADMIN`, a threaded caller, a directory that fails the checks) is
//!   [`Refused::Before`], and the runner keeps its work directory on disk, as without the
//!   flag. A failure after it ([`Refused::After`]) ends the runner: its namespace is then
//!   half made.
//! - Removing the directory on the host (a `/tmp` cleaner) unmounts the tmpfs in the
//!   runner too, and whoever makes the path again owns what the runner would write there:
//!   [`check`], before each attempt, fails once the directory is no longer the tmpfs
//!   mounted here, and the runner stops.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use nix::fcntl::{open, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

/// The `tmpfs` options: what the pool's work directory has (0711: each step user reaches
/// its own attempt directory, lists none), and bounds on memory and inodes (each inode's
/// own memory is not counted in `size`).
const OPTIONS: &str = "mode=0711,size=50%,nr_inodes=1m";

/// The work directory this process mounted its tmpfs on, and the tmpfs's device.
static MOUNTED: OnceLock<(PathBuf, u64)> = OnceLock::new();

/// Why [`mount`] did not mount.
#[derive(Debug)]
pub enum Refused {
    /// Nothing was changed: the work directory stays on disk.
    Before(anyhow::Error),
    /// The mount namespace was unshared already: the runner must not go on.
    After(anyhow::Error),
}

/// Mounts a `tmpfs` on `work_dir` (an existing directory) in a new mount namespace of this
/// process; see the module doc. Must be called before the process starts a thread.
pub fn mount(work_dir: &Path) -> Result<(), Refused> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Refused::Before(anyhow!("the runner does not run as root")));
    }
    let checked = checked_dir(work_dir).map_err(Refused::Before)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("unsharing the mount namespace")
        .map_err(Refused::Before)?;
    mount_unshared(work_dir, &checked).map_err(Refused::After)
}

/// [`mount`]'s part once the namespace is this process's own.
fn mount_unshared(work_dir: &Path, checked: &std::fs::Metadata) -> anyhow::Result<()> {
    // Its mounts must not reach the host.
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
    let (_root, mounted) = opened(work_dir)?;
    if !is_tmpfs(work_dir) {
        bail!("{} is not the tmpfs just mounted", work_dir.display());
    }
    let _ = MOUNTED.set((work_dir.to_owned(), mounted.dev()));
    Ok(())
}

/// Fails when this process mounted a tmpfs on `work_dir` and the path no longer leads to
/// it (see the module doc); `Ok` for a work directory that was never mounted on.
pub fn check(work_dir: &Path) -> anyhow::Result<()> {
    let Some((mounted_on, device)) = MOUNTED.get() else {
        return Ok(());
    };
    if mounted_on != work_dir {
        return Ok(());
    }
    match std::fs::symlink_metadata(work_dir) {
        Ok(meta) if meta.is_dir() && meta.dev() == *device => Ok(()),
        _ => bail!(
            "the work directory {} is no longer this runner's tmpfs (was it removed on the \
             host?): stopping",
            work_dir.display()
        ),
    }
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
            let err = before(mount(dir.path()));
            assert!(format!("{err:#}").contains("root"), "{err:#}");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o711)).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = before(mount(&link));
        assert!(format!("{err:#}").contains("a real directory"), "{err:#}");

        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = before(mount(&real));
        assert!(format!("{err:#}").contains("not root's alone"), "{err:#}");

        let file = base.path().join("file");
        std::fs::write(&file, b"").unwrap();
        before(mount(&file));
        before(mount(&base.path().join("missing")));
        assert!(!is_tmpfs(&real), "nothing was mounted");
        check(&real).expect("a directory never mounted on is not checked");
    }

    /// The refusal, which must come before anything changed.
    fn before(result: Result<(), Refused>) -> anyhow::Error {
        match result {
            Err(Refused::Before(err)) => err,
            other => panic!("refused before the unshare, got {other:?}"),
        }
    }
}
