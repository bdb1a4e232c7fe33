//! The next attempt's directory and step user, made ready while the current attempt runs.
//!
//! An attempt's directory costs inode allocations (on ext4, each a scan past the inodes
//! freed in the last seconds) and a root runner's step user a lock; a runner that takes its
//! next attempt with its completion would pay both between two steps. So the runner keeps
//! one [`Ahead`], made on a blocking thread as soon as an attempt's processes are gone
//! (while its outputs are kept and its completion travels), and the first one as it
//! starts waiting for work (a runner that takes one step, a pod's, would otherwise pay
//! both on that step's path): a step user claimed and an empty attempt tree
//! ([`create_tree`]: `workspace/`, `home/`, `tmp/`, an empty `output`).
//!
//! Invariants:
//! - An `Ahead` is never made while a step's process runs: where steps run as the runner's
//!   own user (no step users), a running step could otherwise write into the next
//!   attempt's tree.
//! - An `Ahead`'s tree is new: created for it by the runner, private to the runner (0700,
//!   the runner's owner) and never seen by a step. An attempt that takes it renames it to
//!   the attempt's own name first; it is then filled and handed to the attempt's user
//!   exactly as a tree made on the spot.
//! - Its step user stays claimed until the attempt that takes it is over, as a claim made
//!   on the spot would (the caller holds the returned [`Claim`]); an `Ahead` never taken
//!   removes its tree and releases its claim when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

use super::AttemptDir;
use crate::step_user::{Claim, StepUsers};

/// A claimed step user (none when steps run as the runner's own user) and an empty attempt
/// tree, for the next attempt.
#[derive(Debug)]
pub(super) struct Ahead {
    claim: Option<Claim>,
    /// `None` once taken.
    tree: Option<PathBuf>,
}

impl Ahead {
    /// Claims a step user and creates a fresh tree below `work_dir`. Blocking.
    pub(super) fn make(work_dir: &Path, users: StepUsers) -> anyhow::Result<Ahead> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // Nothing is made in a work directory that is no longer the runner's tmpfs.
        crate::work_tmpfs::check(work_dir)?;
        let claim = users.claim()?;
        let tree = work_dir.join(format!(
            "ahead-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let ahead = Ahead {
            claim,
            tree: Some(tree.clone()),
        };
        // On failure, dropping `ahead` removes whatever part of the tree was made.
        create_tree(&tree)?;
        Ok(ahead)
    }

    /// Moves the tree to `dir`, the attempt's directory (which must not exist), and hands
    /// over the claim. Blocking. On failure the tree is removed and the claim released.
    pub(super) fn take(mut self, dir: &Path) -> anyhow::Result<Option<Claim>> {
        let tree = self.tree.take().expect("an Ahead is taken once");
        if let Err(err) = rename_no_replace(&tree, dir) {
            let _ = std::fs::remove_dir_all(&tree);
            return Err(err).with_context(|| format!("renaming {}", tree.display()));
        }
        Ok(self.claim.take())
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        if let Some(tree) = self.tree.take() {
            let _ = std::fs::remove_dir_all(tree);
        }
        // The claim, if still held, is released after its tree is gone.
    }
}

/// `rename(from, to)` that fails when `to` exists (even as an empty directory, which a
/// plain `rename` would replace).
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
            .map_err(std::io::Error::from)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
        }
        std::fs::rename(from, to)
    }
}

/// Creates an attempt's empty tree at `dir`: the directory (0700) with `workspace/`,
/// `home/`, `tmp/` and an empty `output`. `dir` must not exist. Blocking.
pub(super) fn create_tree(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let files = AttemptDir::new(dir);
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    for path in [dir, &files.workspace, &files.home, &files.tmp] {
        builder
            .create(path)
            .with_context(|| format!("creating {}", path.display()))?;
    }
    std::fs::write(&files.output_file, b"").context("creating the output file")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn an_ahead_tree_is_private_until_taken_and_moves_whole_to_the_attempt() {
        let work = tempfile::tempdir().unwrap();
        let ahead = Ahead::make(work.path(), StepUsers::Same).unwrap();
        let tree = ahead.tree.clone().unwrap();
        let meta = std::fs::metadata(&tree).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        let dir = work.path().join("attempt-7-1");
        assert!(
            ahead.take(&dir).unwrap().is_none(),
            "no step users: no claim"
        );
        assert!(!tree.exists());
        let files = AttemptDir::new(&dir);
        for path in [&files.workspace, &files.home, &files.tmp] {
            assert!(path.is_dir(), "{}", path.display());
            assert_eq!(std::fs::read_dir(path).unwrap().count(), 0);
        }
        assert_eq!(std::fs::read(&files.output_file).unwrap(), b"");
    }

    #[test]
    fn an_ahead_never_replaces_an_existing_directory_even_an_empty_one() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("attempt-9-1");
        std::fs::create_dir(&dir).unwrap();
        let ahead = Ahead::make(work.path(), StepUsers::Same).unwrap();
        assert!(ahead.take(&dir).is_err());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "left as it was"
        );
    }

    #[test]
    fn an_ahead_never_taken_or_failing_to_move_leaves_nothing() {
        let work = tempfile::tempdir().unwrap();
        drop(Ahead::make(work.path(), StepUsers::Same).unwrap());
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
        // The attempt's name is taken already: the tree goes, the attempt makes its own.
        let taken = work.path().join("attempt-8-1");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("file"), b"x").unwrap();
        let ahead = Ahead::make(work.path(), StepUsers::Same).unwrap();
        assert!(ahead.take(&taken).is_err());
        let left: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, ["attempt-8-1"]);
    }
}
