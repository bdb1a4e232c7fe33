//! Starting a step's leader without copying the runner: `clone(CLONE_VM | CLONE_VFORK)`.
//!
//! A `fork` copies the runner's page tables, and the runner then takes a copy-on-write
//! fault on every page it writes until the child has exec'd; measured beside a bare spawn
//! that is about a millisecond a step (bench/README.md). Like glibc's `posix_spawn`, the
//! child here shares the runner's memory and runs on a stack of its own while the calling
//! thread waits in the kernel until the child has exec'd or died.
//!
//! The child sets itself up, then execs, in this order:
//! 1. every signal the runner handles back to its default, `SIGPIPE` too (Rust ignores
//!    it), then an empty signal mask;
//! 2. its own session (`setsid`), so it and all it starts are outside the runner's;
//! 3. the step's cgroup, where one is given (a failed join is left to the parent's check);
//! 4. under a root runner: a private mount namespace with `/proc` mounted
//!    `hidepid=invisible` where the kernel allows it, then the attempt's gid, no
//!    supplementary groups, and its uid — a failure here fails the launch;
//! 5. the working directory, stdin/stdout/stderr and no other descriptor, `execve` — of each candidate in turn
//!    for a bare program name, as `execvp` tries the entries of the step's `PATH`.
//!
//! A failure is written into the shared [`ChildArgs`] (the step and `errno`) and the child
//! exits with 127; the parent reaps it and returns the error with the step's name.
//!
//! Invariants of the child, which shares memory with a running multi-threaded process:
//! - it allocates nothing, takes no lock and calls nothing that keeps state in libc: raw
//!   system calls only (glibc's `setuid` would broadcast to the runner's threads), and
//!   `sigaction`, a plain wrapper;
//! - every pointer it reads was built before the clone and outlives it: the calling thread
//!   is suspended until the child has exec'd or exited (`CLONE_VFORK`);
//! - every signal is blocked across the clone and the child resets each handler before it
//!   unblocks, so no runner handler ever runs on the child's side.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::step_user::StepUser;

/// Without `close_range`, the child closes descriptors from 3 up to here.
const FALLBACK_CLOSE_UP_TO: c_int = 4096;

/// The stack the child runs on until `execve`: it makes a few system calls only.
const STACK_BYTES: usize = 64 * 1024;

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
    /// `<cgroup>/cgroup.procs` of the step's cgroup, joined before anything else runs.
    pub cgroup_procs: Option<&'a CString>,
    /// Under a root runner: the attempt's user, after a private `/proc`.
    pub user: Option<StepUser>,
}

/// A started leader: its pid, a pidfd where the kernel gives one, and the read ends of
/// its stdout and stderr. Dropped before it was reaped, it is killed and reaped.
#[derive(Debug)]
pub(crate) struct Launched {
    pid: i32,
    pidfd: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    reaped: bool,
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

    /// Reaps the leader: at once when it has exited (the usual call, after its exit was
    /// seen), else waiting on a blocking thread.
    pub(crate) async fn wait(&mut self) -> io::Result<Exit> {
        let exit = match reap(self.pid, self.pidfd.as_ref(), false)? {
            Some(exit) => exit,
            None => {
                let pid = self.pid;
                let pidfd = match &self.pidfd {
                    Some(fd) => Some(fd.try_clone()?),
                    None => None,
                };
                tokio::task::spawn_blocking(move || reap(pid, pidfd.as_ref(), true))
                    .await
                    .map_err(io::Error::other)??
                    .ok_or_else(|| io::Error::other("the leader did not exit"))?
            }
        };
        self.reaped = true;
        Ok(exit)
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: a plain `kill`; the pid is still ours (not reaped), so it names this child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        let pid = self.pid;
        let pidfd = self.pidfd.take();
        let _ = std::thread::Builder::new()
            .name("plue-step-reap".into())
            .spawn(move || reap(pid, pidfd.as_ref(), true));
    }
}

/// Waits for (`block`) or polls the exit of our child `pid` and reaps it.
fn reap(pid: i32, pidfd: Option<&OwnedFd>, block: bool) -> io::Result<Option<Exit>> {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    let mut options = WaitIdOptions::EXITED;
    if !block {
        options |= WaitIdOptions::NOHANG;
    }
    loop {
        let waited = match pidfd {
            Some(fd) => waitid(WaitId::PidFd(fd.as_fd()), options),
            None => {
                let raw = rustix::process::Pid::from_raw(pid)
                    .ok_or_else(|| io::Error::other("no such pid"))?;
                waitid(WaitId::Pid(raw), options)
            }
        };
        match waited {
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
            Err(err) => return Err(err.into()),
        }
    }
}

/// The steps of the child's set-up, named in a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
enum Stage {
    Signals = 1,
    Session,
    Groups,
    Gid,
    Uid,
    Cwd,
    Stdio,
    Exec,
}

impl Stage {
    fn from_raw(raw: c_int) -> &'static str {
        match raw {
            1 => "resetting signals",
            2 => "starting a session",
            3 => "dropping supplementary groups",
            4 => "setting the step's gid",
            5 => "setting the step's uid",
            6 => "entering the working directory",
            7 => "setting up stdin, stdout and stderr",
            _ => "executing",
        }
    }
}

/// Everything the child reads, built before the clone; `failed`/`errno` it writes.
#[repr(C)]
struct ChildArgs {
    /// Null-terminated: the paths to try, in order (one for a program given as a path).
    candidates: *const *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    /// Become the child's 0, 1 and 2; all are above 2 (see [`above_stdio`]).
    stdio: [RawFd; 3],
    /// Null without a cgroup.
    cgroup_procs: *const c_char,
    confine: c_int,
    uid: libc::uid_t,
    gid: libc::gid_t,
    proc_fs: *const c_char,
    proc_dir: *const c_char,
    proc_options: *const c_char,
    root: *const c_char,
    empty_mask: libc::sigset_t,
    failed: c_int,
    errno: c_int,
}

/// Starts `launch`; see the module doc. Errors name the set-up step that failed.
pub(crate) fn launch(launch: &Launch<'_>) -> io::Result<Launched> {
    let program = c_string(launch.program.as_os_str())?;
    let candidates_owned = candidates(launch)?;
    let candidates = null_terminated(&candidates_owned);
    let mut argv_owned = Vec::with_capacity(launch.args.len() + 1);
    argv_owned.push(program.clone());
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

    let stdin = above_stdio(std::fs::File::open("/dev/null")?.into())?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let (stdout_write, stderr_write) = (above_stdio(stdout_write)?, above_stdio(stderr_write)?);

    let proc_fs = c"proc";
    let proc_dir = c"/proc";
    let proc_options = c"hidepid=invisible";
    let root = c"/";
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
        cgroup_procs: launch
            .cgroup_procs
            .map_or(std::ptr::null(), |path| path.as_ptr()),
        confine: c_int::from(launch.user.is_some()),
        uid: launch.user.map_or(0, |user| user.uid),
        gid: launch.user.map_or(0, |user| user.gid),
        proc_fs: proc_fs.as_ptr(),
        proc_dir: proc_dir.as_ptr(),
        proc_options: proc_options.as_ptr(),
        root: root.as_ptr(),
        // SAFETY: `sigset_t` is plain data; `sigemptyset` initialises it below.
        empty_mask: unsafe { std::mem::zeroed() },
        failed: 0,
        errno: 0,
    };
    // SAFETY: `empty_mask` is a valid `sigset_t` to initialise.
    unsafe {
        libc::sigemptyset(&mut args.empty_mask);
    }

    let stack = Stack::new()?;
    let (pid, pidfd) = clone_child(&mut args, &stack)?;
    drop(stack);
    // The child's ends, which it has dup'ed (or it is gone).
    drop((stdin, stdout_write, stderr_write));
    if args.failed != 0 {
        let _ = reap(pid, pidfd.as_ref(), true);
        let err = io::Error::from_raw_os_error(args.errno);
        return Err(io::Error::new(
            err.kind(),
            format!(
                "starting {}: {}: {err}",
                launch.program.display(),
                Stage::from_raw(args.failed)
            ),
        ));
    }
    Ok(Launched {
        pid,
        pidfd,
        stdout: Some(stdout_read),
        stderr: Some(stderr_read),
        reaped: false,
    })
}

/// Clones the child with every signal blocked; returns once it has exec'd or exited.
fn clone_child(args: &mut ChildArgs, stack: &Stack) -> io::Result<(i32, Option<OwnedFd>)> {
    let mut attempt_pidfd = true;
    loop {
        let mut pidfd: c_int = -1;
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        if attempt_pidfd {
            flags |= libc::CLONE_PIDFD;
        }
        // SAFETY: `all` and `old` are valid signal sets; `clone` runs `child_main` on the
        // dedicated `stack` with `args`, which outlives the child's use of it (the call
        // returns only once the child has exec'd or exited: CLONE_VFORK).
        let pid = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child_main,
                stack.top(),
                flags,
                std::ptr::from_mut(args).cast::<c_void>(),
                std::ptr::from_mut(&mut pidfd),
            );
            let clone_error = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 {
                Err(clone_error)
            } else {
                Ok(pid)
            }
        };
        match pid {
            // A kernel before 5.2 has no CLONE_PIDFD: the exit is then waited for by pid.
            Err(err) if attempt_pidfd && err.raw_os_error() == Some(libc::EINVAL) => {
                attempt_pidfd = false;
            }
            Err(err) => return Err(io::Error::new(err.kind(), format!("clone: {err}"))),
            Ok(pid) => {
                let pidfd = (attempt_pidfd && pidfd >= 0).then(|| {
                    // SAFETY: the kernel just returned this descriptor to us alone.
                    unsafe { OwnedFd::from_raw_fd(pidfd) }
                });
                return Ok((pid, pidfd));
            }
        }
    }
}

/// The child: set-up with raw system calls, then `execve`; see the module doc.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and not touched by the suspended
    // parent until this child has exec'd or exited; every pointer in it is valid.
    unsafe {
        let args = &mut *arg.cast::<ChildArgs>();
        let failed = set_up_and_exec(args);
        args.failed = failed as c_int;
        args.errno = *libc::__errno_location();
        libc::_exit(127)
    }
}

/// Returns only on failure, with the stage that failed (`errno` says why).
///
/// # Safety
/// Runs in the cloned child only; see the module doc.
unsafe fn set_up_and_exec(args: &ChildArgs) -> Stage {
    // SAFETY: for the block — raw system calls on pointers `ChildArgs` guarantees.
    unsafe {
        for signal in 1..=libc::SIGRTMAX() {
            let mut action: libc::sigaction = std::mem::zeroed();
            // Refused for SIGKILL, SIGSTOP and glibc's internal signals: nothing to reset.
            if libc::sigaction(signal, std::ptr::null(), &mut action) != 0 {
                continue;
            }
            let handled =
                action.sa_sigaction != libc::SIG_DFL && action.sa_sigaction != libc::SIG_IGN;
            if handled || signal == libc::SIGPIPE {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(signal, &default, std::ptr::null_mut()) != 0 {
                    return Stage::Signals;
                }
            }
        }
        if libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &args.empty_mask,
            std::ptr::null_mut::<libc::sigset_t>(),
            std::mem::size_of::<u64>(),
        ) != 0
        {
            return Stage::Signals;
        }
        // A fresh child is never a group leader, so this cannot fail with EPERM.
        if libc::syscall(libc::SYS_setsid) < 0 {
            return Stage::Session;
        }
        if !args.cgroup_procs.is_null() {
            let fd = libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                args.cgroup_procs,
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                // A failed join is detected by the parent (`holds`), which falls back.
                let _ = libc::syscall(libc::SYS_write, fd, c"0".as_ptr(), 1);
                libc::syscall(libc::SYS_close, fd);
            }
        }
        if args.confine != 0 {
            if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) == 0 {
                let private = libc::syscall(
                    libc::SYS_mount,
                    std::ptr::null::<c_char>(),
                    args.root,
                    std::ptr::null::<c_char>(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null::<c_void>(),
                ) == 0;
                if private {
                    // Best effort: an old kernel without `hidepid=invisible` keeps /proc.
                    let _ = libc::syscall(
                        libc::SYS_mount,
                        args.proc_fs,
                        args.proc_dir,
                        args.proc_fs,
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        args.proc_options,
                    );
                }
            }
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
                return Stage::Groups;
            }
            if libc::syscall(libc::SYS_setresgid, args.gid, args.gid, args.gid) != 0 {
                return Stage::Gid;
            }
            if libc::syscall(libc::SYS_setresuid, args.uid, args.uid, args.uid) != 0 {
                return Stage::Uid;
            }
        }
        if libc::syscall(libc::SYS_chdir, args.cwd) != 0 {
            return Stage::Cwd;
        }
        for (target, &fd) in args.stdio.iter().enumerate() {
            if libc::syscall(libc::SYS_dup3, fd, target, 0) < 0 {
                return Stage::Stdio;
            }
        }
        // Nothing else: not even a descriptor the runner inherited without close-on-exec
        // from whoever started it (before Linux 5.9, one by one up to a bound).
        if libc::syscall(libc::SYS_close_range, 3, c_int::MAX, 0) != 0 {
            for fd in 3..FALLBACK_CLOSE_UP_TO {
                libc::syscall(libc::SYS_close, fd);
            }
        }
        // As `execvp`: a missing candidate moves on, a refused one is remembered.
        let mut refused = false;
        let mut next = args.candidates;
        while !(*next).is_null() {
            libc::syscall(libc::SYS_execve, *next, args.argv, args.envp);
            match *libc::__errno_location() {
                libc::EACCES => refused = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return Stage::Exec,
            }
            next = next.add(1);
        }
        if refused {
            *libc::__errno_location() = libc::EACCES;
        }
        Stage::Exec
    }
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

/// The child's stack: an anonymous mapping, unmapped on drop.
struct Stack {
    base: *mut c_void,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: an anonymous private mapping; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Stack { base })
    }

    /// Stacks grow down on every architecture Plue runs on.
    fn top(&self) -> *mut c_void {
        self.base.cast::<u8>().wrapping_add(STACK_BYTES).cast()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used (the child has exec'd or exited).
        unsafe {
            libc::munmap(self.base, STACK_BYTES);
        }
    }
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
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe2` writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned these descriptors to us alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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
mod tests;
