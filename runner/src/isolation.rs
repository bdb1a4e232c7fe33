//! What a step process sees of the machine, set up in the child between `fork` and `exec`.
//!
//! A root runner gives every step process, before it drops to the attempt's user:
//! - its own mount namespace (propagation private, so nothing leaks back to the host) with
//!   a fresh `/proc` mounted `hidepid=invisible`: the step sees only its own user's
//!   processes — not the engine's or the runner's command lines, not a concurrent step's
//!   pids, whatever their owners passed on argv;
//! - then the attempt's gid, no supplementary groups, and the attempt's uid.
//!
//! Where the kernel refuses a namespace (no `CAP_SYS_ADMIN`, e.g. a Kubernetes runner pod,
//! whose pod is the step's alone anyway) the process keeps the host's view; dropping to the
//! step's user never fails silently: a failure there fails the spawn.
//!
//! `unsafe` here (and in `containment`'s own `pre_exec` hook, which joins the step's
//! cgroup and session): `pre_exec` runs in the forked child, where only async-signal-safe
//! calls are allowed. Everything the closure needs is
//! allocated before the fork; it makes raw syscalls only.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;

use crate::step_user::StepUser;

/// Arranges for `command`'s child to enter a private view of `/proc` (where allowed) and
/// then run as `user`.
pub fn confine(command: &mut tokio::process::Command, user: StepUser) {
    let proc_source = CString::new("proc").expect("no NUL");
    let proc_target = CString::new("/proc").expect("no NUL");
    let proc_options = CString::new("hidepid=invisible").expect("no NUL");
    let root = CString::new("/").expect("no NUL");
    let hook = move || -> io::Result<()> {
        // SAFETY (for the block below): only raw syscalls on pointers to C strings that
        // were allocated before the fork and outlive this closure.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) == 0 {
                let private = libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0;
                if private {
                    // Best effort: an old kernel without `hidepid=invisible` keeps /proc.
                    let _ = libc::mount(
                        proc_source.as_ptr(),
                        proc_target.as_ptr(),
                        proc_source.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        proc_options.as_ptr().cast(),
                    );
                }
            }
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(user.gid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setuid(user.uid) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe raw syscalls (see above).
    unsafe {
        command.pre_exec(hook);
    }
}
