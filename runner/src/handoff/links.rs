//! Where a symbolic link of a tree really leads: its target resolved through the other
//! links of the tree, as the kernel would, but never followed by the runner — at a bounded
//! cost for the whole archive.
//!
//! [`link_stays_inside`](plue_types::handoff::link_stays_inside) reads a target's text
//! alone, so `a -> .` and then `b -> a/a/a/../../..` pass it (three names down, three up)
//! while `b` reaches the root's parent. [`Resolver::resolves_inside`] walks the target a
//! name at a time against the tree: a name that is a link in the tree is replaced by that
//! link's target (at most [`MAX_HOPS`] times, as the kernel's own limit), `..` above the
//! root or an absolute target anywhere on the way is outside. A name that does not exist,
//! or is a file, is taken as a directory holding no link: that only ever refuses more than
//! the kernel would reach.
//!
//! The tree is read through a descriptor of its root, every directory opened with
//! `O_NOFOLLOW`, so resolving a link never makes the runner read outside the root either.
//!
//! Cost. A hostile tree makes every name count: 1,800 directories deep, targets of 4,096
//! bytes stepping `e/..` down and up, chained 40 times, for up to 200,000 links. So:
//! - One [`Resolver`] serves a whole archive (its pack, or its unpack and re-check). It
//!   keeps the descriptors of the directories it stands in ([`MAX_HELD`] at most), so a
//!   name costs one `openat` (two for a link: `readlinkat`), `..` costs nothing, and the
//!   next link starts from where the last one's parent was, not from the root.
//! - Names below a missing name or a file cost nothing (no link can be there).
//! - Every `openat`/`readlinkat` counts against one budget ([`MAX_LOOKUPS`] by default).
//!   When it is spent, [`Resolver::resolves_inside`] answers [`OverBudget`] for every
//!   remaining link: pack leaves those links out, unpack refuses the archive — a link is
//!   never kept unresolved.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::Mode;

use plue_types::handoff::MAX_PATH_BYTES;

/// The most links one resolution goes through (Linux's own limit is 40).
pub const MAX_HOPS: usize = 40;

/// The most file system lookups (`openat`, `readlinkat`) the link checks of one archive
/// make: about a second of system calls. A workspace of 100,000 `pnpm` links needs ~1M.
pub const MAX_LOOKUPS: u64 = 2_000_000;

/// The most directory descriptors a [`Resolver`] holds open.
pub const MAX_HELD: usize = 32;

/// Opens the directory `name` in `dir` without following a link at `name`.
pub(super) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(dir, name, flags, Mode::empty())
}

/// Opens the directory at `path` (`/` separated names) below `root`, one name at a time,
/// never through a link.
pub(crate) fn open_below(root: BorrowedFd<'_>, path: &[OsString]) -> Result<OwnedFd, Errno> {
    let mut current = open_dir(root, OsStr::new("."))?;
    for name in path {
        current = open_dir(current.as_fd(), name)?;
    }
    Ok(current)
}

/// The archive's budget of lookups is spent: the link's chain was not (fully) resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

/// Why a walk stopped early.
enum Stop {
    /// The position is outside the root, or the tree changed under the walk.
    Outside,
    Budget,
}

impl From<OverBudget> for Stop {
    fn from(_: OverBudget) -> Stop {
        Stop::Budget
    }
}

/// What a name turned out to be.
enum Step {
    /// A directory (now stood in), or something holding no link (a file, nothing).
    Entered,
    /// A symbolic link with this target (not entered).
    Link(PathBuf),
}

/// One directory of the current position.
struct Level {
    name: OsString,
    /// Held for the deepest [`MAX_HELD`] levels only.
    fd: Option<OwnedFd>,
}

/// Resolves the links of one tree, all against one budget (see the module doc).
pub struct Resolver<'a> {
    root: BorrowedFd<'a>,
    /// The real directories from the root to the current position.
    levels: Vec<Level>,
    /// Levels from this index on hold their descriptor (a window at the top).
    first_held: usize,
    /// Names entered below a name that is no directory: no link is there.
    below_missing: usize,
    lookups: u64,
    budget: u64,
    /// A lookup was refused: every later link is [`OverBudget`] too.
    spent: bool,
}

impl<'a> Resolver<'a> {
    /// A resolver of the tree at `root` with [`MAX_LOOKUPS`] to spend.
    pub fn new(root: BorrowedFd<'a>) -> Resolver<'a> {
        Resolver::with_budget(root, MAX_LOOKUPS)
    }

    /// A resolver with `budget` lookups to spend.
    pub fn with_budget(root: BorrowedFd<'a>, budget: u64) -> Resolver<'a> {
        Resolver {
            root,
            levels: Vec::new(),
            first_held: 0,
            below_missing: 0,
            lookups: 0,
            budget,
            spent: false,
        }
    }

    /// The lookups spent so far (a deterministic measure of the work done).
    pub fn lookups(&self) -> u64 {
        self.lookups
    }

    /// Whether the link at `link` (relative to the root, its parents real directories)
    /// with `target` leads, through every link of the tree, to a place inside it.
    /// [`OverBudget`] once the budget is spent (for this link and every later one).
    pub fn resolves_inside(&mut self, link: &Path, target: &Path) -> Result<bool, OverBudget> {
        if self.spent {
            return Err(OverBudget);
        }
        match self.walk(link, target) {
            Ok(inside) => Ok(inside),
            Err(Stop::Outside) => Ok(false),
            Err(Stop::Budget) => Err(OverBudget),
        }
    }

    fn walk(&mut self, link: &Path, target: &Path) -> Result<bool, Stop> {
        let mut parent = Vec::new();
        for component in link.parent().map(Path::components).into_iter().flatten() {
            match component {
                Component::Normal(name) => parent.push(name),
                Component::CurDir => {}
                _ => return Ok(false),
            }
        }
        if !self.move_to(&parent)? {
            return Ok(false);
        }
        let mut pending: VecDeque<OsString> = VecDeque::new();
        if !push_front(&mut pending, target) {
            return Ok(false);
        }
        let mut hops = 0;
        while let Some(name) = pending.pop_front() {
            if name == "." {
                continue;
            }
            if name == ".." {
                if !self.up() {
                    return Ok(false);
                }
                continue;
            }
            if let Step::Link(next) = self.enter(name)? {
                hops += 1;
                if hops > MAX_HOPS || !push_front(&mut pending, &next) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Stands in the directory `path` below the root; `false` when a name of it is not a
    /// real directory.
    fn move_to(&mut self, path: &[&OsStr]) -> Result<bool, Stop> {
        self.below_missing = 0;
        let common = self
            .levels
            .iter()
            .zip(path)
            .take_while(|(level, name)| level.name == **name)
            .count();
        // Comparing names is work too, if no system call.
        self.spend(common as u64 / 64)?;
        while self.levels.len() > common {
            self.up();
        }
        for name in &path[common..] {
            if let Step::Link(_) = self.enter((*name).to_owned())? {
                return Ok(false);
            }
            if self.below_missing > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `..`: `false` above the root.
    fn up(&mut self) -> bool {
        if self.below_missing > 0 {
            self.below_missing -= 1;
            return true;
        }
        if self.levels.pop().is_none() {
            return false;
        }
        self.first_held = self.first_held.min(self.levels.len());
        true
    }

    /// Steps into `name`, or finds it is a link.
    fn enter(&mut self, name: OsString) -> Result<Step, Stop> {
        if self.below_missing > 0 {
            self.below_missing += 1;
            return Ok(Step::Entered);
        }
        self.reopen()?;
        self.spend(1)?;
        let opened = open_dir(self.top(), &name);
        match opened {
            Ok(fd) => {
                self.levels.push(Level { name, fd: Some(fd) });
                if self.levels.len() - self.first_held > MAX_HELD {
                    self.levels[self.first_held].fd = None;
                    self.first_held += 1;
                }
                Ok(Step::Entered)
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                self.spend(1)?;
                match readlinkat(self.top(), name.as_os_str()) {
                    Ok(target) => Ok(Step::Link(PathBuf::from(target))),
                    // A file: nothing below it.
                    Err(_) => {
                        self.below_missing = 1;
                        Ok(Step::Entered)
                    }
                }
            }
            Err(_) => {
                self.below_missing = 1;
                Ok(Step::Entered)
            }
        }
    }

    /// The descriptor of the current directory (held: see [`Resolver::reopen`]).
    fn top(&self) -> BorrowedFd<'_> {
        match self.levels.last() {
            Some(level) => level.fd.as_ref().expect("reopened").as_fd(),
            None => self.root,
        }
    }

    /// Opens the current directory again when its descriptor was let go: from the root,
    /// a name at a time, holding the deepest [`MAX_HELD`] on the way.
    fn reopen(&mut self) -> Result<(), Stop> {
        let len = self.levels.len();
        if len == 0 || self.levels[len - 1].fd.is_some() {
            return Ok(());
        }
        let keep_from = len.saturating_sub(MAX_HELD);
        let mut current: Option<OwnedFd> = None;
        for i in 0..len {
            self.spend(1)?;
            let parent = current.as_ref().map_or(self.root, |fd| fd.as_fd());
            let fd = open_dir(parent, &self.levels[i].name).map_err(|_| Stop::Outside)?;
            if i >= keep_from {
                let held = fd.try_clone().map_err(|_| Stop::Outside)?;
                self.levels[i].fd = Some(held);
            }
            current = Some(fd);
        }
        self.first_held = keep_from;
        Ok(())
    }

    /// Counts `lookups` about to be made; refused (and none made) past the budget.
    fn spend(&mut self, lookups: u64) -> Result<(), OverBudget> {
        if self.spent || self.lookups + lookups > self.budget {
            self.spent = true;
            return Err(OverBudget);
        }
        self.lookups += lookups;
        Ok(())
    }
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
