//! Finding and killing what a step left behind, and reaping the zombies that come back to us.
//!
//! A step runs in its own process group, but a process can leave the group (`setsid`,
//! `setpgid`) or be orphaned by a double fork. To catch those:
//! - the runner makes itself a *child subreaper* ([`become_subreaper`]), so orphans are
//!   re-parented to it instead of to init and show up with our pid as their parent;
//! - every step process gets a unique cookie in its environment ([`COOKIE_VAR`]), inherited
//!   by its descendants unless they clear their environment;
//! - [`sweep`] scans `/proc` and SIGKILLs every process that is in the step's group, carries
//!   the step's cookie, or is our child in another session, then reaps the resulting zombies
//!   that are ours.
//!
//! Invariants and assumptions:
//! - The runner itself never spawns anything with `setsid`, so a child of ours in another
//!   session is always an escaped step process. One runner runs one step at a time; a
//!   concurrent step's escaped children could otherwise be swept by the other step.
//! - We only ever `waitpid` a specific pid that is a zombie we can attribute to the step
//!   (never `waitpid(-1)`), so children tokio manages for other work are never reaped here.
//! - A process that clears its environment, leaves the group and stays in our session is
//!   not found; it is still re-parented to us, and its zombie is not reaped by the runner.
//! - Outside Linux there is no `/proc` and no subreaper: [`sweep`] does nothing and only the
//!   process-group kill applies.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// Kills and reaps everything attributable to the step (see the module doc), repeating the
/// scan until nothing is left or `budget` has passed. Blocking: call from `spawn_blocking`.
/// Must run after the step's own leader was reaped, so a zombie in the group is never the
/// child tokio is waiting for.
/// `born_since` is when the step's leader started ([`start_time`] read at spawn): no
/// descendant is older, so older processes are not searched for the cookie.
pub(crate) fn sweep(pgid: Pid, cookie: &str, born_since: Option<u64>, budget: Duration) {
    #[cfg(target_os = "linux")]
    linux::sweep(pgid, cookie, born_since.unwrap_or(0), budget);
    #[cfg(not(target_os = "linux"))]
    let _ = (pgid, cookie, born_since, budget);
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

    pub(super) fn sweep(pgid: Pid, cookie: &str, born_since: u64, budget: Duration) {
        let deadline = Instant::now() + budget;
        let me = getpid().as_raw();
        let my_session = getsid(None).map(Pid::as_raw).unwrap_or(-1);
        let cookie_entry = format!("{}={cookie}", super::COOKIE_VAR);
        // A descendant of the step cannot have started before the step's leader did, so
        // only younger processes need their environment read (the costly part of a scan).
        let mut killed: HashSet<(i32, u64)> = HashSet::new();
        loop {
            let mut pending = false;
            for pid in proc_pids() {
                if pid == me {
                    continue;
                }
                let Some(stat) = read_stat(pid) else { continue };
                let recorded = killed.contains(&(pid, stat.start_time));
                let ours_escaped = stat.ppid == me && stat.session != my_session;
                if matches!(stat.state, b'Z' | b'X') {
                    if stat.ppid == me && (recorded || stat.pgrp == pgid.as_raw() || ours_escaped) {
                        // Our own zombie, attributable to the step: collect it.
                        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                    } else if recorded {
                        // Waiting for its parent to reap it or to be re-parented to us.
                        pending = true;
                    }
                    continue;
                }
                let belongs = recorded
                    || stat.pgrp == pgid.as_raw()
                    || ours_escaped
                    || (stat.start_time >= born_since && has_cookie(pid, &cookie_entry));
                if belongs {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    killed.insert((pid, stat.start_time));
                    pending = true;
                }
            }
            if !pending || Instant::now() >= deadline {
                if pending {
                    tracing::warn!(%pgid, "step processes survived the sweep");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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
