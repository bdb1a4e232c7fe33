//! Layer (b) of the sandbox: what the worker *process* may do, whatever code runs in it.
//!
//! Applied once, after the interpreter has imported everything it will ever need and before
//! the first workflow runs. After [`lock_down`]:
//! - memory: the address space may grow by `memory_bytes` over what the warm worker uses;
//! - CPU: a lifetime budget of [`CPU_LIFETIME_SECS`] (SIGXCPU kills the worker); the
//!   worker retires itself once it has used [`CPU_RETIRE_SECS`], so a live worker always
//!   has more budget left than one evaluation's wall-clock bound. The per-evaluation
//!   bound is the parent's wall clock, which kills the worker;
//! - files: no file can be grown (`RLIMIT_FSIZE` 0), at most a handful of descriptors;
//! - syscalls (seccomp, Linux x86_64/aarch64): no sockets, no exec, no fork or threads, no
//!   signals to other processes, no opening of any file (everything the interpreter needs is
//!   imported before), no creating, renaming or deleting files,
//!   no ptrace, mounts, namespaces or module loading. Denied calls fail with `EPERM`;
//! - the worker dies with its parent (`PR_SET_PDEATHSIG`).
//!
//! The worker's environment is already empty (the pool spawns it with `env_clear`) and
//! its working directory is `/`.

use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};

/// What to apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lockdown {
    pub(crate) memory_bytes: u64,
}

/// Applies every process-level restriction. Irreversible.
pub(crate) fn lock_down(options: Lockdown) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    let baseline = current_address_space().unwrap_or(64 * 1024 * 1024);
    let address_space = baseline.saturating_add(options.memory_bytes);
    set(Resource::RLIMIT_AS, address_space)?;
    set(
        Resource::RLIMIT_CPU,
        cpu_used_seconds().saturating_add(CPU_LIFETIME_SECS),
    )?;
    set(Resource::RLIMIT_FSIZE, 0)?;
    set(Resource::RLIMIT_CORE, 0)?;
    set(Resource::RLIMIT_NOFILE, 16)?;
    set(Resource::RLIMIT_NPROC, 0)?;
    syscall_filter::apply()
}

/// CPU seconds a worker may use in its whole life before the kernel kills it.
pub(crate) const CPU_LIFETIME_SECS: u64 = 120;
/// CPU seconds after which a worker asks to be replaced.
pub(crate) const CPU_RETIRE_SECS: u64 = 60;

/// User plus system CPU seconds this process has used.
pub(crate) fn cpu_used_seconds() -> u64 {
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| (u.user_time().tv_sec() + u.system_time().tv_sec()).max(0) as u64)
        .unwrap_or(0)
}

fn set(resource: Resource, limit: u64) -> Result<(), String> {
    let (_, hard) = getrlimit(resource).map_err(|e| format!("getrlimit {resource:?}: {e}"))?;
    let limit = limit.min(hard);
    setrlimit(resource, limit, limit).map_err(|e| format!("setrlimit {resource:?}: {e}"))
}

/// `VmSize` of this process in bytes, from `/proc/self/status`.
fn current_address_space() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod syscall_filter {
    use std::collections::BTreeMap;

    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    /// Syscalls refused outright.
    const DENIED: &[libc::c_long] = &[
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_clone,
        libc::SYS_clone3,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_fork,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_vfork,
        libc::SYS_kill,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mkdirat,
        libc::SYS_unlinkat,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_linkat,
        libc::SYS_symlinkat,
        libc::SYS_fchmodat,
        libc::SYS_fchownat,
        libc::SYS_mknodat,
        libc::SYS_truncate,
        libc::SYS_ftruncate,
        libc::SYS_fchmod,
        libc::SYS_fchown,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mkdir,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rmdir,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_unlink,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rename,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_link,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_symlink,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chmod,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chown,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_lchown,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_creat,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mknod,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_setrlimit,
        libc::SYS_personality,
    ];

    /// Every way to open a file by path.
    const OPEN_CALLS: &[libc::c_long] = &[
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_open_by_handle_at,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open,
    ];

    pub(super) fn apply() -> Result<(), String> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        // Every module the sandbox offers is imported before lock-down, so nothing needs to
        // open a file afterwards: reading is refused as well as writing.
        for nr in OPEN_CALLS {
            rules.insert(*nr, Vec::new());
        }
        // prlimit64(pid, resource, new, old) with a new limit would undo ours; reading is fine.
        rules.insert(
            libc::SYS_prlimit64,
            vec![SeccompRule::new(vec![SeccompCondition::new(
                2,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::Ne,
                0,
            )
            .map_err(err)?])
            .map_err(err)?],
        );
        let arch = if cfg!(target_arch = "x86_64") {
            TargetArch::x86_64
        } else {
            TargetArch::aarch64
        };
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(err)?;
        let program: BpfProgram = filter.try_into().map_err(err)?;
        seccompiler::apply_filter(&program).map_err(err)
    }

    fn err(e: impl std::fmt::Display) -> String {
        format!("seccomp: {e}")
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod syscall_filter {
    /// No seccomp on this platform: the language layer and the rlimits still apply.
    pub(super) fn apply() -> Result<(), String> {
        Ok(())
    }
}
