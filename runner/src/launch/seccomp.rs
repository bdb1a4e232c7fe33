//! The seccomp filter every step process runs under: `add_key`, `request_key` and
//! `keyctl` fail with `EPERM`, as in Docker's default profile; every other system call is
//! allowed.
//!
//! Why: kernel keyrings are per uid and not namespaced. Step uids come back to later
//! attempts (`step_user`), so a key a step stored in its user keyring (`@u`) or the
//! persistent keyring would wait there for the next holder of the uid — a channel out of
//! the closed room that no mount or IPC namespace closes. No step needs a keyring.
//!
//! Invariants: the filter is compiled once in the runner, for the architecture the runner
//! is built for (`seccompiler` maps the syscall numbers), before any clone; a child installs
//! it after `no_new_privs` and right before `execve` (`child.rs`), the warm Python child
//! likewise from the bytes of [`program_hex`] (`zygote.py`), and a launch whose filter
//! cannot be installed fails: no step runs without it. The filter is inherited across
//! `fork` and `execve` and cannot be removed, so everything a step starts runs under it.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The system calls refused (with `EPERM`): every keyring operation.
const REFUSED: &[i64] = &[libc::SYS_add_key, libc::SYS_request_key, libc::SYS_keyctl];

/// The compiled filter, as the kernel's `sock_filter`s; an error says why it could not be
/// compiled (then no step can start).
pub(crate) fn program() -> Result<&'static [libc::sock_filter], String> {
    static PROGRAM: OnceLock<Result<Vec<libc::sock_filter>, String>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            compile().map(|program| {
                program
                    .iter()
                    .map(|insn| libc::sock_filter {
                        code: insn.code,
                        jt: insn.jt,
                        jf: insn.jf,
                        k: insn.k,
                    })
                    .collect()
            })
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// [`program`] as the bytes of its `sock_filter`s in this machine's order (8 each), in
/// hexadecimal: for the warm Python child, which builds its `sock_fprog` from them. Made
/// once, as the program is: every warm step's job carries it.
pub(crate) fn program_hex() -> Result<&'static str, String> {
    static HEX: OnceLock<Result<String, String>> = OnceLock::new();
    HEX.get_or_init(|| {
        let mut hex = String::new();
        for insn in program()? {
            let mut bytes = Vec::with_capacity(8);
            bytes.extend_from_slice(&insn.code.to_ne_bytes());
            bytes.extend_from_slice(&[insn.jt, insn.jf]);
            bytes.extend_from_slice(&insn.k.to_ne_bytes());
            for byte in bytes {
                hex.push_str(&format!("{byte:02x}"));
            }
        }
        Ok(hex)
    })
    .as_deref()
    .map_err(Clone::clone)
}

fn compile() -> Result<BpfProgram, String> {
    let arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        return Err("seccomp: the step filter is built for x86_64 and aarch64 only".into());
    };
    let rules = REFUSED
        .iter()
        .map(|nr| (*nr, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: compiling the step filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp: compiling the step filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_its_bytes_are_whole_instructions() {
        let program = program().unwrap();
        assert!(program.len() > REFUSED.len());
        let hex = program_hex().unwrap();
        assert_eq!(hex.len(), program.len() * 16);
    }
}
