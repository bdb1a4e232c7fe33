//! The cloned child's side of a launch: its set-up with raw system calls, then `execve`.
//! Everything here runs in a child that may share the runner's memory (`CLONE_VM`); see
//! the invariants in the parent module's doc. A failure is reported as `(stage, errno)`,
//! eight bytes on the report pipe, and the child exits with 127. A confined child that
//! could not make its mounts or IPC private (the host refused it the namespaces) says so
//! first, as `(SHARED_REPORT, bits)`, and carries on as before such namespaces existed.
//!
//! Why one file past ~600 lines: everything the child runs between the clone and `execve`,
//! raw system calls in memory it may share with the runner, is read in one place against
//! the one list of invariants in the parent module's doc.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::RawFd;

/// The steps of the child's set-up, named in a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(super) enum Stage {
    Signals = 1,
    Session,
    Groups,
    Gid,
    Uid,
    Cwd,
    Stdio,
    Exec,
    Rooms,
    NoNewPrivs,
    Seccomp,
    Network,
    Sockets,
}

/// The stage number of the report a confined child makes, and goes on, when its mounts or
/// IPC stay the host's (`errno`: `rooms::SHARED_MOUNTS | rooms::SHARED_IPC`).
pub(super) const SHARED_REPORT: i32 = 64;

impl Stage {
    /// What the stage `raw` (a reported number) was doing.
    pub(super) fn describe(raw: i32) -> &'static str {
        match raw {
            1 => "resetting signals",
            2 => "starting a session",
            3 => "dropping supplementary groups",
            4 => "setting the step's gid",
            5 => "setting the step's uid",
            6 => "entering the working directory",
            7 => "setting up stdin, stdout and stderr",
            9 => "mounting the step's private /tmp, /var/tmp and /dev/shm",
            10 => "setting no_new_privs",
            11 => "installing the step's seccomp filter",
            12 => "joining the step's network namespace",
            13 => {
                "hiding the host's socket directories (/run, ...) from a step without the \
                 host's network"
            }
            _ => "executing",
        }
    }
}

/// Everything the child reads, built by the parent before the clone.
#[repr(C)]
pub(super) struct ChildArgs {
    /// Null-terminated: the paths to try, in order (one for a program given as a path).
    pub candidates: *const *const c_char,
    pub argv: *const *const c_char,
    pub envp: *const *const c_char,
    pub cwd: *const c_char,
    /// Become the child's 0, 1 and 2; all are above 2 (see `above_stdio`).
    pub stdio: [RawFd; 3],
    /// Where a failure is reported (close-on-exec, kept open until `execve`).
    pub report: RawFd,
    /// stdin is a terminal to make the controlling terminal of the new session (`TIOCSCTTY`).
    pub controlling_terminal: bool,
    /// `<cgroup>/cgroup.procs` to write, or null (no cgroup, or joined by the clone).
    pub cgroup_procs: *const c_char,
    /// The step's network namespace (`crate::network`) to join, or -1: the host's.
    pub netns: c_int,
    /// A `resolv.conf` bound read-only over `/etc/resolv.conf` (an allow-list's), or null.
    pub resolv_conf: *const c_char,
    /// Null-terminated: the host's socket directories to hide under an empty read-only
    /// tmpfs (`crate::network::Hidden`); empty without a network namespace.
    pub hide: *const *const c_char,
    /// Null-terminated: directories to make in those tmpfs before they turn read-only.
    pub hide_mkdirs: *const *const c_char,
    /// Null-terminated: empty files to make there.
    pub hide_files: *const *const c_char,
    /// The entry of a hidden directory bound back (it holds the working directory), or null.
    pub hide_keep: *const c_char,
    /// The flags its bind keeps, besides `MS_NOSUID | MS_NODEV`.
    pub hide_keep_flags: libc::c_ulong,
    pub confine: bool,
    /// Null-terminated: the shared places that get a fresh tmpfs (`rooms`), when confined.
    pub places: *const *const c_char,
    /// The tmpfs options of each.
    pub tmpfs_options: *const c_char,
    /// The directory kept from the host (`rooms::Keep`), or null.
    pub keep: *const c_char,
    /// The index in `places` of the place `keep` is in, or -1: bound onto itself.
    pub keep_inside: c_int,
    /// The flags `keep`'s bind keeps, besides `MS_NOSUID | MS_NODEV`.
    pub keep_flags: libc::c_ulong,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// The step's seccomp filter (`seccomp.rs`), installed right before `execve`.
    pub seccomp: *const libc::sock_fprog,
    /// Without `close_range`, descriptors are closed one by one below this bound.
    pub max_fd: c_int,
    pub empty_mask: libc::sigset_t,
}

/// The child's entry point.
pub(super) extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and untouched until this child has
    // exec'd or exited (CLONE_VFORK); every pointer in it is valid.
    unsafe {
        let args = &*arg.cast::<ChildArgs>();
        let stage = set_up_and_exec(args);
        let report: [i32; 2] = [stage as i32, *libc::__errno_location()];
        libc::syscall(
            libc::SYS_write,
            args.report,
            report.as_ptr(),
            std::mem::size_of_val(&report),
        );
        libc::syscall(libc::SYS_exit_group, 127);
        127
    }
}

/// Returns only on failure, with the stage that failed (`errno` says why).
///
/// # Safety
/// Runs in the cloned child only; see the parent module's doc.
unsafe fn set_up_and_exec(args: &ChildArgs) -> Stage {
    // SAFETY: for the block — raw system calls on pointers `ChildArgs` guarantees.
    unsafe {
        // Every disposition back to its default, ignored ones too: a step starts the same
        // however the runner was started (a background job's ignored SIGINT, Rust's
        // ignored SIGPIPE), and no handler of the runner's can run here.
        reset_signal_dispositions();
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
        // The step's network namespace, while its descriptor is still open and the child
        // still privileged. A failure fails the launch: a confined step never runs with
        // the host's network instead.
        if args.netns >= 0 && libc::syscall(libc::SYS_setns, args.netns, libc::CLONE_NEWNET) != 0 {
            return Stage::Network;
        }
        // Descriptors first: nothing of the runner's is open once the uid is the step's.
        for (target, &fd) in args.stdio.iter().enumerate() {
            if libc::syscall(libc::SYS_dup3, fd, target, 0) < 0 {
                return Stage::Stdio;
            }
        }
        // A debug shell's terminal: job control and ^C reach the shell's foreground job.
        // The child leads a fresh session without one, so this cannot steal another's.
        if args.controlling_terminal && libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSCTTY, 0) < 0 {
            return Stage::Stdio;
        }
        close_all_but_stdio_and(args.report, args.max_fd);
        if args.confine {
            // Its own mount and IPC namespaces, where the host allows them (as root: they
            // need CAP_SYS_ADMIN, which a container may lack); an IPC namespace alone may be
            // missing from the kernel.
            let mut shared = 0;
            let mut unshared =
                libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS | libc::CLONE_NEWIPC) == 0;
            if !unshared {
                shared |= crate::rooms::SHARED_IPC;
                unshared = libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) == 0;
            }
            // Nothing is mounted unless it cannot propagate back to the host.
            let private = unshared
                && libc::syscall(
                    libc::SYS_mount,
                    std::ptr::null::<c_char>(),
                    c"/".as_ptr(),
                    std::ptr::null::<c_char>(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null::<c_void>(),
                ) == 0;
            if private {
                // Best effort: an old kernel without `hidepid=invisible` keeps /proc.
                let _ = libc::syscall(
                    libc::SYS_mount,
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"hidepid=invisible".as_ptr(),
                );
                // Before the rooms hide where the runner's `resolv.conf` lies.
                if args.netns >= 0 && !hide_sockets(args) {
                    return Stage::Sockets;
                }
                if !make_rooms(args) {
                    return Stage::Rooms;
                }
            } else if args.netns >= 0 {
                // Without a mount namespace of its own the step would reach the host's
                // daemons (its resolvers among them) through their sockets: it does not
                // start.
                return Stage::Sockets;
            } else {
                shared |= crate::rooms::SHARED_MOUNTS;
            }
            if shared != 0 {
                let report: [i32; 2] = [SHARED_REPORT, shared];
                libc::syscall(
                    libc::SYS_write,
                    args.report,
                    report.as_ptr(),
                    std::mem::size_of_val(&report),
                );
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
        } else if args.netns >= 0 {
            // A network namespace without a step user (a runner with CAP_SYS_ADMIN that is
            // not root): a mount namespace of its own only to hide the host's sockets —
            // their directories, and the host's /tmp and friends under the step's rooms —
            // or the step does not start.
            let hidden = libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) == 0
                && libc::syscall(
                    libc::SYS_mount,
                    std::ptr::null::<c_char>(),
                    c"/".as_ptr(),
                    std::ptr::null::<c_char>(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null::<c_void>(),
                ) == 0
                && hide_sockets(args);
            if !hidden {
                return Stage::Sockets;
            }
            if !make_rooms(args) {
                return Stage::Rooms;
            }
        }
        // As the step's user: a directory it may not enter fails here.
        if libc::syscall(libc::SYS_chdir, args.cwd) != 0 {
            return Stage::Cwd;
        }
        // Every step, confined or not: no set-uid or set-gid bit or file capability of
        // anything it executes raises its privileges (a set-uid `bash` another step left
        // behind runs as the step's own user).
        if libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Stage::NoNewPrivs;
        }
        // After `no_new_privs` (which lets a process without CAP_SYS_ADMIN install one):
        // no keyring, which is per uid and would outlive the step (`seccomp.rs`).
        if libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            args.seccomp,
            0,
            0,
        ) != 0
        {
            return Stage::Seccomp;
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

/// Hides the host's socket directories (`crate::network::Hidden`): an empty tmpfs on each
/// of `args.hide`, the mount points `args.hide_mkdirs` and `args.hide_files` made in them,
/// `args.hide_keep` bound back, each tmpfs then read-only; then, best effort, the runner's
/// `resolv.conf` bound over `/etc/resolv.conf` (an allow-list step's resolver asks the
/// runner's DNS stub; without it DNS has no route at all). False on the first failure of
/// the hiding (`errno` says why).
///
/// # Safety
/// Raw system calls only, on the pointers `ChildArgs` guarantees; in a private mount
/// namespace, before the uid changes.
unsafe fn hide_sockets(args: &ChildArgs) -> bool {
    // SAFETY: for the block — raw system calls on valid, null-terminated strings.
    unsafe {
        // Opened before anything hides them, never through a link (the kept entry).
        let kept = if args.hide_keep.is_null() {
            -1
        } else {
            let fd = libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                args.hide_keep,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return false;
            }
            fd as c_int
        };
        let resolv = if args.resolv_conf.is_null() {
            -1
        } else {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                args.resolv_conf,
                libc::O_PATH | libc::O_CLOEXEC,
            ) as c_int
        };
        let hidden = hide_dirs(args, kept);
        let errno = *libc::__errno_location();
        if hidden && resolv >= 0 {
            let mut source = [0u8; 32];
            proc_fd_path(resolv, &mut source);
            let _ = bind_nosuid(
                source.as_ptr().cast(),
                c"/etc/resolv.conf".as_ptr(),
                libc::MS_RDONLY,
            );
        }
        for fd in [kept, resolv] {
            if fd >= 0 {
                libc::syscall(libc::SYS_close, fd);
            }
        }
        *libc::__errno_location() = errno;
        hidden
    }
}

/// [`hide_sockets`]' mounts, `kept` the descriptor of `args.hide_keep` (or -1).
///
/// # Safety
/// As [`hide_sockets`].
unsafe fn hide_dirs(args: &ChildArgs, kept: c_int) -> bool {
    // SAFETY: for the block — raw system calls on valid, null-terminated strings.
    unsafe {
        let mut next = args.hide;
        while !(*next).is_null() {
            if libc::syscall(
                libc::SYS_mount,
                c"tmpfs".as_ptr(),
                *next,
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=64k,nr_inodes=256,mode=0755".as_ptr(),
            ) != 0
            {
                return false;
            }
            next = next.add(1);
        }
        let mut next = args.hide_mkdirs;
        while !(*next).is_null() {
            if libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, *next, 0o755) != 0
                && *libc::__errno_location() != libc::EEXIST
            {
                return false;
            }
            next = next.add(1);
        }
        let mut next = args.hide_files;
        while !(*next).is_null() {
            if libc::syscall(
                libc::SYS_mknodat,
                libc::AT_FDCWD,
                *next,
                libc::S_IFREG | 0o644,
                0,
            ) != 0
                && *libc::__errno_location() != libc::EEXIST
            {
                return false;
            }
            next = next.add(1);
        }
        if kept >= 0 {
            let mut source = [0u8; 32];
            proc_fd_path(kept, &mut source);
            if !bind_nosuid(source.as_ptr().cast(), args.hide_keep, args.hide_keep_flags) {
                return false;
            }
        }
        let mut next = args.hide;
        while !(*next).is_null() {
            if libc::syscall(
                libc::SYS_mount,
                std::ptr::null::<c_char>(),
                *next,
                std::ptr::null::<c_char>(),
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                std::ptr::null::<c_void>(),
            ) != 0
            {
                return false;
            }
            next = next.add(1);
        }
        true
    }
}

/// Mounts a fresh tmpfs on each of `args.places` and binds `args.keep` back where it was,
/// `nosuid,nodev` (see `rooms`); false on the first failure (`errno` says why).
///
/// # Safety
/// Raw system calls only, on the pointers `ChildArgs` guarantees; in a private mount
/// namespace, before the uid changes.
unsafe fn make_rooms(args: &ChildArgs) -> bool {
    // SAFETY: for the block — raw system calls on valid, null-terminated strings.
    unsafe {
        let mut index: c_int = 0;
        let mut next = args.places;
        while !(*next).is_null() {
            let place = *next;
            let keep_here = !args.keep.is_null() && args.keep_inside == index;
            // Opened before the tmpfs hides it, never through a link.
            let kept = if keep_here {
                let fd = libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    args.keep,
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    return false;
                }
                fd as c_int
            } else {
                -1
            };
            let mut done = libc::syscall(
                libc::SYS_mount,
                c"tmpfs".as_ptr(),
                place,
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                args.tmpfs_options,
            ) == 0;
            if done && keep_here {
                // Its path in the fresh tmpfs, which no one else has seen.
                let mut source = [0u8; 32];
                proc_fd_path(kept, &mut source);
                done = libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, args.keep, 0o755) == 0
                    && bind_nosuid(source.as_ptr().cast(), args.keep, args.keep_flags);
            }
            if kept >= 0 {
                let errno = *libc::__errno_location();
                libc::syscall(libc::SYS_close, kept);
                *libc::__errno_location() = errno;
            }
            if !done {
                return false;
            }
            index += 1;
            next = next.add(1);
        }
        args.keep.is_null()
            || args.keep_inside >= 0
            || bind_nosuid(args.keep, args.keep, args.keep_flags)
    }
}

/// Binds `source` (with what is mounted below it) onto `target`, then makes that bind
/// `nosuid,nodev` keeping `flags`.
///
/// # Safety
/// Raw system calls only, on valid strings.
unsafe fn bind_nosuid(source: *const c_char, target: *const c_char, flags: libc::c_ulong) -> bool {
    // SAFETY: raw system calls on valid strings.
    unsafe {
        let bound = libc::syscall(
            libc::SYS_mount,
            source,
            target,
            std::ptr::null::<c_char>(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null::<c_void>(),
        ) == 0;
        bound
            && libc::syscall(
                libc::SYS_mount,
                std::ptr::null::<c_char>(),
                target,
                std::ptr::null::<c_char>(),
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | flags,
                std::ptr::null::<c_void>(),
            ) == 0
    }
}

/// Writes `/proc/self/fd/<fd>` and a NUL into `buffer`, without allocating.
fn proc_fd_path(fd: c_int, buffer: &mut [u8; 32]) {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buffer[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut value, mut count) = (fd.unsigned_abs(), 0);
    loop {
        digits[count] = b'0' + (value % 10) as u8;
        count += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for (i, digit) in digits[..count].iter().rev().enumerate() {
        buffer[PREFIX.len() + i] = *digit;
    }
    buffer[PREFIX.len() + count] = 0;
}

/// Sets every signal's disposition to its default (all but SIGKILL and SIGSTOP, glibc's
/// internal ones included), with the raw system call: the process's own handler table
/// only. Async-signal-safe: also for a `pre_exec` hook (the warm Python zygote's).
///
/// # Safety
/// Raw system calls only; call where a handler of this process must never run again
/// before `execve` (a freshly cloned or forked child).
pub(crate) unsafe fn reset_signal_dispositions() {
    // The kernel's `struct sigaction`, zeroed: SIG_DFL, no flags, an empty mask, on every
    // architecture's layout (at most four words).
    let default = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a valid, zeroed kernel sigaction; no old action is read.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// Closes every descriptor above 2 except `keep` (the report pipe, close-on-exec): with
/// `close_range`, else one by one below `max_fd` (Linux before 5.9).
///
/// # Safety
/// Raw system calls only.
unsafe fn close_all_but_stdio_and(keep: RawFd, max_fd: c_int) {
    // SAFETY: closing descriptors is always memory-safe.
    unsafe {
        let ranges = [(3, keep - 1), (keep + 1, c_int::MAX)];
        let mut ranged = true;
        for (low, high) in ranges {
            if low <= high && libc::syscall(libc::SYS_close_range, low, high, 0) != 0 {
                ranged = false;
            }
        }
        if !ranged {
            for fd in (3..max_fd).filter(|&fd| fd != keep) {
                libc::syscall(libc::SYS_close, fd);
            }
        }
    }
}
