//! A fixed address layout for the evaluator: the zygote runs with address-space
//! randomisation off, so identity hashes (`set()` of functions iterates by address) and
//! anything else derived from an address are the same in every process.
//!
//! The pool asks for the flag in the child it forks, before `execve` ([`set_before_exec`]),
//! so a worker normally starts with it. Applied again first thing in a worker process:
//! when `ADDR_NO_RANDOMIZE` is not yet set (a worker started some other way), set it and
//! re-execute `/proc/self/exe` with the same arguments (the flag takes effect at
//! `execve`). Where the kernel or a container's seccomp profile refuses the flag, the
//! worker goes on with a randomised layout: the host types are value-hashed or unhashable
//! and `id`/`hash` are absent either way, so this is the second line, not the first.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use nix::sys::personality::{self, Persona};

/// Asks for the fixed layout in the child `command` starts, before its `execve`: the worker
/// then finds the flag set and need not execute itself a second time (one start-up of this
/// binary less, about 4 ms here, on the path of every `plue run`). Where the kernel
/// refuses the flag, the worker tries again itself, as it always did.
#[allow(unsafe_code)]
pub(crate) fn set_before_exec(command: &mut tokio::process::Command) {
    let Ok(current) = personality::get() else {
        return;
    };
    let wanted = (current | Persona::ADDR_NO_RANDOMIZE).bits() as libc::c_ulong;
    // SAFETY: the hook runs in the forked child before `execve` and makes one system call
    // (async-signal-safe), touching no memory but its own copy of `wanted`.
    unsafe {
        command.pre_exec(move || {
            libc::personality(wanted);
            Ok(())
        });
    }
}

/// Re-executes this process with a fixed layout if it can; returns if it cannot or need not.
pub(crate) fn fix_address_layout() {
    let Ok(current) = personality::get() else {
        return;
    };
    if current.contains(Persona::ADDR_NO_RANDOMIZE) {
        return;
    }
    let Ok(set) = personality::set(current | Persona::ADDR_NO_RANDOMIZE) else {
        return;
    };
    // `set` returns the previous persona; make sure the flag really stuck before exec, or
    // the re-executed process would try again forever.
    let _ = set;
    if !personality::get().is_ok_and(|p| p.contains(Persona::ADDR_NO_RANDOMIZE)) {
        return;
    }
    let args: Option<Vec<CString>> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let Some(args) = args else {
        return;
    };
    // Only returns on failure; the worker then simply keeps its randomised layout.
    let _ = nix::unistd::execv(c"/proc/self/exe", &args);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flag as `/proc/<pid>/personality` shows it (hexadecimal).
    const ADDR_NO_RANDOMIZE: u64 = 0x0040000;

    #[tokio::test]
    async fn a_child_started_with_the_hook_runs_with_a_fixed_layout_from_its_first_exec() {
        let mut command = tokio::process::Command::new("cat");
        command.arg("/proc/self/personality");
        set_before_exec(&mut command);
        let out = command.output().await.expect("cat runs");
        let shown = String::from_utf8(out.stdout).unwrap();
        let persona = u64::from_str_radix(shown.trim(), 16).expect("a hexadecimal persona");
        // A kernel or seccomp profile that refuses the flag leaves it off; nothing to check.
        if personality::set(personality::get().unwrap()).is_ok() {
            assert_ne!(persona & ADDR_NO_RANDOMIZE, 0, "persona {shown}");
        }
        // This process keeps its randomised layout: the hook ran in the child only.
        assert!(!personality::get()
            .unwrap()
            .contains(Persona::ADDR_NO_RANDOMIZE));
    }
}
