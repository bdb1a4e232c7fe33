//! A `bash` step on the runner: `bash --noprofile --norc -eo pipefail -c <command>`, the
//! `bash` found on the step's own `PATH` (one the step user can run).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Command;
use crate::program_path;

pub(super) fn command(command: &str, env: &BTreeMap<String, String>, other_user: bool) -> Command {
    let program = env
        .get("PATH")
        .and_then(|path| program_path::resolve("bash", path, other_user))
        .unwrap_or_else(|| PathBuf::from("bash"));
    Command {
        program,
        args: vec![
            "--noprofile".into(),
            "--norc".into(),
            "-eo".into(),
            "pipefail".into(),
            "-c".into(),
            command.to_owned(),
        ],
        fresh_interpreter: false,
    }
}
