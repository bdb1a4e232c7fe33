//! The command line a runner starts for a `bash` step (`bash --noprofile --norc -eo
//! pipefail -c COMMAND`, as `runner::agent`'s bash kind builds it), for the baselines that
//! spawn the same process without Plue around it.

/// The arguments after `bash` for a step running `command`.
pub(crate) fn args(command: &str) -> Vec<String> {
    ["--noprofile", "--norc", "-eo", "pipefail", "-c", command]
        .map(String::from)
        .to_vec()
}
