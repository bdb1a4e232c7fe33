//! Short commands the tools run for themselves (`grep`, `git`): a built environment (the
//! step's `PATH`, git's safety settings), the step's user, `no_new_privs` (as every step
//! process: nothing they execute gains privileges through a set-uid bit), the workspace as
//! the ceiling of git's discovery, output read no further than a cap, killed on timeout or
//! stop. (The `bash` tool is a step process of its own, through `crate::process`.)

use std::process::Stdio;
use std::time::Duration;

use super::{Toolbox, OUTPUT_CAP};

/// The most bytes of a command's stdout read (the note saying so must fit the cap too).
pub(super) const STDOUT_CAP: usize = OUTPUT_CAP - 1024;

/// The most bytes of a command's stderr read.
pub(super) const STDERR_CAP: usize = 4096;

/// Variables that would point git at another repository than the workspace, or configure
/// it from outside.
pub(super) const GIT_VARS_REMOVED: &[&str] = &[
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_EXTERNAL_DIFF",
    "GIT_PAGER",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
];

pub(super) struct Finished {
    pub(super) code: Option<i32>,
    pub(super) stdout: String,
    pub(super) stderr: String,
    /// Stdout passed its cap and the command was killed (`code` is then meaningless). Past
    /// the stderr cap it is killed too, which reads as a failure.
    pub(super) truncated: bool,
}

impl Toolbox {
    /// Runs a short command in the workspace; errors when it cannot start, times out or
    /// the step stops. Reads at most [`STDOUT_CAP`] of stdout and [`STDERR_CAP`] of stderr;
    /// past either the command is killed and the result marked `truncated`.
    pub(super) async fn command(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Finished, String> {
        let mut command = tokio::process::Command::new(program);
        // Built, not inherited, and as the step's user: `git` reads the workspace's
        // `.git/config`, which the step wrote — as root it could be made to run anything.
        command.env_clear();
        if let Some(path) = self.env.get("PATH") {
            command.env("PATH", path);
        }
        if let Some(user) = self.user {
            command.uid(user.uid).gid(user.gid);
        }
        crate::launch::deny_new_privileges(&mut command);
        command
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("LC_ALL", "C.UTF-8")
            .kill_on_drop(true);
        // Discovery stops at the workspace: never the repository of a directory above it.
        if let Some(parent) = self.root.parent() {
            command.env("GIT_CEILING_DIRECTORIES", parent);
        }
        for name in self
            .env_remove
            .iter()
            .map(String::as_str)
            .chain(GIT_VARS_REMOVED.iter().copied())
        {
            command.env_remove(name);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(format!("{program}: its output could not be read"));
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let out = read_capped(stdout, STDOUT_CAP);
        let err = read_capped(stderr, STDERR_CAP);
        tokio::pin!(out, err);
        let (mut stdout, mut stderr) = (None, None);
        while stdout.is_none() || stderr.is_none() {
            tokio::select! {
                read = &mut out, if stdout.is_none() => {
                    let read = read.map_err(|e| format!("{program}: {e}"))?;
                    if read.1 {
                        let _ = child.start_kill();
                    }
                    stdout = Some(read);
                }
                read = &mut err, if stderr.is_none() => {
                    let read = read.map_err(|e| format!("{program}: {e}"))?;
                    if read.1 {
                        let _ = child.start_kill();
                    }
                    stderr = Some(read);
                }
                () = &mut deadline => {
                    return Err(format!("{program} timed out after {}s", timeout.as_secs()))
                }
                () = self.stop.cancelled() => return Err("the step was stopped".into()),
            }
        }
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| format!("{program}: {e}"))?,
            () = &mut deadline => {
                return Err(format!("{program} timed out after {}s", timeout.as_secs()))
            }
            () = self.stop.cancelled() => return Err("the step was stopped".into()),
        };
        let ((out, out_over), (err, _)) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
        let mut stdout = String::from_utf8_lossy(&out).into_owned();
        if out_over {
            stdout.push_str(&format!(
                "\n[output truncated at {STDOUT_CAP} bytes; {program} was stopped there]"
            ));
        }
        Ok(Finished {
            code: status.code(),
            stdout,
            stderr: String::from_utf8_lossy(&err).into_owned(),
            truncated: out_over,
        })
    }
}

/// At most `cap` bytes of `pipe`, and whether it had more.
async fn read_capped(
    pipe: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    pipe.take(cap as u64 + 1).read_to_end(&mut bytes).await?;
    let over = bytes.len() > cap;
    bytes.truncate(cap);
    Ok((bytes, over))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio_util::sync::CancellationToken;

    use super::*;

    /// What an `llm` tool's own command sees of itself: `no_new_privs`, also as a root
    /// runner's step user.
    #[tokio::test]
    async fn a_tool_command_has_no_new_privs() {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        let user = root.then_some(crate::step_user::StepUser {
            uid: 3_999_021,
            gid: 3_999_021,
        });
        let tools = Toolbox::new(
            dir.path(),
            &["grep".to_owned()],
            BTreeMap::new(),
            Vec::new(),
            CancellationToken::new(),
        )
        .unwrap()
        .with_user(user);
        let status = "grep -E '^(NoNewPrivs|Uid):' /proc/self/status";
        let done = tools
            .command("/bin/bash", &["-c", status], Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            done.stdout.contains("NoNewPrivs:\t1"),
            "{}{}",
            done.stdout,
            done.stderr
        );
        if root {
            assert!(done.stdout.contains("Uid:\t3999021"), "{}", done.stdout);
        }
    }
}
