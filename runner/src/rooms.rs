//! A step is a closed room: the host's shared writable places it gets its own copy of.
//!
//! Step users are drawn from a range and released at the end of an attempt, so a uid comes
//! back to later attempts. Anything a step leaves where every user may write — a set-uid
//! copy of `bash` in `/tmp`, a POSIX shared-memory object in `/dev/shm`, a SysV segment —
//! would otherwise wait there for the next attempt that holds the same uid, or be used by
//! another step at once. Under a root runner each step's process (a fresh one through
//! `launch`, a warm Python child through the same [`Rooms`] sent in its job) therefore, in
//! the mount namespace it gets anyway and before it drops to the step's user — and so does
//! a step with a network namespace of its own without a step user, whose rooms keep the
//! host's sockets in `/tmp` out of its reach (`crate::network::Hidden`):
//! - mounts a fresh `tmpfs` (`nosuid,nodev`, mode 1777, at most [`TMPFS_OPTIONS`]'s size)
//!   on each of [`SHARED_PLACES`] that exists here as a directory (`/var/lock` is usually a
//!   link to `/run/lock`: each real place once). Nothing is shared with the host or with
//!   another step there, and it is all gone when the step's last process is: a tmpfs lives
//!   as long as a mount namespace holding it, and the step's processes are killed at its
//!   end. A tmpfs, not a directory of the attempt, because it needs no directory a step
//!   user could prepare beforehand (the runner mounts on nothing a step wrote) and the
//!   bound covers memory and inodes alike;
//! - keeps one directory as it was: the entry of a shared place that holds the step's
//!   working directory (the runner's work directory, e.g. `/tmp/plue-runner`, whose
//!   attempt directories are mode 0700 and its own, and whose `tmp` is `TMPDIR`), bound
//!   onto an empty directory of the fresh tmpfs at the same path, so every path the runner
//!   gave the step still names the same file; or, when the working directory is in no
//!   shared place, the working directory itself, bound onto itself. Either way the kept
//!   directory is remounted `nosuid,nodev` (its other flags — read-only, `noexec`, atime —
//!   kept), so not even a set-uid file of another user placed in the workspace runs as that
//!   user; every step process also has `no_new_privs` (`child.rs`, `zygote.py`);
//! - gets its own IPC namespace (`CLONE_NEWIPC`, unshared with the mount namespace): SysV
//!   segments, semaphores and message queues and POSIX message queues are the step's own
//!   and are destroyed with its last process.
//!
//! What is computed here runs in the runner before the clone; the child only replays it
//! with raw system calls (`child.rs`). Invariants: the runner never mounts on or binds
//! from a path a step could have changed since it was resolved — the places are root's and
//! resolved once, the kept directory is opened `O_NOFOLLOW` before the tmpfs hides it, and
//! its bind target lies in the fresh tmpfs no one else has seen; a failed mount fails the
//! launch (a step never runs half-closed). Where the mount or IPC namespace is refused (a
//! container without `CAP_SYS_ADMIN`, a seccomp filter) the step runs as before — the
//! host's places, a private uid, no private `/proc` — and the runner says so once
//! ([`note_shared`]); `step_user` then sweeps what a released uid left in the places.

use std::ffi::{c_ulong, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// The places every user may write on a usual host. Each that exists as a directory (by
/// its real path, once; one inside another counts once) gets a fresh tmpfs in every step.
pub(crate) const SHARED_PLACES: &[&str] = &[
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/dev/mqueue",
    "/run/lock",
    "/var/lock",
    "/var/crash",
];

/// The options of each step's tmpfs: writable by all with the sticky bit, as the host's
/// places are, and at most a quarter of the host's memory each (the pages are also
/// charged to the step's memory cgroup, and freed with its last process).
pub(crate) const TMPFS_OPTIONS: &CStr = c"mode=1777,size=25%";

/// What a step process reported it could not make private (bits of a report's `errno`).
pub(crate) const SHARED_MOUNTS: i32 = 1;
pub(crate) const SHARED_IPC: i32 = 2;

/// The private places of one step, ready for the cloned child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rooms {
    /// The real paths of the shared places, each to get a fresh tmpfs.
    pub places: Vec<CString>,
    pub keep: Option<Keep>,
}

/// The one directory a step keeps from the host as it was (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keep {
    /// Its real path.
    pub path: CString,
    /// The index in `places` of the shared place it is in (it is then bound into that
    /// place's fresh tmpfs); `None`: bound onto itself.
    pub inside: Option<usize>,
    /// The `MS_*` flags of the mount it is on that its bind keeps (`MS_RDONLY`,
    /// `MS_NOEXEC`, atime), besides the `MS_NOSUID | MS_NODEV` every bind gets.
    pub flags: c_ulong,
}

impl Rooms {
    /// The rooms of a step whose working directory is `cwd`.
    pub(crate) fn for_step(cwd: &Path) -> Rooms {
        let places = shared_places();
        Rooms {
            places: places.iter().filter_map(|p| c_path(p)).collect(),
            keep: keep_for(places, cwd),
        }
    }

    /// The same, as the warm Python zygote's job carries it (`zygote.py`'s `_rooms`).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let text = |path: &CString| String::from_utf8_lossy(path.as_bytes()).into_owned();
        serde_json::json!({
            "places": self.places.iter().map(text).collect::<Vec<_>>(),
            "tmpfs": TMPFS_OPTIONS.to_string_lossy(),
            "keep": self.keep.as_ref().map(|keep| serde_json::json!({
                "path": text(&keep.path),
                "inside": keep.inside,
                "flags": keep.flags,
            })),
        })
    }
}

/// [`SHARED_PLACES`] as they are on this host: real paths of directories, each once, none
/// inside another, never `/`. Resolved once: they are root's and do not move.
pub(crate) fn shared_places() -> &'static [PathBuf] {
    static PLACES: OnceLock<Vec<PathBuf>> = OnceLock::new();
    PLACES.get_or_init(|| resolve_places(SHARED_PLACES.iter().map(Path::new)))
}

fn resolve_places<'a>(candidates: impl Iterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut places: Vec<PathBuf> = Vec::new();
    for candidate in candidates {
        let Ok(real) = std::fs::canonicalize(candidate) else {
            continue;
        };
        if !real.is_dir() || real == Path::new("/") {
            continue;
        }
        if places
            .iter()
            .any(|place| real.starts_with(place) || place.starts_with(&real))
        {
            continue;
        }
        places.push(real);
    }
    places
}

/// The directory a step in `cwd` keeps: the entry of a shared place holding `cwd`, else
/// `cwd` itself, unless `cwd` holds a shared place (`/`, say: nothing is kept then).
fn keep_for(places: &[PathBuf], cwd: &Path) -> Option<Keep> {
    let real = std::fs::canonicalize(cwd).ok()?;
    let (path, inside) = match places
        .iter()
        .position(|place| real.starts_with(place) && real != *place)
    {
        Some(index) => {
            let first = real
                .strip_prefix(&places[index])
                .ok()?
                .components()
                .next()?;
            (places[index].join(first), Some(index))
        }
        None if places.iter().any(|place| place.starts_with(&real)) => return None,
        None => (real, None),
    };
    Some(Keep {
        flags: kept_flags(&path),
        path: c_path(&path)?,
        inside,
    })
}

/// The flags of the mount `path` is on that a bind of it must keep.
pub(crate) fn kept_flags(path: &Path) -> c_ulong {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(stat) = statvfs(path) else {
        return 0;
    };
    let flags = stat.flags();
    [
        (FsFlags::ST_RDONLY, libc::MS_RDONLY),
        (FsFlags::ST_NOEXEC, libc::MS_NOEXEC),
        (FsFlags::ST_NOATIME, libc::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, libc::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, libc::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(flag, _)| flags.contains(*flag))
    .fold(0, |all, (_, ms)| all | ms)
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// Records that a step process could not make `what` (bits [`SHARED_MOUNTS`],
/// [`SHARED_IPC`]) private, and says so the first time.
pub(crate) fn note_shared(what: i32) {
    let before = SHARED.fetch_or(what as u8 | SEEN, Ordering::Relaxed);
    let new = (what as u8) & !before;
    if new & SHARED_MOUNTS as u8 != 0 {
        tracing::warn!(
            "this host refuses the runner a mount namespace: steps share /tmp, /var/tmp and \
             /dev/shm with the host (a released step user's files there are swept) and see \
             every process in /proc"
        );
    }
    if new & SHARED_IPC as u8 != 0 {
        tracing::warn!(
            "this host refuses the runner an IPC namespace: steps share SysV and POSIX IPC \
             with the host (a released step user's objects are removed)"
        );
    }
}

/// Records that a step process made every place private.
pub(crate) fn note_private() {
    SHARED.fetch_or(SEEN, Ordering::Relaxed);
}

/// Whether a step may have used the host's shared places: one said it could not make them
/// private, or no confined step has started yet (nothing is known).
pub(crate) fn maybe_shared() -> bool {
    let state = SHARED.load(Ordering::Relaxed);
    state & SEEN == 0 || state & !SEEN != 0
}

/// [`note_shared`]'s bits, and [`SEEN`] once any confined step started.
static SHARED: AtomicU8 = AtomicU8::new(0);
const SEEN: u8 = 0x80;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_real_directories_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("inner")).unwrap();
        std::os::unix::fs::symlink(&a, dir.path().join("link")).unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let candidates = [
            a.clone(),
            dir.path().join("link"),
            a.join("inner"),
            dir.path().join("file"),
            dir.path().join("missing"),
            PathBuf::from("/"),
        ];
        let places = resolve_places(candidates.iter().map(PathBuf::as_path));
        assert_eq!(places, [a.canonicalize().unwrap()]);
    }

    #[test]
    fn the_kept_directory_is_the_places_entry_holding_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let place = dir.path().canonicalize().unwrap().join("tmp");
        let work = place.join("plue-runner/attempt-1/workspace");
        std::fs::create_dir_all(&work).unwrap();
        let places = [place.clone()];
        let keep = keep_for(&places, &work).unwrap();
        assert_eq!(
            keep.path.to_bytes(),
            place.join("plue-runner").as_os_str().as_bytes()
        );
        assert_eq!(keep.inside, Some(0));
        // Outside every place: the working directory itself, bound onto itself.
        let elsewhere = dir.path().canonicalize().unwrap().join("srv");
        std::fs::create_dir(&elsewhere).unwrap();
        let keep = keep_for(&places, &elsewhere).unwrap();
        assert_eq!(keep.path.to_bytes(), elsewhere.as_os_str().as_bytes());
        assert_eq!(keep.inside, None);
        // A working directory that holds a place, or is one, keeps nothing.
        assert_eq!(keep_for(&places, dir.path()), None);
        assert_eq!(keep_for(&places, &place), None);
    }
}
