//! Layer (b) of the sandbox: what the worker *processes* may do, whatever code runs in them.
//!
//! Two stages. [`lock_down`] is applied once to the zygote, after the interpreter has
//! imported everything it will ever need; [`lock_down_evaluation`] is applied by every
//! forked evaluation child on top of it (seccomp filters stack), before it reads its
//! request, so no workflow code ever runs without both. After both:
//! - memory: the address space may grow by `memory_bytes` over what the warm zygote uses;
//! - CPU: a lifetime budget of [`CPU_LIFETIME_SECS`] per process (SIGXCPU kills it); the
//!   zygote retires itself once it has used [`CPU_RETIRE_SECS`]. The per-evaluation bound
//!   is the zygote's wall clock (it kills the child), backed by the pool's;
//! - files: no file can be grown (`RLIMIT_FSIZE` 0), at most a handful of descriptors;
//! - syscalls (seccomp, Linux x86_64/aarch64): no sockets, no exec, no fork, clone or
//!   threads, no signals to other processes, no opening of any file (everything the
//!   interpreter needs is imported before), no creating, renaming or deleting files,
//!   no ptrace, mounts, namespaces or module loading. Denied calls fail with `EPERM`;
//! - the zygote dies with the pool's process and each child with its zygote
//!   (`PR_SET_PDEATHSIG`).
//!
//! The zygote alone may, in addition, `fork` (a `clone` without thread, shared-memory or
//! namespace flags), `kill` (its children, at the time bound) and wait; it runs no
//! workflow code. The environment is already empty (the pool spawns it with `env_clear`)
//! and the working directory is `/`.

use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};

/// What to apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lockdown {
    pub(crate) memory_bytes: u64,
}

/// The evaluation child's seccomp filter, compiled once in the zygote so a child only has
/// to install it.
pub(crate) struct EvaluationFilter(syscall_filter::Program);

impl EvaluationFilter {
    /// The children's filter without locking this process down (for the zygote's tests).
    #[cfg(test)]
    pub(crate) fn compile_for_tests() -> EvaluationFilter {
        EvaluationFilter(syscall_filter::compile(syscall_filter::Stage::Evaluation).unwrap())
    }
}

/// Applies every process-level restriction of the zygote and prepares the children's.
/// Irreversible.
pub(crate) fn lock_down(options: Lockdown) -> Result<EvaluationFilter, String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    // The zygote forks: it must be single-threaded (a thread holding a lock at fork time
    // would leave the child's copy locked forever). Its seccomp filter keeps it so.
    if let Some(threads) = status_field("Threads:") {
        if threads != 1 {
            return Err(format!(
                "the worker has {threads} threads before lock-down; it must have one"
            ));
        }
    }
    let baseline = status_field("VmSize:").map_or(64 * 1024 * 1024, |kib| kib * 1024);
    let address_space = baseline.saturating_add(options.memory_bytes);
    set(Resource::RLIMIT_AS, address_space)?;
    set(
        Resource::RLIMIT_CPU,
        cpu_used_seconds().saturating_add(CPU_LIFETIME_SECS),
    )?;
    set(Resource::RLIMIT_FSIZE, 0)?;
    set(Resource::RLIMIT_CORE, 0)?;
    set(Resource::RLIMIT_NOFILE, 16)?;
    let evaluation = syscall_filter::compile(syscall_filter::Stage::Evaluation)?;
    syscall_filter::install(&syscall_filter::compile(syscall_filter::Stage::Zygote)?)?;
    Ok(EvaluationFilter(evaluation))
}

/// The evaluation child's last step before it reads its request: dies with the zygote,
/// and may no longer fork, clone or signal anything. Irreversible.
pub(crate) fn lock_down_evaluation(
    filter: &EvaluationFilter,
    zygote: nix::unistd::Pid,
) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if nix::unistd::getppid() != zygote {
        return Err("the zygote ended before its child started".into());
    }
    syscall_filter::install(&filter.0)
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

/// The number after `field` in `/proc/self/status` (`VmSize:` is in KiB).
fn status_field(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
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

    /// Which filter to install.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Stage {
        /// Everything in [`DENIED`] but process creation and signals, which the zygote
        /// needs: `clone` only without [`CLONE_REFUSED`] flags (a plain `fork`).
        Zygote,
        /// Stacked on the zygote's in each child: [`ZYGOTE_ONLY`] refused as well.
        Evaluation,
    }

    /// Refused to the children, allowed to the zygote.
    const ZYGOTE_ONLY: &[libc::c_long] = &[
        libc::SYS_clone,
        libc::SYS_clone3,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_fork,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_vfork,
        libc::SYS_kill,
        libc::SYS_tkill,
        libc::SYS_tgkill,
    ];

    /// `clone` flags that would make a thread, share memory or files, or enter a namespace.
    const CLONE_REFUSED: &[libc::c_int] = &[
        libc::CLONE_VM,
        libc::CLONE_THREAD,
        libc::CLONE_SIGHAND,
        libc::CLONE_FILES,
        libc::CLONE_FS,
        libc::CLONE_VFORK,
        libc::CLONE_PARENT,
        libc::CLONE_PTRACE,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ];

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
        // glibc's fork() is clone(SIGCHLD | CLONE_CHILD_*TID); clone3 is only for threads.
        libc::SYS_clone3,
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

    /// A compiled filter.
    pub(crate) type Program = BpfProgram;

    pub(crate) fn install(program: &Program) -> Result<(), String> {
        seccompiler::apply_filter(program).map_err(err)
    }

    pub(crate) fn compile(stage: Stage) -> Result<Program, String> {
        if stage == Stage::Evaluation {
            let rules = ZYGOTE_ONLY.iter().map(|&nr| (nr, Vec::new())).collect();
            return build(rules);
        }
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        // clone is refused when any refused flag is set: one rule per flag, any may match.
        let clone_rules = CLONE_REFUSED
            .iter()
            .map(|&flag| {
                let flag = flag as u32 as u64;
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_clone, clone_rules);
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
        build(rules)
    }

    fn build(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<Program, String> {
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
        filter.try_into().map_err(err)
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
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Stage {
        Zygote,
        Evaluation,
    }

    pub(crate) type Program = ();

    /// No seccomp on this platform: the language layer and the rlimits still apply.
    pub(crate) fn compile(_stage: Stage) -> Result<Program, String> {
        Ok(())
    }

    pub(crate) fn install(_program: &Program) -> Result<(), String> {
        Ok(())
    }
}
