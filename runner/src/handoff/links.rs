//! Where a symbolic link of a tree really leads: its target resolved through the other
//! links of the tree, as the kernel would, but never followed by the runner.
//!
//! [`link_stays_inside`](super::link_stays_inside) reads a target's text alone, so `a -> .`
//! and then `b -> a/a/a/../../..` pass it (three names down, three up) while `b` reaches
//! the root's parent. [`resolves_inside`] walks the target a name at a time against the
//! tree: a name that is a link in the tree is replaced by that link's target (at most
//! [`MAX_HOPS`] times, as the kernel's own limit), `..` above the root or an absolute
//! target anywhere on the way is outside. A name that does not exist, or is a file, is
//! taken as a directory: that only ever refuses more than the kernel would reach.
//!
//! The tree is read through a descriptor of its root, every directory opened with
//! `O_NOFOLLOW`, so resolving a link never makes the runner read outside the root either.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::Mode;

use super::MAX_PATH_BYTES;

/// The most links one resolution goes through (Linux's own limit is 40).
pub const MAX_HOPS: usize = 40;

/// Opens the directory `name` in `dir` without following a link at `name`.
pub(super) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(dir, name, flags, Mode::empty())
}

/// Opens the directory at `path` (`/` separated names) below `root`, one name at a time,
/// never through a link.
pub(super) fn open_below(root: BorrowedFd<'_>, path: &[OsString]) -> Result<OwnedFd, Errno> {
    let mut current = open_dir(root, OsStr::new("."))?;
    for name in path {
        current = open_dir(current.as_fd(), name)?;
    }
    Ok(current)
}

/// The target of `path` below `root` if it is a symbolic link (its parents must be real
/// directories; anything else, or a missing name, is `None`).
fn link_at(root: BorrowedFd<'_>, path: &[OsString]) -> Option<PathBuf> {
    let (name, parents) = path.split_last()?;
    let parent = open_below(root, parents).ok()?;
    readlinkat(parent.as_fd(), name.as_os_str())
        .ok()
        .map(PathBuf::from)
}

/// Whether the link at `link` (relative to the root, its parents real directories) with
/// `target` leads, through every link of the tree under `root`, to a place inside it.
pub fn resolves_inside(root: BorrowedFd<'_>, link: &Path, target: &Path) -> bool {
    let mut at: Vec<OsString> = match link.parent() {
        Some(parent) => parent
            .components()
            .map(|c| c.as_os_str().to_owned())
            .collect(),
        None => Vec::new(),
    };
    let mut pending: VecDeque<OsString> = VecDeque::new();
    if !push_front(&mut pending, target) {
        return false;
    }
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        match name.to_str() {
            Some(".") => continue,
            Some("..") => {
                if at.pop().is_none() {
                    return false;
                }
                continue;
            }
            _ => {}
        }
        at.push(name);
        if let Some(next) = link_at(root, &at) {
            hops += 1;
            if hops > MAX_HOPS {
                return false;
            }
            at.pop();
            if !push_front(&mut pending, &next) {
                return false;
            }
        }
    }
    true
}

/// Puts `target`'s names in front of `pending`; `false` for an absolute, empty or
/// over-long target (which leads outside, or nowhere).
fn push_front(pending: &mut VecDeque<OsString>, target: &Path) -> bool {
    if target.as_os_str().is_empty() || target.as_os_str().len() > MAX_PATH_BYTES {
        return false;
    }
    let mut names = Vec::new();
    for component in target.components() {
        match component {
            Component::Normal(name) => names.push(name.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => names.push(OsString::from("..")),
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    for name in names.into_iter().rev() {
        pending.push_front(name);
    }
    true
}
