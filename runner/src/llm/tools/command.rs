//! Short commands the tools run for themselves (`grep`, `git`): the runner's own program
//! by its absolute path (never one found on the step's `PATH`), a built environment (the
//! step's `PATH`, git's safety settings), the workspace as the ceiling of git's discovery,
//! output read no further than a cap. Each runs in the step's closed room, contained as a
//! step process (`containment`: own session and cgroup, the step's user, private `/proc`,
//! places and IPC, `no_new_privs`), and everything it started is killed and swept when the
//! call ends — answered, over a cap, timed out or stopped. (The `bash` tool is a step process of its own, through `crate::process`.)

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{Toolbox, OUTPUT_CAP};
use crate::containment::{self, Places};
use crate::launch::Exit;

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
    ///
    /// `program` is an absolute path of the runner's own (`program_path`), never looked up
    /// on the step's `PATH`. The command is contained as a step process is
    /// ([`containment::spawn_tool`]): its own session and cgroup, the step's user with its
    /// private `/proc`, places and IPC, `no_new_privs`; when the call is over — answered,
    /// timed out or stopped — everything it started is killed and swept, so nothing a
    /// workspace smuggled into it (a `grep` of its own, a config that runs commands)
    /// outlives the call.
    pub(super) async fn command(
        &self,
        program: &Path,
        args: &[&str],
        places: Places,
        timeout: Duration,
    ) -> Result<Finished, String> {
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if !program.is_absolute() {
            return Err(format!(
                "{name}: the runner runs tools by an absolute path only"
            ));
        }
        let env = self.command_env();
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let spec = containment::Program {
            path: program,
            args: &args,
            env: &env,
            cwd: &self.root,
            network: self.network.as_ref(),
        };
        let (mut child, contained) = containment::spawn_tool(spec, self.user, places)
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(format!("{name}: its output could not be read"));
        };
        let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd;
        let (stdout, stderr) = match (receiver(stdout), receiver(stderr)) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => return Err(format!("{name}: {e}")),
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let out = read_capped(stdout, STDOUT_CAP);
        let err = read_capped(stderr, STDERR_CAP);
        let exit = child.wait();
        tokio::pin!(out, err, exit);
        let (mut stdout, mut stderr, mut status) = (None, None, None);
        let ended: Result<(), String> = loop {
            if stdout.is_some() && stderr.is_some() && status.is_some() {
                break Ok(());
            }
            tokio::select! {
                read = &mut out, if stdout.is_none() => match read {
                    Ok(read) => {
                        if read.1 {
                            contained.kill();
                        }
                        stdout = Some(read);
                    }
                    Err(e) => break Err(format!("{name}: {e}")),
                },
                read = &mut err, if stderr.is_none() => match read {
                    Ok(read) => {
                        if read.1 {
                            contained.kill();
                        }
                        stderr = Some(read);
                    }
                    Err(e) => break Err(format!("{name}: {e}")),
                },
                exited = &mut exit, if status.is_none() => match exited {
                    // The leader is done: what it left running (holding the pipes open,
                    // or not) goes now; what it wrote is still in the pipes.
                    Ok(exited) => {
                        contained.kill();
                        status = Some(exited);
                    }
                    Err(e) => break Err(format!("{name}: {e}")),
                },
                () = &mut deadline => {
                    break Err(format!("{name} timed out after {}s", timeout.as_secs()))
                }
                () = self.stop.cancelled() => break Err("the step was stopped".into()),
            }
        };
        contained.kill();
        if status.is_none() {
            // Killed just now: reaped at once, so the sweep may collect every zombie.
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut exit).await;
        }
        contained.finish().await;
        ended?;
        let ((out, out_over), (err, _)) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
        let mut stdout = String::from_utf8_lossy(&out).into_owned();
        if out_over {
            stdout.push_str(&format!(
                "\n[output truncated at {STDOUT_CAP} bytes; {name} was stopped there]"
            ));
        }
        let code = match status {
            Some(Exit::Code(code)) => Some(code),
            _ => None,
        };
        Ok(Finished {
            code,
            stdout,
            stderr: String::from_utf8_lossy(&err).into_owned(),
            truncated: out_over,
        })
    }

    /// A tool command's whole environment, built rather than inherited: the step's `PATH`
    /// (for what git itself runs; the program is already resolved), git's safety settings,
    /// the workspace as the ceiling of git's discovery, nothing of `env_remove` or
    /// [`GIT_VARS_REMOVED`].
    fn command_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if let Some(path) = self.env.get("PATH") {
            env.insert("PATH".to_owned(), path.clone());
        }
        for (key, value) in [
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("LC_ALL", "C.UTF-8"),
        ] {
            env.insert(key.to_owned(), value.to_owned());
        }
        // Discovery stops at the workspace: never the repository of a directory above it.
        if let Some(parent) = self.root.parent().and_then(Path::to_str) {
            env.insert("GIT_CEILING_DIRECTORIES".to_owned(), parent.to_owned());
        }
        for name in self
            .env_remove
            .iter()
            .map(String::as_str)
            .chain(GIT_VARS_REMOVED.iter().copied())
        {
            env.remove(name);
        }
        env
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
            .command(
                Path::new("/bin/bash"),
                &["-c", status],
                Places::Own,
                Duration::from_secs(10),
            )
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

    /// A workspace directory of 0755 and its toolbox, as a root runner's step user when
    /// this runs as root.
    fn toolbox(dir: &Path, env: BTreeMap<String, String>, uid: u32) -> (Toolbox, bool) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() | 0o055;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        let user = root.then_some(crate::step_user::StepUser { uid, gid: uid });
        let tools = Toolbox::new(
            dir,
            &["grep".to_owned()],
            env,
            Vec::new(),
            CancellationToken::new(),
        )
        .unwrap()
        .with_user(user);
        (tools, root)
    }

    /// Whether `pid` is a live process (a zombie is not).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|rest| rest.starts_with('Z'))
        })
    }

    /// The pids of live processes whose real uid is `uid`.
    fn processes_of(uid: u32) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let real = status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(str::to_owned));
            if real == Some(uid.to_string()) && alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// The attacker's `grep` on the step's PATH (a plan's `env=` can put the workspace's
    /// `bin/` first): the tool runs the runner's own grep, so the workspace's never runs.
    #[tokio::test]
    async fn grep_runs_the_runners_grep_not_one_on_the_steps_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fake = bin.join("grep");
        std::fs::write(&fake, "#!/bin/sh\necho FAKE-GREP-RAN\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "needle here\n").unwrap();
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let env = BTreeMap::from([("PATH".to_owned(), path)]);
        let (tools, _) = toolbox(dir.path(), env, 3_999_022);
        let found = tools
            .grep(&serde_json::json!({"pattern": "needle"}))
            .await
            .unwrap();
        let text = format!("{found:?}");
        assert!(!text.contains("FAKE-GREP-RAN"), "{text}");
        assert!(text.contains("notes.txt:1:needle here"), "{text}");
    }

    /// What a tool command starts — double-forked, in a session of its own, with a cleared
    /// environment — is killed when the call ends: nothing waits for the uid's next holder.
    #[tokio::test]
    async fn nothing_a_tool_command_starts_outlives_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let uid = 3_999_023;
        let (tools, root) = toolbox(dir.path(), BTreeMap::new(), uid);
        let escape = "(setsid /usr/bin/env -i /bin/bash -c \
                      'echo $$; exec sleep 60 </dev/null >/dev/null 2>&1' &); sleep 0.2";
        let done = tools
            .command(
                Path::new("/bin/bash"),
                &["-c", escape],
                Places::Own,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        let pid: i32 = done.stdout.trim().parse().expect(&done.stdout);
        assert!(!alive(pid), "the escapee {pid} outlived the tool call");
        if root {
            assert_eq!(processes_of(uid), Vec::<i32>::new());
        }
    }

    /// `git_diff` as a root runner's step user, its git in the step's room: the shadow of
    /// the git directory it reads is in reach there.
    #[tokio::test]
    async fn git_diff_works_inside_the_room() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=P", "-c", "user.email=p@example.com", "-C"])
                .arg(dir.path())
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        };
        std::fs::write(dir.path().join("a.txt"), "alpha\nbeta\n").unwrap();
        git(&["init", "-q"]);
        git(&["add", "a.txt"]);
        git(&["commit", "-q", "-m", "one"]);
        std::fs::write(dir.path().join("a.txt"), "alpha\nBETA\n").unwrap();
        let uid = 3_999_024;
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            crate::step_user::hand_over(dir.path(), crate::step_user::StepUser { uid, gid: uid })
                .unwrap();
        }
        let (tools, _) = toolbox(dir.path(), BTreeMap::new(), uid);
        let diff = tools.git_diff(&serde_json::json!({})).await.unwrap();
        assert!(diff.content.contains("-beta\n+BETA"), "{diff:?}");
    }

    /// A tool command can neither store a key in its uid's keyring nor read one
    /// (`launch::seccomp`, as every step process).
    #[tokio::test]
    async fn a_tool_command_can_neither_store_nor_read_a_kernel_key() {
        let dir = tempfile::tempdir().unwrap();
        let (tools, _) = toolbox(dir.path(), BTreeMap::new(), 3_999_025);
        let (add_key, keyctl) = (libc::SYS_add_key.to_string(), libc::SYS_keyctl.to_string());
        let done = tools
            .command(
                Path::new("/usr/bin/python3"),
                &["-c", crate::launch::tests::KEYRING_PROBE, &add_key, &keyctl],
                Places::Own,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        let eperm = libc::EPERM;
        assert_eq!(
            done.stdout,
            format!("add_key -1 {eperm}\nkeyctl -1 {eperm}\n"),
            "{}",
            done.stderr
        );
    }
}
