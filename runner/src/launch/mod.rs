//! Starting a step's leader without copying the runner: `clone(CLONE_VM | CLONE_VFORK)`.
//!
//! A `fork` copies the runner's page tables, and the runner then takes a copy-on-write
//! fault on every page it writes until the child has exec'd: about a millisecond a step
//! beside this (bench/README.md). Like glibc's `posix_spawn`, the child here shares the
//! runner's memory and runs on a stack of its own while the calling thread waits in the
//! kernel until the child has exec'd or died; where it can, it is born into the step's
//! cgroup (`clone.rs`).
//!
//! The child (`child.rs`) sets itself up, then execs, in this order:
//! 1. every signal back to its default, handled or ignored (Rust ignores `SIGPIPE`, a
//!    background job `SIGINT`), then an empty signal mask;
//! 2. its own session (`setsid`), so it and all it starts are outside the runner's;
//! 3. the step's cgroup, unless born into it (a failed join is left to the parent's check),
//!    then the step's network namespace when it has one (`crate::network`: `setns`, as
//!    root; a failure fails the launch, never runs the step on the host's network);
//! 4. stdin (`/dev/null`, or a pipe for an `llm` step's MCP server), stdout and stderr, and
//!    no other descriptor;
//! 5. under a root runner: private mount and IPC namespaces where the host allows them,
//!    there `/proc` mounted `hidepid=invisible` (where the kernel knows it), for a step
//!    with a network namespace an empty read-only tmpfs over each of the host's socket
//!    directories (`/run`, ...: `crate::network::Hidden`, what the step needs in them made
//!    or bound back first; without a private mount namespace such a step does not start;
//!    without a step user it unshares one for this alone) and an allow-list step's
//!    `resolv.conf` bound read-only over `/etc/resolv.conf` (best effort), the step's own
//!    `/tmp`, `/var/tmp`, `/dev/shm`, ... (`rooms.rs`: a fresh tmpfs each, the runner's
//!    work directory bound back `nosuid,nodev`; a step with a network namespace gets them
//!    without a step user too), then the attempt's gid, no supplementary
//!    groups, and its uid — a failure here fails the launch; a host that refuses the
//!    namespaces runs the step with the host's mounts and IPC, and the runner says so once;
//! 6. the working directory (as the step's user), `no_new_privs` (every step, confined or
//!    not: nothing it executes gains privileges through a set-uid or set-gid bit or a file
//!    capability), the step's seccomp filter (`seccomp.rs`: no kernel keyring, which is per
//!    uid and would outlive the step), and `execve` — of each candidate in turn for a bare program name, as
//!    `execvp` tries the entries of the step's `PATH`.
//!
//! A failure is reported on a close-on-exec pipe (the step and `errno`) and the child
//! exits with 127; the parent reaps it and returns the error with the step's name.
//! Without a step user (a runner that is not root) there is no namespace, no private
//! place and no other uid: the step shares the host's `/tmp` and IPC with the runner's
//! user, as the runner says once; `no_new_privs` still holds.
//!
//! Invariants of the child, which may share memory with the running multi-threaded runner:
//! - it allocates nothing, takes no lock and calls nothing that keeps state in libc: raw
//!   system calls only (glibc's `setuid` would broadcast to the runner's threads), and
//!   `sigaction`, a plain wrapper;
//! - every pointer it reads was built before the clone and outlives it: the calling thread
//!   is suspended until the child has exec'd or exited (`CLONE_VFORK`);
//! - every signal is blocked across the clone and the child resets each handler before it
//!   unblocks, so no runner handler ever runs on the child's side;
//! - a child that becomes the step's user shares the runner's memory only where
//!   `fs.suid_dumpable` is 0: its uid change resets the dumpable flag of that memory to
//!   the setting, and anything else would let the step's user trace the runner until
//!   `execve`. Elsewhere it gets a copy, as after `fork`;
//! - on a 64-bit target only: there, `SYS_setresuid` and friends take 32-bit ids (on
//!   32-bit x86 and ARM they are the 16-bit calls, and a uid would be truncated).
//!
//! `Launched` is reaped once, through its pidfd where there is one, so no signal or wait
//! ever reaches a process that reused its pid.
//!
//! Why one file past ~600 lines (a tenth of them this doc): the parent's side of a launch
//! — every pointer the child reads built before the clone, the clone, the report read
//! and the child reaped — is one unsafe sequence, checked against the invariants above in
//! one place; the child's code (`child.rs`), the clone (`clone.rs`) and the seccomp
//! filter (`seccomp.rs`) are beside it.
#![allow(unsafe_code)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("launch: the raw set-id system calls assume a 64-bit target");

use std::ffi::{c_char, c_int, CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(crate) use crate::rooms::Rooms;
use crate::step_user::StepUser;
pub(crate) use child::reset_signal_dispositions;
use child::{ChildArgs, Stage, SHARED_REPORT};
use clone::{clone_child, CloneHow};

mod child;
mod clone;
use crate::rooms;
pub(crate) mod seccomp;

/// What to start, and how.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    /// The executable: a path, or a name looked up on the `PATH` of `env` as `execvp`
    /// does (`program_path` usually resolved it already).
    pub program: &'a Path,
    /// `argv[1..]`; `argv[0]` is `program`.
    pub args: &'a [String],
    /// The whole environment, in order.
    pub env: Vec<(&'a str, &'a str)>,
    pub cwd: &'a Path,
    /// The step's cgroup, which the child is born into or joins before anything else.
    pub cgroup: Option<Cgroup<'a>>,
    /// Under a root runner: the attempt's user, after a private `/proc`.
    pub user: Option<StepUser>,
    /// With a user: whether the shared places are the step's own (every step) or the
    /// host's (see [`Places::Host`]).
    pub places: Places,
    /// The step's network namespace, joined before the uid changes; `None`: the host's.
    pub network: Option<&'a crate::network::Namespace>,
}

/// Which `/tmp`, `/var/tmp`, `/dev/shm`, ... a confined child sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Places {
    /// A fresh tmpfs each, the working directory's entry bound back (`rooms.rs`).
    Own,
    /// The host's, with the private `/proc`, mounts and IPC otherwise alike: only for the
    /// runner's own `git` an `llm` tool runs on a shadow of the workspace's git directory
    /// in the runner's temporary directory (which the room would hide), with a
    /// configuration the runner allow-lists (`git_sandbox`): it runs nothing of the step.
    Host,
}

/// A step's cgroup v2: its directory and its `cgroup.procs`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cgroup<'a> {
    pub dir: &'a Path,
    pub procs: &'a CStr,
}

/// A started leader: its pid, a pidfd where the kernel gives one, and the read ends of
/// its stdout and stderr. Dropped before it was reaped, it is killed and reaped.
#[derive(Debug)]
pub(crate) struct Launched {
    pid: i32,
    pidfd: Option<Arc<OwnedFd>>,
    /// The write end of its stdin (only [`Stdio::Duplex`]).
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Set by whichever wait reaped it (a blocking one may finish after its caller left).
    reaped: Arc<AtomicBool>,
    /// Cloned into its cgroup (`clone3`), rather than joining it itself.
    born_in_cgroup: bool,
}

/// How a reaped leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Launched {
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it was cloned into its cgroup rather than joining it itself.
    pub(crate) fn born_in_cgroup(&self) -> bool {
        self.born_in_cgroup
    }

    /// Reaps the leader: at once when it has exited (the usual call, after its exit was
    /// seen), else waiting on a blocking thread. Cancelling the wait leaves it safe to
    /// drop: the blocking wait records that it reaped.
    pub(crate) async fn wait(&mut self) -> io::Result<Exit> {
        if let Some(exit) = reap(self.pid, self.pidfd.as_deref(), false)? {
            self.reaped.store(true, Ordering::Relaxed);
            return Ok(exit);
        }
        let (pid, pidfd, reaped) = (self.pid, self.pidfd.clone(), self.reaped.clone());
        tokio::task::spawn_blocking(move || {
            let exit = reap(pid, pidfd.as_deref(), true)?;
            reaped.store(true, Ordering::Relaxed);
            exit.ok_or_else(|| io::Error::other("the leader did not exit"))
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.reaped.load(Ordering::Relaxed) {
            return;
        }
        // A pidfd names this process even if it was reaped meanwhile (then: ESRCH).
        // Without one (before Linux 5.2) the step's containment kills it: a raw pid could
        // by now name another process.
        if let Some(pidfd) = &self.pidfd {
            let _ =
                rustix::process::pidfd_send_signal(pidfd.as_fd(), rustix::process::Signal::KILL);
        }
        let (pid, pidfd, reaped) = (self.pid, self.pidfd.clone(), self.reaped.clone());
        let _ = std::thread::Builder::new()
            .name("plue-step-reap".into())
            .spawn(move || {
                if !reaped.load(Ordering::Relaxed) && reap(pid, pidfd.as_deref(), true).is_ok() {
                    reaped.store(true, Ordering::Relaxed);
                }
            });
    }
}

/// Reaps `launched` once it has exited (a launch that failed: it is exiting).
fn reap_blocking(launched: &Launched) -> io::Result<Option<Exit>> {
    reap(launched.pid, launched.pidfd.as_deref(), true)
}

/// Waits for (`block`) or polls the exit of our child `pid` and reaps it: by its pidfd,
/// or by pid where there is none or the kernel cannot wait on one (5.2 and 5.3).
fn reap(pid: i32, pidfd: Option<&OwnedFd>, block: bool) -> io::Result<Option<Exit>> {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    let mut options = WaitIdOptions::EXITED;
    if !block {
        options |= WaitIdOptions::NOHANG;
    }
    let raw = rustix::process::Pid::from_raw(pid).ok_or_else(|| io::Error::other("no such pid"))?;
    let mut pidfd = pidfd;
    loop {
        let id = match pidfd {
            Some(fd) => WaitId::PidFd(fd.as_fd()),
            None => WaitId::Pid(raw),
        };
        match waitid(id, options) {
            Ok(None) => return Ok(None),
            Ok(Some(status)) => {
                let exit = match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    (None, None) => Exit::Code(-1),
                };
                return Ok(Some(exit));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::INVAL) if pidfd.is_some() => pidfd = None,
            Err(err) => return Err(err.into()),
        }
    }
}

/// Where a child's stdin, stdout and stderr go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stdio<'a> {
    /// `/dev/null`, then two ordinary pipes, read whole by the caller (a tool's output).
    Pipes,
    /// `/dev/null`, then a step's two output pipes ([`step_pipe`]): one
    /// packet each, so their reader sees the writes across both in the order they were
    /// made.
    StepPipes,
    /// A pipe on stdin too, then two ordinary pipes: a server the runner speaks with (an
    /// `llm` step's MCP server over stdio, `crate::llm::mcp`).
    Duplex,
    /// The terminal `tty` (a pty's follower side, `crate::agent::debug`), which becomes
    /// the child's controlling terminal in its new session; the [`Launched`] has no pipes.
    Terminal(std::os::fd::BorrowedFd<'a>),
}

/// Starts `launch` on ordinary pipes; see the module doc. Errors name the set-up step
/// that failed. (The runner starts its children through `crate::reaper::launch_step`.)
#[cfg(test)]
pub(crate) fn launch(launch: &Launch<'_>) -> io::Result<Launched> {
    launch_with(launch, Stdio::Pipes)
}

/// [`launch`] with its stdin, stdout and stderr on `stdio`. Confined alike whatever they
/// are.
pub(crate) fn launch_with(launch: &Launch<'_>, stdio: Stdio<'_>) -> io::Result<Launched> {
    // A child that changes its uid resets the dumpable flag of its memory to
    // `fs.suid_dumpable`: shared with the runner, that would make a root runner
    // traceable by the step's user until `execve` unless the setting is 0. Then the child
    // gets a copy instead.
    launch_sharing(
        launch,
        launch.user.is_none() || suid_dumpable_is_off(),
        stdio,
    )
}

/// [`launch`], the child sharing the runner's memory or not, on `stdio`.
fn launch_sharing(
    launch: &Launch<'_>,
    share_memory: bool,
    stdio: Stdio<'_>,
) -> io::Result<Launched> {
    let program = c_string(launch.program.as_os_str())?;
    let candidates_owned = candidates(launch)?;
    let candidates = null_terminated(&candidates_owned);
    let mut argv_owned = Vec::with_capacity(launch.args.len() + 1);
    argv_owned.push(program);
    for arg in launch.args {
        argv_owned.push(c_string(OsStr::new(arg))?);
    }
    let mut env_owned = Vec::with_capacity(launch.env.len());
    for (key, value) in &launch.env {
        if key.is_empty() || key.contains('=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid environment variable name {key:?}"),
            ));
        }
        env_owned.push(c_string(OsStr::new(&format!("{key}={value}")))?);
    }
    let argv = null_terminated(&argv_owned);
    let envp = null_terminated(&env_owned);
    let cwd = c_string(launch.cwd.as_os_str())?;
    let rooms = match (launch.user, launch.places) {
        (Some(_), Places::Own) => Rooms::for_step(launch.cwd),
        (Some(_), Places::Host) => Rooms {
            places: Vec::new(),
            keep: None,
        },
        // The host's /tmp and friends hold sockets too (X11's, a PostgreSQL's built to use
        // /tmp): a step without the host's network gets its own even without a step user.
        (None, Places::Own) if launch.network.is_some() => Rooms::for_step(launch.cwd),
        (None, _) => {
            unconfined_once();
            Rooms {
                places: Vec::new(),
                keep: None,
            }
        }
    };
    let places = null_terminated(&rooms.places);
    // A step without the host's network must not reach the host's daemons through their
    // sockets either (`crate::network::Hidden`).
    let hidden = match launch.network {
        Some(network) => crate::network::Hidden::for_step(
            launch.cwd,
            &rooms.places,
            network.resolv_conf().map(|_| Path::new("/etc/resolv.conf")),
        ),
        None => crate::network::Hidden::default(),
    };
    let hide = null_terminated(&hidden.dirs);
    let hide_mkdirs = null_terminated(&hidden.mkdirs);
    let hide_files = null_terminated(&hidden.files);
    let filter = seccomp::program().map_err(io::Error::other)?;
    let seccomp = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| io::Error::other("seccomp: the step filter is too long"))?,
        filter: filter.as_ptr().cast_mut(),
    };

    let mut stdin_write = None;
    let (stdin, stdout_write, stderr_write, stdout_read, stderr_read) = match stdio {
        Stdio::Duplex => {
            let (stdin_read, write) = pipe()?;
            stdin_write = Some(write);
            let (stdout_read, stdout_write) = pipe()?;
            let (stderr_read, stderr_write) = pipe()?;
            (
                above_stdio(stdin_read)?,
                above_stdio(stdout_write)?,
                above_stdio(stderr_write)?,
                Some(stdout_read),
                Some(stderr_read),
            )
        }
        Stdio::Pipes | Stdio::StepPipes => {
            // As `Stdio::null()`: read and write.
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            let stdin = above_stdio(null.into())?;
            let output_pipe = match stdio {
                Stdio::StepPipes => step_pipe,
                _ => pipe,
            };
            let (stdout_read, stdout_write) = output_pipe()?;
            let (stderr_read, stderr_write) = output_pipe()?;
            (
                stdin,
                above_stdio(stdout_write)?,
                above_stdio(stderr_write)?,
                Some(stdout_read),
                Some(stderr_read),
            )
        }
        Stdio::Terminal(tty) => {
            let on_tty = || above_stdio(tty.try_clone_to_owned()?);
            (on_tty()?, on_tty()?, on_tty()?, None, None)
        }
    };
    let (report_read, report_write) = pipe()?;
    let report_write = above_stdio(report_write)?;
    let cgroup_dir = match &launch.cgroup {
        Some(cgroup) => std::fs::File::open(cgroup.dir).ok().map(OwnedFd::from),
        None => None,
    };

    let mut args = ChildArgs {
        candidates: candidates.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdio: [
            stdin.as_raw_fd(),
            stdout_write.as_raw_fd(),
            stderr_write.as_raw_fd(),
        ],
        report: report_write.as_raw_fd(),
        controlling_terminal: matches!(stdio, Stdio::Terminal(_)),
        cgroup_procs: launch
            .cgroup
            .as_ref()
            .map_or(std::ptr::null(), |cgroup| cgroup.procs.as_ptr()),
        netns: launch.network.map_or(-1, crate::network::Namespace::fd),
        resolv_conf: launch
            .network
            .and_then(crate::network::Namespace::resolv_conf)
            .map_or(std::ptr::null(), CStr::as_ptr),
        hide: hide.as_ptr(),
        hide_mkdirs: hide_mkdirs.as_ptr(),
        hide_files: hide_files.as_ptr(),
        hide_keep: hidden
            .keep
            .as_ref()
            .map_or(std::ptr::null(), |(path, _)| path.as_ptr()),
        hide_keep_flags: hidden.keep.as_ref().map_or(0, |(_, flags)| *flags),
        confine: launch.user.is_some(),
        places: places.as_ptr(),
        tmpfs_options: rooms::TMPFS_OPTIONS.as_ptr(),
        keep: rooms
            .keep
            .as_ref()
            .map_or(std::ptr::null(), |keep| keep.path.as_ptr()),
        keep_inside: rooms
            .keep
            .as_ref()
            .and_then(|keep| keep.inside)
            .and_then(|index| c_int::try_from(index).ok())
            .unwrap_or(-1),
        keep_flags: rooms.keep.as_ref().map_or(0, |keep| keep.flags),
        seccomp: &seccomp,
        uid: launch.user.map_or(0, |user| user.uid),
        gid: launch.user.map_or(0, |user| user.gid),
        max_fd: max_fd(),
        // SAFETY: `sigset_t` is plain data; `sigemptyset` initialises it below.
        empty_mask: unsafe { std::mem::zeroed() },
    };
    // SAFETY: `empty_mask` is a valid `sigset_t` to initialise.
    unsafe {
        libc::sigemptyset(&mut args.empty_mask);
    }
    let how = CloneHow {
        share_memory,
        cgroup_dir: cgroup_dir.as_ref(),
    };
    let (pid, pidfd, born_in_cgroup) = clone_child(&mut args, &how)?;
    if launch.user.is_some() && how.share_memory {
        // The runner stays undumpable whatever the child's uid change did.
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    // The child's ends, which it has dup'ed (or it is gone); then its reports, if any: that
    // its mounts or IPC stay the host's, then a failure.
    drop((stdin, stdout_write, stderr_write, report_write));
    let mut reports = [0u8; 16];
    let mut reported = read_full(&report_read, &mut reports)?;
    let record = |at: usize| {
        let word =
            |from: usize| i32::from_ne_bytes(reports[from..from + 4].try_into().expect("4 bytes"));
        (word(at), word(at + 4))
    };
    let mut report = &reports[..8];
    if launch.user.is_some() {
        if reported >= 8 && record(0).0 == SHARED_REPORT {
            rooms::note_shared(record(0).1);
            report = &reports[8..];
            reported -= 8;
        } else if reported == 0 {
            rooms::note_private();
        }
    }
    let launched = Launched {
        pid,
        pidfd: pidfd.map(Arc::new),
        stdin: stdin_write,
        stdout: stdout_read,
        stderr: stderr_read,
        reaped: Arc::new(AtomicBool::new(false)),
        born_in_cgroup,
    };
    if reported == 0 {
        return Ok(launched);
    }
    let _ = reap_blocking(&launched);
    launched.reaped.store(true, Ordering::Relaxed);
    let stage = i32::from_ne_bytes(report[..4].try_into().expect("4 bytes"));
    let errno = i32::from_ne_bytes(report[4..8].try_into().expect("4 bytes"));
    let err = io::Error::from_raw_os_error(errno);
    Err(io::Error::new(
        err.kind(),
        format!(
            "starting {}: {}: {err}",
            launch.program.display(),
            Stage::describe(stage)
        ),
    ))
}

/// The paths `execvp` would try for `launch.program`: itself when it holds a `/`, else
/// `<entry>/<program>` for each entry of the environment's `PATH` (an empty entry is the
/// working directory; without a `PATH`, glibc's default `/bin:/usr/bin`).
fn candidates(launch: &Launch<'_>) -> io::Result<Vec<CString>> {
    let program = launch.program.as_os_str().as_bytes();
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "an empty program name",
        ));
    }
    if program.contains(&b'/') {
        return Ok(vec![c_string(launch.program.as_os_str())?]);
    }
    let path = launch
        .env
        .iter()
        .rev()
        .find(|(key, _)| *key == "PATH")
        .map_or("/bin:/usr/bin", |(_, value)| *value);
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            c_string(Path::new(dir).join(launch.program).as_os_str())
        })
        .collect()
}

/// Says once that steps run without a step user: as the runner's own user, sharing the
/// host's `/tmp`, `/var/tmp`, `/dev/shm` and IPC (only a root runner can give each step
/// its own).
fn unconfined_once() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::info!(
            "steps run as the runner's own user: they share /tmp, /var/tmp, /dev/shm and IPC \
             with it (a runner that is root gives each step its own user, places and IPC)"
        );
    });
}

/// Whether `fs.suid_dumpable` is 0 now (unreadable counts as not); read at every confined
/// launch, since an operator may change it while the runner runs.
fn suid_dumpable_is_off() -> bool {
    std::fs::read_to_string("/proc/sys/fs/suid_dumpable").is_ok_and(|text| text.trim() == "0")
}

/// The descriptor bound the child closes below without `close_range`: the soft
/// `RLIMIT_NOFILE`, at most 1 << 20.
fn max_fd() -> c_int {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    c_int::try_from(limit.min(1 << 20)).unwrap_or(1024)
}

/// Reads until `buffer` is full or EOF; returns the bytes read.
fn read_full(fd: &OwnedFd, buffer: &mut [u8]) -> io::Result<usize> {
    let mut read = 0;
    while read < buffer.len() {
        match nix::unistd::read(fd, &mut buffer[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Ok(read)
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("nul byte found in {:?}", text.to_string_lossy()),
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// A close-on-exec pipe for a step's stdout or stderr, (read end, write end): packets of
/// one page at most, one held (see the module doc).
pub(crate) fn step_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_DIRECT)?;
    // The kernel rounds it up to one page, the least a pipe holds.
    fcntl(&write, FcntlArg::F_SETPIPE_SZ(1))?;
    Ok((read, write))
}

/// `fd`, moved above 2 if it is one of them (a runner started with a closed stdin), so
/// that the child's `dup3`s onto 0, 1 and 2 never overwrite one another's source.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicating a descriptor we own; the result is ours alone.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

#[cfg(test)]
pub(crate) mod tests;
