//! A fixed address layout for the evaluator: the zygote runs with address-space
//! randomisation off, so identity hashes (`set()` of functions iterates by address) and
//! anything else derived from an address are the same in every process.
//!
//! Applied first thing in a worker process: when `ADDR_NO_RANDOMIZE` is not yet set, set it
//! and re-execute `/proc/self/exe` with the same arguments (the flag takes effect at
//! `execve`). Where the kernel or a container's seccomp profile refuses the flag, the
//! worker goes on with a randomised layout: the host types are value-hashed or unhashable
//! and `id`/`hash` are absent either way, so this is the second line, not the first.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use nix::sys::personality::{self, Persona};

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
