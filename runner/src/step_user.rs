//! Which user a step runs as, and handing the attempt's files to that user.
//!
//! A runner agent that runs as root never runs step code as root: each attempt claims an
//! unprivileged uid (and a gid of the same number) from a configured range, so two steps
//! running at once on one machine are two different users — also when they belong to two
//! engines (two `plue run`s, a `plue run` beside `plue serve`). They cannot read each
//! other's `/proc/<pid>/environ`, `mem` or `fd`, signal each other, or enter each other's
//! attempt directory (mode 0700, owned by its step's user), and they cannot read the
//! agent's memory (it is root and undumpable).
//!
//! A claim is an exclusive `flock` on `<lock dir>/<uid>` ([`LOCK_DIR`], root's alone),
//! held until the attempt's processes are gone and its directory removed, so the claim
//! is host-wide whichever engine started the runner; a crashed runner's claims end with
//! it. Claims start at a random place in the range, so the next attempt rarely gets the
//! uid the previous one had.
//!
//! The hand-over is post-order: every entry is given to the step's user before the
//! directory holding it, and the attempt directory itself last. Until then every
//! directory of the attempt belongs to root with the attempt directory private (0700),
//! so no step user — not even one with the same uid — can reach, rename or link anything
//! the walk is about to touch; the walk never follows a symbolic link.
//!
//! A uid comes back: nothing of an earlier holder may wait for the next one. What a step
//! user can write outside its attempt directory is only the places every user may write
//! (`/tmp`, `/var/tmp`, `/dev/shm`, ...: `rooms::SHARED_PLACES`) and IPC objects;
//! each step gets its own of both (a tmpfs per place and an IPC namespace, gone with its
//! last process), every step process has `no_new_privs`, and the attempt's processes are
//! gone and its directory removed before its claim ends. Where the host refused a step
//! those namespaces (or before any step said whether it would), the claim also sweeps
//! ([`sweep_leftovers`]), when it is taken and again before it is released: every file
//! the uid owns in the host's shared places (in every directory there others may write,
//! never following a link) and its SysV IPC objects are removed.
//!
//! No process of a uid outlives its claim either — an escaped step process would
//! otherwise read the next holder's environment through its `/proc`. Every process of a
//! step is in the step's cgroup, which is emptied before the step ends, so a claim whose
//! steps all ended that way holds no process when it is released; the lock file says so
//! (`RELEASED_CLEAN`, written at the release; a lock file made by the claim itself had
//! no holder since the host started). Otherwise — a step without an emptied
//! cgroup in this runner (`containment::every_step_emptied`), a holder that crashed
//! mid-claim, a lock file of an earlier version — every live process whose real,
//! effective or saved uid is the claimed one is SIGKILLed, round after round until none
//! is left (`kill_processes_of`), at the release and again when the uid is next
//! claimed. A uid with a process that will not die is skipped (and logged) by the claim.
//! (Scanning `/proc` costs about a millisecond a time on a quiet host: twice a step, it
//! would be a third of a step's own cost.)
//!
//! Invariants: the uid range never includes 0; no process of a uid runs when its claim
//! is taken or after it is released; no two live attempts on one host hold the
//! same uid; an attempt's directory and everything the runner put in it are owned by the
//! attempt's user before the step starts; nothing the uid owns in the host's shared places
//! or IPC survives its release (a private room per step, or the sweep); a runner that is
//! not root runs steps as itself (it cannot switch users; its steps share the host's
//! places and IPC, and still have `no_new_privs`) and says so at start.
//!
//! Why one file past ~600 lines: claiming a uid, handing the attempt's files over and
//! giving both back are one protocol around one lock file; split, its invariants would span
//! files.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

use crate::rooms;

/// The default range of step uids (and gids) for a root runner: far above the ids of real
/// accounts and of the usual container subordinate ranges.
pub const DEFAULT_RANGE: (u32, u32) = (3_000_000, 3_065_535);

/// Where root runners hold their claims on step uids: one lock file per uid. Under
/// `/run` (a tmpfs: the claims of a rebooted host are gone with it).
pub const LOCK_DIR: &str = "/run/plue-step-users";

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
    /// Each step runs as a uid of `first..first + count` that no other live attempt on
    /// this host holds (a root runner).
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

    /// Claims the user of one attempt, or `None` to run it as this process's user. The
    /// claim lasts as long as the returned value. Blocking (opens lock files, kills what
    /// still runs as the uid).
    pub fn claim(&self) -> anyhow::Result<Option<Claim>> {
        match *self {
            StepUsers::Same => Ok(None),
            StepUsers::Range { first, count } => {
                let claim = claim_in(
                    Path::new(LOCK_DIR),
                    first,
                    count,
                    random_offset(count),
                    true,
                )?;
                // An earlier holder's steps (this runner's or a crashed one's) may have
                // written to the host's places.
                if rooms::maybe_shared() {
                    sweep_leftovers(claim.user.uid);
                }
                Ok(Some(claim))
            }
        }
    }
}

/// A step user held by one attempt: no other attempt on this host gets its uid until
/// this is dropped (after the sweep, where one is needed: see the module doc).
#[derive(Debug)]
pub struct Claim {
    user: StepUser,
    lock: Flock<File>,
    /// A claim of the host's step users (not a test's): its processes killed, and swept
    /// where needed.
    sweep: bool,
}

impl Drop for Claim {
    /// Blocking, where it sweeps: drop it off the async runtime (the agent does).
    fn drop(&mut self) {
        if self.sweep {
            // Every step of this runner ended with its cgroup emptied: nothing of the uid
            // runs. Otherwise look, and kill.
            let gone =
                crate::cgroup_state::every_step_emptied() || kill_processes_of(self.user.uid);
            if gone {
                mark(&self.lock, RELEASED_CLEAN);
            } else {
                tracing::warn!(
                    uid = self.user.uid,
                    "a process of a released step user survives SIGKILL; the next claim of \
                     the uid skips it while it lives"
                );
            }
        }
        if self.sweep && rooms::maybe_shared() {
            sweep_leftovers(self.user.uid);
        }
    }
}

/// The lock file's one byte when its last holder released the uid with no process of it
/// left. Any other content (none, [`HELD`], a crash's leftover) makes the next claim look
/// for the uid's processes first.
const RELEASED_CLEAN: u8 = b'c';

/// The lock file's byte while a claim holds the uid.
const HELD: u8 = b'h';

/// Whether the lock file (held by us) says its last holder released the uid clean.
fn released_clean(lock: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut byte = [0u8; 1];
    matches!(lock.read_at(&mut byte, 0), Ok(1)) && byte[0] == RELEASED_CLEAN
}

/// Writes the lock file's byte (held by us); a failure only costs the next claim a scan.
fn mark(lock: &File, state: u8) {
    use std::os::unix::fs::FileExt;
    if let Err(err) = lock.write_all_at(&[state], 0) {
        tracing::warn!(%err, "marking a step-user lock; its next claim looks for processes");
    }
}

/// The most rounds [`kill_processes_of`] makes before it gives up on a uid.
const KILL_ROUNDS: u32 = 50;

/// SIGKILLs every live process whose real, effective or saved uid is `uid`, round after
/// round (a process may fork between the scan and the kill) until a scan finds none;
/// `false` when some still live after [`KILL_ROUNDS`] rounds. Zombies are not counted:
/// they run nothing and hold no environment. Call only while holding `uid`'s claim with
/// no step of it running. Blocking (up to about half a second when a process resists).
pub(crate) fn kill_processes_of(uid: u32) -> bool {
    for round in 0..KILL_ROUNDS {
        let pids = processes_of(uid);
        if pids.is_empty() {
            return true;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // At once the first time (a kill usually lands before the next scan), then
        // waiting a little longer each round for the dying to become zombies.
        std::thread::sleep(std::time::Duration::from_millis(u64::from(round.min(20))));
    }
    processes_of(uid).is_empty()
}

/// The live (not zombie) processes of `uid` (real, effective or saved), by their
/// `/proc/<pid>/status`.
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid as u32 != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|status| status_holds_uid(&status, uid))
        })
        .collect()
}

/// Whether a `/proc/<pid>/status` text is of a live process whose real, effective or
/// saved uid is `uid`.
fn status_holds_uid(status: &str, uid: u32) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    if field("State:").is_some_and(|state| state.starts_with('Z') || state.starts_with('X')) {
        return false;
    }
    field("Uid:").is_some_and(|ids| {
        ids.split_whitespace()
            .take(3)
            .any(|id| id.parse::<u32>() == Ok(uid))
    })
}

/// Removes what `uid` owns in the host's shared places and IPC: every file, link and
/// (emptied) directory of it in each place and in every directory below one that others
/// may write or `uid` owns, never following a link; and its SysV shared-memory segments,
/// semaphore sets and message queues in this process's IPC namespace. Call only while
/// holding `uid`'s claim, so no step of it runs. Blocking; failures are logged.
pub fn sweep_leftovers(uid: u32) {
    for place in rooms::shared_places() {
        sweep_dir(place, uid, 0);
    }
    for (table, flag) in [("shm", "-m"), ("sem", "-s"), ("msg", "-q")] {
        let text = std::fs::read_to_string(format!("/proc/sysvipc/{table}")).unwrap_or_default();
        for id in ipc_ids_of(&text, uid) {
            let removed = std::process::Command::new("ipcrm")
                .args([flag, &id])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if !removed.is_ok_and(|status| status.success()) {
                tracing::warn!(
                    uid,
                    table,
                    id,
                    "could not remove a released step user's IPC object"
                );
            }
        }
    }
}

/// The deepest directory [`sweep_leftovers`] looks into below a place.
const SWEEP_DEPTH: usize = 32;

fn sweep_dir(dir: &Path, uid: u32, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // Of the entry itself, never of what a link names.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let path = entry.path();
        let owned = meta.uid() == uid;
        if meta.is_dir() {
            if (owned || meta.mode() & 0o002 != 0) && depth < SWEEP_DEPTH {
                sweep_dir(&path, uid, depth + 1);
            }
            if owned {
                // Emptied, unless another user put something in it (that stays, and so
                // does the directory: nothing of another user is removed).
                let _ = std::fs::remove_dir(&path);
            }
        } else if owned {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(%err, path = %path.display(), "could not remove a released step user's file");
            }
        }
    }
}

/// The ids in a `/proc/sysvipc/<table>` text of the objects `uid` owns or created.
fn ipc_ids_of(text: &str, uid: u32) -> Vec<String> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split_whitespace().collect();
    let column = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(id), Some(owner), Some(creator)) = (
        columns.iter().position(|c| {
            c.ends_with("id") && *c != "uid" && *c != "gid" && *c != "cuid" && *c != "cgid"
        }),
        column("uid"),
        column("cuid"),
    ) else {
        return Vec::new();
    };
    let uid = uid.to_string();
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mine = fields.get(owner) == Some(&uid.as_str())
                || fields.get(creator) == Some(&uid.as_str());
            mine.then(|| fields.get(id).map(|id| (*id).to_owned()))
                .flatten()
        })
        .collect()
}

impl Claim {
    pub fn user(&self) -> StepUser {
        self.user
    }
}

fn random_offset(count: u32) -> u32 {
    let mut bytes = [0u8; 4];
    // Without randomness the probe starts at the range's start: still a correct claim.
    let _ = getrandom::fill(&mut bytes);
    u32::from_le_bytes(bytes) % count.max(1)
}

/// Takes the first uid of the range, from `start` on and wrapping, whose lock in `dir` no
/// one holds — and, for the host's step users (`host`), that no process runs as any
/// more once they are killed (a test's claims in a directory of its own kill nothing).
fn claim_in(dir: &Path, first: u32, count: u32, start: u32, host: bool) -> anyhow::Result<Claim> {
    open_lock_dir(dir)?;
    for step in 0..count {
        let uid = first + (start + step) % count;
        let path = dir.join(uid.to_string());
        let (file, created) = open_lock(&path)
            .with_context(|| format!("opening the step-user lock {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                // Nothing of an earlier holder may wait for this one: a process left
                // running (an escaped tool command, a crashed runner's step) would read
                // this attempt's environment through /proc. A lock file made just now
                // had no holder since the host started (they are never removed, and the
                // directory is a tmpfs), so nothing can be left of one.
                let clean = created || released_clean(&lock);
                if host && !clean && !kill_processes_of(uid) {
                    tracing::warn!(
                        uid,
                        "a process of this step user survives SIGKILL; skipping the uid"
                    );
                    continue;
                }
                if host {
                    // Until a release says otherwise, the next claim looks first.
                    mark(&lock, HELD);
                }
                return Ok(Claim {
                    user: StepUser { uid, gid: uid },
                    lock,
                    sweep: host,
                });
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
    bail!("all {count} step users ({first}-{}) are held by running steps on this host: widen --step-users", first + count - 1)
}

/// Opens `path`, a uid's lock file, creating it if need be; `true` when this call made it.
fn open_lock(path: &Path) -> std::io::Result<(File, bool)> {
    let open = |create_new: bool| {
        let mut options = std::fs::OpenOptions::new();
        options
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        if create_new {
            options.create_new(true);
        }
        options.open(path)
    };
    match open(true) {
        Ok(file) => Ok((file, true)),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok((open(false)?, false)),
        Err(err) => Err(err),
    }
}

/// Creates the lock directory, or checks the existing one: a directory (not a link) of
/// this process's user that no one else may write to — otherwise anyone could hold or
/// fake claims.
fn open_lock_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("creating the step-user locks {}", dir.display()))
        }
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        bail!(
            "{} must be a directory of uid {me} that no one else can write to; remove it \
             (it holds only lock files) and start again",
            dir.display()
        );
    }
    Ok(())
}

/// Makes `path` and everything below it (symbolic links themselves, never their targets)
/// owned by `user`, children before their directory and `path` last (see the module doc:
/// nothing below `path` is reachable by a step user until the walk is over). `path` must
/// be a directory of this process's user that no one else can enter. Blocking.
pub fn hand_over(path: &Path, user: StepUser) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        bail!(
            "{} must be a private directory of uid {me} before it is handed over",
            path.display()
        );
    }
    for entry in walkdir::WalkDir::new(path)
        .follow_links(false)
        .contents_first(true)
    {
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
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn lock_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    /// A process of `uid` (real, effective and saved) that ignores every signal it may
    /// and double-forks out of reach of its parent: `setsid`, a cleared environment.
    fn leave_a_process_of(uid: u32) -> i32 {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new("/bin/bash")
            .args([
                "-c",
                "(trap '' HUP TERM INT; setsid /usr/bin/env -i /bin/sleep 60 \
                  </dev/null >/dev/null 2>&1 & echo $!)",
            ])
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    #[test]
    fn a_status_names_its_real_effective_and_saved_uid_unless_a_zombie() {
        let status = "Name:\tx\nState:\tS (sleeping)\nUid:\t0\t4000\t5000\t0\n";
        assert!(status_holds_uid(status, 4000));
        assert!(status_holds_uid(status, 5000));
        assert!(!status_holds_uid(status, 6000));
        let zombie = "State:\tZ (zombie)\nUid:\t4000\t4000\t4000\t4000\n";
        assert!(!status_holds_uid(zombie, 4000));
    }

    /// The uid comes back only once nothing of its last holder runs: a survivor left
    /// before a claim is killed when it is taken, one left during it when it is released.
    #[test]
    fn no_process_of_a_uid_survives_its_claim_or_release() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let uid = 3_999_031;
        let dir = lock_dir();
        // An earlier holder's lock, never released clean (it crashed, say).
        std::fs::write(dir.path().join(uid.to_string()), "").unwrap();
        let before = leave_a_process_of(uid);
        assert!(processes_of(uid).contains(&before));
        let claim = claim_in(dir.path(), uid, 1, 0, true).unwrap();
        assert_eq!(processes_of(uid), Vec::<i32>::new());
        // A process of the uid outside every step's cgroup exists only after a step that
        // ended without an emptied cgroup: that step is noted, and the release looks.
        crate::cgroup_state::note_uncontained();
        let during = leave_a_process_of(uid);
        assert!(processes_of(uid).contains(&during));
        drop(claim);
        assert_eq!(processes_of(uid), Vec::<i32>::new());
    }

    /// A release with nothing of the uid left marks its lock clean, and only then may the
    /// next claim skip the scan; a holder that never released (crashed) leaves it held.
    #[test]
    fn the_lock_says_whether_its_last_holder_released_the_uid_clean() {
        let dir = lock_dir();
        let path = dir.path().join("7100");
        std::fs::write(&path, "").unwrap();
        let file = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        assert!(!released_clean(&file()), "a new lock file is not clean");
        mark(&file(), HELD);
        assert!(
            !released_clean(&file()),
            "a held (or crashed) claim is not clean"
        );
        mark(&file(), RELEASED_CLEAN);
        assert!(released_clean(&file()));
        if nix::unistd::geteuid().is_root() {
            // A host claim marks its lock held while it lasts; its release marks it clean
            // (or leaves it held when a process of the uid survives).
            let claim = claim_in(dir.path(), 7100, 1, 0, true).unwrap();
            assert!(!released_clean(&file()));
            drop(claim);
            assert!(released_clean(&file()));
        }
    }

    #[test]
    fn a_range_never_contains_root() {
        assert!(StepUsers::range(0, 10).is_err());
        assert!(StepUsers::range(10, 9).is_err());
        assert!(StepUsers::range(5000, 5009).is_ok());
        assert!(StepUsers::Same.claim().unwrap().is_none());
    }

    #[test]
    fn live_claims_never_share_a_uid_and_a_dropped_one_is_free_again() {
        let dir = lock_dir();
        // The same start for every claim: each still gets its own uid.
        let a = claim_in(dir.path(), 5000, 3, 1, false).unwrap();
        let b = claim_in(dir.path(), 5000, 3, 1, false).unwrap();
        let c = claim_in(dir.path(), 5000, 3, 1, false).unwrap();
        let mut uids = vec![a.user().uid, b.user().uid, c.user().uid];
        uids.sort();
        assert_eq!(uids, vec![5000, 5001, 5002]);
        assert_eq!(a.user().uid, a.user().gid);
        let full = claim_in(dir.path(), 5000, 3, 0, false).unwrap_err();
        assert!(format!("{full:#}").contains("all 3 step users"), "{full:#}");
        let freed = b.user().uid;
        drop(b);
        assert_eq!(
            claim_in(dir.path(), 5000, 3, 0, false).unwrap().user().uid,
            freed
        );
    }

    #[test]
    fn a_claim_held_by_another_process_is_respected() {
        let dir = lock_dir();
        // flock(1) in another process holds uid 7000's lock while we claim.
        let lock = dir.path().join("7000");
        std::fs::write(&lock, "").unwrap();
        let mut holder = std::process::Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["sleep", "30"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let claim = loop {
            let claim = claim_in(dir.path(), 7000, 2, 0, false).unwrap();
            if claim.user().uid == 7001 || std::time::Instant::now() > deadline {
                break claim;
            }
            // flock(1) has not taken it yet.
            drop(claim);
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert_eq!(claim.user().uid, 7001);
    }

    #[test]
    fn a_lock_dir_others_can_write_or_a_link_is_refused() {
        let dir = lock_dir();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = claim_in(&open, 5000, 2, 0, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("no one else can write"),
            "{err:#}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(claim_in(&link, 5000, 2, 0, false).is_err());
        // A link planted where a lock file goes is not followed.
        let locks = dir.path().join("locks");
        std::fs::create_dir(&locks).unwrap();
        std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, locks.join("5000")).unwrap();
        assert!(claim_in(&locks, 5000, 1, 0, false).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn hand_over_gives_children_before_parents_and_never_follows_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown to another user needs root");
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let kept = outside.path().join("kept");
        std::fs::write(&kept, "x").unwrap();
        let top = lock_dir();
        let attempt = top.path().join("attempt");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&attempt)
            .unwrap();
        std::fs::create_dir_all(attempt.join("a/b")).unwrap();
        std::fs::write(attempt.join("a/b/file"), "x").unwrap();
        std::os::unix::fs::symlink(&kept, attempt.join("a/link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), attempt.join("dirlink")).unwrap();
        let user = StepUser {
            uid: 4242,
            gid: 4242,
        };
        hand_over(&attempt, user).unwrap();
        for path in ["", "a", "a/b", "a/b/file", "a/link", "dirlink"] {
            let meta = std::fs::symlink_metadata(attempt.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4242), "{path}");
        }
        assert_eq!(
            std::fs::metadata(&kept).unwrap().uid(),
            0,
            "a link's target"
        );
        assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
        // Once handed over (no longer root's), the directory is not walked again.
        assert!(hand_over(&attempt, user).is_err());
    }

    #[test]
    fn hand_over_refuses_a_directory_others_can_enter() {
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let err = hand_over(top.path(), StepUser { uid: me, gid: me }).unwrap_err();
        assert!(format!("{err:#}").contains("private directory"), "{err:#}");
    }

    #[test]
    fn the_ipc_objects_of_a_uid_are_found_by_owner_or_creator() {
        let text =
            "       key      shmid perms   size  cpid  lpid nattch   uid   gid  cuid  cgid\n\
                    0 11 666 4096 1 1 0 5000 5000 5000 5000\n\
                    0 12 666 4096 1 1 0 0 0 5000 5000\n\
                    0 13 666 4096 1 1 0 5001 5001 5001 5001\n";
        assert_eq!(ipc_ids_of(text, 5000), ["11", "12"]);
        let sem = "       key      semid perms      nsems   uid   gid  cuid  cgid\n\
                   0 7 600 1 5001 5001 5001 5001\n";
        assert_eq!(ipc_ids_of(sem, 5001), ["7"]);
        assert!(ipc_ids_of("", 5001).is_empty());
    }

    /// Where a step could use the host's places (no mount namespace), nothing of its uid
    /// is left there once the claim is released: not a set-uid file, not a directory of
    /// it, not a file of it in another user's open directory; another user's files stay.
    #[test]
    fn the_sweep_removes_only_what_the_uid_owns_in_a_shared_place() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: files of other users need root");
            return;
        }
        let place = tempfile::tempdir().unwrap();
        let (me, other) = (3_999_031, 3_999_032);
        let file = |path: &Path, uid: u32, mode: u32| {
            std::fs::write(path, "x").unwrap();
            std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let dir = |path: &Path, uid: u32, mode: u32| {
            std::fs::create_dir(path).unwrap();
            std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let p = place.path();
        file(&p.join("suid-bash"), me, 0o4755);
        dir(&p.join("mine"), me, 0o755);
        file(&p.join("mine/inner"), me, 0o644);
        dir(&p.join("open"), other, 0o1777);
        file(&p.join("open/planted"), me, 0o644);
        file(&p.join("open/theirs"), other, 0o644);
        dir(&p.join("closed"), other, 0o755);
        file(&p.join("closed/theirs"), other, 0o644);
        std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap();
        std::os::unix::fs::lchown(p.join("link"), Some(me), Some(me)).unwrap();
        sweep_dir(p, me, 0);
        for gone in ["suid-bash", "mine", "open/planted", "link"] {
            assert!(
                std::fs::symlink_metadata(p.join(gone)).is_err(),
                "{gone} is left"
            );
        }
        for kept in ["open/theirs", "closed/theirs"] {
            assert!(p.join(kept).exists(), "{kept} was removed");
        }
        assert!(Path::new("/etc/passwd").exists());
    }

    #[test]
    fn usable_by_others_follows_every_directory() {
        assert!(usable_by_others(Path::new("/bin/sh")));
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!usable_by_others(&tool), "a 0700 directory hides it");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(usable_by_others(&tool));
    }
}
