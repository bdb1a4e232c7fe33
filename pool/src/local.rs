//! The local provider: runners are `plue runner` child processes of the engine.
//!
//! Invariants:
//! - A runner's environment is built, never inherited (see [`RunnerProcess`]); its one-time
//!   registration token reaches it on its stdin (`--token-stdin`), a pipe only it reads —
//!   never its argv or environment, which `/proc/<pid>/cmdline` and `environ` could show.
//! - `plue serve`'s runners outlive a crashed engine on purpose (no parent-death signal):
//!   they finish their step and keep retrying the engine's address, so an engine restarted
//!   on the same address loses nothing; a runner that cannot reach any engine for
//!   `give_up_after` exits by itself. A stopping engine stops them ([`super::Pool::run`]).
//!   `plue run`'s runners die with it (`die_with_parent`): the run is the caller's.
//! - The engine is its runners' parent: a runner that dies (`kill -9`, a crash) is reaped at
//!   the pool's next look (every `tick`), and how it ended ([`Provider::ended`]: exit code or
//!   signal) reaches the pool, which fails the attempt it held at once
//!   ([`Provider::fails_lost_runs`]) or, if it never registered, counts a start failure.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::{Ended, Ending, Provider};

/// How the pool's runner processes are started; chosen by whoever configures the pool.
#[derive(Debug, Clone)]
pub struct RunnerProcess {
    /// The `plue` executable.
    pub program: PathBuf,
    pub labels: BTreeMap<String, String>,
    /// Where runner processes put their workspaces.
    pub work_dir: PathBuf,
    /// Where runner processes write their own diagnostics (appended).
    pub log_file: Option<PathBuf>,
    pub give_up_after: Duration,
    /// One step per runner process (then replaced); false lets a runner take step after
    /// step — for trusted work only, each step still gets a fresh workspace.
    pub ephemeral: bool,
    /// Handed to runners as `PLUE_PYTHON` so none of them resolves `python3` itself.
    pub python: Option<PathBuf>,
    /// Runners (and so their steps) get the engine's environment minus credentials and
    /// `withheld_env`; otherwise only `PATH`, `LANG`, `LC_ALL` and `TZ`. Only `plue run`
    /// sets it: it runs on the caller's own machine, for the caller.
    pub inherit_env: bool,
    /// Names never passed on, even when inheriting: the secrets given by `--secret NAME`,
    /// which reach only the steps that name them.
    pub withheld_env: Vec<String>,
    /// Variables of the engine's environment passed on to runners and their steps when not
    /// inheriting (`plue serve --pass-env`).
    pub pass_env: Vec<String>,
    /// Runners are killed when the engine process dies (`plue run`).
    pub die_with_parent: bool,
    /// Where the runners' `llm` steps send the API key (`--anthropic-base-url`); the
    /// engine's own `ANTHROPIC_BASE_URL`, never a workflow's.
    pub anthropic_base_url: Option<String>,
    /// Runners start their warm Python interpreter at once (`plue runner --warm-python`).
    pub warm_python: bool,
    /// Runners keep `work_dir` on a tmpfs of their own (`plue runner --work-dir-in-memory`;
    /// only a root runner can, the others keep it on disk).
    pub work_dir_in_memory: bool,
    /// Runners send every call as its own HTTP request (`plue runner
    /// --no-held-connection`) instead of over one held connection.
    pub no_held_connection: bool,
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The engine's base URL, e.g. `http://127.0.0.1:8600`.
    pub engine_url: String,
    /// The Unix socket runners connect to instead of `engine_url`'s host (`plue run`'s
    /// engine serves the runner protocol there: `plue runner --engine-socket`).
    pub engine_socket: Option<PathBuf>,
    pub runner: RunnerProcess,
}

pub struct LocalProvider {
    config: LocalConfig,
    children: Mutex<HashMap<String, Child>>,
    /// Children reaped by [`Provider::exists`], until the pool asks how they ended.
    exited: Mutex<HashMap<String, ExitStatus>>,
}

impl LocalProvider {
    pub fn new(config: LocalConfig) -> LocalProvider {
        LocalProvider {
            config,
            children: Mutex::new(HashMap::new()),
            exited: Mutex::new(HashMap::new()),
        }
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts runner `name` with `token` on its stdin, its environment built from
    /// `engine_env` (the engine's own).
    async fn spawn(
        &self,
        name: &str,
        token: &str,
        engine_env: Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let (engine, config) = (&self.config, &self.config.runner);
        let mut command = Command::new(&config.program);
        // Built, never inherited: nothing of the engine's environment (its admin token,
        // secret key, database URL, `--secret` values) reaches a runner unless listed here.
        let base = if config.inherit_env {
            runner::step_env::Base::inherited(engine_env, &config.withheld_env)
        } else {
            runner::step_env::Base::minimal_with(engine_env, &config.pass_env)
        };

        command.env_clear().envs(base.vars());
        command
            .arg("runner")
            .arg("--engine")
            .arg(&engine.engine_url)
            .arg("--name")
            .arg(name)
            .arg("--work-dir")
            .arg(&config.work_dir)
            .arg("--give-up-after")
            .arg(config.give_up_after.as_secs().max(1).to_string())
            .arg("--token-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        if let Some(socket) = &engine.engine_socket {
            command.arg("--engine-socket").arg(socket);
        }
        if config.die_with_parent {
            command
                .arg("--die-with-parent")
                .arg(std::process::id().to_string());
        }
        if let Some(python) = &config.python {
            command.env(runner::agent::PYTHON_ENV, python);
        }
        if config.ephemeral {
            command.arg("--ephemeral");
        }
        if config.inherit_env {
            command.arg("--inherit-env");
        }
        for name in &config.pass_env {
            command.arg("--pass-env").arg(name);
        }
        if let Some(url) = &config.anthropic_base_url {
            command.arg("--anthropic-base-url").arg(url);
        }
        if config.warm_python {
            command.arg("--warm-python");
        }
        if config.no_held_connection {
            command.arg("--no-held-connection");
        }
        if config.work_dir_in_memory {
            command.arg("--work-dir-in-memory");
        }
        if !config.labels.is_empty() {
            let labels: Vec<String> = config
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            command.arg("--labels").arg(labels.join(","));
        }
        match &config.log_file {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                command.stderr(file);
            }
            None => {
                command.stderr(Stdio::null());
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} runner", config.program.display()))?;
        let mut stdin = child.stdin.take().context("the runner's stdin")?;
        let handed = async {
            stdin.write_all(token.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.shutdown().await
        };
        if let Err(e) = handed.await {
            let _ = child.kill().await;
            return Err(e).with_context(|| format!("handing runner {name} its token"));
        }
        drop(stdin);
        self.children().insert(name.to_string(), child);
        Ok(())
    }
}

impl Provider for LocalProvider {
    async fn start(&self, name: &str, token: &str) -> anyhow::Result<()> {
        // Variables that are not UTF-8 are never passed on (and must not panic here).
        let engine_env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        self.spawn(name, token, engine_env).await
    }

    async fn stop(&self, name: &str) -> anyhow::Result<()> {
        let Some(mut child) = self.children().remove(name) else {
            return Ok(());
        };
        // SIGTERM lets the runner kill its step and deregister; SIGKILL if it lingers.
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        Ok(())
    }

    fn labels(&self) -> &BTreeMap<String, String> {
        &self.config.runner.labels
    }

    fn ended(&self, name: &str) -> Ended {
        let status = self
            .exited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let ending = match status {
            Some(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Ending::Code(code),
                (None, Some(signal)) => Ending::Signal(signal),
                (None, None) => Ending::Unknown,
            },
            None => Ending::Unknown,
        };
        Ended {
            runner: name.to_string(),
            ending,
            detail: format!("runner {name}: {ending}"),
        }
    }

    fn fails_lost_runs(&self) -> bool {
        true
    }

    async fn exists(&self, name: &str) -> bool {
        let mut children = self.children();
        match children.get_mut(name) {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    children.remove(name);
                    self.exited
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.to_string(), status);
                    false
                }
                Err(_) => {
                    children.remove(name);
                    false
                }
            },
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `plue runner` that records its environment, arguments and stdin.
    fn recorder(dir: &std::path::Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let out = dir.join("seen");
        let script = dir.join("fake-runner");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nenv > '{o}.env'\nprintf '%s\\n' \"$@\" > '{o}.args'\ncat > '{o}.stdin'\n",
                o = out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    fn provider(program: PathBuf, dir: &std::path::Path) -> LocalProvider {
        LocalProvider::new(LocalConfig {
            engine_url: "http://127.0.0.1:1".into(),
            engine_socket: Some("/run/plue-test/runners.sock".into()),
            runner: RunnerProcess {
                program,
                labels: BTreeMap::new(),
                work_dir: dir.to_path_buf(),
                log_file: None,
                give_up_after: Duration::from_secs(5),
                ephemeral: true,
                python: Some("/usr/bin/python3".into()),
                inherit_env: false,
                withheld_env: Vec::new(),
                pass_env: Vec::new(),
                die_with_parent: true,
                anthropic_base_url: None,
                warm_python: false,
                work_dir_in_memory: false,
                no_held_connection: false,
            },
        })
    }

    // issue 36: a runner process that exits at once (a wrong engine address, a work
    // directory it refuses) was replaced on every pass of the pool.
    #[tokio::test]
    async fn runner_processes_that_exit_at_start_make_the_pool_back_off() {
        use std::os::unix::fs::PermissionsExt;

        use crate::store::Store;
        use crate::{BackoffPolicy, Ending, Pool, PoolConfig};

        let dir = tempfile::tempdir().unwrap();
        let starts = dir.path().join("starts");
        let script = dir.path().join("failing-runner");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nread token\necho start >> '{}'\necho 'Error: cannot reach the work directory' >&2\nexit 3\n",
                starts.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let executor = crate::engine::engine_for_tests::engine(&store);
        let pool = Pool::new(
            provider(script, dir.path()),
            PoolConfig {
                min_warm: 1,
                max_runners: 1,
                idle_timeout: Duration::from_secs(60),
                start_timeout: Duration::from_secs(30),
                tick: Duration::from_millis(100),
                class: "local".into(),
                start_backoff: BackoffPolicy {
                    after: 3,
                    first: Duration::from_secs(3600),
                    max: Duration::from_secs(3600),
                },
            },
            executor,
        )
        .unwrap();
        let status = pool.status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !status.borrow().backing_off {
            assert!(
                std::time::Instant::now() < deadline,
                "no backoff: {:?}",
                *status.borrow()
            );
            pool.reconcile().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let shown = *status.borrow();
        assert_eq!(shown.last_start_failure, Some(Ending::Code(3)), "{shown:?}");
        assert_eq!(shown.start_failures, 3, "{shown:?}");
        // Backing off: more passes start nothing.
        for _ in 0..5 {
            pool.reconcile().await.unwrap();
        }
        let started = std::fs::read_to_string(&starts).unwrap_or_default();
        assert_eq!(started.lines().count(), 3, "{started}");
    }

    #[tokio::test]
    async fn a_runner_gets_a_minimal_environment_and_its_token_on_stdin_only() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider(recorder(dir.path()), dir.path());
        let engine_env: Vec<(String, String)> = [
            ("PATH", "/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
            ("TZ", "UTC"),
            ("HOME", "/home/engine"),
            ("PLUE_ADMIN_TOKEN", "admin-credential"),
            ("PLUE_SECRET_KEY", "vault-key-credential"),
            ("PLUE_RUNNER_TOKEN", "shared-credential"),
            ("DATABASE_URL", "postgres://u:db-credential@h/plue"),
            ("AWS_SECRET_ACCESS_KEY", "cloud-credential"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let token = "one-time-token-for-this-runner";
        provider.spawn("pool-x-1", token, engine_env).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while provider.exists("pool-x-1").await {
            assert!(
                std::time::Instant::now() < deadline,
                "the fake runner hangs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let read = |ext: &str| std::fs::read_to_string(dir.path().join(format!("seen.{ext}")));
        let (env, args, stdin) = (
            read("env").unwrap(),
            read("args").unwrap(),
            read("stdin").unwrap(),
        );
        let mut names: Vec<&str> = env
            .lines()
            .filter_map(|line| line.split_once('=').map(|(k, _)| k))
            .filter(|name| !matches!(*name, "PWD" | "SHLVL" | "_" | "OLDPWD"))
            .collect();
        names.sort();
        assert_eq!(names, ["LANG", "PATH", "PLUE_PYTHON", "TZ"], "{env}");
        assert!(!env.contains("credential"), "{env}");
        assert!(!args.contains(token) && !env.contains(token), "{args}");
        assert!(args.contains("--token-stdin"), "{args}");
        assert!(
            args.contains("--engine-socket\n/run/plue-test/runners.sock\n"),
            "{args}"
        );
        assert!(
            args.contains(&format!("--die-with-parent\n{}\n", std::process::id())),
            "{args}"
        );
        assert_eq!(stdin, format!("{token}\n"));
    }
}
