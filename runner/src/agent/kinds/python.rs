//! A `python` step on the runner: `python -u -c <script>` with the interpreter for steps
//! ([`super::super::python_for_steps`], found once per runner), forked from the warm
//! interpreter unless the step asked for a fresh one.

use std::path::PathBuf;

use super::Command;

pub(super) async fn command(
    script: &str,
    fresh_interpreter: bool,
    other_user: bool,
    python: &mut Option<PathBuf>,
) -> anyhow::Result<Command> {
    if python.is_none() {
        *python = Some(
            tokio::task::spawn_blocking(move || super::super::python_for_steps(other_user))
                .await??,
        );
    }
    let program = python.clone().unwrap_or_else(|| PathBuf::from("python3"));
    Ok(Command {
        program,
        args: vec!["-u".into(), "-c".into(), script.to_owned()],
        fresh_interpreter,
    })
}
