//! The clone itself: a stack for the child, every signal blocked across the call, and
//! `clone3` with `CLONE_INTO_CGROUP` where it can be used, `clone` otherwise.
//!
//! Why `clone3`: joining a cgroup by writing `cgroup.procs` takes the kernel's
//! threadgroup lock for writing, which waits for an RCU grace period whenever no
//! migration happened in the last one — about 17 ms on these machines, for the first step
//! after any pause. A child born into its cgroup (`CLONE_INTO_CGROUP`) takes that lock
//! only for reading. glibc exports no `clone3` taking an entry point, so it is called here
//! as glibc does internally (a few instructions, x86-64 only); elsewhere, and where the
//! kernel or a seccomp filter refuses it, the child joins by writing `cgroup.procs`.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::child::{child_main, ChildArgs};

/// The child runs on this much stack until `execve` (a few system calls), above one
/// guard page.
const STACK_BYTES: usize = 64 * 1024;
const GUARD_BYTES: usize = 4096;

/// Set once `clone3` was refused (no such call, a seccomp filter, an older `clone_args`).
static CLONE3_REFUSED: AtomicBool = AtomicBool::new(false);

/// How the child is cloned.
pub(super) struct CloneHow<'a> {
    /// Share the runner's memory (`CLONE_VM`); otherwise the child gets a copy, as after
    /// `fork`.
    pub share_memory: bool,
    /// The step's cgroup directory, to be born into where `clone3` can.
    pub cgroup_dir: Option<&'a OwnedFd>,
}

/// Clones the child; returns once it has exec'd or exited (`CLONE_VFORK`), with its pid,
/// its pidfd (`None` on a kernel before 5.2) and whether it was born into its cgroup
/// (else `args.cgroup_procs` was written by the child, if set).
pub(super) fn clone_child(
    args: &mut ChildArgs,
    how: &CloneHow<'_>,
) -> io::Result<(i32, Option<OwnedFd>, bool)> {
    let stack = Stack::new()?;
    let mut flags = libc::CLONE_VFORK | libc::CLONE_PIDFD;
    if how.share_memory {
        flags |= libc::CLONE_VM;
    }
    if let Some(cgroup) = how.cgroup_dir {
        if !CLONE3_REFUSED.load(Ordering::Relaxed) {
            let procs = std::mem::replace(&mut args.cgroup_procs, std::ptr::null());
            match clone3(args, flags, &stack, cgroup) {
                Ok((pid, pidfd)) => return Ok((pid, pidfd, true)),
                Err(err) => {
                    args.cgroup_procs = procs;
                    let refused = [libc::ENOSYS, libc::EPERM, libc::E2BIG, libc::EINVAL];
                    if refused.contains(&err.raw_os_error().unwrap_or(0)) {
                        tracing::debug!(%err, "clone3 refused; joining cgroups by cgroup.procs");
                        CLONE3_REFUSED.store(true, Ordering::Relaxed);
                    } else {
                        tracing::debug!(%err, "clone3 into the step's cgroup failed");
                    }
                }
            }
        }
    }
    let mut with_pidfd = true;
    loop {
        let mut pidfd: c_int = -1;
        let flags = if with_pidfd {
            flags
        } else {
            flags & !libc::CLONE_PIDFD
        };
        let pid = with_signals_blocked(|| {
            // SAFETY: `child_main` runs on the dedicated `stack` with `args`, which outlive
            // the child's use of them (the call returns only once the child has exec'd or
            // exited: CLONE_VFORK); `pidfd` receives the descriptor for CLONE_PIDFD.
            unsafe {
                libc::clone(
                    child_main,
                    stack.top(),
                    flags | libc::SIGCHLD,
                    std::ptr::from_mut(args).cast::<c_void>(),
                    std::ptr::from_mut(&mut pidfd),
                )
            }
        });
        match pid {
            // A kernel before 5.2 has no CLONE_PIDFD: the exit is then waited for by pid.
            Err(err) if with_pidfd && err.raw_os_error() == Some(libc::EINVAL) => {
                with_pidfd = false;
            }
            Err(err) => return Err(io::Error::new(err.kind(), format!("clone: {err}"))),
            // SAFETY: the kernel just returned this descriptor to us alone.
            Ok(pid) => {
                let pidfd =
                    (with_pidfd && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
                return Ok((pid, pidfd, false));
            }
        }
    }
}

/// Runs `call` (a clone) with every signal blocked in this thread, so no handler of the
/// runner runs in the child before it has reset them; `Err` with `errno` when `call`
/// returns a negative value.
fn with_signals_blocked(call: impl FnOnce() -> c_int) -> io::Result<i32> {
    // SAFETY: valid signal sets, restored before returning.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let result = call();
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if result < 0 {
            Err(error)
        } else {
            Ok(result)
        }
    }
}

/// `CLONE_INTO_CGROUP`, a `clone3`-only flag above 32 bits.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (`CLONE_ARGS_SIZE_VER2`, with `cgroup`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3` into `cgroup` running `child_main(args)` on `stack`.
#[cfg(target_arch = "x86_64")]
fn clone3(
    args: &mut ChildArgs,
    flags: c_int,
    stack: &Stack,
    cgroup: &OwnedFd,
) -> io::Result<(i32, Option<OwnedFd>)> {
    use std::os::fd::AsRawFd;
    let mut pidfd: c_int = -1;
    let clone_args = CloneArgs {
        flags: u64::from(flags as u32) | CLONE_INTO_CGROUP,
        pidfd: std::ptr::from_mut(&mut pidfd) as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base() as u64,
        stack_size: STACK_BYTES as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    let arg = std::ptr::from_mut(args).cast::<c_void>();
    let entry: extern "C" fn(*mut c_void) -> c_int = child_main;
    let mut ret: i64 = libc::SYS_clone3;
    with_signals_blocked(|| {
        // SAFETY: as glibc's `__clone3`: the parent gets the child's pid or `-errno` in
        // `rax`; the child (rax = 0) starts on the new stack, where it calls
        // `child_main(arg)` (r8, r9 survive `syscall`) and exits with its result, never
        // returning here. `clone_args`, `args` and `stack` outlive the child's use of them
        // (CLONE_VFORK); the parent's own stack is not touched (`nostack`).
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                // The child's outermost frame: no frame pointer into the parent's stack.
                "xor ebp, ebp",
                "mov rdi, r8",
                "call r9",
                "mov edi, eax",
                "mov eax, {exit}",
                "syscall",
                "ud2",
                "2:",
                exit = const libc::SYS_exit,
                inlateout("rax") ret,
                in("rdi") std::ptr::from_ref(&clone_args),
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r8") arg,
                in("r9") entry,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        0
    })?;
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok((ret as i32, pidfd))
}

#[cfg(not(target_arch = "x86_64"))]
fn clone3(
    _args: &mut ChildArgs,
    _flags: c_int,
    _stack: &Stack,
    _cgroup: &OwnedFd,
) -> io::Result<(i32, Option<OwnedFd>)> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// The child's stack: an anonymous mapping with a guard page below it, unmapped on drop.
struct Stack {
    mapping: *mut c_void,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: an anonymous private mapping, checked for failure; its lowest page is
        // made inaccessible, so an overflow faults instead of writing the runner's memory.
        unsafe {
            let mapping = libc::mmap(
                std::ptr::null_mut(),
                GUARD_BYTES + STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if mapping == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Stack { mapping };
            if libc::mprotect(mapping, GUARD_BYTES, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The lowest usable address (above the guard page).
    fn base(&self) -> *mut c_void {
        self.mapping.cast::<u8>().wrapping_add(GUARD_BYTES).cast()
    }

    /// Stacks grow down on every architecture Plue runs on.
    fn top(&self) -> *mut c_void {
        self.base().cast::<u8>().wrapping_add(STACK_BYTES).cast()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used (the child has exec'd or exited).
        unsafe {
            libc::munmap(self.mapping, GUARD_BYTES + STACK_BYTES);
        }
    }
}
