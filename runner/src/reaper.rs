//! Finding and killing what a step left behind, and reaping the zombies that come back to us.
//!
//! This is the net under the step's cgroup (see `containment`), and the whole of the
//! containment where the host gives steps no cgroup. A step's leader starts its own session
//! (`launch`), so every process of the step is in a session other than
//! the runner's. To catch the ones that left the step's group or session, double-forked or
//! cleared their environment:
//! - the runner makes itself a *child subreaper* ([`become_subreaper`]), so orphans are
//!   re-parented to it instead of to init and show up with our pid as their parent;
//! - [`sweep`] scans `/proc` and SIGKILLs every process that is in the step's group or
//!   session, carries the step's cookie ([`COOKIE_VAR`], for a process re-parented elsewhere),
//!   or is our child in a session other than ours that no running step can claim (by its
//!   session, the cgroup the runner made for it — recorded at registration, never guessed
//!   from a name a step could give a cgroup of its own — or its cookie; that step kills
//!   it itself); it
//!   repeats (bounded) until none is left, as killing a parent re-parents its children to us,
//!   and reaps the resulting zombies that are ours.
//!
//! Invariants and assumptions:
//! - A session can only be created, never joined: a child of ours in our own session was
//!   started by the runner itself (a tool's `git`, a workspace checkout) and is never swept.
//! - Running steps are registered ([`launch_step`]) under the same lock a sweep holds while
//!   it decides, so a sweep never takes a step leader that was just spawned for one of its
//!   orphans. One runner runs one step at a time; were two running, an orphan that started
//!   a session of its own could not be told apart and would be swept by whichever step ends
//!   first (the cgroup, where there is one, still attributes it exactly).
//! - We only ever `waitpid` a specific pid that is a zombie we can attribute to a finished
//!   step (never `waitpid(-1)`), so children tokio manages for other work are never reaped.
//! - Outside Linux there is no `/proc` and no subreaper: [`sweep`] does nothing and only the
//!   process-group kill applies.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The environment variable carrying a step's cookie. Internal to the runner.
pub(crate) const COOKIE_VAR: &str = "PLUE_STEP_COOKIE";

/// Makes this process a child subreaper, once per process. Failure (an old kernel, a
/// sandbox forbidding `prctl`) is logged and only weakens the sweep.
pub(crate) fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(target_os = "linux")]
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%err, "not a child subreaper; escaped step processes may survive");
        }
    });
}

/// A cookie unique to one step in this runner's lifetime.
pub(crate) fn new_cookie() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos}", std::process::id())
}

/// A running step, as the sweep knows it.
struct Running {
    /// In the environment of its processes (unless one cleared it).
    cookie: String,
    /// The cgroup the runner made for it and its leader is in, as `/proc/<pid>/cgroup`
    /// names it. Only such a cgroup shelters a process from another step's sweep: one a
    /// step made itself (it may, where the runner's cgroup is its user's) does not.
    cgroup: Option<String>,
}

/// The steps running in this process: session id (= leader pid) → what marks them.
static LIVE: Mutex<BTreeMap<i32, Running>> = Mutex::new(BTreeMap::new());

fn live() -> MutexGuard<'static, BTreeMap<i32, Running>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running step's registration; dropping it ends the step for the sweep.
#[derive(Debug)]
pub(crate) struct LiveStep(i32);

impl LiveStep {
    /// The leader's pid.
    pub(crate) fn pid(&self) -> i32 {
        self.0
    }
}

impl Drop for LiveStep {
    fn drop(&mut self) {
        live().remove(&self.0);
    }
}

/// Starts a step's leader (`launch`, which gives it its own session, so its pid is its
/// session id; `cookie` is in its environment; `cgroup` is the path of the step cgroup it
/// starts in, if any; its stdin, stdout and stderr on `stdio`, see
/// [`crate::launch::launch_with`]) and registers it as running, atomically with
/// respect to sweeps.
pub(crate) fn launch_step(
    launch: &crate::launch::Launch<'_>,
    cookie: &str,
    cgroup: Option<&str>,
    stdio: crate::launch::Stdio<'_>,
) -> std::io::Result<(crate::launch::Launched, LiveStep)> {
    let mut live = live();
    let child = crate::launch::launch_with(launch, stdio)?;
    let pid = child.pid();
    live.insert(pid, running(cookie, cgroup));
    Ok((child, LiveStep(pid)))
}

/// Registers a step leader started by someone else (the warm Python zygote forks it, see
/// `process::python_zygote`) as running, like [`launch_step`] does.
pub(crate) fn register_step(pid: i32, cookie: &str, cgroup: Option<&str>) -> LiveStep {
    live().insert(pid, running(cookie, cgroup));
    LiveStep(pid)
}

fn running(cookie: &str, cgroup: Option<&str>) -> Running {
    Running {
        cookie: cookie.to_owned(),
        cgroup: cgroup.map(str::to_owned),
    }
}

/// SIGKILLs the process group `pgid`; a group that is already gone is not an error.
pub(crate) fn kill_group(pgid: Pid) {
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(err) => tracing::warn!(%err, %pgid, "killing the step's process group failed"),
    }
}

/// Blocks until the child `pid` has terminated, *without* reaping it: while it is a zombie
/// its pid (and so its process group id) cannot be reused, so the group can be killed after
/// the leader exited without racing pid reuse.
pub(crate) fn wait_exited_without_reaping(pid: Pid) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::wait::{waitid, Id, WaitPidFlag};
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Kills and reaps everything attributable to the step whose leader was `leader` (its
/// pid, group id and session id; see the module doc), repeating the scan until nothing is
/// left or `budget` has passed. Blocking: call from `spawn_blocking`. Must run after the
/// step's own leader was reaped, so a zombie of the step is never the child tokio is
/// waiting for, and while the step is still registered or after (never before) it ends.
/// `born_since` is when the step's leader started ([`start_time`] read at spawn): no
/// descendant is older, so older processes are not searched for the cookie.
pub(crate) fn sweep(leader: Pid, cookie: &str, born_since: Option<u64>, budget: Duration) {
    #[cfg(target_os = "linux")]
    linux::sweep(
        leader,
        cookie,
        born_since.unwrap_or(0),
        budget,
        linux::Scope::All,
    );
    #[cfg(not(target_os = "linux"))]
    let _ = (leader, cookie, born_since, budget);
}

/// [`sweep`] after the step's cgroup was killed and found empty: nothing of the step can
/// be alive, so only our own children are looked at (the step's zombies re-parented to
/// us), not every process of the host. Falls back to the whole scan where the kernel does
/// not list a process's children.
pub(crate) fn reap_after_cgroup(
    leader: Pid,
    cookie: &str,
    born_since: Option<u64>,
    budget: Duration,
) {
    #[cfg(target_os = "linux")]
    linux::sweep(
        leader,
        cookie,
        born_since.unwrap_or(0),
        budget,
        linux::Scope::OurChildren,
    );
    #[cfg(not(target_os = "linux"))]
    let _ = (leader, cookie, born_since, budget);
}

/// When process `pid` started (clock ticks since boot), if known.
pub(crate) fn start_time(pid: Pid) -> Option<u64> {
    #[cfg(target_os = "linux")]
    return linux::read_stat(pid.as_raw()).map(|stat| stat.start_time);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::{getpid, getsid, Pid};

    /// The fields of `/proc/<pid>/stat` the sweep needs.
    pub(super) struct Stat {
        state: u8,
        ppid: i32,
        pgrp: i32,
        session: i32,
        /// Distinguishes a process from a later one that reused its pid.
        pub(super) start_time: u64,
    }

    /// Which processes a sweep looks at.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Scope {
        /// Every process of `/proc`.
        All,
        /// Our own children only (see [`super::reap_after_cgroup`]).
        OurChildren,
    }

    pub(super) fn sweep(
        leader: Pid,
        cookie: &str,
        born_since: u64,
        budget: Duration,
        scope: Scope,
    ) {
        let deadline = Instant::now() + budget;
        let me = getpid().as_raw();
        let step = leader.as_raw();
        let my_session = getsid(None).map(Pid::as_raw).unwrap_or(-1);
        let cookie_entry = format!("{}={cookie}", super::COOKIE_VAR);
        let mut killed: HashSet<(i32, u64)> = HashSet::new();
        loop {
            let mut pending = false;
            {
                // Held for the whole scan: no step leader is spawned unregistered meanwhile.
                let live = super::live();
                // An orphan of ours from a session other than ours: a finished step left
                // it, unless it is attributable to a running one (its session, the cgroup
                // the runner made for it, or its cookie).
                let in_a_running_steps_cgroup = |pid: i32| {
                    let Some(cgroup) = crate::cgroup_state::cgroup_of(pid) else {
                        return false;
                    };
                    live.iter().any(|(&sid, other)| {
                        sid != step && other.cgroup.as_deref() == Some(cgroup.as_str())
                    })
                };
                let orphan = |pid: i32, stat: &Stat| {
                    stat.ppid == me
                        && stat.session != my_session
                        && (stat.session == step
                            || !(live.contains_key(&stat.session)
                                || in_a_running_steps_cgroup(pid)
                                || live.iter().any(|(&sid, other)| {
                                    sid != step
                                        && has_cookie(
                                            pid,
                                            &format!("{}={}", super::COOKIE_VAR, other.cookie),
                                        )
                                })))
                };
                let candidates = match scope {
                    Scope::OurChildren => our_children(),
                    Scope::All => None,
                }
                .unwrap_or_else(|| proc_pids().collect());
                for pid in candidates {
                    if pid == me {
                        continue;
                    }
                    let Some(stat) = read_stat(pid) else { continue };
                    let recorded = killed.contains(&(pid, stat.start_time));
                    if matches!(stat.state, b'Z' | b'X') {
                        if pid == step {
                            // The leader is its `Launched`'s to reap (or the zygote's), never ours.
                            continue;
                        }
                        if stat.ppid == me && (recorded || orphan(pid, &stat)) {
                            // Our own zombie, attributable to the step: collect it.
                            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                        } else if recorded {
                            // Waiting for its parent to reap it or to be re-parented to us.
                            pending = true;
                        }
                        continue;
                    }
                    // A descendant of the step cannot have started before the step's leader
                    // did, so only younger processes have their environment read (the
                    // costly part of a scan).
                    let belongs = recorded
                        || stat.pgrp == step
                        || stat.session == step
                        || orphan(pid, &stat)
                        || (stat.start_time >= born_since && has_cookie(pid, &cookie_entry));
                    if belongs {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        killed.insert((pid, stat.start_time));
                        pending = true;
                    }
                }
            }
            if !pending || Instant::now() >= deadline {
                if pending {
                    tracing::warn!(%leader, "step processes survived the sweep");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The children of every thread of this process (`/proc/self/task/*/children`), or
    /// `None` when the kernel does not list them.
    fn our_children() -> Option<Vec<i32>> {
        let mut children = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            match std::fs::read_to_string(task.path().join("children")) {
                Ok(text) => children.extend(
                    text.split_ascii_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                ),
                // The thread ended meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && task.path().exists() => {
                    return None
                }
                Err(_) => continue,
            }
        }
        Some(children)
    }

    fn proc_pids() -> impl Iterator<Item = i32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
    }

    pub(super) fn read_stat(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `comm` (field 2) is in parentheses and may itself contain spaces or ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // `fields[0]` is field 3 (state); field N is `fields[N - 3]`.
        Some(Stat {
            state: *fields.first()?.as_bytes().first()?,
            ppid: fields.get(1)?.parse().ok()?,
            pgrp: fields.get(2)?.parse().ok()?,
            session: fields.get(3)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Whether the process's environment holds exactly `entry` (`NAME=value`). Unreadable
    /// environments (other users' processes) count as no.
    fn has_cookie(pid: i32, entry: &str) -> bool {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|&b| b == 0).any(|var| var == entry.as_bytes()))
            .unwrap_or(false)
    }
}
